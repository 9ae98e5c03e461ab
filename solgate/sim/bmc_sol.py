"""SOL instance 1 of the simulated BMC: one session's `SolStream` joined to the host UART.

Theory of operation
-------------------
The SOL sequence/ACK/NACK/retransmit rules live in `solgate.ipmi.sol.SolStream`, the
same code the client runs, with ``role="bmc"``. This module only moves bytes between
that stream and the `SimHost`:

- host -> console: while SOL is active the host's output is read at most once per
  *character accumulate interval* (SOL parameter 3), or sooner when the *send threshold*
  worth of characters has had time to arrive at the host's baud rate, and handed to the
  stream in one piece; the stream packs it into packets. Nothing is read while the
  stream has no room, so a console that stops acking applies back-pressure.
- console -> host: `DataReceived` is written to the host, `BreakRequested` becomes a
  break on its serial port.
- While SOL is inactive, host output is thrown away as real BMCs do, but lazily: on the
  next activation everything produced so far is read and dropped. So an inactive (or
  idle) console costs no timer at all.

Accounting, so a test can tell loss it caused from loss the BMC caused by design:
`sent_bytes` counts host output handed to a SOL stream; `abandoned_bytes` counts what
the BMC gave up on, as real BMCs do: packets unacknowledged after `sol_retry_count`
retries, and what was still unacknowledged when SOL was deactivated. The most recent
abandoned pieces are kept in `abandoned_chunks` (host order), so a receiver can check
that nothing else is missing. (A packet given up on may still have reached the console
if only its ACKs were lost, so "abandoned" bounds the loss from above.) `retransmits`
counts the packets resent for want of a timely ACK, over every SOL session so far.

A *phantom* owner holds the instance for a session that does not exist on the wire (a
console that crashed without deactivating); only Deactivate Payload or `restart` frees it.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

from solgate.ipmi.sol import BreakRequested, DataReceived, SolStream, StreamStalled
from solgate.ipmi.sol_codec import MAX_SOL_CHARACTERS

if TYPE_CHECKING:
    from solgate.sim.bmc import SimBmcConfig
    from solgate.sim.host import SimHost

log = logging.getLogger(__name__)

PHANTOM_SESSION_ID = 0x7E57AB1E  # reported as the owner by Get Payload Instance Info
_READ_CHUNK = 4096
_MAX_DISCARD_READS = 10_000
ABANDONED_CHUNKS_KEPT = 1000


class SolPort:
    """The one SOL payload instance of a BMC; see the module docstring."""

    __slots__ = ("config", "host", "owner", "phantom", "stream", "_next_poll", "_hold",
                 "_rate", "_refill_at", "stalls", "discarded", "sent_bytes",
                 "abandoned_bytes", "abandoned_chunks", "_retransmits_before")

    def __init__(self, config: SimBmcConfig, host: SimHost | None) -> None:
        self.config = config
        self.host = host
        self.owner: int | None = None
        self.phantom = False
        self.stream: SolStream | None = None  # while active
        self._next_poll = 0.0
        baud = host.baud if host is not None else 115200
        char_time = 10.0 / baud if baud else 0.0
        self._hold = min(config.accumulate_interval, config.send_threshold * char_time)
        self._rate = baud / 10.0  # characters per second the host's UART takes in
        self._refill_at = 0.0
        self.stalls = 0
        self.discarded = 0  # host bytes thrown away while nobody was watching
        self.sent_bytes = 0  # host bytes handed to a SOL stream
        self.abandoned_bytes = 0  # of those, given up on (module docstring)
        self.abandoned_chunks: deque[bytes] = deque(maxlen=ABANDONED_CHUNKS_KEPT)
        self._retransmits_before = 0  # SOL resends of the streams that ended

    @property
    def retransmits(self) -> int:
        """SOL packets resent for want of an ACK, over every SOL session so far."""
        stream = self.stream
        now = stream.counters["retransmits"] if stream is not None else 0
        return self._retransmits_before + now

    @property
    def active(self) -> bool:
        return self.owner is not None

    def activate(self, sidc: int, now: float) -> None:
        if self.stream is not None:
            self._retransmits_before += self.stream.counters["retransmits"]
        self._discard_host_output(now)
        c = self.config
        stream = self.stream = SolStream(
            role="bmc",
            max_chars=max(1, min(MAX_SOL_CHARACTERS, c.outbound_payload_size - 4)),
            retry_interval=c.sol_retry_interval,
            max_retries=c.sol_retry_count,
            first_seq=1,
        )
        if c.host_input_buffer is not None:
            stream.receive_capacity = c.host_input_buffer
        self._refill_at = now
        self.owner = sidc
        self.phantom = False
        self._next_poll = now

    def activate_phantom(self) -> None:
        if self.stream is not None:
            self._retransmits_before += self.stream.counters["retransmits"]
        self.stream = None
        self.owner = PHANTOM_SESSION_ID
        self.phantom = True

    def deactivate(self) -> None:
        if self.stream is not None:
            self._abandon(self.stream.unacknowledged)
            self._retransmits_before += self.stream.counters["retransmits"]
        self.owner = None
        self.phantom = False
        self.stream = None

    def _abandon(self, data: bytes) -> None:
        if data:
            self.abandoned_bytes += len(data)
            self.abandoned_chunks.append(data)
            log.debug("SOL: abandoned %d bytes (%d in all)", len(data), self.abandoned_bytes)

    def receive_payload(self, payload: bytes, now: float) -> None:
        if self.stream is not None:
            self.stream.receive_payload(payload, now)

    def next_deadline(self) -> float | None:
        stream = self.stream
        if stream is None:
            return None
        deadline = stream.next_deadline()
        for other in (self._poll_deadline(), self._drained_deadline()):
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    def handle_timeout(self, now: float) -> None:
        stream = self.stream
        if stream is None:
            return
        due = stream.next_deadline()
        if due is not None and due <= now:
            stream.handle_timeout(now)

    def pump(self, now: float) -> list[bytes]:
        """Deliver stream events to the host, feed host output in; SOL payloads to seal."""
        stream = self.stream
        if stream is None:
            return []
        self._refill(now)
        self._deliver_events(stream, now)
        poll = self._poll_deadline()
        if poll is not None and poll <= now:
            self._read_host(now)
        return stream.payloads_to_send()

    # ------------------------------------------------------------------ internals

    def _deliver_events(self, stream: SolStream, now: float) -> None:
        host = self.host
        while (event := stream.next_event()) is not None:
            match event:
                case DataReceived(data=data):
                    if host is not None:
                        host.write(data, now)
                case BreakRequested():
                    if host is not None:
                        host.send_break(now)
                case StreamStalled(data=lost):
                    # Like ipmi_sim and OpenBMC: give up on that packet, keep SOL up.
                    self.stalls += 1
                    self._abandon(lost)
                case _:
                    pass

    def _refill(self, now: float) -> None:
        """With a bounded host input buffer, it drains at the baud rate; once it has room
        again a NACKed console is told to resume (a partial ACK + NACK came before)."""
        size = self.config.host_input_buffer
        if size is None or self.stream is None:
            return
        have = self.stream.receive_capacity or 0
        if have >= size:
            self._refill_at = now
            return
        gained = int((now - self._refill_at) * self._rate)
        if gained > 0:
            self._refill_at += gained / self._rate
            self.stream.receive_capacity = min(size, have + gained)
            self.stream.capacity_available(now)

    def _drained_deadline(self) -> float | None:
        size = self.config.host_input_buffer
        if size is None or self.stream is None:
            return None
        have = self.stream.receive_capacity or 0
        if have >= size:
            return None
        return self._refill_at + (size - have) / self._rate

    def _capacity(self) -> int:
        stream = self.stream
        return _READ_CHUNK if stream is None else max(0, min(_READ_CHUNK, stream.send_capacity))

    def _poll_deadline(self) -> float | None:
        host = self.host
        if host is None or self.stream is None:
            return None
        due = host.next_deadline()
        if due is None or self._capacity() == 0:
            return None
        return max(due + self._hold, self._next_poll)

    def _read_host(self, now: float) -> None:
        assert self.host is not None
        assert self.stream is not None
        self._next_poll = now + self.config.accumulate_interval
        data = self.host.read(now, max_bytes=self._capacity())
        if data:
            self.sent_bytes += len(data)
            self.stream.send(data, now)

    def _discard_host_output(self, now: float) -> None:
        host = self.host
        if host is None:
            return
        for _ in range(_MAX_DISCARD_READS):
            data = host.read(now, max_bytes=_READ_CHUNK)
            if not data:
                return
            self.discarded += len(data)
