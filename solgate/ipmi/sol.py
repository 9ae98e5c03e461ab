"""SolStream: SOL flow control (sequence numbers, ACK/NACK, retransmission), sans-I/O.

Theory of operation (ipmi-sol-protocol.md section 6.3)
------------------------------------------------------
SOL moves characters in small packets, each direction numbered on its own 4-bit counter
(1..15, wrapping 15 -> 1; 0 marks an ACK-only packet). The rules are symmetric, so one
class serves both ends: ``role="console"`` is solgate's client side and ``role="bmc"`` is
the simulated BMC. Beyond the role flag the class does not know which side it is on; the
role only picks which bit of byte 3 means "break" and whether NACKs may be sent.

Sending (one outstanding data packet per direction):
- ``send()`` / ``send_break()`` append to a bounded queue. When nothing is in flight and the
  peer has not paused us, the head of the queue goes out as ONE data packet with the next
  sequence number: at most ``max_chars`` characters, or an empty packet with the break bit
  (a break waits until every character queued before it was acknowledged, and characters
  queued after it wait for the break's ACK).
- An ACK naming our packet consumes ``count`` characters (clamped to what was sent; count 0
  with NACK clear means "all" when ``ack_count0_is_full``, until the peer has once ACKed
  with a non-zero count and NACK clear, which shows it reports real counts). Whatever was
  not accepted stays at the head of the queue and goes out as a NEW packet with the NEXT
  sequence number.
- A NACK consumes ``count`` too, then pauses new data until the peer sends any packet
  without the NACK bit, or ``nack_pause`` seconds pass.
- Without an ACK, the same packet (same sequence number, same characters, same operation
  bits) is resent every ``retry_interval`` seconds, ``max_retries`` times; after that it is
  dropped and ``StreamStalled`` says how many characters were lost. Retransmissions never
  repeat a piggybacked ACK: after the peer's counter wraps, a stale ACK would be taken for
  an ACK of a newer packet (ipmi_sim also clears the ACK fields when it resends).

Receiving:
- Every data packet (seq != 0) is ACKed with the number of characters taken; ACK-only
  packets are never ACKed. The ACK rides on our next data packet if one leaves at that
  moment (``piggyback_acks``), else it goes out as an ACK-only packet.
- A packet with the same sequence number as the last one taken is a retransmission (our
  ACK was lost): it is ACKed again and only characters beyond those already taken are
  delivered (ipmi_sim's retransmissions grow, ipmi_sim-notes quirk 11). A packet whose
  number matches one of the few before that is a stale copy and is dropped silently.
- Role "bmc" may take fewer characters than offered (``receive_capacity``): it ACKs the
  count taken with NACK set and keeps NACK on every packet until ``capacity_available()``
  sends an ACK without NACK for the same packet. An ACK taking none of a non-empty packet
  always carries NACK, and its "ready" is an informational packet: count 0 with NACK clear
  reads as "all taken" to peers using the count-0 rule. Role "console" never sends NACKs.

Invariants: characters are delivered at most once and in order; characters we send are
retried until acknowledged and lost only when retries run out (reported by
``StreamStalled``). Malformed payloads are dropped and counted, never raised.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from solgate.errors import LocalProtocolError, ProtocolError
from solgate.ipmi.sol_codec import (
    MAX_SOL_CHARACTERS,
    SolOperation,
    SolStatus,
    decode_sol,
)

Role = Literal["console", "bmc"]

NACK_PAUSE = 2.0  # seconds a NACKed sender waits for a "ready" packet before trying again
MAX_SEND_BUFFER = 64 * 1024  # characters queued toward the peer before send() refuses
STALE_HISTORY = 3  # how many earlier sequence numbers count as stale copies, not new data

# Plain ints: `int & IntFlag` runs Flag.__and__ in Python, which the per-packet path avoids.
_NACK = int(SolStatus.NACK)
_DEACTIVATING = int(SolStatus.DEACTIVATING)
_TRANSFER_UNAVAILABLE = int(SolStatus.CHARACTER_TRANSFER_UNAVAILABLE)
_TRANSMIT_OVERRUN = int(SolStatus.TRANSMIT_OVERRUN)
_MAX_PAYLOAD = 4 + MAX_SOL_CHARACTERS


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataReceived:
    """New characters from the peer, in order, each delivered exactly once."""

    data: bytes


@dataclass(frozen=True, slots=True)
class BreakRequested:
    """Role bmc: the console asked for a serial break. Role console: the BMC saw one."""


@dataclass(frozen=True, slots=True)
class DataAcknowledged:
    """The peer accepted `count` of our characters (lets callers measure throughput)."""

    count: int


@dataclass(frozen=True, slots=True)
class PeerDeactivating:
    """The BMC set "SOL deactivating" (status bit 4): this SOL session is ending."""


@dataclass(frozen=True, slots=True)
class TransferUnavailable:
    """The BMC's "character transfer unavailable" bit changed (host off, port gone)."""

    on: bool


