"""SolStream: exact SOL bytes under a fake clock, and a console/BMC pair under faults."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solgate.errors import LocalProtocolError
from solgate.ipmi.sol import (
    _TRANSITIONS,
    BreakRequested,
    DataAcknowledged,
    DataReceived,
    PeerDeactivating,
    SendState,
    SolStream,
    StreamStalled,
    TransferUnavailable,
    _SendInput,
)
from solgate.ipmi.sol_codec import SolOperation, SolStatus, decode_sol
from tests.conftest import load_fixture

h = bytes.fromhex


def events(stream: SolStream) -> list[object]:
    out = []
    while (ev := stream.next_event()) is not None:
        out.append(ev)
    return out


def console(**kw) -> SolStream:
    return SolStream("console", **kw)


def bmc(**kw) -> SolStream:
    return SolStream("bmc", **kw)


# --- known answers ------------------------------------------------------------------------


def test_ack_only_for_bmc_packet_seq3_with_24_chars():
    """Digest 10.3: the console ACKs BMC seq 3 carrying 24 characters with 00 03 18 00."""
    c = console()
    c.receive_payload(h("03 00 00 00") + b"x" * 24, 0.0)
    assert c.payloads_to_send() == [h("00 03 18 00")]
    assert events(c) == [DataReceived(b"x" * 24)]
    assert c.next_deadline() is None  # ACK-only packets are never retransmitted


def test_break_as_seq5():
    """Digest 10.3: a break is an empty data packet with operation bit 4: 05 00 00 10."""
    c = console(first_seq=5)
    c.send_break(0.0)
    assert c.payloads_to_send() == [h("05 00 00 10")]
    assert c.next_deadline() == 1.0
    c.receive_payload(h("00 05 00 00"), 0.1)  # ACKed like data
    assert c.send_state is SendState.IDLE
    assert c.next_deadline() is None
    assert events(c) == []  # no characters were acknowledged


@pytest.mark.parametrize(
    "fixture",
    [
        "ipmi_sim-ipmitool/cs3-sol-session.json",
        "ipmi_sim-ipmiconsole/ipmiconsole-cs3-sol-session.json",
    ],
)
def test_console_replays_real_transcript(fixture):
    """Fed the BMC's real payloads and the user's keys, the console sends the same bytes."""
    packets = [
        (p["dir"], h(p["decoded"]["plaintext_hex"]))
        for p in load_fixture(fixture)["packets"]
        if p.get("decoded", {}).get("payload_type") == "SOL"
    ]
    c = console()
    produced: list[bytes] = []
    received = b""
    for now, (direction, payload) in enumerate(packets):
        if direction == "bmc->client":
            c.receive_payload(payload, float(now))
            produced += c.payloads_to_send()
            received += b"".join(e.data for e in events(c) if isinstance(e, DataReceived))
            continue
        if not produced:  # the client's own data packet: replay the keystrokes behind it
            pkt = decode_sol(payload)
            if pkt.flags & SolOperation.BREAK:
                c.send_break(float(now))
            else:
                c.send(pkt.data, float(now))
            produced += c.payloads_to_send()
        assert produced.pop(0) == payload
    assert produced == []
    assert received == b"hello from host\r\n"
    assert c.send_state is SendState.IDLE
    assert c.send_buffered == 0


# --- retransmission and stalls -------------------------------------------------------------


def test_retransmission_timing_and_stall_are_exact():
    c = console(retry_interval=1.0, max_retries=7)
    c.send(b"hi", 0.0)
    first = h("01 00 00 00 6869")
    assert c.payloads_to_send() == [first]
    assert c.next_deadline() == 1.0
    c.handle_timeout(0.999)
    assert c.payloads_to_send() == []
    for n in range(1, 8):
        c.handle_timeout(float(n))
        assert c.payloads_to_send() == [first], n  # same SOL seq, same characters
        assert c.next_deadline() == float(n + 1)
    assert events(c) == []
    c.handle_timeout(8.0)
    assert c.payloads_to_send() == []
    [stalled] = events(c)
    assert isinstance(stalled, StreamStalled)
    assert stalled.dropped == 2
    assert "seq 1" in stalled.reason
    assert c.next_deadline() is None
    assert c.counters["retransmits"] == 7
    assert c.counters["stalls"] == 1
    assert c.counters["dropped_bytes"] == 2
    # The stream carries on with the next sequence number (FreeIPMI's solpacketseq idea).
    c.send(b"!", 9.0)
    assert c.payloads_to_send() == [h("02 00 00 00 21")]


def test_late_ack_stops_retransmission():
    c = console()
    c.send(b"a", 0.0)
    c.payloads_to_send()
    c.handle_timeout(1.0)
    assert c.payloads_to_send() == [h("01 00 00 00 61")]
    c.receive_payload(h("00 01 01 00"), 1.5)
    assert events(c) == [DataAcknowledged(1)]
    assert c.next_deadline() is None
    c.handle_timeout(2.0)
    assert c.payloads_to_send() == []


def test_retransmission_drops_the_piggybacked_ack():
    """A resent packet must not repeat an old ACK: after a wrap it would ACK a newer packet."""
    c = console(max_chars=32)
    c.send(b"x" * 40, 0.0)
    assert c.payloads_to_send() == [h("01 00 00 00") + b"x" * 32]
    # The BMC ACKs seq 1 and sends "ok" as its seq 4 in the same packet.
    c.receive_payload(h("04 01 20 00") + b"ok", 0.2)
    assert events(c) == [DataAcknowledged(32), DataReceived(b"ok")]
    assert c.payloads_to_send() == [h("02 04 02 00") + b"x" * 8]  # ACK rides on the data
    c.handle_timeout(1.2)
    assert c.payloads_to_send() == [h("02 00 00 00") + b"x" * 8]


def test_separate_ack_when_piggybacking_is_off():
    c = console(piggyback_acks=False)
    c.send(b"x" * 40, 0.0)
    c.payloads_to_send()
    c.receive_payload(h("04 01 20 00") + b"ok", 0.2)
    assert c.payloads_to_send() == [h("02 00 00 00") + b"x" * 8, h("00 04 02 00")]


def test_ack_while_our_packet_is_outstanding_goes_alone():
    c = console()
    c.send(b"a", 0.0)
    c.send(b"b", 0.0)  # waits: one outstanding packet per direction
    assert c.payloads_to_send() == [h("01 00 00 00 61")]
    c.receive_payload(h("07 00 00 00 7a"), 0.1)
    assert c.payloads_to_send() == [h("00 07 01 00")]
    c.receive_payload(h("00 01 01 00"), 0.2)
    assert c.payloads_to_send() == [h("02 00 00 00 62")]


def test_sequence_wraps_15_to_1():
    c = console(first_seq=14)
    seqs = []
    for i in range(4):
        c.send(b"k", float(i))
        [payload] = c.payloads_to_send()
        seqs.append(payload[0])
        c.receive_payload(bytes([0, payload[0], 1, 0]), float(i))
    assert seqs == [14, 15, 1, 2]


def test_receiver_accepts_the_wrap_and_a_bmc_counter_not_starting_at_1():
    c = console()
    got = b""
    for i, seq in enumerate([8, 9, 15, 1, 2]):  # ipmi_sim continues its counter (quirk 10)
        c.receive_payload(bytes([seq, 0, 0, 0]) + bytes([0x40 + i]), 0.0)
        assert c.payloads_to_send() == [bytes([0, seq, 1, 0])]
        got += b"".join(e.data for e in events(c))
    assert got == b"@ABCD"


# --- duplicates -------------------------------------------------------------------------


def test_duplicate_is_reacked_and_not_delivered_again():
    c = console()
    c.receive_payload(h("05 00 00 00 616263"), 0.0)
    assert events(c) == [DataReceived(b"abc")]
    assert c.payloads_to_send() == [h("00 05 03 00")]
    c.receive_payload(h("05 00 00 00 616263"), 1.0)
    assert events(c) == []
    assert c.payloads_to_send() == [h("00 05 03 00")]
    assert c.counters["duplicates"] == 1


def test_growing_retransmission_can_deliver_only_the_new_tail_once():
    """Option, for a BMC that ignores short counts: take the tail of a grown resend once."""
    c = console(deliver_retransmitted_growth=True)
    c.receive_payload(h("05 00 00 00 616263"), 0.0)
    c.receive_payload(h("05 00 00 00 616263646566"), 1.0)
    c.receive_payload(h("05 00 00 00 616263646566"), 2.0)
    assert events(c) == [DataReceived(b"abc"), DataReceived(b"def")]
    assert c.payloads_to_send() == [h("00 05 03 00"), h("00 05 06 00"), h("00 05 06 00")]
    c.receive_payload(h("06 00 00 00 67"), 3.0)
    assert events(c) == [DataReceived(b"g")]


def test_growing_retransmission_is_acked_with_the_old_count():
    """ipmi_sim resends the same seq with more characters (quirk 11): take nothing new and
    ACK the first count, so the BMC sends the tail as a new packet, logged once."""
    c = console()
    c.receive_payload(h("05 00 00 00 616263"), 0.0)
    c.receive_payload(h("05 00 00 00 616263646566"), 1.0)
    assert events(c) == [DataReceived(b"abc")]
    assert c.payloads_to_send() == [h("00 05 03 00"), h("00 05 03 00")]
    c.receive_payload(h("06 00 00 00 646566"), 1.1)  # the BMC's partial-ACK resend
    assert events(c) == [DataReceived(b"def")]


def test_stale_copy_of_an_older_packet_is_dropped_without_ack():
    c = console()
    c.receive_payload(h("05 00 00 00 61"), 0.0)
    c.receive_payload(h("06 00 00 00 62"), 0.1)
    c.payloads_to_send()
    c.receive_payload(h("05 00 00 00 61"), 0.2)  # reordered retransmission of seq 5
    assert c.payloads_to_send() == []
    assert events(c) == [DataReceived(b"a"), DataReceived(b"b")]
    assert c.counters["stale"] == 1


def test_ack_only_packets_are_not_acked():
    c = console()
    c.receive_payload(h("00 03 05 00"), 0.0)
    assert c.payloads_to_send() == []
    assert c.counters["ignored_acks"] == 1  # nothing of ours was in flight


# --- partial acceptance and NACK ------------------------------------------------------------


def test_partial_accept_with_nack_then_resume_on_ready():
    """Observed with ipmi_sim: 39 characters answered ack=3 count=32 NACK, then ACK again."""
    c = console(max_chars=64, first_seq=3)
    text = bytes(range(0x41, 0x41 + 39))
    c.send(text, 0.0)
    assert c.payloads_to_send() == [h("03 00 00 00") + text]
    c.receive_payload(h("00 03 20 40"), 0.1)
    assert events(c) == [DataAcknowledged(32)]
    assert c.send_state is SendState.PAUSED
    assert c.payloads_to_send() == []
    assert c.next_deadline() == pytest.approx(2.1)
    c.send(b"more", 0.2)  # queued, not sent while paused
    assert c.payloads_to_send() == []
    c.receive_payload(h("00 03 20 00"), 0.3)  # same seq, NACK clear: the BMC is ready
    assert c.payloads_to_send() == [h("04 00 00 00") + text[32:] + b"more"]
    c.receive_payload(h("00 04 0b 00"), 0.4)
    assert events(c) == [DataAcknowledged(11)]
    assert c.send_buffered == 0


def test_nack_pause_ends_after_two_seconds():
    c = console()
    c.send(b"abcd", 0.0)
    c.payloads_to_send()
    c.receive_payload(h("00 01 01 40"), 0.5)
    assert c.next_deadline() == 2.5
    c.handle_timeout(2.4)
    assert c.payloads_to_send() == []
    c.handle_timeout(2.5)
    assert c.payloads_to_send() == [h("02 00 00 00 626364")]
    assert c.counters["nacks_received"] == 1


def test_partial_ack_without_nack_resends_tail_at_once_with_next_seq():
    c = console()
    c.send(b"0123456789", 0.0)
    c.payloads_to_send()
    c.receive_payload(h("00 01 04 00"), 0.1)
    assert events(c) == [DataAcknowledged(4)]
    assert c.payloads_to_send() == [h("02 00 00 00") + b"456789"]


def test_ack_count_larger_than_sent_is_clamped():
    c = console()
    c.send(b"abc", 0.0)
    c.payloads_to_send()
    c.receive_payload(h("00 01 c8 00"), 0.1)
    assert events(c) == [DataAcknowledged(3)]
    assert c.send_buffered == 0


def test_ack_count_zero_means_all_by_default():
    c = console()
    c.send(b"abc", 0.0)
    c.payloads_to_send()
    c.receive_payload(h("00 01 00 00"), 0.1)  # Intel-style full ACK
    assert events(c) == [DataAcknowledged(3)]
    assert c.payloads_to_send() == []


def test_ack_count_zero_is_partial_when_configured():
    c = console(ack_count0_is_full=False)
    c.send(b"abc", 0.0)
    c.payloads_to_send()
    c.receive_payload(h("00 01 00 00"), 0.1)
    assert events(c) == []
    assert c.payloads_to_send() == [h("02 00 00 00 616263")]


def test_count_zero_is_literal_once_the_peer_reported_real_counts():
    """ipmi_sim's "ready" ACK after taking nothing is (seq, 0, NACK clear); if it overtakes
    the NACK, reading it as "all taken" would lose the characters."""
    c = console()
    c.send(b"ab", 0.0)
    c.payloads_to_send()
    c.receive_payload(h("00 01 02 00"), 0.1)  # a real count: this peer does not use count 0
    c.send(b"cd", 0.2)
    assert c.payloads_to_send() == [h("02 00 00 00 6364")]
    c.receive_payload(h("00 02 00 00"), 0.3)  # its NACK (02 00 40) was lost
    assert c.payloads_to_send() == [h("03 00 00 00 6364")]
    assert events(c) == [DataAcknowledged(2)]


def test_nack_with_count_zero_takes_nothing():
    c = console()
    c.send(b"abc", 0.0)
    c.payloads_to_send()
    c.receive_payload(h("00 01 00 40"), 0.1)
    assert events(c) == []
    assert c.send_buffered == 3


def test_bmc_partial_accept_nacks_then_un_nacks():
    """The BMC side of the same exchange, byte for byte as ipmi_sim answered."""
    b = bmc()
    b.receive_capacity = 32
    text = bytes(range(0x41, 0x41 + 39))
    b.receive_payload(h("03 00 00 00") + text, 0.0)
    assert events(b) == [DataReceived(text[:32])]
    assert b.payloads_to_send() == [h("00 03 20 40")]
    assert b.receive_capacity == 0
    b.send(b"x", 0.1)  # NACK stays on every packet while the receiver is full
    assert b.payloads_to_send() == [h("01 00 00 40 78")]
    b.receive_capacity = 32
    b.capacity_available(0.2)
    assert b.payloads_to_send() == [h("00 03 20 00")]
    b.capacity_available(0.3)  # nothing to lift any more
    assert b.payloads_to_send() == []
    b.receive_payload(h("04 01 01 00") + text[32:], 0.4)  # also ACKs our "x"
    assert events(b) == [DataAcknowledged(1), DataReceived(text[32:])]
    assert b.payloads_to_send() == [h("00 04 07 00")]
    assert b.counters["nacks_sent"] == 1


def test_bmc_duplicate_of_a_partly_taken_packet_reacks_the_taken_count():
    b = bmc()
    b.receive_capacity = 2
    b.receive_payload(h("01 00 00 00 61626364"), 0.0)
    b.receive_capacity = 10
    b.receive_payload(h("01 00 00 00 61626364"), 1.0)  # console resent: our NACK was lost
    assert events(b) == [DataReceived(b"ab")]
    assert b.payloads_to_send() == [h("00 01 02 40"), h("00 01 02 40")]


def test_console_never_nacks():
    c = console()
    with pytest.raises(LocalProtocolError):
        c.receive_capacity = 0


# --- break ordering ---------------------------------------------------------------------


def test_break_waits_for_earlier_data_and_later_data_waits_for_break():
    c = console(max_chars=2)
    c.send(b"abc", 0.0)
    c.send_break(0.0)
    c.send(b"d", 0.0)
    assert c.send_buffered == 5
    expected = [
        h("01 00 00 00 6162"),
        h("02 00 00 00 63"),
        h("03 00 00 10"),
        h("04 00 00 00 64"),
    ]
    for i, payload in enumerate(expected):
        assert c.payloads_to_send() == [payload]
        c.receive_payload(bytes([0, payload[0], len(payload) - 4, 0]), float(i))
    assert c.payloads_to_send() == []
    assert c.send_buffered == 0


def test_bmc_reports_break_request_before_the_data_of_the_same_packet():
    b = bmc()
    b.receive_payload(h("01 00 00 10 61"), 0.0)
    assert events(b) == [BreakRequested(), DataReceived(b"a")]
    assert b.payloads_to_send() == [h("00 01 01 00")]
    b.receive_payload(h("01 00 00 10 61"), 0.5)  # duplicate: no second break
    assert events(b) == []


def test_bmc_sends_break_detected_and_console_reports_it():
    b = bmc()
    c = console()
    b.send_break(0.0)
    [payload] = b.payloads_to_send()
    assert payload == h("01 00 00 04")
    c.receive_payload(payload, 0.0)
    assert events(c) == [BreakRequested()]
    assert c.payloads_to_send() == [h("00 01 00 00")]


def test_stalled_break_is_dropped_and_data_after_it_proceeds():
    c = console(max_retries=0)
    c.send_break(0.0)
    c.send(b"z", 0.0)
    assert c.payloads_to_send() == [h("01 00 00 10")]
    c.handle_timeout(1.0)
    [ev] = events(c)
    assert isinstance(ev, StreamStalled)
    assert ev.dropped == 0
    assert c.payloads_to_send() == [h("02 00 00 00 7a")]


# --- BMC status bits ------------------------------------------------------------------------


def test_deactivating_status_becomes_one_event():
    c = console()
    c.receive_payload(h("00 00 00 10"), 0.0)
    c.receive_payload(h("00 00 00 10"), 0.1)
    assert events(c) == [PeerDeactivating()]
    assert c.peer_status == SolStatus.DEACTIVATING


def test_transfer_unavailable_reports_changes():
    c = console()
    c.receive_payload(h("00 00 00 20"), 0.0)
    c.receive_payload(h("01 00 00 20 61"), 0.1)
    c.receive_payload(h("00 00 00 00"), 0.2)
    assert events(c) == [TransferUnavailable(True), DataReceived(b"a"), TransferUnavailable(False)]


def test_bmc_puts_status_on_every_packet():
    b = bmc()
    b.status_flags = SolStatus.DEACTIVATING
    b.send_status(0.0)
    b.send(b"x", 0.0)
    b.receive_payload(h("01 00 00 00 79"), 0.0)
    assert b.payloads_to_send() == [h("00 00 00 10"), h("01 00 00 10 78"), h("00 01 01 10")]
    b.handle_timeout(1.0)
    assert b.payloads_to_send() == [h("01 00 00 10 78")]
    c = console()
    c.receive_payload(h("01 00 00 10 78"), 0.0)
    assert events(c) == [PeerDeactivating(), DataReceived(b"x")]


def test_status_flags_refuse_bits_the_stream_owns():
    with pytest.raises(LocalProtocolError):
        bmc().status_flags = SolStatus.NACK
    with pytest.raises(LocalProtocolError):
        console().status_flags = SolOperation.BREAK
    c = console()
    c.status_flags = SolOperation.DEASSERT_CTS  # sticky modem bits are allowed
    c.send(b"a", 0.0)
    assert c.payloads_to_send() == [h("01 00 00 08 61")]


# --- keepalive, limits, malformed input ------------------------------------------------------


def test_keepalive_is_an_empty_data_packet():
    c = console()
    c.send_keepalive(0.0)
    assert c.payloads_to_send() == [h("01 00 00 00")]
    c.send_keepalive(0.1)  # one packet in flight already
    assert c.payloads_to_send() == []
    c.receive_payload(h("00 01 00 00"), 0.2)
    assert events(c) == []
    assert c.next_deadline() is None


def test_send_buffer_is_bounded():
    c = console(max_send_buffer=10)
    c.send(b"0123456789", 0.0)
    assert (c.send_buffered, c.send_capacity) == (10, 0)
    with pytest.raises(LocalProtocolError):
        c.send(b"!", 0.0)
    with pytest.raises(LocalProtocolError):
        c.send_break(0.0)
    c.receive_payload(h("00 01 0a 00"), 0.1)
    assert (c.send_buffered, c.send_capacity) == (0, 10)


@pytest.mark.parametrize(
    "payload",
    [b"", h("01"), h("01 00 00"), h("01 00 00 00") + b"x" * 256, h("00 00 00 00 61")],
)
def test_malformed_payloads_are_counted_not_raised(payload):
    c = console()
    c.receive_payload(payload, 0.0)
    assert c.payloads_to_send() == []
    assert events(c) == []
    assert c.counters["malformed"] == 1


def test_constructor_rejects_nonsense():
    with pytest.raises(LocalProtocolError):
        SolStream("server")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        console(max_chars=256)
    with pytest.raises(LocalProtocolError):
        console(first_seq=0)


@pytest.mark.parametrize("state", list(SendState))
@pytest.mark.parametrize("event", list(_SendInput))
def test_every_sender_state_and_input_pair_follows_the_table(state, event):
    s = console()
    s._state = state
    if (state, event) in _TRANSITIONS:
        s._move(event)
        assert s.send_state is _TRANSITIONS[state, event]
    else:
        with pytest.raises(LocalProtocolError):
            s._move(event)
        assert s.send_state is state


@given(st.binary(max_size=300))
@settings(derandomize=True, max_examples=300)
def test_random_bytes_never_raise(payload):
    for s in (console(), bmc()):
        s.receive_payload(payload, 0.0)
        s.payloads_to_send()


# --- a console and a BMC in memory, under faults ---------------------------------------------

BREAK = -1  # marks a break in a stream of byte values


class Pair:
    """A console and a BMC stream joined by a lossy, duplicating, reordering wire."""

    def __init__(self, rng: random.Random, *, drop: float, dup: float, delay: float, **kw):
        self.rng = rng
        self.drop, self.dup, self.delay = drop, dup, delay
        self.now = 0.0
        self.console = SolStream("console", **kw)
        self.bmc = SolStream("bmc", **kw)
        self.held: list[tuple[int, SolStream, bytes]] = []  # (rounds left, to, payload)
        self.got = {"console": [], "bmc": []}
        self.stalls = 0

    def wire(self) -> list[tuple[SolStream, bytes]]:
        batch = [(self.bmc, p) for p in self.console.payloads_to_send()]
        batch += [(self.console, p) for p in self.bmc.payloads_to_send()]
        out = [(dest, p) for left, dest, p in self.held if left == 1]
        self.held = [(left - 1, dest, p) for left, dest, p in self.held if left > 1]
        for dest, payload in batch:
            if self.rng.random() < self.drop:
                continue
            copies = 2 if self.rng.random() < self.dup else 1
            for _ in range(copies):
                if self.rng.random() < self.delay:  # overtaken by up to 4 rounds of traffic
                    self.held.append((self.rng.randint(1, 4), dest, payload))
                else:
                    out.append((dest, payload))
        self.rng.shuffle(out)
        return out

    def collect(self) -> None:
        for s in (self.console, self.bmc):
            while (ev := s.next_event()) is not None:
                match ev:
                    case DataReceived(data):
                        self.got[s.role] += list(data)
                    case BreakRequested():
                        self.got[s.role].append(BREAK)
                    case StreamStalled():
                        self.stalls += 1
                    case _:
                        pass

    def timers(self) -> None:
        for s in (self.console, self.bmc):
            d = s.next_deadline()
            if d is not None and d <= self.now:
                s.handle_timeout(self.now)


def feed(stream: SolStream, script: list, now: float) -> None:
    """Push the next items of `script` (bytes or BREAK) while the stream has room."""
    while script:
        item = script[0]
        if item == BREAK:
            if stream.send_capacity < 1:
                return
            stream.send_break(now)
        else:
            if stream.send_capacity < len(item):
                return
            stream.send(item, now)
        script.pop(0)


def flatten(script: list) -> list[int]:
    out: list[int] = []
    for item in script:
        out += [BREAK] if item == BREAK else list(item)
    return out


scripts = st.lists(st.one_of(st.binary(min_size=1, max_size=90), st.just(BREAK)), max_size=12)


@given(
    seed=st.integers(0, 2**32 - 1),
    to_bmc=scripts,
    to_console=scripts,
    drop=st.sampled_from([0.0, 0.1, 0.3]),
    dup=st.sampled_from([0.0, 0.2]),
    delay=st.sampled_from([0.0, 0.15]),
    max_chars=st.integers(1, 40),
    capacity=st.one_of(st.none(), st.integers(0, 24)),
    piggyback=st.booleans(),
)
@settings(
    derandomize=True,
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def test_pair_delivers_every_byte_once_in_order_under_faults(
    seed, to_bmc, to_console, drop, dup, delay, max_chars, capacity, piggyback
):
    rng = random.Random(seed)
    pair = Pair(
        rng,
        drop=drop,
        dup=dup,
        delay=delay,
        max_chars=max_chars,
        max_retries=60,
        piggyback_acks=piggyback,
        max_send_buffer=128,
    )
    bmc_buffer = 24  # the simulated serial side drains this much at a time
    pair.bmc.receive_capacity = capacity
    pending_c, pending_b = list(to_bmc), list(to_console)
    for _ in range(20_000):
        feed(pair.console, pending_c, pair.now)
        feed(pair.bmc, pending_b, pair.now)
        if capacity is not None and rng.random() < 0.3:  # the serial side drained
            pair.bmc.receive_capacity = bmc_buffer
            pair.bmc.capacity_available(pair.now)
        batch = pair.wire()
        for dest, payload in batch:
            dest.receive_payload(payload, pair.now)
        pair.collect()
        idle = not batch and not pair.held
        if idle:
            deadlines = [
                d for s in (pair.console, pair.bmc) if (d := s.next_deadline()) is not None
            ]
            if not deadlines and not pending_c and not pending_b:
                break
            if deadlines:
                pair.now = max(pair.now, min(deadlines))
        else:
            pair.now += rng.random() * 0.05
        pair.timers()
        pair.collect()
    else:
        pytest.fail("the pair did not settle")
    assert pair.stalls == 0
    assert pair.got["bmc"] == flatten(to_bmc)
    assert pair.got["console"] == flatten(to_console)
    assert pair.console.send_buffered == pair.bmc.send_buffered == 0
