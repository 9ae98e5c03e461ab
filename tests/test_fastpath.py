"""The compiled SOL fast path (ipmi/fastpath.py, `SolFastPath` in _speedups.c) against the
Python path, its reference.

The differential test feeds the same BMC datagrams (in-order data, retransmits, stale and
replayed copies, ACKs and NACKs of our keystrokes, flag changes, IPMI answers, forgeries,
garbage, another session's packets, out-of-window numbers) and the same keystrokes to two
consoles, one on the Python path and one with the fast path armed and disarmed as in
production (`SharedSocket` -> `SolFastPath.receive` or `IpmiClient._datagram_received`),
and requires the same bytes sent to the BMC (IVs are deterministic), the same characters
and events in the same order, and the same counters and state at the end.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solgate.ipmi import commands, crypto, fastpath
from solgate.ipmi.codec import IpmiMessage, PayloadType
from solgate.ipmi.crypto import CIPHER_SUITES, PacketProtector
from solgate.ipmi.replay import MOD
from solgate.ipmi.sol import DataReceived, SolStream
from solgate.ipmi.transport import IpmiClient
from solgate.ipmi.udp_pool import Port, SharedSocket
from tests.sim_helpers import BUILT, REQUIRE_NATIVE, ScriptedBmc, counting_random, establish

ADDR = ("127.0.0.1", 623)
SUITES = [1, 2, 3, 17]  # no integrity, integrity only, integrity + AES (SHA-1, SHA-256)

needs_native = pytest.mark.skipif(not BUILT and not REQUIRE_NATIVE,
                                  reason="solgate.ipmi._speedups is not built")


class _Transport:
    """The datagram transport under the shared socket: records what is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        assert addr == ADDR
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return False


class Console:
    """The worker's part of the path (console/worker.py: `sol_received`, `_pump`,
    `send_input`, `_on_timer`), recording a timeline of characters and events."""

    def __init__(self, client: IpmiClient, stream: SolStream) -> None:
        self.client = client
        self.stream = stream
        self.timeline: list[Any] = []

    def sol_received(self, payload: bytes) -> None:
        self.stream.receive_payload(payload, asyncio.get_running_loop().time())
        self.pump()

    def pump(self) -> None:
        while (event := self.stream.next_event()) is not None:
            if isinstance(event, DataReceived):
                self.deliver(event.data)
            else:
                self.timeline.append(event)
        for payload in self.stream.payloads_to_send():
            self.client.send_sol(payload)

    def deliver(self, data: bytes) -> None:
        if self.timeline and isinstance(self.timeline[-1], bytes):
            self.timeline[-1] += data
        elif data:
            self.timeline.append(bytes(data))

    def type(self, data: bytes) -> None:
        if self.client.fastpath is not None:
            self.client.fastpath.disarm()
        if len(data) <= self.stream.send_capacity:
            self.stream.send(data, asyncio.get_running_loop().time())
        self.pump()

    def tick(self) -> None:
        if self.client.fastpath is not None:
            self.client.fastpath.disarm()
        now = asyncio.get_running_loop().time() + 0.001
        self.client.handle_timeout(now)
        self.stream.handle_timeout(now)
        self.pump()
        if self.client.fastpath is not None:
            self.client.fastpath.try_arm()


class Bmc:
    """Turns the test's operations into datagrams, sealed with deterministic IVs."""

    def __init__(self, scripted: ScriptedBmc) -> None:
        self.scripted = scripted
        protector = scripted.protector
        assert protector is not None
        protector._random = counting_random()  # noqa: SLF001 - deterministic ciphertext
        self.protector: PacketProtector = protector
        self.sol_seq = 0
        self.flags = 0
        self.last: bytes | None = None
        self.sent: list[bytes] = []

    def seal(self, payload: bytes, ptype: int = PayloadType.SOL, seq: int | None = None,
             sid: int | None = None) -> bytes:
        out = self.scripted.out
        if seq is None:
            seq = out.next()
        d = self.protector.seal(ptype, self.scripted.sidm if sid is None else sid, seq,
                                payload)
        self.sent.append(d)
        return d

    def data(self, chars: bytes, high: int = 0) -> bytes:
        self.sol_seq = self.sol_seq % 15 + 1
        self.last = bytes((self.sol_seq | high, 0, 0, self.flags)) + chars
        return self.seal(self.last)


