"""One compiled call per SOL data datagram, with the Python path as the reference.

Part of the asyncio shell, like transport.py (it keeps a batch timer on the loop it is
given); the cores it borrows state from (`ClientSession`, `SolStream`) stay sans-I/O.

Theory of operation
-------------------
In a flood nearly every datagram from the BMC is the same case: an authentic, in-order
SOL data packet with no ACK in it and the BMC's status bits unchanged. The Python path
takes ~20 interpreted steps for it (session, replay window, stream, ACK, seal, socket,
log, hub). `_speedups.SolFastPath` does that case in one C call: unseal, replay window,
SOL receive state, the ACK sealed with the next session sequence number and handed to the
socket's `sendto`, the characters appended to a buffer.

`FastPath` ties one console's `ClientSession`, `SolStream` and C object together:

* `try_arm()` hands the C object the state it then owns (the replay window, the outbound
  counter, the stream's receive state) when the stream is quiet: established session,
  nothing in flight or queued, no ACK owed, not paused or NACKing, no events waiting. The
  shared socket then routes the address's datagrams to the C object first. It is tried
  when SOL starts and after each SOL datagram the Python path took (`IpmiClient`), not
  after a keepalive: a console quiet but for its keepalives stays disarmed, so its
  keepalives cost no disarm and arm.
* A datagram the C object declines (anything else: an ACK, changed flags, a duplicate,
  an IPMI answer, a forgery...) leaves its state untouched; `disarm()` copies the state
  back into the Python objects and the ordinary Python path runs on that datagram. So the
  Python code stays the one reference for every uncommon case.
* Every other use of the session or stream (keystrokes, a keepalive or other request,
  the timer, close) disarms first; the owners call `disarm()` (`IpmiClient`,
  `ConsoleWorker`).
* Characters are delivered in batches by `flush()`, which hands them to `deliver` (the
  worker's `_on_output`: log, hub, panic detector) and sets the session's
  `last_received`. The first batch after arming (typing disarms, so this is where a
  keystroke's echo lands) and one that begins after a quiet spell are flushed on the
  loop's next turn; one that begins within `FLUSH_DELAY` of the last flush (a flood)
  waits `FLUSH_DELAY`, or less once `FLUSH_BYTES` have gathered.
  `disarm()` flushes too, so bytes keep their order with whatever the Python path
  delivers next. The ACK thus goes out before the bytes are logged: in a flood they
  wait in memory for up to 100 ms (at 115200 baud ~1,150 characters), and a crash then
  loses them although the BMC was told they arrived; a viewer of a flood is updated ten
  times a second. What that buys is one log write, one panic-detector feed and one
  WebSocket frame per batch instead of per packet: at 115200 baud CPU per MB, with the
  C socket reader, was 1.05x ipmitool's with 100 ms against 1.30x with 50 ms (~1.7-1.8x
  with a flush on every loop turn or after 10 ms; docs/benchmarks.md, "The compiled
  packet path").
* A packet whose ACK could not be sent (`sendto` raised: a transport closed under us, or
  the C reader's BlockingIOError for a send that would block) is taken all the same and
  counted (`ack_failures`): its characters come out in order, and the BMC resends, as
  for an ACK lost on the wire.

Without the compiled module (or with `SOLGATE_NATIVE=0`) `create` returns None and
nothing here runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from solgate.ipmi import crypto
from solgate.ipmi.session import ClientSession
from solgate.ipmi.sol import SolStream

log = logging.getLogger("solgate.ipmi.transport")  # the name operators filter on

FLUSH_DELAY = 0.100  # seconds a flood's characters may wait in memory before log and viewers
FLUSH_BYTES = 8192  # ... or until this many have gathered


class Loop(Protocol):
    """The parts of the event loop used here (the shell's loop; ipmi/ imports no asyncio)."""

    def time(self) -> float: ...

    def call_soon(self, callback: Callable[[], object]) -> Any: ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> Any: ...


class FastRoute(Protocol):
    """The session's share of the socket (`udp_pool.Port`): where the C object sends and
    how the socket is told to route datagrams to it."""

    def fast_sendto(self) -> tuple[Callable[[bytes, Any], object], Any]: ...

    def set_fast(self, fast: Any) -> None: ...


def available() -> bool:
    """Whether the compiled fast path can run (built, and not turned off)."""
    return crypto.sol_fast_path_available()


class FastPath:
    """The armed/disarmed state of one console's compiled SOL receive path."""

    __slots__ = ("_session", "_stream", "_route", "_deliver", "_loop", "_delay", "_c",
                 "_timer", "_delivered_at", "armed")

    def __init__(self, session: ClientSession, stream: SolStream, route: FastRoute,
                 deliver: Callable[[bytes], None], loop: Loop, *,
                 delay: float = FLUSH_DELAY, cap: int = FLUSH_BYTES) -> None:
        protector = session.protector
        if protector is None or not protector.native:
            raise ValueError("the fast path needs an established session on the compiled "
                             "packet path")
        self._session = session
        self._stream = stream
        self._route = route
        self._deliver = deliver
        self._loop = loop
        self._delay = delay
        self._c: Any = protector.sol_fast_path(self._wake, cap)
        self._timer: Any = None
        self._delivered_at = float("-inf")  # loop time of the last flush
        self.armed = False

    @classmethod
    def create(cls, session: ClientSession, stream: SolStream, route: FastRoute,
               deliver: Callable[[bytes], None], loop: Loop, **kwargs: Any
               ) -> FastPath | None:
        """A fast path for this session and stream, or None on the pure-Python path."""
        protector = session.protector
        if not available() or protector is None or not protector.native:
            return None
        return cls(session, stream, route, deliver, loop, **kwargs)

    @property
    def handled(self) -> int:
        """SOL data packets taken by the compiled path over this object's life."""
        return int(self._c.handled)

    @property
    def ack_failures(self) -> int:
        """ACKs the compiled path could not hand to the socket (the packet was taken)."""
        return int(self._c.ack_failures)

    def try_arm(self) -> bool:
        """Hand the hot state to the C object if the stream is quiet; whether it is armed."""
        if self.armed:
            return True
        session, stream = self._session, self._stream
        if not (session.quiet and stream.quiescent):
            return False
        window, outbound = session.sequence_state()
        if window.ahead > 63 or window.behind > 62:
            return False
        sendto, addr = self._route.fast_sendto()
        self._c.arm(sendto, addr, session.console_session_id, session.bmc_session_id,
                    window.highest, window.seen, window.ahead, window.behind, outbound,
                    *stream.receive_state())
        self._route.set_fast(self._c)
        self.armed = True
        # The first batch after arming is delivered at once: it is often the echo of a
        # keystroke (typing disarms; the ACK of the keystroke, on the Python path, re-arms).
        self._delivered_at = float("-inf")
        return True

    def disarm(self) -> None:
        """Give the state back to the Python objects and deliver what is buffered (while
        disarmed nothing is: every disarm flushed)."""
        if not self.armed:
            return
        self.armed = False
        self._route.set_fast(None)
        highest, seen, outbound, *rx = self._c.disarm()
        self._session.set_sequence_state(highest, seen, outbound)
        self._stream.set_receive_state(*rx)
        self.flush()

    def flush(self) -> None:
        """Hand the buffered characters to `deliver` (a batch's timer, a disarm)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        data = self._c.take()
        if data is None:
            return
        self._session.last_received = self._delivered_at = self._loop.time()
        if data:
            try:
                self._deliver(data)
            except Exception:  # as IpmiClient._dispatch: a bug upstairs must not wedge SOL
                log.exception("%s: SOL receiver failed", self._session.target.label)

    def close(self) -> None:
        """The stream is over: disarm and deliver the rest."""
        self.disarm()
        self.flush()

    def _wake(self, full: bool) -> None:
        """From the C object: a batch began (`full` False) or passed `FLUSH_BYTES`.

        The first batch after arming (the echo of a keystroke) and one that begins after
        a quiet spell (nothing delivered for `delay`) are delivered on the loop's next
        turn; one that follows a delivery closely, as in a flood, waits `delay` and
        gathers what comes."""
        if self._timer is not None:
            if full:
                self._loop.call_soon(self.flush)
            return
        if full or self._loop.time() - self._delivered_at >= self._delay:
            self._loop.call_soon(self.flush)
        else:
            self._timer = self._loop.call_later(self._delay, self.flush)
