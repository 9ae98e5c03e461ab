"""The asyncio shell around `ClientSession`: a UDP port, futures for answers, a timer.

Theory of operation
-------------------
This and its socket pool (`udp_pool.py`) are the only asyncio code in `solgate/ipmi/`
(STYLE.md item 2). A `DatagramProtocol`
hands every datagram to the sans-I/O `ClientSession` with `loop.time()`, then `_process`
sends what the core queued and turns its events into results:

* `SessionEstablished` resolves the future `IpmiClient.connect` waits on;
* `ResponseReceived` / `RequestTimedOut` resolve the future of that request;
* `SolPayloadReceived` goes to the `SolReceiver` given at construction (a console
  worker, which feeds its SOL stream);
* `SessionTerminated` fails every pending future with its error (or `SessionClosedError`),
  resolves `terminated`, and closes the socket.

While a console's SOL stream is quiet, its common data datagrams skip all of this: the
shared socket hands them to the compiled fast path (`fastpath.py`, attached by the
worker with `attach_fast_path`), and this shell disarms it before anything else touches
the session: a datagram it declines, a request, a SOL send, a timeout, close.

Sockets are shared (`udp_pool.py`): up to `CLIENTS_PER_SOCKET` sessions (to different BMC
addresses) use one unconnected UDP socket, and its datagrams are routed by source address;
anything from an address with no session is dropped. Thousands of consoles then need a
few hundred descriptors, not one each.

Timers: a client alone (the CLI, a power action) has its own `DeadlineTimer`. A console
worker passes its `DeadlineTimer` instead, the one that also serves its SOL stream and its
lifecycle core: the client arms it for the session's retransmit deadlines, and the worker,
when it fires, calls `handle_timeout(now)` here if the session is due. So a console has
one loop timer, not one per shell.

`DeadlineTimer` keeps one `call_at`: arming it for a deadline later than the one already
armed changes nothing (a wake that finds nothing due re-arms for what is due next), so a
request answered before its retransmit deadline, or a SOL packet acknowledged at once,
costs no cancel and no new timer. On expiry the owner is called with
`now = max(armed time, loop.time())`, so a timer that fires a hair early still counts
as on time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from solgate.errors import (
    BmcError,
    CommandError,
    LocalProtocolError,
    ProtocolError,
    SessionClosedError,
    SolgateError,
)
from solgate.ipmi import commands
from solgate.ipmi.codec import CURRENT_CHANNEL, PAYLOAD_TYPE_MASK, IpmiMessage, PayloadType
from solgate.ipmi.commands import (
    ChassisAction,
    ChassisStatus,
    DeviceId,
    PayloadActivationStatus,
    PayloadInstanceInfo,
    Request,
    SolActivation,
    SolConfiguration,
)
from solgate.ipmi.fastpath import FastPath
from solgate.ipmi.session import (
    ClientSession,
    RequestTimedOut,
    ResponseReceived,
    SessionEstablished,
    SessionState,
    SessionTerminated,
    SolPayloadReceived,
)
from solgate.ipmi.sol import SolStream
from solgate.ipmi.target import BmcTarget
from solgate.ipmi.udp_pool import Port, SocketPool, numeric_address

log = logging.getLogger(__name__)
T = TypeVar("T")
# An RMCP+ datagram's payload type (byte 5, below the encrypted/authenticated bits) is
# SOL: a hint only, for whether to try re-arming the fast path (it checks the real state).
_SOL = int(PayloadType.SOL)
# attach_fast_path(lazy=True): the stream, where its bytes go, FastPath's options (or None)
_FastWanted = tuple[SolStream, Callable[[bytes], None], dict[str, Any] | None]


class SolReceiver(Protocol):
    """Who gets the session's SOL payloads (a console worker, for its `SolStream`)."""

    def sol_received(self, payload: bytes) -> None:
        """One verified, decrypted SOL payload (header + characters)."""


