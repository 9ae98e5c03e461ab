"""One console's shell: the BMC session, the SOL stream and one timer, run for the lifecycle core.

Theory of operation
-------------------
What a console does next (connect, activate SOL, steal it or take it over from a dead
cluster member, keep it alive, back off, reconnect, stop) is decided by the sans-I/O
`ConsoleLifecycle` (`console/lifecycle.py`, which has the states, the transition table
and the numbers). A `ConsoleWorker` executes its actions and feeds back what happened,
with `loop.time()`:

* `run()` pulls the core's actions one at a time: awaited ones (the setup slot, the
  handshake through `IpmiClient`, Activate Payload, the forced deactivate of a steal or
  a takeover, the close) are awaited in turn and their outcome fed back; when there is
  nothing to do it waits for the next input.
* One timer (`DeadlineTimer`, one `call_at`) serves three sans-I/O cores: the IPMI
  session (`ClientSession`: handshake and request retransmits; the `IpmiClient` is
  built with this timer and arms it), the `SolStream` (retransmits) and the lifecycle
  core (backoff, steal settle, keepalive and dead-session deadlines). It is armed for
  the earliest of their `next_deadline()`s; on wake, each core whose deadline is due
  gets `handle_timeout(now)`. A keepalive question is sent at once
  (`IpmiClient.send_request`) and its answer's future is fed back, so the timer knows
  its retransmit deadline before the worker waits.

The route of one console byte: the UDP socket (`udp_pool.py`) -> `IpmiClient` (opens
the datagram) -> `sol_received` here (the client was built with this worker as its
`SolReceiver`) -> `SolStream` -> `_on_output`: appended to the log first, then
published to the hub (`Hub.publish`), which writes it to each viewer; the panic
detector gets it `PANIC_BATCH` bytes at a time (what waits, on the manager's next
tick). A keystroke goes back: viewer -> `Hub.keyboard` -> `send_input` here (the hub was
built with this worker as its `HubConsole`) -> `SolStream` -> `IpmiClient.send_sol`.
On that Python path the stream's ACK is handed to the socket only after the byte is
logged and published. The common datagram of a flood (an in-order data packet, nothing
else in it) takes the compiled fast path instead (`ipmi/fastpath.py`, armed by
`_serve` through `IpmiClient.attach_fast_path` while the stream is quiet): the shared
socket hands it to one C call that checks, decrypts, ACKs and buffers it, and the
buffered bytes come to `_on_batch` (`_on_output`, with the hub writing to live viewers
at once) in batches: on the loop's next turn for the first
after arming (where a keystroke's echo lands) or after a quiet spell, else within
`fastpath.FLUSH_DELAY` (100 ms; sooner past 8 KiB). So
there the ACK goes out before the bytes are logged: in a flood they sit in solgate's
memory for up to 100 ms, and a crash in that window loses them (the BMC will not resend
what was ACKed). The price buys one log write, one panic-detector feed and one
WebSocket frame per batch instead of per packet (docs/benchmarks.md, "The compiled
packet path"). Anything uncommon (an ACK of our keystrokes, changed status bits, a
retransmission, an IPMI answer) disarms the fast path, whose buffered bytes are
delivered first, and runs the Python path; so do keystrokes, breaks and the timer here,
before they touch the stream. A stream
that stalls, a BMC that deactivates SOL, or a session that terminates ends the activation
(`ConsoleLifecycle.ended`); the core logs "SOL down" with the reason and reconnects after
a backoff with jitter. Every state has the time it was entered and the last error in
words, for the web page and `/metrics`. The keepalive waits end on a one-second grid
(`on_grid`), so a thousand consoles share a loop wake-up per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from solgate.config.consoles import ConsoleConfig
from solgate.console.bundle import bundle_id, collect_bundle
from solgate.console.events import EventLog
from solgate.console.hooks import run_panic_hooks
from solgate.console.hub import Hub
from solgate.console.lifecycle import (
    AcquireSlot,
    Action,
    ActivateSol,
    AskKeepalive,
    CloseSession,
    ConsoleLifecycle,
    ConsoleState,
    DropStream,
    Note,
    OpenSession,
    Phase,
    ReleaseSlot,
    StateChanged,
    StealSol,
    TakeOverSol,
    classify,
)
from solgate.console.log import ConsoleLog
from solgate.console.panic import PanicDetector, PanicEvent
from solgate.errors import CommandError, SolgateError, SolgateTimeoutError
from solgate.ipmi import commands
from solgate.ipmi.codec import IpmiMessage
from solgate.ipmi.commands import SolActivation
from solgate.ipmi.fastpath import FastPath
from solgate.ipmi.session import SessionTerminated
from solgate.ipmi.sol import (
    BreakRequested,
    DataReceived,
    PeerDeactivating,
    SolStream,
    StreamStalled,
    TransferUnavailable,
)
from solgate.ipmi.transport import DeadlineTimer, IpmiClient

KEEPALIVE_GRID = 1.0  # keepalive wake-ups land on multiples of this (loop clock), see below
# Console bytes gathered before the panic detector sees them (see `_on_output`): at
# 115200 baud (11.5 KB/s) the manager's tick feeds what gathered once a second, one
# skim per second instead of one per 2 KiB; a faster flood is skimmed every 16 KiB.
PANIC_BATCH = 16384


def on_grid(at: float, grid: float = KEEPALIVE_GRID) -> float:
    """The first multiple of `grid` at or after `at`.

    The worker's timer, when it waits for the core's keepalive deadline, fires there:
    every console due within that second then shares one loop wake-up, and the requests
    (and answers) go out and come back in bursts the loop takes per wake-up, instead of
    one wake-up each. The interval's jitter still spreads consoles over the seconds; a
    keepalive is at most `grid` late.
    """
    return math.ceil(at / grid) * grid


# Backoff and keepalive jitter of every worker without an `rng` of its own: seeding a
# Random costs more than the rest of a worker's creation (a failover creates thousands).
_JITTER = random.Random()  # noqa: S311 - jitter, not crypto

# ConsoleState lives in lifecycle.py; manager.py takes it from here.
__all__ = ["KEEPALIVE_GRID", "ConsoleState", "ConsoleWorker", "on_grid"]


class ConsoleWorker:
    """Keeps one console's SOL session alive and feeds its output to log, panics and hub.

    It is the `SolReceiver` of its `IpmiClient` and the `HubConsole` of its hub: both are
    built with it. `hub` is given only when a reload replaces the worker of a console whose
    viewers stay attached; the hub is then handed over to this worker.
    """

    def __init__(
        self,
        console: ConsoleConfig,
        *,
        log: ConsoleLog,
        events: EventLog,
        panic: PanicDetector,
        setup_slots: asyncio.Semaphore,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        steal_check: Callable[[str], Awaitable[bool]] | None = None,
        hub: Hub | None = None,
    ) -> None:
        self.console = console
        self.name = console.name
        self.hub = Hub(console.name, console=self) if hub is None else hub.hand_over(self)
        self.log = log
        self.events = events
        self.panic = panic
        self._setup_slots = setup_slots
        self._wall = wall_clock
        # In a cluster: asked before forcing another session off SOL (does this member
        # still own the console?), so two members never fight over one BMC.
        self._steal_check = steal_check
        self._rng = rng or _JITTER
        self._logger = logging.LoggerAdapter(
            logging.getLogger("solgate.worker"),
            {"console": console.name},
        )
        self.life = ConsoleLifecycle(
            host=f"{console.host}:{console.port}", steal=console.steal,
            reconnect_max=console.reconnect_max,
            keepalive_interval=console.keepalive_interval,
            session_timeout=console.session_timeout, rng=self._rng)
        self.state = ConsoleState.STOPPED
        self.state_since = self._wall()
        self.state_detail = ""
        self.tags: tuple[str, ...] = tuple(console.tags)
        self.last_output: float | None = None
        self._panic_pending: list[bytes] = []  # logged, not yet fed to the panic detector
        self._panic_pending_bytes = 0
        self.panic_count = 0
        self.bytes_in = 0
        self.bytes_out = 0
        # SOL stream counters and dropped-datagram counts of finished activations and
        # sessions; `sol_counters()` / `datagram_drops()` add the live ones (for /metrics).
        self.sol_totals: dict[str, int] = {}
        self.drop_totals: dict[str, int] = {}
        self.cipher_suite: int | None = None
        self._client: IpmiClient | None = None  # established, for commands and SOL
        # The session the timer runs timeouts for: connecting, established or closing.
        self._session: IpmiClient | None = None
        self._stream: SolStream | None = None
        self._timer = DeadlineTimer(self._on_timer)  # the one timer (module docstring)
        # The loop `run` runs on, for the per-packet path: asyncio.get_running_loop()
        # costs a getpid() system call each time.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()  # the core has new actions for `run`
        self._slot_held = False
        self._asking: asyncio.Future[IpmiMessage] | None = None  # the keepalive's answer
        self._task: asyncio.Task[None] | None = None
        self._hook_tasks: set[asyncio.Task[list[str]]] = set()
        self._bundle_tasks: set[asyncio.Task[Path]] = set()
        self._log_error_reported: str | None = None

    @property
    def log_path(self) -> Path:
        return self.log.path

    @property
    def reconnects(self) -> int:
        """Tries after the first (the core counts them)."""
        return self.life.reconnects

    def sol_counters(self) -> dict[str, int]:
        """`SolStream.counters` summed over this worker's life, the live activation included."""
        stream = self._stream
        live = dict(stream.counters) if stream is not None else {}
        client = self._client
        if client is not None and client.fastpath is not None:  # counts the C side keeps
            live.update(_fast_counts(client.fastpath))
        return _summed(self.sol_totals, live)

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
        self.life.stop(self._now())
        self._kick()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    def take_over(self, previous: str) -> None:
        """A cluster member just won this console from `previous`, whose lease expired:
        deactivate its stale SOL session before activating (see `ConsoleLifecycle`)."""
        self.life.take_over(previous)

    def send_input(self, data: bytes) -> None:
        """Keystrokes from the write-lock holder; dropped (and counted) when not active."""
        stream = self._stream
        if stream is None or self.state != ConsoleState.ACTIVE:
            return
        self._disarm()
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
        self._disarm()
        stream.send_break(self._now())
        self._pump()
        self.record("break", f"serial BREAK sent by {user or 'unknown'}", user=user)
        return True

    def reconnect(self, *, force_deactivate: bool, user: str = "") -> None:
        """End the current activation (optionally forcing a deactivate) and start over now."""
        why = f"reconnect requested by {user or 'unknown'}"
        self.record("deactivate", f"forced deactivate and reconnect by {user or 'unknown'}",
                    user=user)
        self.life.reconnect(force_deactivate=force_deactivate, reason=why, now=self._now())
        self._kick()

    def flush_panics(self, now: float) -> None:
        """Feed the detector what output waits, and release panic events whose context is
        complete by `now` (the manager's tick)."""
        if self._panic_pending:
            self._feed_panic()
        deadline = self.panic.next_deadline()
        if deadline is not None and deadline <= now:
            for incident in self.panic.flush(now):
                self._on_panic(incident)

    # --- the shell: execute the core's actions ------------------------------------------

    async def run(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        life = self.life
        try:
            if life.phase is Phase.IDLE:
                life.start(loop.time())
            while True:
                action = life.next_action()
                if action is None:
                    if life.phase is Phase.STOPPED:
                        break
                    self._arm_timer()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._execute(action)
        finally:
            self._cancel_timer()
            self._drop_stream()
            client, self._client = self._client, None
            if client is not None:  # cancelled mid-step (stop() timed out): free the port
                with contextlib.suppress(asyncio.CancelledError):
                    await self._close_client(client, deactivate=False)
                _add_into(self.drop_totals, client.dropped)
            self._session = None
            if self._slot_held:
                self._slot_held = False
                self._setup_slots.release()
            self._set_state(ConsoleState.STOPPED, "")
            self.log.close()

    async def _execute(self, action: Action) -> None:
        life = self.life
        match action:
            case StateChanged(state=state, detail=detail):
                self._set_state(state, detail)
            case Note(kind=kind, message=message):
                self.record(kind, message)
            case AcquireSlot():
                await self._setup_slots.acquire()
                self._slot_held = True
                life.slot_acquired(self._now())
            case ReleaseSlot():
                if self._slot_held:
                    self._slot_held = False
                    self._setup_slots.release()
            case OpenSession():
                client = self._session = IpmiClient(self.console.target(), sol=self,
                                                    timer=self._timer)
                try:
                    await client.establish()
                except (SolgateError, OSError) as exc:
                    self._session = None
                    self._failed(exc)
                else:
                    self._client = client
                    life.connected(self._now())
            case ActivateSol():
                await self._activate(self._require_client())
            case StealSol(why=why):
                client = self._require_client()
                if not await self._still_ours():
                    return
                holder = await self._holder(client)
                self.record("deactivate",
                            f"SOL was held by {holder}; forcing deactivate ({why})")
                try:
                    await client.deactivate_sol()
                except (SolgateError, OSError) as exc:
                    self._failed(exc)
                else:
                    life.stolen(self._now())
            case TakeOverSol():
                client = self._require_client()
                if not await self._still_ours():
                    return
                try:
                    deactivated = await client.deactivate_sol()
                except CommandError as exc:  # answered, refused: the activation decides
                    life.taken_over(self._now(), deactivated=False, refused=str(exc))
                except (SolgateError, OSError) as exc:
                    self._failed(exc)
                else:
                    life.taken_over(self._now(), deactivated=deactivated)
            case AskKeepalive():
                self._ask_keepalive(self._require_client())
            case DropStream():
                self._drop_stream()
            case CloseSession(deactivate=deactivate):
                closing, self._client = self._client, None
                if closing is not None:
                    closing.terminated.remove_done_callback(self._session_ended)
                    await self._close_client(closing, deactivate=deactivate)
                    _add_into(self.drop_totals, closing.dropped)
                self._session = None
                life.closed(self._now())

    async def _still_ours(self) -> bool:
        """In a cluster, asked before forcing any session off SOL (a steal or a takeover);
        a refusal is fed to the core, which leaves the holder be."""
        if self._steal_check is None or await self._steal_check(self.name):
            return True
        self.life.steal_refused(self._now())
        return False

    def _failed(self, exc: SolgateError | OSError) -> None:
        kind = classify(exc, self.console.host)
        if kind is None:  # pragma: no cover - classify knows both types
            raise exc
        self.life.failed(kind[0], kind[1], self._now())

    async def _activate(self, client: IpmiClient) -> None:
        try:
            activation = await client.activate_sol()
        except (SolgateError, OSError) as exc:
            self._failed(exc)
            return
        suite = client.session.suite
        cipher_suite = suite.id if suite is not None else None
        self.life.activated(self._now(), our_session=client.session.bmc_session_id,
                            cipher_suite=cipher_suite)
        if self.life.phase is Phase.ACTIVE:
            self.cipher_suite = cipher_suite
            self._serve(client, activation)

    async def _holder(self, client: IpmiClient) -> str:
        try:
            info = await client.payload_instance_info()
        except SolgateError:
            return "another session"
        owner = info.owner_session_id
        return f"session 0x{owner:08x}" if owner else "another session"

    def _serve(self, client: IpmiClient, activation: SolActivation) -> None:
        """SOL is up: a stream for it, and the session's end reported to the core."""
        target = self.console.target()
        retry_interval = max(0.5, min(target.retransmit_timeout, 2.0))
        self._stream = SolStream(
            "console",
            max_chars=activation.max_characters,
            retry_interval=retry_interval,
            # Keystrokes are resent for as long as the session may live (session_timeout).
            max_retries=max(10, math.ceil(target.session_timeout / retry_interval)),
        )
        client.terminated.add_done_callback(self._session_ended)
        # The common datagram through one compiled call (ipmi/fastpath.py), made at the
        # first SOL datagram (a console that never prints carries none); its bytes come to
        # `_on_batch` in batches. Never on the pure-Python path.
        client.attach_fast_path(self._stream, self._on_batch, lazy=True)

    def _drop_stream(self) -> None:
        """The activation is over: stop asking and feeding the stream, count it, flush panics."""
        asking, self._asking = self._asking, None
        if asking is not None:
            asking.cancel()
        for client in (self._client, self._session):
            if client is not None and client.fastpath is not None:
                _add_into(self.sol_totals, _fast_counts(client.fastpath))
                client.detach_fast_path()  # its buffered bytes first, then the counts
        stream, self._stream = self._stream, None
        if stream is None:
            return
        _add_into(self.sol_totals, stream.counters)
        self._pump_panic_flush()

    async def _close_client(self, client: IpmiClient, *, deactivate: bool) -> None:
        with contextlib.suppress(SolgateError, OSError, TimeoutError):
            if deactivate:
                await asyncio.wait_for(client.deactivate_sol(), 3.0)
        with contextlib.suppress(SolgateError, OSError, TimeoutError):
            await asyncio.wait_for(client.close(), 2.0)

    def _session_ended(self, future: asyncio.Future[SessionTerminated]) -> None:
        if future.cancelled() or self._stream is None:
            return
        ended = future.result()
        why = f"{ended.reason}: {ended.error}" if ended.error else ended.reason
        self._end(f"session ended ({why})")

    def _ask_keepalive(self, client: IpmiClient) -> None:
        """Send Get Payload Instance Info now (no task: the answer's future calls back
        `_keepalive_done`, and the timer knows the retransmit deadline at once)."""
        try:
            answer = client.send_request(commands.get_payload_instance_info())
        except SolgateError as exc:  # the session has just ended: same way as an answer
            answer = self._require_loop().create_future()
            answer.set_exception(exc)
        self._asking = answer
        answer.add_done_callback(self._keepalive_done)

    def _keepalive_done(self, answer: asyncio.Future[IpmiMessage]) -> None:
        """Feed one keepalive's outcome to the core (a stale or cancelled one is dropped)."""
        if answer.cancelled():
            return
        exc = answer.exception()  # retrieved even when stale, so asyncio does not complain
        if answer is not self._asking or self.life.phase is not Phase.ACTIVE:
            return
        self._asking = None
        now, life = self._now(), self.life
        owner = 0
        if exc is None:
            try:
                owner = commands.parse_payload_instance_info(
                    answer.result(), self._require_client().target.label).owner_session_id
            except SolgateError as error:
                exc = error
        if isinstance(exc, SolgateTimeoutError):
            life.keepalive_unanswered(now)
            level = logging.INFO if life.unanswered == 1 else logging.DEBUG
            self._logger.log(level, "%s: keepalive unanswered (%d in a row); asking again, "
                             "SOL stays up while the BMC keeps sending", self.name,
                             life.unanswered)
        elif isinstance(exc, SolgateError):
            # An answer, if not the one asked for: the BMC holds the session.
            self._logger.debug("%s: keepalive answered with an error: %s", self.name, exc)
            life.keepalive_refused(now)
        elif exc is not None:
            self._logger.error("%s: keepalive failed", self.name, exc_info=exc)
            life.keepalive_unanswered(now)
        else:
            life.keepalive_answered(owner, now)
        client = self._client
        if client is not None and life.phase is Phase.ACTIVE:
            life.authenticated(client.last_received)
        life.handle_timeout(now)  # an unanswered one is asked again now, off the grid
        self._kick()

    def _end(self, reason: str) -> None:
        self.life.ended(reason, self._now())
        self._kick()

    def _kick(self) -> None:
        """After an input: wake `run` if the core has actions (it arms the timer once they
        are done), else follow the core's deadline now."""
        if self.life.has_actions:
            self._wake.set()
        else:
            self._arm_timer()

    def _require_client(self) -> IpmiClient:
        if self._client is None:
            raise SolgateError(f"{self.name}: no session for a step that needs one")
        return self._client

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # --- the SOL data path (synchronous, no awaits) --------------------------------------

    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def sol_received(self, payload: bytes) -> None:
        """A SOL payload from the session (`SolReceiver`); none is taken between activations."""
        stream = self._stream
        if stream is None:
            return
        stream.receive_payload(payload, self._now())
        self._pump()

    def _on_timer(self, now: float) -> None:
        """The one timer: each core whose deadline is due at `now` runs its timeouts."""
        self._disarm()  # the cores below, and liveness, read what the fast path owns
        session = self._session
        if session is not None:
            at = session.next_deadline()
            if at is not None and at <= now:
                session.handle_timeout(now)
        stream = self._stream
        if stream is not None:
            at = stream.next_deadline()
            if at is not None and at <= now:
                stream.handle_timeout(now)
                self._pump()
        life, client = self.life, self._client
        if client is not None and life.phase is Phase.ACTIVE:
            life.authenticated(client.last_received)
        life.handle_timeout(now)
        self._kick()

    def _disarm(self) -> None:
        """Before the worker itself uses the stream: the fast path gives its state back."""
        if self._client is not None:
            self._client.disarm_fast_path()

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
                    self._end(f"SOL stalled: {reason}")
                case PeerDeactivating():
                    self._end("BMC deactivated SOL")
                case TransferUnavailable(on=on):
                    self.hub.set_state(str(self.state), "character transfer unavailable"
                                       if on else "")
                case BreakRequested():
                    pass
        for payload in stream.payloads_to_send():
            client.send_sol(payload)
        self._timer.arm(stream.next_deadline())  # only the stream's deadline moved

    def _arm_timer(self) -> None:
        """Set the one timer at the earliest of the core's, the session's and the stream's
        deadlines (after a lifecycle input; a packet only arms it earlier, in `_pump`
        and `IpmiClient`)."""
        deadline = self.life.next_deadline()
        if deadline is not None and self._stream is not None and self._asking is None:
            deadline = on_grid(deadline)  # the keepalive's wait: share the second's wake-up
        for core in (self._stream, self._session):
            if core is not None:
                at = core.next_deadline()
                if at is not None and (deadline is None or at < deadline):
                    deadline = at
        self._timer.set(deadline)

    def _cancel_timer(self) -> None:
        self._timer.cancel()

    def _on_batch(self, data: bytes) -> None:
        """The fast path's gathered output: as `_on_output`, written to viewers at once."""
        self._on_output(data, batch=True)

    def _on_output(self, data: bytes, *, batch: bool = False) -> None:
        """Console bytes: to the log at once (before the BMC gets our ACK), to the hub, and
        to the panic detector `PANIC_BATCH` bytes at a time: one skim per few packets
        instead of one per packet in a flood. What waits is fed on the manager's next
        tick (a second at most) or when the activation ends, with the time of its last
        byte; a panic's event waits for its after-context (seconds) anyway."""
        self.log.write(data)
        self.bytes_in += len(data)
        self.last_output = self._wall()
        self._panic_pending.append(data)
        self._panic_pending_bytes += len(data)
        if self._panic_pending_bytes >= PANIC_BATCH:
            self._feed_panic()
        self.hub.publish(data, batch=batch)

    def _feed_panic(self) -> None:
        pending, self._panic_pending = self._panic_pending, []
        self._panic_pending_bytes = 0
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        for incident in self.panic.feed(data, self.last_output or self._wall()):
            self._on_panic(incident)

    def _pump_panic_flush(self) -> None:
        if self._panic_pending:
            self._feed_panic()
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

    def viewer_event(self, kind: str, user: str, message: str) -> None:
        """Who attached, left or took the write lock (`HubConsole`): an audit record."""
        self.record(kind, message, user=user)

    def record(self, kind: str, message: str, **fields: Any) -> None:
        """An audit record: in the console's log and events.jsonl."""
        self.log.event(message)
        self.events.append(kind, self.name, message=message, **fields)


def _fast_counts(fast: FastPath) -> dict[str, int]:
    """The counters the compiled fast path keeps in C, as `sol_counters` names them."""
    return {"fast_path_packets": fast.handled, "fast_path_ack_failures": fast.ack_failures}


def _add_into(totals: dict[str, int], counts: dict[str, int]) -> None:
    for key, value in counts.items():
        totals[key] = totals.get(key, 0) + value


def _summed(totals: dict[str, int], live: dict[str, int]) -> dict[str, int]:
    out = dict(totals)
    _add_into(out, live)
    return out