# One operation: (kind, argument). The BMC's are turned into datagrams at run time (the
# "ack" of our flight reads the stream's state, identical in both runs while they agree).
ops = st.lists(st.one_of(
    st.tuples(st.just("data"), st.binary(min_size=1, max_size=255)),
    st.tuples(st.just("data"), st.binary(max_size=0)),
    st.tuples(st.just("high"), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("resend"), st.binary(max_size=6)),
    st.tuples(st.just("stale"), st.integers(1, 5)),
    st.tuples(st.just("replay"), st.integers(1, 40)),
    st.tuples(st.just("ack"), st.tuples(st.integers(0, 15), st.integers(0, 255),
                                        st.booleans(), st.booleans())),
    st.tuples(st.just("ack_flight"), st.tuples(st.booleans(), st.booleans())),
    st.tuples(st.just("flags"), st.sampled_from([0, 0x10, 0x20, 0x30, 0x08, 0x04, 0x40, 0x01])),
    st.tuples(st.just("info"), st.none()),
    st.tuples(st.just("ipmi"), st.binary(max_size=12)),
    st.tuples(st.just("garbage"), st.binary(max_size=80)),
    st.tuples(st.just("forged"), st.tuples(st.integers(0, 300), st.integers(1, 255))),
    st.tuples(st.just("wrong_sid"), st.none()),
    st.tuples(st.just("far"), st.integers(-40, 120)),
    st.tuples(st.just("sol_size"), st.sampled_from([0, 1, 3, 260, 300])),
    st.tuples(st.just("type"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("yield"), st.none()),
    st.tuples(st.just("tick"), st.none()),
    st.tuples(st.just("flood"), st.integers(1, 30)),
    st.tuples(st.just("request"), st.none()),
    st.tuples(st.just("answer"), st.sampled_from([b"\x00", b"\xc0", b"\xcf"])),
), max_size=60)


async def run(suite: int, operations: list[tuple[str, Any]], fast: bool,
              delay: float = 0.0, sticky: int = 0, wrap: bool = False) -> dict[str, Any]:
    insecure = not CIPHER_SUITES[suite].secure
    session, scripted, _ = establish(ScriptedBmc(suites=frozenset({suite})),
                                     cipher_suites=(suite,), allow_insecure=insecure)
    assert session.established
    bmc = Bmc(scripted)
    if wrap:  # both sides' session sequence numbers a few packets before they wrap
        session._outbound.value = MOD - 3  # noqa: SLF001
        scripted.out.value = MOD - 4
        session._window.highest, session._window._seen = MOD - 4, 1  # noqa: SLF001
    stream = SolStream("console", max_chars=64)
    stream.status_flags = sticky  # bits our every packet carries, ACKs included
    client = IpmiClient(session.target)
    client.session = session
    console = Console(client, stream)
    client._sol = console  # noqa: SLF001
    shared = SharedSocket(None, socket.AF_INET)  # type: ignore[arg-type]
    transport = _Transport()
    shared.transport = transport  # type: ignore[assignment]
    client._transport = Port(shared, ADDR, client)  # noqa: SLF001
    if fast:
        fp = client.attach_fast_path(stream, console.deliver, delay=delay)
        assert fp is not None
        assert fp.armed
    feed = shared.datagram_received
    answers: list[Any] = []
    for kind, arg in operations:
        if kind == "data":
            feed(bmc.data(arg), ADDR)
        elif kind == "high":
            feed(bmc.data(arg, high=0xA0), ADDR)
        elif kind == "flood":
            for i in range(arg):
                feed(bmc.data(bytes((i,)) * (1 + i * 7 % 255)), ADDR)
        elif kind == "resend" and bmc.last is not None:
            feed(bmc.seal(bmc.last + arg), ADDR)
        elif kind == "stale":
            seq = (bmc.sol_seq - arg - 1) % 15 + 1
            feed(bmc.seal(bytes((seq, 0, 0, bmc.flags)) + b"old"), ADDR)
        elif kind == "replay" and bmc.sent:
            feed(bmc.sent[-min(arg, len(bmc.sent))], ADDR)
        elif kind == "ack":
            ack_seq, count, nack, with_data = arg
            seq = 0
            if with_data:
                bmc.sol_seq = seq = bmc.sol_seq % 15 + 1
            flags = bmc.flags | (0x40 if nack else 0)
            feed(bmc.seal(bytes((seq, ack_seq, count, flags)) + (b"ack+data" if seq else b"")),
                 ADDR)
        elif kind == "ack_flight":
            flight = stream._flight  # noqa: SLF001 - the same in both runs while they agree
            nack, partial = arg
            if flight is not None:
                count = len(flight.data) // 2 if partial else len(flight.data)
                flags = bmc.flags | (0x40 if nack else 0)
                feed(bmc.seal(bytes((0, flight.seq, count, flags))), ADDR)
        elif kind == "flags":
            bmc.flags = arg
        elif kind == "info":
            feed(bmc.seal(bytes((0, 0, 0, bmc.flags))), ADDR)
        elif kind == "ipmi":
            feed(bmc.seal(arg, ptype=PayloadType.IPMI), ADDR)
        elif kind == "garbage":
            feed(arg, ADDR)
        elif kind == "forged":
            at, flip = arg
            d = bytearray(bmc.data(b"forged"))
            d[at % len(d)] ^= flip
            feed(bytes(d), ADDR)
        elif kind == "wrong_sid":
            bmc.sol_seq = bmc.sol_seq % 15 + 1
            feed(bmc.seal(bytes((bmc.sol_seq, 0, 0, bmc.flags)) + b"x",
                          sid=scripted.sidm ^ 1), ADDR)
        elif kind == "far":
            seq = (scripted.out.value + arg) % MOD
            bmc.sol_seq = bmc.sol_seq % 15 + 1
            feed(bmc.seal(bytes((bmc.sol_seq, 0, 0, bmc.flags)) + b"far", seq=seq), ADDR)
        elif kind == "sol_size":
            bmc.sol_seq = bmc.sol_seq % 15 + 1
            feed(bmc.seal(bytes((bmc.sol_seq, 0, 0, bmc.flags, 65))[:arg] + b"z" * (arg - 5)),
                 ADDR)
        elif kind == "type":
            console.type(arg)
        elif kind == "request":  # a keepalive's question, sent while the stream runs
            answers.append(client.send_request(commands.get_device_id()))
        elif kind == "answer" and session._pending:  # noqa: SLF001
            p = session._pending[max(session._pending)]  # noqa: SLF001
            request = IpmiMessage(p.netfn, p.cmd, p.rq_seq, p.data)
            feed(bmc.seal(ScriptedBmc.response(request, arg), ptype=PayloadType.IPMI), ADDR)
        elif kind == "yield":
            await asyncio.sleep(0)
        elif kind == "tick":
            console.tick()
    handled = 0
    if fast:
        assert client.fastpath is not None
        handled = client.fastpath.handled
        client.detach_fast_path()
    await asyncio.sleep(0)
    return {
        "sent": transport.sent,
        "timeline": console.timeline,
        "sol_counters": stream.counters,
        "dropped": session.dropped,
        "receive": stream.receive_state(),
        "send": (stream.send_state, stream.unacknowledged, stream._next_tx_seq,  # noqa: SLF001
                 stream._flight.seq if stream._flight else None),  # noqa: SLF001
        "window": (session._window.highest, session._window._seen),  # noqa: SLF001
        "outbound": session._outbound.value,  # noqa: SLF001
        "last_received": session.last_received is not None,
        "answers": [(a.done(), a.result().data if a.done() and not a.exception() else None)
                    for a in answers],
        "pending": sorted(session._pending),  # noqa: SLF001
        "handled": handled,
    }


def compare(suite: int, operations: list[tuple[str, Any]], delay: float, sticky: int = 0,
            wrap: bool = False) -> int:
    was, crypto.NATIVE = crypto.NATIVE, True  # the same protectors in both runs
    try:
        python = asyncio.run(run(suite, operations, fast=False, sticky=sticky, wrap=wrap))
        native = asyncio.run(run(suite, operations, fast=True, delay=delay, sticky=sticky,
                                 wrap=wrap))
    finally:
        crypto.NATIVE = was
    handled = native.pop("handled")
    python.pop("handled")
    assert native == python
    return int(handled)


def require_native() -> None:
    """The compiled module must be built (SOLGATE_REQUIRE_NATIVE=1: or fail). These tests
    turn the compiled path on themselves (`compare`), so they run under SOLGATE_NATIVE=0
    too; there the engine's own consoles never arm (test_engine_fastpath.py)."""
    if not BUILT or not hasattr(crypto._native, "SolFastPath"):  # noqa: SLF001
        if REQUIRE_NATIVE:
            pytest.fail("SOLGATE_REQUIRE_NATIVE=1 but the fast path is not built")
        pytest.skip("the compiled fast path is not built")


@needs_native
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(suite=st.sampled_from(SUITES), operations=ops, delay=st.sampled_from([0.0, 0.01, 0.05]),
       sticky=st.sampled_from([0, 0x01, 0x0C, 0x20]), wrap=st.booleans())
def test_the_fast_path_does_what_the_python_path_does(suite, operations, delay, sticky, wrap):
    require_native()
    compare(suite, operations, delay, sticky, wrap)


@pytest.mark.parametrize("suite", SUITES)
def test_a_plain_flood_goes_through_the_fast_path(suite):
    """And the differential run above is not vacuous: in-order data is taken in C."""
    require_native()
    operations = [("flood", 30), ("type", b"ls\r"), ("data", b"x"), ("ack_flight", (False, False)),
                  ("flood", 30), ("yield", None), ("flood", 5)]
    # "x" and the ACK of our keystrokes take the Python path; that ACK re-arms it
    assert compare(suite, operations, 0.0) == 30 + 30 + 5


@pytest.mark.parametrize("suite", SUITES)
def test_uncommon_datagrams_are_left_to_the_python_path(suite):
    require_native()
    operations = [("data", b"a"), ("resend", b""), ("stale", 1), ("flags", 0x20),
                  ("data", b"b"), ("data", b"c"), ("flags", 0x04), ("data", b"brk"),
                  ("flags", 0), ("data", b"d"), ("ipmi", b"\x00"), ("garbage", b"\x06" * 30),
                  ("wrong_sid", None), ("far", 100), ("replay", 1), ("data", b"e")]
    assert compare(suite, operations, 0.01) >= 2


@pytest.mark.parametrize("suite", [2, 17])
def test_the_replay_window_behind_the_highest(suite):
    """A packet ahead of a gap, then the gap's packets (accepted once), then their replays."""
    require_native()
    operations = [("data", b"a"), ("far", 6), ("data", b"b"), ("data", b"c"), ("replay", 1),
                  ("replay", 2), ("data", b"d"), ("replay", 3), ("far", -3), ("data", b"e")]
    assert compare(suite, operations, 0.0) >= 4
    assert compare(suite, operations, 0.0, wrap=True) >= 4


def test_the_pure_path_never_arms(monkeypatch):
    monkeypatch.setattr(crypto, "NATIVE", False)
    assert not fastpath.available()

    async def attach() -> Any:
        session, _, _ = establish(ScriptedBmc(suites=frozenset({17})), cipher_suites=(17,))
        client = IpmiClient(session.target)
        client.session = session
        shared = SharedSocket(None, socket.AF_INET)  # type: ignore[arg-type]
        shared.transport = _Transport()  # type: ignore[assignment]
        client._transport = Port(shared, ADDR, client)  # noqa: SLF001
        return client.attach_fast_path(SolStream("console"), lambda data: None), shared.fast

    fp, routes = asyncio.run(attach())
    assert fp is None
    assert routes == {}


# --- known answer: one sealed datagram in, the ACK datagram out ---------------------------

K1 = bytes(range(1, 33))
K2 = bytes(range(101, 133))
IV = bytes(range(0xA0, 0xB0))
# suite 17, console session 0x11223344, BMC session 0x55667788: our ACK (00 05 03 00: SOL
# packet 5, 3 characters taken) with our session sequence 8 and the IV above. The bytes were
# sealed by the reference (crypto.py) and checked field by field: RMCP, auth type 06, payload
# type 0xc1 (SOL, encrypted, authenticated), session ID, sequence, length 0x20, IV, one AES
# block, integrity pad ff ff, pad length 2, next header 07, 16 bytes of HMAC-SHA256-128.
EXPECTED_ACK_17 = bytes.fromhex(
    "0600ff07" "06" "c1" "88776655" "08000000" "2000"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf" "db833f9e7af9c985fe2ac31e3c990617"
    "ffff" "02" "07" "0842e65e18ff5d65eee5923d57e40fe8")


def test_known_answer_one_datagram_in_one_ack_out():
    require_native()
    suite = CIPHER_SUITES[17]
    bmc_side = PacketProtector(suite, K1, K2, random=lambda n: bytes(16), native=False)
    ours = PacketProtector(suite, K1, K2, random=lambda n: IV, native=True)
    datagram = bmc_side.seal(PayloadType.SOL, 0x11223344, 42, b"\x05\x00\x00\x00abc")
    sent: list[tuple[bytes, Any]] = []
    woken: list[bool] = []
    c = crypto._native.SolFastPath(ours._native, ours._random, woken.append, 8192)  # noqa: SLF001
    c.arm(lambda d, a: sent.append((d, a)), ADDR, 0x11223344, 0x55667788, 41, 1, 32, 16, 7,
          4, (1, 2, 3), 1, True, 0, 0)
    assert c.receive(datagram) is True
    ((ack, addr),) = sent
    assert addr == ADDR
    assert ack == EXPECTED_ACK_17
    assert woken == [False]
    assert c.take() == b"abc"
    assert c.take() is None
    assert c.disarm() == (42, 3, 8, 5, (2, 3, 4), 3, True)
    assert c.receive(datagram) is False  # disarmed: nothing is taken


# --- when batches are delivered ------------------------------------------------------------


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Loop:
    """The loop calls `FastPath` makes, recorded; time moves only when the test says."""

    def __init__(self) -> None:
        self.now = 100.0
        self.soon: list[Any] = []
        self.later: list[tuple[float, Any, _Handle]] = []

    def time(self) -> float:
        return self.now

    def call_soon(self, callback: Any) -> _Handle:
        self.soon.append(callback)
        return _Handle()

    def call_later(self, delay: float, callback: Any) -> _Handle:
        handle = _Handle()
        self.later.append((delay, callback, handle))
        return handle


class _Route:
    def __init__(self) -> None:
        self.fast: Any = None
        self.sent: list[bytes] = []

    def fast_sendto(self) -> tuple[Any, Any]:
        return lambda data, addr: self.sent.append(data), ADDR

    def set_fast(self, fast: Any) -> None:
        self.fast = fast


def test_an_echo_is_delivered_at_once_and_a_flood_in_batches():
    require_native()
    was, crypto.NATIVE = crypto.NATIVE, True
    try:
        session, scripted, _ = establish(ScriptedBmc(suites=frozenset({17})),
                                         cipher_suites=(17,))
    finally:
        crypto.NATIVE = was
    bmc = Bmc(scripted)
    loop, route, delivered = _Loop(), _Route(), []
    fp = fastpath.FastPath(session, SolStream("console"), route, delivered.append, loop,
                           delay=0.05)
    assert fp.try_arm()
    assert route.fast.receive(bmc.data(b"e"))  # the first batch after arming: an echo
    assert len(loop.soon) == 1
    assert not loop.later
    loop.soon.pop()()
    assert delivered == [b"e"]
    loop.now += 0.01  # output goes on: held 50 ms, one wake-up for the batch
    assert route.fast.receive(bmc.data(b"f1"))
    assert route.fast.receive(bmc.data(b"f2"))
    assert not loop.soon
    [(delay, flush, handle)] = loop.later
    assert delay == 0.05
    flush()
    assert delivered == [b"e", b"f1f2"]
    assert session.last_received == loop.now
    loop.now += 1.0  # after a quiet spell: at once again
    assert route.fast.receive(bmc.data(b"q"))
    assert len(loop.soon) == 1
    loop.soon.clear()
    for _ in range(33):  # past FLUSH_BYTES: at once
        assert route.fast.receive(bmc.data(b"r" * 250))
    assert len(loop.soon) == 1
    fp.disarm()  # delivers what waits, before the Python path runs
    assert delivered == [b"e", b"f1f2", b"q" + b"r" * 250 * 33]
    assert route.fast is None
    assert len(route.sent) == 4 + 33  # one ACK each


# --- failures and misuse: nothing is hidden, nothing crashes ---------------------------------


class _FlakyTransport(_Transport):
    """Its first `failures` sends raise, as asyncio's transport does once it is closed."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def sendto(self, data: bytes, addr: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise AttributeError("'NoneType' object has no attribute 'call_exception_handler'")
        super().sendto(data, addr)


class _Sock:
    """What else waits on the socket in the same wake-up."""

    def __init__(self, datagrams: list[bytes]) -> None:
        self.datagrams = datagrams

    def recvfrom(self, size: int) -> tuple[bytes, Any]:
        if not self.datagrams:
            raise BlockingIOError
        return self.datagrams.pop(0), ADDR


@pytest.mark.parametrize("suite", [3, 17])
def test_a_failed_ack_send_still_delivers_the_bytes_in_order(suite):
    """The packet is taken whether or not its ACK could be sent (a lost ACK: the BMC
    resends), so its characters come out before what the Python path delivers next, and
    the rest of the socket's wake-up is read."""
    require_native()

    async def main() -> tuple[list[Any], int, list[bytes]]:
        session, scripted, _ = establish(ScriptedBmc(suites=frozenset({suite})),
                                         cipher_suites=(suite,))
        bmc = Bmc(scripted)
        stream = SolStream("console", max_chars=64)
        client = IpmiClient(session.target)
        client.session = session
        console = Console(client, stream)
        client._sol = console  # noqa: SLF001
        shared = SharedSocket(None, socket.AF_INET)  # type: ignore[arg-type]
        transport = _FlakyTransport(failures=2)
        shared.transport = transport  # type: ignore[assignment]
        client._transport = Port(shared, ADDR, client)  # noqa: SLF001
        fp = client.attach_fast_path(stream, console.deliver, delay=0.05)
        assert fp is not None
        assert fp.armed
        first = bmc.data(b"one")
        rest = [bmc.data(b"two"), bmc.data(b"three")]
        bmc.flags = 0x20  # the fast path declines this one: the Python path runs on it
        rest.append(bmc.data(b"py"))
        shared.sock = _Sock(rest)  # type: ignore[assignment]
        shared.datagram_received(first, ADDR)
        handled, failures = fp.handled, fp.ack_failures
        assert (handled, failures) == (3, 2)
        client.detach_fast_path()
        await asyncio.sleep(0)
        return console.timeline, failures, transport.sent

    was, crypto.NATIVE = crypto.NATIVE, True  # on under SOLGATE_NATIVE=0 too, as `compare`
    try:
        timeline, failures, sent = asyncio.run(main())
    finally:
        crypto.NATIVE = was
    # the fast path's characters first, then the Python path's event and characters
    assert timeline[0] == b"onetwothree"
    assert [x for x in timeline if isinstance(x, bytes)] == [b"onetwothree", b"py"]
    assert len(sent) == 2  # the ACKs of "three" and "py"


def _armed(iv_source: Any = None, sendto: Any = None) -> tuple[Any, PacketProtector, list[Any]]:
    """A bare C object armed as in the known-answer test, and the BMC's protector."""
    suite = CIPHER_SUITES[17]
    bmc_side = PacketProtector(suite, K1, K2, random=lambda n: bytes(16), native=False)
    ours = PacketProtector(suite, K1, K2, random=lambda n: IV, native=True)
    sent: list[Any] = []
    c = crypto._native.SolFastPath(ours._native, iv_source or ours._random,  # noqa: SLF001
                                   lambda full: None, 8192)
    c.arm(sendto or (lambda d, a: sent.append(d)), ADDR, 0x11223344, 0x55667788, 41, 1, 32,
          16, 7, 4, (1, 2, 3), 1, True, 0, 0)
    return c, bmc_side, sent


ARMED_STATE = (41, 1, 7, 4, (1, 2, 3), 1, True)


def test_an_iv_source_that_disarms_and_rearms_makes_receive_decline():
    """A call out to Python (the tests' IV source) may move the state: the packet is then
    declined, with the state left as the call left it."""
    require_native()
    c: Any = None

    def iv_source(n: int) -> bytes:
        state = c.disarm()
        c.arm(lambda d, a: None, ADDR, 0x11223344, 0x55667788, 100, 1, 32, 16, 70, 9, (),
              0, True, 0, 0)
        assert state == ARMED_STATE
        return IV

    c, bmc_side, sent = _armed(iv_source=iv_source)
    datagram = bmc_side.seal(PayloadType.SOL, 0x11223344, 42, b"\x05\x00\x00\x00abc")
    assert c.receive(datagram) is False
    assert c.take() is None
    assert c.disarm() == (100, 1, 70, 9, (), 0, True)
    assert not sent


@pytest.mark.parametrize("args", [
    {"highest": 0}, {"highest": 1 << 32}, {"highest": -1}, {"history": (0,)},
    {"history": (16,)}, {"history": (1, 2, 3, 4)}, {"rx_seq": 16}, {"rx_taken": -1},
    {"ahead": 64}, {"behind": 63}, {"outbound": 1 << 32}, {"peer_flags": 256},
])
def test_arm_refuses_bad_state_and_stays_disarmed(args):
    require_native()
    ours = PacketProtector(CIPHER_SUITES[17], K1, K2, random=lambda n: IV, native=True)
    c = crypto._native.SolFastPath(ours._native, None, lambda full: None, 8192)  # noqa: SLF001
    state = {"highest": 41, "seen": 1, "ahead": 32, "behind": 16, "outbound": 7, "rx_seq": 4,
             "history": (1, 2, 3), "rx_taken": 1, "rx_complete": True, "peer_flags": 0,
             "status_flags": 0, **args}
    with pytest.raises((ValueError, OverflowError)):
        c.arm(lambda d, a: None, ADDR, 1, 2, state["highest"], state["seen"], state["ahead"],
              state["behind"], state["outbound"], state["rx_seq"], state["history"],
              state["rx_taken"], state["rx_complete"], state["peer_flags"],
              state["status_flags"])
    assert not c.armed
    with pytest.raises(RuntimeError):
        c.disarm()


def test_arm_while_armed_is_refused_and_the_state_kept():
    require_native()
    c, _, _ = _armed()
    with pytest.raises(RuntimeError, match="armed already"):
        c.arm(lambda d, a: None, ADDR, 1, 2, 99, 1, 32, 16, 7, 5, (9,), 0, True, 0, 0)
    assert c.armed
    assert c.disarm() == ARMED_STATE


def test_the_c_objects_are_initialised_once():
    """Keys and callbacks are set once: a second __init__ would mix two sessions' keys."""
    require_native()
    ours = PacketProtector(CIPHER_SUITES[17], K1, K2, random=lambda n: IV, native=True)
    native = ours._native  # noqa: SLF001
    with pytest.raises(RuntimeError, match="initialised once"):
        native.__init__(None, 0, b"", None)
    with pytest.raises(RuntimeError, match="initialised once"):
        native.__init__("sha256", 16, K1, b"short")
    bmc_side = PacketProtector(CIPHER_SUITES[17], K1, K2, random=lambda n: IV, native=False)
    wire = bmc_side.seal(PayloadType.SOL, 1, 2, b"abc")
    assert native.unseal(wire) == (PayloadType.SOL, 2, b"abc")  # the keys it had
    c, _, _ = _armed()
    with pytest.raises(RuntimeError, match="initialised once"):
        c.__init__(native, None, lambda full: None, 10)
    assert c.disarm() == ARMED_STATE


def test_seal_reports_the_first_bad_argument():
    """Each number is checked as it is read (no call with an exception already set)."""
    require_native()
    native = PacketProtector(CIPHER_SUITES[17], K1, K2, random=lambda n: IV,
                             native=True)._native  # noqa: SLF001
    with pytest.raises(OverflowError):
        native.seal(-1, "x", 1, b"", IV)
    with pytest.raises(TypeError):
        native.seal(1, "x", -1, b"", IV)
    with pytest.raises(OverflowError):
        native.seal(1, 2, -1, b"", IV)


MISUSE = r"""
import gc
from solgate.ipmi import crypto
from solgate.ipmi.crypto import CIPHER_SUITES, PacketProtector
K1, K2, IV = bytes(range(1, 33)), bytes(range(101, 133)), bytes(range(0xA0, 0xB0))
ADDR = ("127.0.0.1", 623)
bmc = PacketProtector(CIPHER_SUITES[17], K1, K2, random=lambda n: bytes(16), native=False)
ours = PacketProtector(CIPHER_SUITES[17], K1, K2, random=lambda n: IV, native=True)
def dg(q, seq, chars=b"abc"):
    return bmc.seal(1, 0x11223344, seq, bytes((q, 0, 0, 0)) + chars)
def arm(c, sendto):
    c.arm(sendto, ADDR, 0x11223344, 0x55667788, 41, 1, 32, 16, 7, 4, (1, 2, 3), 1, True, 0, 0)
T = crypto._native.SolFastPath
# never initialised: refuses to arm, declines, holds nothing
c = T.__new__(T)
try:
    arm(c, lambda d, a: None)
    print("armed without init")
except RuntimeError:
    pass
assert c.receive(dg(5, 42)) is False and c.take() is None and not c.armed
# an IV source that takes the batch while a packet is being received
c = None
def iv_source(n):
    c.take()
    return IV
c = T(ours._native, iv_source, lambda full: None, 8192)
arm(c, lambda d, a: None)
assert c.receive(dg(5, 42, b"")) is True
assert c.receive(dg(6, 43, b"xyz")) is True
assert c.take() == b"xyz"
# a sendto that disarms and drops the only references to itself and the address
c = T(ours._native, None, lambda full: None, 8192)
class Sendto:
    def __call__(self, d, a):
        c.disarm()
        gc.collect()
arm(c, Sendto())
assert c.receive(dg(5, 42)) is True and not c.armed and c.take() == b"abc"
print("ok")
"""


def test_misuse_raises_or_declines_instead_of_crashing():
    """In a child process, so a crash fails this test instead of ending the run."""
    require_native()
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", MISUSE], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]
