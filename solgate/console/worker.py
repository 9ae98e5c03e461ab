"""One console's life: connect, activate SOL (stealing when allowed), keep it alive, reconnect.

Theory of operation
-------------------
A `ConsoleWorker` owns one BMC session and one `SolStream`. Its `run()` loop is:

    connecting -> activating -> active -> (error) -> backoff -> connecting ...

with side exits to `held-elsewhere` (SOL owned by another session and `steal = false`),
`auth-failed` (wrong password: back off for minutes so the BMC does not lock the account)
and `unreachable` (no answer). Handshake errors are not authenticated, so one forged
datagram could claim a wrong password: a single authentication failure only gets the
normal short backoff, and `auth-failed` needs the next attempt to fail the same way
(`LoginFailures`). Every state has the time it was entered and the last error
in words, for the web page and `/metrics`.

While active, console bytes flow BMC -> `SolStream` -> `_on_output`: appended to the log
first, then fed to the panic detector and published to the hub. The stream's ACK for a
packet is handed to the socket only after that, so a byte is acknowledged to the BMC only
once it sits in solgate's own buffers; if the loop stalls, the BMC retransmits.

Keepalive: every `keepalive_interval` the worker asks Get Payload Instance Info. It keeps
the BMC session from timing out and tells us whether SOL still belongs to our session (a
thief rarely announces itself). The decisions are `ipmi.liveness.Liveness`'s: an
unanswered keepalive is asked again, and the session counts as dead only after
`session_timeout` without any authenticated packet, because a reconnect makes the BMC
drop what it has buffered. A foreign owner, a SOL "deactivating" status, a stream whose
packet went unacknowledged for `session_timeout`, or a dead session ends the activation;
the loop logs "SOL down" with the reason and reconnects after a backoff with jitter.
Session setups across all workers are limited by a shared semaphore so thousands of
consoles starting at once do not storm the network. Keepalive sleeps end on a one-second
grid (`sleep_on_grid`), so a thousand consoles share a loop wake-up per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solgate.config import ConsoleConfig
from solgate.console.bundle import bundle_id, collect_bundle
from solgate.console.events import EventLog
from solgate.console.hooks import run_panic_hooks
from solgate.console.hub import Hub
from solgate.console.log import ConsoleLog
from solgate.console.panic import PanicDetector, PanicEvent
from solgate.errors import (
    AuthenticationError,
    PayloadActiveElsewhere,
    SolgateError,
    SolgateTimeoutError,
)
from solgate.ipmi.commands import PayloadInstanceInfo, SolActivation
from solgate.ipmi.liveness import KeepaliveDue, Liveness, SessionDead
from solgate.ipmi.sol import (
    BreakRequested,
    DataReceived,
    PeerDeactivating,
    SolStream,
    StreamStalled,
    TransferUnavailable,
)
from solgate.ipmi.transport import IpmiClient

AUTH_FAILURE_BACKOFF = 300.0  # seconds; repeated bad logins lock BMC accounts
AUTH_FAILURE_BACKOFF_MAX = 1800.0
INITIAL_BACKOFF = 1.0
STEAL_SETTLE = 0.2  # seconds between a forced deactivate and the new activation
KEEPALIVE_GRID = 1.0  # keepalive wake-ups land on multiples of this (loop clock), see below


class ConsoleState(enum.StrEnum):
    CONNECTING = "connecting"
    ACTIVATING = "activating"
    ACTIVE = "active"
    HELD_ELSEWHERE = "held-elsewhere"
    AUTH_FAILED = "auth-failed"
    UNREACHABLE = "unreachable"
    BACKOFF = "backoff"
    STOPPED = "stopped"


@dataclass
class Backoff:
    """Exponential backoff with full jitter: the nth failure waits up to base * 2^n, capped."""

    cap: float
    base: float = INITIAL_BACKOFF
    failures: int = 0
    rng: random.Random | None = None

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.failures))
        self.failures += 1
        rng = self.rng or random
        return ceiling / 2 + rng.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto

    def reset(self) -> None:
        self.failures = 0


@dataclass
class LoginFailures:
    """Consecutive authentication failures; the long backoff needs a confirmed one.

    RMCP+ error statuses and RAKP codes carry no proof of origin, so a lone failure may
    be forged (issue 11 finding 3); the next attempt, after the normal short backoff,
    confirms or clears it. Any other outcome ends the run.
    """

    confirm_after: int = 2
    consecutive: int = 0

    def failed(self) -> bool:
        """Count one failure; True once it is confirmed (lock out for minutes)."""
        self.consecutive += 1
        return self.consecutive >= self.confirm_after

    def reset(self) -> None:
        self.consecutive = 0


async def sleep_on_grid(delay: float, grid: float = KEEPALIVE_GRID) -> None:
    """Sleep at least `delay`, waking on the next multiple of `grid` of the loop's clock.

    Every console's keepalive timer then fires with others in one loop wake-up a second
    instead of one wake-up each, and the requests (and answers) go out and come back in
    bursts the loop takes per wake-up. The jitter of the interval still spreads consoles
    over the seconds; a keepalive is at most `grid` late.
    """
    loop = asyncio.get_running_loop()
    now = loop.time()
    await asyncio.sleep(math.ceil((now + delay) / grid) * grid - now)


class _ActivationEnded(Exception):
    """Internal: the active SOL session is over; `reason` says why, for the log."""

    def __init__(self, reason: str, *, deactivate: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.deactivate = deactivate


class ConsoleWorker:
    """Keeps one console's SOL session alive and feeds its output to log, panics and hub."""

    def __init__(
        self,
        console: ConsoleConfig,
        *,
        hub: Hub,
        log: ConsoleLog,
        events: EventLog,
        panic: PanicDetector,
        setup_slots: asyncio.Semaphore,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        steal_check: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.console = console
        self.name = console.name
        self.hub = hub
        self.log = log
        self.events = events
        hub.on_event = self._hub_event
        self.panic = panic
        self._setup_slots = setup_slots
        self._wall = wall_clock
        # In a cluster: asked before forcing another session off SOL (does this member
        # still own the console?), so two members never fight over one BMC.
        self._steal_check = steal_check
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._logger = logging.LoggerAdapter(
            logging.getLogger("solgate.worker"),
            {"console": console.name},
        )
        self.state = ConsoleState.STOPPED
        self.state_since = self._wall()
        self.state_detail = ""
        self.tags: tuple[str, ...] = tuple(console.tags)
        self.last_output: float | None = None
        self.panic_count = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.reconnects = 0
        # SOL stream counters and dropped-datagram counts of finished activations and
        # sessions; `sol_counters()` / `datagram_drops()` add the live ones (for /metrics).
        self.sol_totals: dict[str, int] = {}
        self.drop_totals: dict[str, int] = {}
        self.cipher_suite: int | None = None
        self._client: IpmiClient | None = None
        self._stream: SolStream | None = None
        self._timer: asyncio.TimerHandle | None = None
        # The loop `_serve` runs on, for the per-packet path: asyncio.get_running_loop()
        # costs a getpid() system call each time.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended: asyncio.Future[_ActivationEnded] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._force_steal = False  # an operator forced a deactivate: steal once
        self._task: asyncio.Task[None] | None = None
        self._hook_tasks: set[asyncio.Task[list[str]]] = set()
        self._bundle_tasks: set[asyncio.Task[Path]] = set()
        self._log_error_reported: str | None = None
        hub.on_input = self.send_input

    @property
    def log_path(self) -> Path:
        return self.log.path

    def sol_counters(self) -> dict[str, int]:
        """`SolStream.counters` summed over this worker's life, the live activation included."""
        stream = self._stream
        return _summed(self.sol_totals, stream.counters if stream is not None else {})

    def datagram_drops(self) -> dict[str, int]:
        """Datagrams the session layer dropped, by reason, over this worker's life."""
        client = self._client
        return _summed(self.drop_totals, client.dropped if client is not None else {})

    # --- control from the outside ------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"console:{self.name}"
            )
        return self._task

    async def stop(self, timeout: float = 5.0) -> None:
        """Deactivate SOL and close the session so the BMC is free, then end `run()`."""
        self._stopping.set()
        self._wake.set()
        self._end(_ActivationEnded("solgate stopping", deactivate=True))
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    def send_input(self, data: bytes) -> None:
        """Keystrokes from the write-lock holder; dropped (and counted) when not active."""
        stream = self._stream
        if stream is None or self.state != ConsoleState.ACTIVE:
            return
        room = stream.send_capacity
        if room <= 0:
            return
        stream.send(data[:room], self._now())
        self.bytes_out += min(len(data), room)
        self._pump()

    def send_break(self, user: str = "") -> bool:
        stream = self._stream
        if stream is None or self.state != ConsoleState.ACTIVE:
            return False
        stream.send_break(self._now())
        self._pump()
        self._record("break", f"serial BREAK sent by {user or 'unknown'}", user=user)
        return True

    def reconnect(self, *, force_deactivate: bool, user: str = "") -> None:
        """End the current activation (optionally forcing a deactivate) and start over now."""
        why = f"reconnect requested by {user or 'unknown'}"
        self._record("deactivate", f"forced deactivate and reconnect by {user or 'unknown'}",
                     user=user)
        # Also when SOL is held elsewhere and steal = false: freeing it is the point.
        self._force_steal = self._force_steal or force_deactivate
        self._end(_ActivationEnded(why, deactivate=force_deactivate))
        self._wake.set()

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(cap=self.console.reconnect_max, rng=self._rng)
        auth_backoff = Backoff(cap=AUTH_FAILURE_BACKOFF_MAX, base=AUTH_FAILURE_BACKOFF,
                               rng=self._rng)
        login_failures = LoginFailures()
        steal_next = self.console.steal
        try:
            while not self._stopping.is_set():
                delay: float
                login_failed = False
                try:
                    steal, self._force_steal = steal_next or self._force_steal, False
                    await self._connect_and_serve(steal)
                    backoff.reset()
                    auth_backoff.reset()
                    delay = 0.0 if self._stopping.is_set() else backoff.next_delay()
                    steal_next = self.console.steal
                except PayloadActiveElsewhere as exc:
                    self._set_state(ConsoleState.HELD_ELSEWHERE, str(exc))
                    delay = backoff.next_delay()
                    steal_next = self.console.steal
                except AuthenticationError as exc:
                    login_failed = True
                    if login_failures.failed():
                        self._set_state(ConsoleState.AUTH_FAILED, str(exc))
                        delay = auth_backoff.next_delay()
                    else:
                        self._set_state(ConsoleState.BACKOFF, f"{exc} (trying once more "
                                        "before backing off for minutes)")
                        delay = backoff.next_delay()
                except SolgateTimeoutError as exc:
                    self._set_state(ConsoleState.UNREACHABLE, str(exc))
                    delay = backoff.next_delay()
                except SolgateError as exc:
                    self._set_state(ConsoleState.BACKOFF, str(exc))
                    delay = backoff.next_delay()
                except OSError as exc:
                    self._set_state(ConsoleState.UNREACHABLE, f"{self.console.host}: {exc}")
                    delay = backoff.next_delay()
                if not login_failed:
                    login_failures.reset()
                if self._stopping.is_set():
                    break
                if delay > 0:
                    if self.state in (ConsoleState.ACTIVE, ConsoleState.ACTIVATING,
                                      ConsoleState.CONNECTING):
                        self._set_state(ConsoleState.BACKOFF, self.state_detail)
                    await self._sleep(delay)
                self.reconnects += 1
        finally:
            self._set_state(ConsoleState.STOPPED, "")
            self.log.close()

    async def _sleep(self, delay: float) -> None:
        """Sleep, but wake early on stop() or an explicit reconnect request."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    async def _connect_and_serve(self, steal: bool) -> None:
        self._set_state(ConsoleState.CONNECTING, f"{self.console.host}:{self.console.port}")
        async with self._setup_slots:
            if self._stopping.is_set():
                return
            client = await IpmiClient.connect(self.console.target())
            self._client = client
            try:
                self._set_state(ConsoleState.ACTIVATING, "")
                activation = await self._activate(client, steal)
            except BaseException:
                await self._close_client(client, deactivate=False)
                self._retire_client(client)
                raise
        if self._stopping.is_set():  # stop() came during the handshake: free the BMC
            await self._close_client(client, deactivate=True)
            self._retire_client(client)
            return
        try:
            await self._serve(client, activation)
        finally:
            self._retire_client(client)

    def _retire_client(self, client: IpmiClient) -> None:
        _add_into(self.drop_totals, client.dropped)
        if self._client is client:
            self._client = None

    async def _activate(self, client: IpmiClient, steal: bool) -> SolActivation:
        try:
            return await client.activate_sol()
        except PayloadActiveElsewhere as exc:
            if not steal:
                raise
            if self._steal_check is not None and not await self._steal_check(self.name):
                raise  # the console is no longer ours: leave the other session alone
            holder = await self._holder(client)
            why = "steal = true" if self.console.steal else "requested by an operator"
            self._record("deactivate", f"SOL was held by {holder}; forcing deactivate ({why})")
            await client.deactivate_sol()
            await asyncio.sleep(STEAL_SETTLE)
            try:
                return await client.activate_sol()
            except PayloadActiveElsewhere:
                raise exc from None

    async def _holder(self, client: IpmiClient) -> str:
        try:
            info = await client.payload_instance_info()
        except SolgateError:
            return "another session"
        owner = info.owner_session_id
        return f"session 0x{owner:08x}" if owner else "another session"

    async def _serve(self, client: IpmiClient, activation: SolActivation) -> None:
        loop = self._loop = asyncio.get_running_loop()
        target = self.console.target()
        retry_interval = max(0.5, min(target.retransmit_timeout, 2.0))
        stream = SolStream(
            "console",
            max_chars=activation.max_characters,
            retry_interval=retry_interval,
            # Keystrokes are resent for as long as the session may live (session_timeout).
            max_retries=max(10, math.ceil(target.session_timeout / retry_interval)),
        )
        self._stream = stream
        self._ended = loop.create_future()
        client.set_sol_handler(self._on_sol_payload)
        suite = client.session.suite
        self.cipher_suite = suite.id if suite is not None else None
        self._set_state(ConsoleState.ACTIVE, f"cipher suite {self.cipher_suite}")
        self._record("sol-up", f"SOL up (cipher suite {self.cipher_suite})")
        keepalive = loop.create_task(self._keepalive(client), name=f"keepalive:{self.name}")
        closed = loop.create_task(self._watch_session(client), name=f"session:{self.name}")
        ended: _ActivationEnded
        try:
            ended = await self._ended
        finally:
            keepalive.cancel()
            closed.cancel()
            client.set_sol_handler(None)
            self._cancel_timer()
            _add_into(self.sol_totals, stream.counters)
            self._stream = None
            self._pump_panic_flush()
        self._record("sol-down", f"SOL down: {ended.reason}")
        self._set_state(ConsoleState.BACKOFF, ended.reason)
        await self._close_client(client, deactivate=ended.deactivate or self._stopping.is_set())

    async def _close_client(self, client: IpmiClient, *, deactivate: bool) -> None:
        with contextlib.suppress(SolgateError, OSError, TimeoutError):
            if deactivate:
                await asyncio.wait_for(client.deactivate_sol(), 3.0)
        with contextlib.suppress(SolgateError, OSError, TimeoutError):
            await asyncio.wait_for(client.close(), 2.0)

    async def _keepalive(self, client: IpmiClient) -> None:
        """Drive `Liveness`: ask keepalives when due, end SOL only when it says dead."""
        loop = asyncio.get_running_loop()
        liveness = Liveness(keepalive_interval=self.console.keepalive_interval,
                            dead_after=self.console.session_timeout, now=loop.time(),
                            jitter=lambda: 0.9 + 0.1 * self._rng.random())
        our_session = client.session.bmc_session_id
        asking: asyncio.Task[PayloadInstanceInfo] | None = None
        try:
            while True:
                deadline = liveness.next_deadline()
                wait = None if deadline is None else max(0.0, deadline - loop.time())
                if asking is not None:
                    await asyncio.wait({asking}, timeout=wait)
                elif wait is not None:
                    await sleep_on_grid(wait)
                else:
                    return
                now = loop.time()
                if client.terminated.done():
                    return  # `_watch_session` reports why the session ended
                if asking is not None and asking.done():
                    task, asking = asking, None
                    ended = self._keepalive_result(task, liveness, our_session, now)
                    if ended is not None:
                        self._end(ended)
                        return
                liveness.authenticated(client.last_received)
                liveness.handle_timeout(now)
                while (event := liveness.next_event()) is not None:
                    match event:
                        case SessionDead(reason=reason):
                            self._end(_ActivationEnded(reason))
                            return
                        case KeepaliveDue():
                            liveness.keepalive_sent(now)
                            asking = loop.create_task(client.payload_instance_info(),
                                                      name=f"keepalive-ask:{self.name}")
        finally:
            if asking is not None:
                asking.cancel()

    def _keepalive_result(self, task: asyncio.Task[PayloadInstanceInfo], liveness: Liveness,
                          our_session: int, now: float) -> _ActivationEnded | None:
        """Feed one keepalive's outcome to `liveness`; a foreign SOL owner ends SOL."""
        exc = task.exception()
        if isinstance(exc, SolgateTimeoutError):
            liveness.keepalive_unanswered(now)
            level = logging.INFO if liveness.unanswered == 1 else logging.DEBUG
            self._logger.log(level, "%s: keepalive unanswered (%d in a row); asking again, "
                             "SOL stays up while the BMC keeps sending", self.name,
                             liveness.unanswered)
            return None
        if exc is not None:
            if not isinstance(exc, SolgateError):
                raise exc
            # An answer, if not the one asked for: the BMC holds the session.
            self._logger.debug("%s: keepalive answered with an error: %s", self.name, exc)
            liveness.keepalive_answered(now)
            return None
        owner = task.result().owner_session_id
        if owner != our_session:
            who = f"session 0x{owner:08x}" if owner else "nobody"
            return _ActivationEnded(f"SOL now held by {who}, not by us")
        liveness.keepalive_answered(now)
        return None

    async def _watch_session(self, client: IpmiClient) -> None:
        ended = await asyncio.shield(client.terminated)
        why = f"{ended.reason}: {ended.error}" if ended.error else ended.reason
        self._end(_ActivationEnded(f"session ended ({why})"))

    def _end(self, ended: _ActivationEnded) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(ended)

    # --- the SOL data path (synchronous, no awaits) --------------------------------------

    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def _on_sol_payload(self, payload: bytes) -> None:
        stream = self._stream
        if stream is None:
            return
        stream.receive_payload(payload, self._now())
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        stream = self._stream
        if stream is None:
            return
        stream.handle_timeout(self._now())
        self._pump()

    def _pump(self) -> None:
        """Handle the stream's events first (log, hub), then hand its packets to the socket."""
        stream, client = self._stream, self._client
        if stream is None or client is None:
            return
        while (event := stream.next_event()) is not None:
            match event:
                case DataReceived(data=data):
                    self._on_output(data)
                case StreamStalled(reason=reason):
                    self._end(_ActivationEnded(f"SOL stalled: {reason}"))
                case PeerDeactivating():
                    self._end(_ActivationEnded("BMC deactivated SOL"))
                case TransferUnavailable(on=on):
                    self.hub.set_state(str(self.state), "character transfer unavailable"
                                       if on else "")
                case BreakRequested():
                    pass
        for payload in stream.payloads_to_send():
            client.send_sol(payload)
        self._arm_timer(stream.next_deadline())

    def _arm_timer(self, deadline: float | None) -> None:
        if deadline is None:
            self._cancel_timer()
            return
        if self._timer is not None:
            if self._timer.when() == deadline:
                return
            self._timer.cancel()
        self._timer = (self._loop or asyncio.get_running_loop()).call_at(deadline,
                                                                         self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_output(self, data: bytes) -> None:
        self.log.write(data)
        self.bytes_in += len(data)
        self.last_output = now = self._wall()
        for incident in self.panic.feed(data, now):
            self._on_panic(incident)
        self.hub.publish(data)

    def _pump_panic_flush(self) -> None:
        for incident in self.panic.flush(self._wall()):
            self._on_panic(incident)

    def _on_panic(self, incident: PanicEvent) -> None:
        self.panic_count += 1
        self.log.event(f"PANIC ({incident.severity}): {incident.line}")
        now = self._wall()
        ident = bundle_id(self.name, now)
        record = self.events.append(
            "panic", self.name, severity=incident.severity, pattern=incident.pattern,
            message=incident.line, context=list(incident.context), bundle=ident,
        )
        self._start_bundle(ident, record, now)
        command, webhook = self.console.on_panic_command, self.console.on_panic_webhook
        if command or webhook:
            task = asyncio.get_running_loop().create_task(
                run_panic_hooks(self.name, command, webhook, record,
                                pass_env=self.console.on_panic_pass_env,
                                log_path=str(self.log.path)),
                name=f"hooks:{self.name}")
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_tasks.discard)

    def _start_bundle(self, ident: str, record: dict[str, Any], now: float) -> None:
        """Gather the panic bundle (SEL, chassis status, screen; see bundle.py) meanwhile;
        one at a time per console, so a panic storm does not hammer the BMC."""
        if self._bundle_tasks:
            return
        task = asyncio.get_running_loop().create_task(
            collect_bundle(ident=ident, console=self.name, record=record, panic_time=now,
                           client=lambda: self._client, log_path=self.log.path,
                           data_dir=self.events.path.parent),
            name=f"bundle:{self.name}")
        self._bundle_tasks.add(task)
        task.add_done_callback(self._bundle_tasks.discard)

    def check_log_health(self) -> None:
        """Called by the shared tick: report a failing log disk once, and its recovery."""
        error = self.log.error
        if error == self._log_error_reported:
            return
        self._log_error_reported = error
        if error:
            message = f"console log cannot be written ({error}); output is kept in memory " \
                      "and retried, SOL stays up"
        else:
            message = "console log writable again"
        self._logger.warning("%s: %s", self.name, message)
        self.events.append("log-error" if error else "log-ok", self.name, message=message)
        self.hub.set_state(str(self.state), message if error else self.state_detail)

    # --- states and records --------------------------------------------------------------

    def _set_state(self, state: ConsoleState, detail: str) -> None:
        if state != self.state or detail != self.state_detail:
            if state != self.state:
                self.state_since = self._wall()
                self._logger.info("%s: %s %s", self.name, state, detail)
            self.state = state
            self.state_detail = detail
            self.hub.set_state(str(state), detail)

    def _hub_event(self, kind: str, user: str, message: str) -> None:
        self._record(kind, message, user=user)

    def _record(self, kind: str, message: str, **fields: object) -> None:
        self.log.event(message)
        self.events.append(kind, self.name, message=message, **fields)


def _add_into(totals: dict[str, int], counts: dict[str, int]) -> None:
    for key, value in counts.items():
        totals[key] = totals.get(key, 0) + value


def _summed(totals: dict[str, int], live: dict[str, int]) -> dict[str, int]:
    out = dict(totals)
    _add_into(out, live)
    return out