@dataclass(frozen=True, slots=True)
class StreamStalled:
    """Our packet went unacknowledged through every retry and was dropped.

    The caller should check who owns the payload (a thief rarely announces itself) and
    reconnect if need be.
    """

    reason: str
    dropped: int = 0
    data: bytes = b""  # the characters given up on


SolEvent = (
    DataReceived
    | BreakRequested
    | DataAcknowledged
    | PeerDeactivating
    | TransferUnavailable
    | StreamStalled
)


# --- the sender's state table -------------------------------------------------------------


class SendState(Enum):
    """Where the sending half stands; the receiving half has no states."""

    IDLE = "idle"  # nothing in flight, free to send
    AWAITING_ACK = "awaiting_ack"  # one data packet in flight
    PAUSED = "paused"  # the peer NACKed; wait for "ready" or the pause deadline


_IDLE = SendState.IDLE  # module names for the per-packet path (Enum attributes are slow)
_PAUSED = SendState.PAUSED


class _SendInput(Enum):
    TRANSMIT = "transmit"
    RETRANSMIT = "retransmit"
    ACKED = "acked"
    NACKED = "nacked"
    STALLED = "stalled"
    RESUMED = "resumed"


_TRANSITIONS: dict[tuple[SendState, _SendInput], SendState] = {
    (SendState.IDLE, _SendInput.TRANSMIT): SendState.AWAITING_ACK,
    (SendState.AWAITING_ACK, _SendInput.RETRANSMIT): SendState.AWAITING_ACK,
    (SendState.AWAITING_ACK, _SendInput.ACKED): SendState.IDLE,
    (SendState.AWAITING_ACK, _SendInput.NACKED): SendState.PAUSED,
    (SendState.AWAITING_ACK, _SendInput.STALLED): SendState.IDLE,
    (SendState.PAUSED, _SendInput.RESUMED): SendState.IDLE,
}


@dataclass(slots=True)
class _Flight:
    """Our one outstanding data packet."""

    seq: int
    data: bytes
    flags: int  # per-packet bits (break); sticky status bits are added at send time
    is_break: bool
    deadline: float
    retries: int = 0


class _NullLogger:
    """Default logger: cores take a logger object instead of testing `if logger`."""

    def debug(self, *args: object, **kwargs: object) -> None:
        pass

    def info(self, *args: object, **kwargs: object) -> None:
        pass

    def warning(self, *args: object, **kwargs: object) -> None:
        pass


def _next_seq(seq: int) -> int:
    return 1 if seq >= 15 else seq + 1


COUNTER_NAMES = (
    "malformed",  # undecodable payloads, or character data on an ACK-only packet
    "duplicates",  # retransmissions of the packet we last took (re-ACKed)
    "stale",  # copies of older packets (dropped, not ACKed)
    "ignored_acks",  # ACKs naming a packet we do not have in flight
    "retransmits",  # times we resent our outstanding packet
    "stalls",  # packets dropped after max_retries
    "dropped_bytes",  # characters dropped with them
    "nacks_received",
    "nacks_sent",
    "overruns",  # BMC packets flagged "transmit overrun" (host characters lost)
)