class DeadlineTimer:
    """One `call_at` for a shell that drives sans-I/O cores: armed for the earliest deadline.

    `arm(at)`, for the per-packet paths, moves the timer only when `at` is earlier than
    the time already armed; a later or vanished deadline leaves it, and the wake finds
    nothing due and arms again (module docstring). `set(at)`, for an owner that has just
    asked every core, puts it exactly at `at` (a cancel is cheaper than a wake for
    nothing). `on_wake(now)` runs the due cores and arms for what comes next.
    """

    __slots__ = ("_on_wake", "_loop", "_handle", "_at")

    def __init__(self, on_wake: Callable[[float], None],
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._on_wake = on_wake
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    @property
    def armed_at(self) -> float | None:
        return self._at

    def arm(self, at: float | None) -> None:
        """Wake at `at` at the latest (None: no new deadline)."""
        if at is None:
            return
        armed = self._at
        if armed is not None and armed <= at:
            return
        if self._handle is not None:
            self._handle.cancel()
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._at = at
        self._handle = loop.call_at(at, self._fire)

    def set(self, at: float | None) -> None:
        """Wake exactly at `at`, or not at all for None (the earliest of every deadline)."""
        if at == self._at:
            return
        if at is None:
            self.cancel()
            return
        self._at = None
        self.arm(at)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._at = None

    def _fire(self) -> None:
        at = self._at
        self._handle = self._at = None
        assert self._loop is not None  # noqa: S101 - armed on it
        now = self._loop.time()
        self._on_wake(now if at is None or now > at else at)


class IpmiClient:
    """An established RMCP+ session to one BMC (`await IpmiClient.connect(target)`).

    `sol` gets the SOL payloads; `timer` is the owner's `DeadlineTimer` when the owner
    runs the session's timeouts (a console worker), else the client keeps its own.
    """

    def __init__(self, target: BmcTarget, *, sol: SolReceiver | None = None,
                 timer: DeadlineTimer | None = None,
                 random: Callable[[int], bytes] = os.urandom,
                 logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log) -> None:
        self.target = target
        self._log = logger
        self.session = ClientSession(target, random=random, logger=logger)
        self._loop = asyncio.get_running_loop()
        self._transport: Port | None = None
        self._own_timer = timer is None
        self._timer = DeadlineTimer(self.handle_timeout, self._loop) if timer is None else timer
        self._futures: dict[int, asyncio.Future[IpmiMessage]] = {}
        self._established: asyncio.Future[SessionEstablished] = self._loop.create_future()
        self.terminated: asyncio.Future[SessionTerminated] = self._loop.create_future()
        self._socket_closed: asyncio.Future[None] = self._loop.create_future()
        self._sol = sol
        self._processing = False
        # The compiled SOL receive path while a stream runs (`attach_fast_path`); every
        # use of the session below disarms it first (fastpath.py).
        self.fastpath: FastPath | None = None
        # attach_fast_path(lazy=True) before the first SOL datagram: what to make then
        self._fast_wanted: _FastWanted | None = None

    # ------------------------------------------------------------------ life cycle

    @classmethod
    async def connect(cls, target: BmcTarget, **kwargs: Any) -> IpmiClient:
        """A client, established (`establish`); raises the handshake's error on failure."""
        client = cls(target, **kwargs)
        await client.establish()
        return client

    async def establish(self) -> None:
        """Resolve, open a UDP socket and run the handshake; on failure close, then raise."""
        try:
            await self._open()
            await asyncio.shield(self._established)
        except BaseException:
            await self.close()
            raise

    async def _open(self) -> None:
        target = self.target
        numeric = numeric_address(target.host, target.port)
        if numeric is not None:
            family, address = numeric
        else:
            try:
                infos = await self._loop.getaddrinfo(target.host, target.port,
                                                     type=socket.SOCK_DGRAM)
            except (socket.gaierror, UnicodeError) as exc:
                raise BmcError(f"cannot resolve {target.label}: {exc}: check the host name",
                               host=target.label, step="resolve") from None
            family, _, _, _, address = infos[0]
        try:
            port = await SocketPool.of(self._loop).attach(family, address, self)
        except OSError as exc:
            raise BmcError(f"cannot open a UDP socket to {target.label}: {exc}",
                           host=target.label, step="connect") from None
        self._transport = port
        self.session.start(self._loop.time())
        self._process()

    async def close(self) -> None:
        """Send Close Session (once, without waiting for the answer) and close the socket."""
        self.detach_fast_path()
        if self.session.state is not SessionState.TERMINATED:
            self.session.close(self._loop.time())
            self._process()
        self._close_transport()
        if self._transport is not None and not self._socket_closed.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._socket_closed), 1.0)
            except TimeoutError:
                pass

    async def __aenter__(self) -> IpmiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def established(self) -> bool:
        return self.session.established

    @property
    def last_received(self) -> float | None:
        """`loop.time()` of the last authenticated datagram, for keepalive decisions."""
        return self.session.last_received

    @property
    def dropped(self) -> dict[str, int]:
        return self.session.dropped

    # ------------------------------------------------------------------ requests

    async def request(self, netfn: int, cmd: int, data: bytes = b"") -> IpmiMessage:
        """Send one IPMI request and return its response (completion code not checked)."""
        request_id, future = self._send_request(netfn, cmd, data)
        try:
            return await future
        finally:
            self._futures.pop(request_id, None)

    def send_request(self, req: Request) -> asyncio.Future[IpmiMessage]:
        """Send `req` now; the future gets its response (or the timeout, or the session's
        end). For a shell that must not wait, as the worker's keepalive: no task needed,
        and the retransmit deadline is known to the timer before this returns."""
        return self._send_request(req.netfn, req.cmd, req.data)[1]

    def _send_request(self, netfn: int, cmd: int, data: bytes
                      ) -> tuple[int, asyncio.Future[IpmiMessage]]:
        self._check_open()
        self.disarm_fast_path()
        request_id = self.session.send_request(netfn, cmd, data, self._loop.time())
        future: asyncio.Future[IpmiMessage] = self._loop.create_future()
        self._futures[request_id] = future
        self._process()
        return request_id, future

    async def _call(self, req: Request, parse: Callable[[IpmiMessage, str], T]) -> T:
        return parse(await self.request(req.netfn, req.cmd, req.data), self.target.label)

    async def device_id(self) -> DeviceId:
        return await self._call(commands.get_device_id(), commands.parse_device_id)

    async def chassis_status(self) -> ChassisStatus:
        return await self._call(commands.get_chassis_status(), commands.parse_chassis_status)

    async def chassis_control(self, action: ChassisAction | str) -> None:
        if isinstance(action, str):
            action = ChassisAction[action.upper()]
        await self._call(commands.chassis_control(action), commands.parse_chassis_control)

    async def activate_sol(self, instance: int = commands.SOL_INSTANCE,
                           aux: int | None = None) -> SolActivation:
        """Activate Payload for SOL; raises `PayloadActiveElsewhere` if another session has it."""
        aux_byte = commands.sol_activate_aux(self.session.suite, aux)
        msg = await self._request(commands.activate_payload(instance, aux_byte))
        return commands.parse_activate_payload(
            msg, self.target.label, session_port=self.target.port,
            workarounds=self.target.workarounds)

    async def deactivate_sol(self, instance: int = commands.SOL_INSTANCE) -> bool:
        """True if SOL was deactivated, False if it was not active."""
        return await self._call(commands.deactivate_payload(instance),
                                commands.parse_deactivate_payload)

    async def payload_activation_status(self) -> PayloadActivationStatus:
        return await self._call(commands.get_payload_activation_status(),
                                commands.parse_payload_activation_status)

    async def payload_instance_info(self, instance: int = commands.SOL_INSTANCE
                                    ) -> PayloadInstanceInfo:
        return await self._call(commands.get_payload_instance_info(instance),
                                commands.parse_payload_instance_info)

    async def sol_config(self) -> SolConfiguration:
        """Every SOL configuration parameter the BMC answers; the others stay None."""
        params: dict[int, bytes | None] = {}
        for param in commands.SolParameter:
            if param is commands.SolParameter.SET_IN_PROGRESS:
                continue
            try:
                params[param] = await self._call(commands.get_sol_config(param),
                                                 commands.parse_sol_config)
            except (CommandError, ProtocolError):
                params[param] = None
        return SolConfiguration.from_parameters(params)

    async def cipher_suites(self, channel: int = CURRENT_CHANNEL) -> tuple[int, ...]:
        """The channel's cipher suite IDs (Get Channel Cipher Suites, optional command)."""
        records = b""
        for index in range(64):
            chunk = await self._call(commands.get_channel_cipher_suites(index, channel),
                                     commands.parse_channel_cipher_suites_chunk)
            records += chunk
            if len(chunk) < 16:
                break
        return commands.parse_cipher_suite_records(records)

    async def _request(self, req: Request) -> IpmiMessage:
        return await self.request(req.netfn, req.cmd, req.data)

    # ------------------------------------------------------------------ SOL

    def send_sol(self, payload: bytes) -> None:
        self._check_open()
        self.disarm_fast_path()
        self.session.send_sol(payload, self._loop.time())
        self._process()

    def attach_fast_path(self, stream: SolStream, deliver: Callable[[bytes], None], *,
                         lazy: bool = False, **kwargs: Any) -> FastPath | None:
        """Run `stream`'s common datagrams through the compiled path (fastpath.py), which
        hands their characters to `deliver` in batches; None on the pure-Python path.

        `lazy`: made at the stream's first SOL datagram instead (None until then), so a
        console that never prints carries no compiled object (~0.9 KB each)."""
        self.detach_fast_path()
        if self._transport is None or not self.session.established:
            return None
        if lazy:
            self._fast_wanted = (stream, deliver, kwargs or None)  # 10,000 of these
            return None
        return self._make_fast_path(stream, deliver, kwargs)

    def _make_fast_path(self, stream: SolStream, deliver: Callable[[bytes], None],
                        kwargs: dict[str, Any] | None) -> FastPath | None:
        port = self._transport
        if port is None:
            return None
        fast = FastPath.create(self.session, stream, port, deliver, self._loop, **(kwargs or {}))
        self.fastpath = fast
        if fast is not None:
            fast.try_arm()
        return fast

    def disarm_fast_path(self) -> None:
        """Before the session or the stream is used otherwise: the fast path gives its
        state back and delivers what it holds (a no-op while none runs or it is idle)."""
        if self.fastpath is not None:
            self.fastpath.disarm()

    def detach_fast_path(self) -> None:
        """The stream is over: the state goes back to it and the buffered bytes are
        delivered."""
        self._fast_wanted = None
        fast, self.fastpath = self.fastpath, None
        if fast is not None:
            fast.close()

    # ------------------------------------------------------------------ plumbing

    def _check_open(self) -> None:
        if self.terminated.done():
            raise self.terminated.result().error or SessionClosedError(
                f"the session to {self.target.label} is closed", host=self.target.label,
                step="closed")
        if not self.session.established:
            raise LocalProtocolError("the session is not established yet")

    def _datagram_received(self, data: bytes) -> None:
        """The Python path: every datagram while the fast path is disarmed, and the ones
        it declines (it then gives its state back first).

        Only a SOL datagram re-arms it: a console that is quiet but for its keepalives
        stays on this path, where a keepalive's question and answer cost no disarm and
        arm; output re-arms it at its first packet."""
        fast = self.fastpath
        if fast is not None:
            fast.disarm()
        self.session.receive_datagram(data, self._loop.time())
        self._process()
        if len(data) > 5 and data[5] & PAYLOAD_TYPE_MASK == _SOL:
            if fast is not None:
                fast.try_arm()
            elif self._fast_wanted is not None:
                stream, deliver, kwargs = self._fast_wanted
                self._fast_wanted = None
                self._make_fast_path(stream, deliver, kwargs)

    def next_deadline(self) -> float | None:
        """When the session's `handle_timeout` is next due (retransmits, the handshake)."""
        return self.session.next_deadline()

    def handle_timeout(self, now: float) -> None:
        """Run the session's due retransmits and timeouts (the timer's owner calls it)."""
        self.disarm_fast_path()
        self.session.handle_timeout(now)
        self._process()

    def _process(self) -> None:
        """Send what the core queued and dispatch its events until both are drained."""
        if self._processing:
            # A handler called back into us: what it queued (the SOL stream's ACK) goes
            # out now; the outer loop dispatches any events.
            self._send_queued()
            return
        self._processing = True
        session = self.session
        try:
            while True:
                sent = self._send_queued()
                event = session.next_event()
                if event is not None:
                    self._dispatch(event)
                elif not sent:
                    break
        finally:
            self._processing = False
        self._timer.arm(session.next_deadline())

    def _send_queued(self) -> bool:
        """Send the datagrams the core queued; whether there were any."""
        datagrams = self.session.datagrams_to_send()
        if not datagrams:
            return False
        port = self._transport
        if port is not None and not port.is_closing():
            for datagram in datagrams:
                port.sendto(datagram)
        return True

    def _dispatch(self, event: object) -> None:
        if type(event) is SolPayloadReceived:  # nearly every datagram: skip the match
            if self._sol is not None:
                try:
                    self._sol.sol_received(event.payload)
                except Exception:  # a bug upstairs must not wedge the session
                    self._log.exception("%s: SOL receiver failed", self.target.label)
            return
        match event:
            case ResponseReceived(request_id=rid, message=message):
                future = self._futures.pop(rid, None)
                if future is not None and not future.done():
                    future.set_result(message)
            case RequestTimedOut(request_id=rid, error=error):
                future = self._futures.pop(rid, None)
                if future is not None and not future.done():
                    future.set_exception(error)
            case SessionEstablished():
                if not self._established.done():
                    self._established.set_result(event)
            case SessionTerminated(error=error):
                self._terminate(event, error)

    def _terminate(self, event: SessionTerminated, error: SolgateError | None) -> None:
        exc = error or SessionClosedError(f"the session to {self.target.label} was closed",
                                          host=self.target.label, step="closed")
        futures: list[asyncio.Future[Any]] = [self._established, *self._futures.values()]
        for future in futures:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # nobody may be waiting: mark it retrieved
        if not self.terminated.done():
            self.terminated.set_result(event)
        self._close_transport()

    def _close_transport(self) -> None:
        if self._own_timer:
            self._timer.cancel()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _connection_lost(self) -> None:
        if not self._socket_closed.done():
            self._socket_closed.set_result(None)