class SolStream:
    """One SOL payload's flow control, for either end; bytes and `now` in, payloads out."""

    def __init__(
        self,
        role: Role,
        *,
        max_chars: int = 32,
        retry_interval: float = 1.0,
        max_retries: int = 7,
        ack_count0_is_full: bool = True,
        first_seq: int = 1,
        max_send_buffer: int = MAX_SEND_BUFFER,
        nack_pause: float = NACK_PAUSE,
        piggyback_acks: bool = True,
        deliver_retransmitted_growth: bool = False,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        if role not in ("console", "bmc"):
            raise LocalProtocolError(f"SOL role must be 'console' or 'bmc', not {role!r}")
        if not 1 <= max_chars <= MAX_SOL_CHARACTERS:
            raise LocalProtocolError(f"max_chars must be 1..255, not {max_chars}")
        if not 1 <= first_seq <= 15:
            raise LocalProtocolError(f"first_seq must be 1..15, not {first_seq}")
        if retry_interval <= 0 or nack_pause <= 0:
            raise LocalProtocolError("retry_interval and nack_pause must be positive")
        if max_retries < 0 or max_send_buffer < 1:
            raise LocalProtocolError("max_retries must be >= 0 and max_send_buffer >= 1")
        self.role: Role = role
        self.max_chars = max_chars
        self.retry_interval = retry_interval
        self.max_retries = max_retries
        self.ack_count0_is_full = ack_count0_is_full
        self.max_send_buffer = max_send_buffer
        self.nack_pause = nack_pause
        self.piggyback_acks = piggyback_acks
        self.deliver_retransmitted_growth = deliver_retransmitted_growth
        self._log = logger if logger is not None else _NullLogger()
        self._is_bmc = role == "bmc"
        # Which bit of byte 3 means "break" in the packets we send and receive.
        self._tx_break = int(SolStatus.BREAK_DETECTED if self._is_bmc else SolOperation.BREAK)
        self._rx_break = int(SolOperation.BREAK if self._is_bmc else SolStatus.BREAK_DETECTED)

        # Sending half.
        self._state = SendState.IDLE
        self._next_tx_seq = first_seq
        self._pending = bytearray()  # characters not yet accepted; a flight is its prefix
        self._consumed = 0  # stream offset of _pending[0]
        self._breaks: deque[int] = deque()  # stream offsets to send a break at
        self._flight: _Flight | None = None
        self._paused_until: float | None = None
        self._keepalive_wanted = False
        self._status_flags = 0
        # A peer that ever ACKed with a real count (NACK clear) does not use the count-0
        # convention, so its count 0 is literal: ipmi_sim's "ready again" ACK after taking
        # none of a packet must not read as "all taken" when it overtakes the NACK.
        self._peer_counts_real = False

        # Receiving half.
        self._rx_seq = 0  # last packet taken (0: none yet)
        self._rx_taken = 0  # characters taken from it
        self._rx_complete = True  # all of its characters were taken
        self._rx_history: deque[int] = deque(maxlen=STALE_HISTORY)  # packets before it
        self._receive_capacity: int | None = None
        self._nacking = False
        self._ack_due: tuple[int, int] | None = None
        self._peer_flags = 0

        self._out: list[bytes] = []
        self._events: deque[SolEvent] = deque()
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)

    # --- read-only views ---------------------------------------------------------------

    @property
    def send_state(self) -> SendState:
        return self._state

    @property
    def send_buffered(self) -> int:
        """Characters (and breaks, one each) queued or in flight, not yet acknowledged."""
        return len(self._pending) + len(self._breaks)

    @property
    def unacknowledged(self) -> bytes:
        """Characters queued or in flight that the peer has not acknowledged."""
        return bytes(self._pending)

    @property
    def send_capacity(self) -> int:
        """How much more `send()` takes before it refuses: the caller's backpressure."""
        return max(0, self.max_send_buffer - self.send_buffered)

    @property
    def peer_status(self) -> SolStatus | SolOperation:
        """Byte 3 of the peer's latest packet (the BMC's status bits, for the console)."""
        if self._is_bmc:
            return SolOperation(self._peer_flags)
        return SolStatus(self._peer_flags)

    @property
    def quiescent(self) -> bool:
        """Nothing to send, owe or report: the state `fastpath.FastPath` may take over."""
        return (not self._is_bmc and self._state is _IDLE and self._flight is None
                and not self._pending and not self._breaks and not self._keepalive_wanted
                and self._paused_until is None and not self._nacking
                and self._ack_due is None and self._receive_capacity is None
                and not self._out and not self._events)

    def receive_state(self) -> tuple[int, tuple[int, ...], int, bool, int, int]:
        """What the compiled fast path owns while armed, and the flags its ACKs need:
        (last sequence taken, the stale history, characters taken from it, whether all
        were, the peer's last flags, our sticky flags)."""
        return (self._rx_seq, tuple(self._rx_history), self._rx_taken, self._rx_complete,
                self._peer_flags, self._status_flags)

    def set_receive_state(self, rx_seq: int, history: tuple[int, ...], rx_taken: int,
                          rx_complete: bool) -> None:
        """The receive state back from the fast path (its first four `receive_state`)."""
        self._rx_seq = rx_seq
        self._rx_history.clear()
        self._rx_history.extend(history)
        self._rx_taken = rx_taken
        self._rx_complete = rx_complete

    # --- settable state ---------------------------------------------------------------

    @property
    def status_flags(self) -> SolStatus | SolOperation:
        """Bits put on every packet we send: BMC status (role bmc) or sticky console bits."""
        if self._is_bmc:
            return SolStatus(self._status_flags)
        return SolOperation(self._status_flags)

    @status_flags.setter
    def status_flags(self, flags: int) -> None:
        flags = int(flags)
        forbidden = _NACK | self._tx_break
        if flags & forbidden or not 0 <= flags <= 0xFF:
            raise LocalProtocolError(
                f"status_flags 0x{flags:02x}: NACK and break bits are set by the stream itself"
            )
        self._status_flags = flags

    @property
    def receive_capacity(self) -> int | None:
        """Role bmc: characters the receiver can take now (None = unlimited).

        Decreases by what the stream accepts; the owner raises it as its buffer drains,
        then calls `capacity_available()` to tell a NACKed peer to resume.
        """
        return self._receive_capacity

    @receive_capacity.setter
    def receive_capacity(self, value: int | None) -> None:
        if value is not None and not self._is_bmc:
            raise LocalProtocolError(
                "the console role never NACKs (ipmi_sim stalls on console NACKs); "
                "buffer received characters locally instead"
            )
        if value is not None and value < 0:
            raise LocalProtocolError(f"receive_capacity must be >= 0, not {value}")
        self._receive_capacity = value

    # --- inputs -------------------------------------------------------------------------

    def send(self, data: bytes, now: float) -> None:
        """Queue characters toward the peer; refuse (LocalProtocolError) past the limit."""
        if not data:
            return
        if len(data) > self.send_capacity:
            raise LocalProtocolError(
                f"SOL send buffer full: {self.send_buffered} of {self.max_send_buffer} "
                f"queued, {len(data)} more offered; wait for DataAcknowledged"
            )
        self._pending += data
        self._pump(now)

    def send_break(self, now: float) -> None:
        """Queue a break; it leaves after everything queued before it was acknowledged."""
        if self.send_capacity < 1:
            raise LocalProtocolError("SOL send buffer full; cannot queue a break")
        self._breaks.append(self._consumed + len(self._pending))
        self._pump(now)

    def send_keepalive(self, now: float) -> None:
        """Send an empty data packet (seq != 0) unless a packet is already busy.

        A data packet proves the BMC's serial side still answers (some BMCs do not ACK
        empty packets, so a stall after this is a per-host signal, not proof of death).
        """
        if self._state is _IDLE:
            self._keepalive_wanted = True
            self._pump(now)

    def send_status(self, now: float) -> None:
        """Send an informational ACK-only packet carrying the current status bits."""
        self._emit(0, 0, 0, self._sticky_flags(), b"")

    def capacity_available(self, now: float) -> None:
        """Role bmc: the receiver drained; lift our NACK with an ACK for the same packet.

        If we took none of that packet, "count 0, NACK clear" would read as "all taken" to
        a peer using the count-0 rule (should it overtake our NACK), so an informational
        packet without NACK says "ready" instead.
        """
        if not self._nacking:
            return
        self._nacking = False
        if self._rx_taken == 0 and not self._rx_complete:
            self._emit(0, 0, 0, self._sticky_flags(), b"")
        else:
            self._ack_due = (self._rx_seq, self._rx_taken)
        self._pump(now)

    def receive_payload(self, payload: bytes, now: float) -> None:
        """Take one decrypted SOL payload from the peer; bad ones are dropped and counted."""
        # The fields are read in place (the layout of `decode_sol`): no SolPacket per packet.
        if not 4 <= len(payload) <= _MAX_PAYLOAD:
            try:
                decode_sol(payload)
            except ProtocolError as exc:
                self.counters["malformed"] += 1
                self._log.debug("dropped malformed SOL payload: %s", exc)
            return
        seq = payload[0] & 0x0F
        data = payload[4:] if type(payload) is bytes else bytes(payload[4:])
        if seq == 0 and data:
            self.counters["malformed"] += 1
            self._log.debug("dropped ACK-only SOL packet carrying %d characters", len(data))
            return
        flags = payload[3]
        if flags != self._peer_flags:
            self._note_peer_flags(flags)
        ack_seq = payload[1] & 0x0F
        if ack_seq:
            self._handle_ack(ack_seq, payload[2], flags & _NACK, now)
        if self._state is _PAUSED and not flags & _NACK:
            self._move(_SendInput.RESUMED)
            self._paused_until = None
        if seq:
            self._handle_data(seq, flags, data)
        self._pump(now)

    def handle_timeout(self, now: float) -> None:
        """Run the timers that are due at `now`: the NACK pause and retransmission."""
        if self._paused_until is not None and now >= self._paused_until:
            self._move(_SendInput.RESUMED)
            self._paused_until = None
        flight = self._flight
        if flight is not None and now >= flight.deadline:
            if flight.retries < self.max_retries:
                flight.retries += 1
                flight.deadline = now + self.retry_interval
                self.counters["retransmits"] += 1
                self._move(_SendInput.RETRANSMIT)
                self._log.debug("resending SOL seq %d (try %d)", flight.seq, flight.retries)
                self._emit(flight.seq, 0, 0, self._sticky_flags() | flight.flags, flight.data)
            else:
                self._stall(flight)
        self._pump(now)

    # --- outputs ------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When `handle_timeout` must next be called, or None if no timer runs."""
        paused, flight = self._paused_until, self._flight
        if flight is None:
            return paused
        return flight.deadline if paused is None else min(paused, flight.deadline)

    def payloads_to_send(self) -> list[bytes]:
        """SOL payloads for the session layer to seal and send, oldest first."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> SolEvent | None:
        return self._events.popleft() if self._events else None

    # --- receiving half -----------------------------------------------------------------

    def _note_peer_flags(self, flags: int) -> None:
        old, self._peer_flags = self._peer_flags, flags
        if self._is_bmc or old == flags:
            return  # in this direction bits 4/5 mean break and ring, handled per packet
        changed = old ^ flags
        if changed & flags & _DEACTIVATING:
            self._events.append(PeerDeactivating())
        if changed & _TRANSFER_UNAVAILABLE:
            on = bool(flags & _TRANSFER_UNAVAILABLE)
            self._events.append(TransferUnavailable(on))

    def _take(self, offered: int) -> int:
        """How many of `offered` characters the receiver takes (role bmc may take fewer)."""
        if self._receive_capacity is None:
            return offered
        taken = min(offered, self._receive_capacity)
        self._receive_capacity -= taken
        return taken

    def _handle_data(self, seq: int, flags: int, data: bytes) -> None:
        if seq == self._rx_seq:
            self._handle_duplicate(seq, data)
            return
        if seq in self._rx_history:
            self.counters["stale"] += 1
            self._log.debug("dropped stale copy of SOL seq %d", seq)
            return
        if self._rx_seq:
            self._rx_history.append(self._rx_seq)
        self._rx_seq = seq
        if flags & self._rx_break:
            self._events.append(BreakRequested())
        if not self._is_bmc and flags & _TRANSMIT_OVERRUN:
            self.counters["overruns"] += 1
        offered = len(data)
        taken = offered if self._receive_capacity is None else self._take(offered)
        self._rx_taken = taken
        self._rx_complete = taken == offered
        if taken:
            self._events.append(DataReceived(data if taken == offered else data[:taken]))
        if not self._rx_complete:
            self._start_nacking()
        elif self._nacking:
            self._nacking = False  # we took a whole packet: that ACK says "ready" already
        self._ack_due = (seq, taken)

    def _handle_duplicate(self, seq: int, data: bytes) -> None:
        """The peer resent the packet we took last: re-ACK, deliver only what is new."""
        self.counters["duplicates"] += 1
        extra = data[self._rx_taken :]
        # A grown retransmission adds characters after the ones already taken. By default
        # they are left to the peer: the ACK repeats the count we took, which per the
        # spec makes the BMC send the rest as a new packet. Taking them logged them twice
        # against ipmi_sim (quirk 11): it acts on our first, shorter ACK and resends the
        # overlap anyway. `deliver_retransmitted_growth=True` is for a peer that ignores
        # short counts. Count 0 would read as "all" to such a peer, so then we take them.
        wanted = self.deliver_retransmitted_growth or self._rx_taken == 0
        if extra and self._rx_complete and wanted:
            taken = self._take(len(extra))
            self._rx_taken += taken
            self._rx_complete = taken == len(extra)
            if taken:
                self._events.append(DataReceived(extra[:taken]))
            if not self._rx_complete:
                self._start_nacking()
        self._ack_due = (seq, self._rx_taken)

    def _start_nacking(self) -> None:
        if not self._is_bmc:  # unreachable: the console never limits what it takes
            raise LocalProtocolError("the console role cannot refuse characters")
        self._nacking = True
        self.counters["nacks_sent"] += 1

    # --- sending half -------------------------------------------------------------------

    def _move(self, event: _SendInput) -> None:
        nxt = _TRANSITIONS.get((self._state, event))
        if nxt is None:
            raise LocalProtocolError(
                f"SOL sender: {event.value} is not valid while {self._state.value}"
            )
        self._state = nxt

    def _handle_ack(self, ack_seq: int, count: int, nack: int, now: float) -> None:
        flight = self._flight
        if flight is None or ack_seq != flight.seq:
            self.counters["ignored_acks"] += 1
            return
        sent = len(flight.data)
        if not nack and count:
            self._peer_counts_real = True
        count0_is_full = self.ack_count0_is_full and not self._peer_counts_real
        if nack:
            accepted = min(count, sent)
        elif count >= sent or (count == 0 and count0_is_full):
            accepted = sent
        else:
            accepted = count
        self._consume(accepted)
        if flight.is_break:
            self._breaks.popleft()
        self._flight = None
        if nack:
            self.counters["nacks_received"] += 1
            self._move(_SendInput.NACKED)
            self._paused_until = now + self.nack_pause
            self._log.debug(
                "SOL seq %d NACKed after %d of %d characters", flight.seq, accepted, sent
            )
        else:
            self._move(_SendInput.ACKED)
        if accepted:
            self._events.append(DataAcknowledged(accepted))

    def _consume(self, count: int) -> None:
        del self._pending[:count]
        self._consumed += count

    def _stall(self, flight: _Flight) -> None:
        dropped = len(flight.data)
        self._consume(dropped)
        if flight.is_break:
            self._breaks.popleft()
        self._flight = None
        self._move(_SendInput.STALLED)
        self.counters["stalls"] += 1
        self.counters["dropped_bytes"] += dropped
        what = "break" if flight.is_break else f"{dropped} characters"
        reason = (
            f"SOL packet seq {flight.seq} ({what}) was not acknowledged after "
            f"{self.max_retries} retransmissions; it was dropped"
        )
        self._log.warning("%s", reason)
        self._events.append(StreamStalled(reason, dropped, flight.data))

    def _sticky_flags(self) -> int:
        return self._status_flags | _NACK if self._nacking else self._status_flags

    def _refusal_flag(self, count: int) -> int:
        """NACK on an ACK that takes none of a non-empty packet (count 0 alone means "all")."""
        return _NACK if count == 0 and not self._rx_complete else 0

    def _emit(self, seq: int, ack_seq: int, count: int, flags: int, data: bytes) -> None:
        """Queue one SOL payload (`encode_sol`'s layout; every field is in range here)."""
        self._out.append(bytes((seq, ack_seq, count, flags & 0xFF)) + data)

    def _pump(self, now: float) -> None:
        """Send the next data packet if allowed, then any ACK still owed."""
        if self._state is _IDLE and (self._pending or self._breaks or self._keepalive_wanted):
            self._transmit_next(now)
        if self._ack_due is not None:
            ack_seq, count = self._ack_due
            self._ack_due = None
            flags = self._sticky_flags() | self._refusal_flag(count)
            self._emit(0, ack_seq, count, flags, b"")

    def _transmit_next(self, now: float) -> None:
        if self._breaks and self._breaks[0] == self._consumed:
            data, flags, is_break = b"", self._tx_break, True
        elif self._pending:
            limit = self.max_chars
            if self._breaks:
                limit = min(limit, self._breaks[0] - self._consumed)
            data, flags, is_break = bytes(self._pending[:limit]), 0, False
        elif self._keepalive_wanted:
            data, flags, is_break = b"", 0, False
        else:
            return
        self._keepalive_wanted = False
        seq = self._next_tx_seq
        self._next_tx_seq = _next_seq(seq)
        ack_seq = count = ack_flags = 0
        if self._ack_due is not None and self.piggyback_acks:
            ack_seq, count = self._ack_due
            ack_flags = self._refusal_flag(count)
            self._ack_due = None
        self._flight = _Flight(seq, data, flags, is_break, now + self.retry_interval)
        self._move(_SendInput.TRANSMIT)
        self._emit(seq, ack_seq, count, self._sticky_flags() | flags | ack_flags, data)
