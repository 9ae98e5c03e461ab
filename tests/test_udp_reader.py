"""The compiled reader of the shared UDP sockets (`_speedups.DatagramReader`, udp_pool.py).

Real UDP sockets on loopback, on asyncio's selector loop and on uvloop when installed:
routing by source address (armed fast path first, else the session), a burst bounded per
wake-up, strays counted, a declined datagram on the Python path with the (host, port) the
socket module would give, IPv6, and the reader gone from the loop once the socket closes.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from solgate.ipmi import crypto, udp_pool
from solgate.ipmi.codec import PayloadType
from solgate.ipmi.crypto import CIPHER_SUITES, PacketProtector
from solgate.ipmi.udp_pool import READS_PER_WAKEUP, SocketPool

Reader: Any = getattr(crypto._native, "DatagramReader", None)  # noqa: SLF001
pytestmark = pytest.mark.skipif(Reader is None or not crypto.NATIVE,
                                reason="the compiled module is not built or is turned off")

LOOPS: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
try:
    import uvloop
    LOOPS.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
except ImportError:  # pragma: no cover - uvloop is optional
    LOOPS.append(pytest.param(None, id="uvloop", marks=pytest.mark.skip(reason="no uvloop")))


def run(factory: Callable[[], asyncio.AbstractEventLoop],
        main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    loop = factory()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        loop.close()


class Collect:
    """A session's receiving side, as `IpmiClient` offers it to the pool."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.lost = 0

    def _datagram_received(self, data: bytes) -> None:
        self.got.append(data)

    def _connection_lost(self) -> None:
        self.lost += 1


class Fast:
    """An armed fast path: takes datagrams that start with b"F", ACKs them on the port."""

    def __init__(self, sendto: Callable[[bytes, Any], object], addr: Any) -> None:
        self.sendto, self.addr = sendto, addr
        self.taken: list[bytes] = []

    def receive(self, data: bytes) -> bool:
        if not data.startswith(b"F"):
            return False
        self.taken.append(data)
        self.sendto(b"ack " + data, self.addr)
        return True


def bound_socket(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(2)
    return s


async def until(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


@pytest.mark.parametrize("factory", LOOPS)
def test_several_bmcs_on_one_socket_each_reach_their_session(factory: Any) -> None:
    """Fast paths take what they accept, their ACKs go out on the socket, the rest (and
    the addresses with no fast path) reach the right session; strays are counted."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        bmcs = [bound_socket() for _ in range(3)]
        stranger = bound_socket()
        try:
            clients = [Collect() for _ in bmcs]
            ports = [await SocketPool.of(loop).attach(socket.AF_INET, b.getsockname(), c)
                     for b, c in zip(bmcs, clients, strict=True)]
            shared = ports[0]._shared  # noqa: SLF001
            assert shared.reader is not None
            assert shared.transport is None
            assert all(p._shared is shared for p in ports)  # noqa: SLF001
            fast = Fast(*ports[1].fast_sendto())
            ports[1].set_fast(fast)
            target = ("127.0.0.1", shared.sock.getsockname()[1])
            for i, b in enumerate(bmcs):
                b.sendto(b"F%d" % i, target)
                b.sendto(b"P%d" % i, target)
            stranger.sendto(b"F9", target)
            await until(lambda: sum(len(c.got) for c in clients) == 5
                        and shared.stray == 1)
            assert clients[0].got == [b"F0", b"P0"]
            assert clients[1].got == [b"P1"]  # declined: the Python path
            assert fast.taken == [b"F1"]
            assert clients[2].got == [b"F2", b"P2"]
            assert bmcs[1].recvfrom(100) == (b"ack F1", target)
            ports[0].sendto(b"request")
            assert bmcs[0].recvfrom(100) == (b"request", target)
            ports[1].set_fast(None)  # disarmed: the session gets everything again
            bmcs[1].sendto(b"F1 again", target)
            await until(lambda: len(clients[1].got) == 2)
            assert fast.taken == [b"F1"]
            assert shared.reader.stats["fast"] == 1
            for p in ports:
                p.close()
        finally:
            for s in (*bmcs, stranger):
                s.close()
    run(factory, main)


def test_a_burst_is_read_in_bounded_wakeups_and_declined_ones_keep_their_address() -> None:
    """More than `READS_PER_WAKEUP` waiting datagrams: one call reads the bound, the next
    the rest; the fallback gets (host, port) as the socket module spells it."""
    sock, bmc = bound_socket(), bound_socket()
    sock.setblocking(False)
    got: list[tuple[bytes, Any]] = []
    errors: list[OSError] = []
    reader = Reader(sock.fileno(), lambda d, a: got.append((d, a)), errors.append,
                    READS_PER_WAKEUP)
    try:
        total = READS_PER_WAKEUP + 36
        for i in range(total):
            bmc.sendto(b"%d" % i, sock.getsockname())
        time.sleep(0.05)
        reader()
        assert len(got) == READS_PER_WAKEUP
        reader()
        assert [d for d, _ in got] == [b"%d" % i for i in range(total)]
        assert {a for _, a in got} == {bmc.getsockname()}
        reader()  # nothing waits: no error, nothing delivered
        assert len(got) == total
        assert not errors
        assert reader.stats["received"] == total
        reader.close()
        assert reader.fd == -1
        reader()  # closed: reads nothing
    finally:
        sock.close()
        bmc.close()


def test_an_error_in_one_datagram_does_not_lose_the_rest() -> None:
    """A fallback that raises: the others in the batch are still delivered, then the first
    error goes to the loop (which logs it)."""
    sock, bmc = bound_socket(), bound_socket()
    got: list[bytes] = []

    def fallback(data: bytes, addr: Any) -> None:
        if data == b"bad":
            raise RuntimeError("bug upstairs")
        got.append(data)

    reader = Reader(sock.fileno(), fallback, print, READS_PER_WAKEUP)
    try:
        for data in (b"a", b"bad", b"c"):
            bmc.sendto(data, sock.getsockname())
        time.sleep(0.05)
        with pytest.raises(RuntimeError, match="bug upstairs"):
            reader()
        assert got == [b"a", b"c"]
    finally:
        sock.close()
        bmc.close()


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
@pytest.mark.parametrize("factory", LOOPS)
def test_ipv6_sources_are_routed_and_spelled_as_four_tuples(factory: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        bmc = bound_socket(socket.AF_INET6, "::1")
        try:
            client = Collect()
            address = udp_pool.numeric_address("::1", bmc.getsockname()[1])
            assert address is not None
            port = await SocketPool.of(loop).attach(socket.AF_INET6, address[1], client)
            shared = port._shared  # noqa: SLF001
            fast = Fast(*port.fast_sendto())
            port.set_fast(fast)
            target = ("::1", shared.sock.getsockname()[1])
            bmc.sendto(b"F6", target)
            bmc.sendto(b"P6", target)
            await until(lambda: client.got == [b"P6"])
            assert fast.taken == [b"F6"]
            assert bmc.recvfrom(100)[0] == b"ack F6"
            assert ("::1", bmc.getsockname()[1]) in shared.clients  # the fallback's key
            port.close()
        finally:
            bmc.close()
    run(factory, main)


@pytest.mark.parametrize("factory", LOOPS)
def test_closing_the_last_port_takes_the_reader_off_the_loop(factory: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        bmcs = [bound_socket() for _ in range(2)]
        try:
            clients = [Collect() for _ in bmcs]
            ports = [await SocketPool.of(loop).attach(socket.AF_INET, b.getsockname(), c)
                     for b, c in zip(bmcs, clients, strict=True)]
            shared = ports[0]._shared  # noqa: SLF001
            fd = shared.sock.fileno()
            ports[0].close()
            assert not shared.closed
            assert shared.usable()
            removed: list[int] = []
            real = loop.remove_reader

            def spy(fileno: Any) -> bool:
                removed.append(fileno)
                return real(fileno)
            loop.remove_reader = spy  # type: ignore[method-assign]
            ports[1].close()
            assert removed == [fd]
            assert shared.closed
            assert shared.sock.fileno() == -1
            assert shared.reader.fd == -1
            assert shared not in SocketPool.of(loop).sockets
            assert ports[1].is_closing()
            ports[1].sendto(b"nowhere")  # a closed port sends nothing, raises nothing
            await asyncio.sleep(0)
            assert [c.lost for c in clients] == [1, 1]
            # a new session gets a new socket
            port = await SocketPool.of(loop).attach(socket.AF_INET, bmcs[0].getsockname(),
                                                    clients[0])
            assert port._shared is not shared  # noqa: SLF001
            port.close()
        finally:
            for s in bmcs:
                s.close()
    run(factory, main)


@pytest.mark.parametrize("reader", [True, False], ids=["reader", "endpoint"])
def test_the_pool_counts_strays_and_errors_across_closed_sockets(
        reader: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """`udp_pool.counters` (/metrics: solgate_udp_*) sums every socket the loop's pool
    opened: a socket's counts stay in the total after it closes, or the counter would
    fall and read as a reset."""
    monkeypatch.setattr(udp_pool, "USE_READER", reader)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert udp_pool.counters(loop) == dict.fromkeys(udp_pool.COUNTERS, 0)
        bmc, stranger = bound_socket(), bound_socket()
        try:
            for round_ in (1, 2):
                port = await SocketPool.of(loop).attach(socket.AF_INET, bmc.getsockname(),
                                                        Collect())
                shared = port._shared  # noqa: SLF001
                assert (shared.reader is not None) == reader
                target = ("127.0.0.1", shared.sock.getsockname()[1])
                stranger.sendto(b"who is there", target)
                await until(lambda: shared.stray == 1)  # noqa: B023 - awaited here
                port.sendto(b"x" * 70000)  # EMSGSIZE: reported, counted
                await until(lambda: udp_pool.counters(loop)["errors"] == round_)  # noqa: B023
                assert udp_pool.counters(loop)["stray"] == round_
                port.close()
                await asyncio.sleep(0)
                assert not SocketPool.of(loop).sockets
                assert udp_pool.counters(loop) == {"send_dropped": 0, "truncated": 0,
                                                   "errors": round_, "stray": round_}
        finally:
            bmc.close()
            stranger.close()
    run(asyncio.new_event_loop, main)


def test_without_the_reader_the_datagram_endpoint_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pure-Python shape (as with SOLGATE_NATIVE=0) still routes by address."""
    monkeypatch.setattr(udp_pool, "USE_READER", False)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        bmc = bound_socket()
        try:
            client = Collect()
            port = await SocketPool.of(loop).attach(socket.AF_INET, bmc.getsockname(), client)
            shared = port._shared  # noqa: SLF001
            assert shared.reader is None
            assert shared.transport is not None
            bmc.sendto(b"hello", ("127.0.0.1", shared.transport.get_extra_info("sockname")[1]))
            await until(lambda: client.got == [b"hello"])
            port.close()
        finally:
            bmc.close()
    run(asyncio.new_event_loop, main)


def test_set_fast_refuses_an_address_shorter_than_its_family() -> None:
    """16 bytes that say AF_INET6 are refused, not read as the 28 of a sockaddr_in6
    (an out-of-bounds read under ASan); so is an unknown family."""
    sock = bound_socket()
    reader = Reader(sock.fileno(), print, print, READS_PER_WAKEUP)
    try:
        v6 = Reader.sockaddr(("::1", 623, 0, 0))
        v4 = Reader.sockaddr(("127.0.0.1", 623))
        for raw in (v6[:16], v6[:27], v4[:15], b"", b"\x01\x00" + bytes(26)):
            with pytest.raises(ValueError, match="not a sockaddr"):
                reader.set_fast(raw, object())
        reader.set_fast(v6, object())
        reader.set_fast(v4, object())
        assert reader.stats["armed"] == 2
    finally:
        reader.close()
        sock.close()


def test_a_reader_made_without_init_reads_and_sends_nothing() -> None:
    """`DatagramReader.__new__` alone: no fd (not 0, stdin) and no callbacks, so reading
    and sending do nothing instead of calling a missing on_error (a crash: run apart)."""
    code = (
        "from solgate.ipmi import crypto\n"
        "R = crypto._native.DatagramReader\n"
        "r = R.__new__(R)\n"
        "assert r.fd == -1, r.fd\n"
        "r.sendto(b'x', R.sockaddr(('127.0.0.1', 9)))\n"
        "r()\n"
        "print('ok', r.stats['errors'])\n")
    done = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30, check=False)
    assert (done.returncode, done.stdout) == (0, "ok 0\n"), done.stderr[-2000:]


class Armed:
    """A stand-in fast path (only its lifetime matters here)."""

    def receive(self, data: bytes) -> bool:
        return False


def test_a_finaliser_that_arms_during_close_leaves_no_table_behind() -> None:
    """close() lets go of every fast path even when letting go of one runs code that calls
    set_fast: nothing is armed afterwards and nothing is kept alive (the table's slots were
    overwritten while being cleared: a leak, and an armed slot holding NULL)."""
    sock = bound_socket()
    reader = Reader(sock.fileno(), print, print, READS_PER_WAKEUP)
    raws = [Reader.sockaddr(("127.0.0.1", port)) for port in (1001, 1002, 1003, 1004)]

    class Meddler(Armed):
        def __del__(self) -> None:
            reader.set_fast(raws[2], Armed())
            reader.set_fast(raws[3], Armed())

    try:
        second = Armed()
        gone = weakref.ref(second)
        reader.set_fast(raws[0], Meddler())
        reader.set_fast(raws[1], second)
        del second
        reader.close()
        assert reader.stats["armed"] == 0
        assert gone() is None
        reader.set_fast(raws[0], Armed())  # closed: arms nothing
        assert reader.stats["armed"] == 0
    finally:
        sock.close()


def test_a_reader_closed_by_a_callback_delivers_nothing_more() -> None:
    """A session that closes the socket from its callback (its last port closed) gets no
    more of the datagrams already read in that batch: close() means no more reads."""
    sock, bmc = bound_socket(), bound_socket()
    got: list[bytes] = []

    def fallback(data: bytes, addr: Any) -> None:
        got.append(data)
        reader.close()

    reader = Reader(sock.fileno(), fallback, print, READS_PER_WAKEUP)
    try:
        for data in (b"a", b"b", b"c"):
            bmc.sendto(data, sock.getsockname())
        time.sleep(0.05)
        reader()
        assert got == [b"a"]
        reader()
        assert got == [b"a"]
    finally:
        sock.close()
        bmc.close()


def test_an_icmp_error_is_reported_and_the_datagram_behind_it_is_read() -> None:
    """ECONNREFUSED on a read (an earlier send's port unreachable) goes to on_error and the
    same call reads on, so the datagram waiting behind the error is not left for later.
    (The pool's unconnected sockets get no such errors from Linux; a connected one does.)"""
    sock = bound_socket()
    gone = bound_socket()
    dead = gone.getsockname()
    gone.close()
    sock.connect(dead)
    got: list[tuple[bytes, Any]] = []
    errors: list[OSError] = []
    reader = Reader(sock.fileno(), lambda d, a: got.append((d, a)), errors.append,
                    READS_PER_WAKEUP)
    peer = None
    try:
        reader.sendto(b"ping", Reader.sockaddr(dead))
        time.sleep(0.05)  # the ICMP port unreachable is back
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(dead)  # the BMC is back on its port, and answers
        peer.sendto(b"pong", sock.getsockname())
        time.sleep(0.05)
        reader()
        assert [type(e) for e in errors] == [ConnectionRefusedError]
        assert got == [(b"pong", dead)]
        assert reader.stats["errors"] == 1
    finally:
        reader.close()
        sock.close()
        if peer is not None:
            peer.close()


class Blocked:
    """A reader on one end of a Unix datagram pair whose other end does not read.

    UDP on loopback never says EAGAIN: the loopback device frees each datagram's
    send-buffer charge as it is handed over, and a full receiver drops silently. A Unix
    datagram socket whose reader does not read does say it, and the reader's sendto is
    the same code for any socket."""

    def __init__(self) -> None:
        self.name = b"\0solgate-test-would-block-%d" % id(self)
        self.rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.errors: list[OSError] = []
        self.reader = Reader(self.tx.fileno(), print, self.errors.append, READS_PER_WAKEUP)
        self.rx.bind(self.name)
        self.rx.setblocking(False)
        self.raw = struct.pack("=H", socket.AF_UNIX) + self.name

    def fill(self) -> int:
        """Send until the receiver's queue is full; the number that went through."""
        for sent in range(100_000):
            try:
                self.reader.sendto(b"x" * 1000, self.raw)
            except BlockingIOError:
                return sent
        raise AssertionError("a send that would block was not raised")

    def drain(self) -> int:
        got = 0
        while True:
            try:
                self.rx.recv(2000)
            except BlockingIOError:
                return got
            got += 1

    def close(self) -> None:
        self.reader.close()
        self.rx.close()
        self.tx.close()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_a_send_that_would_block_is_dropped_counted_and_raised() -> None:
    """A send the socket cannot take now is dropped and counted, never queued; it raises
    BlockingIOError so that its caller (a fast path's ACK) can count it too."""
    blocked = Blocked()
    try:
        total, raised = 3000, []
        for _ in range(total):
            try:
                blocked.reader.sendto(b"x" * 1000, blocked.raw)
            except BlockingIOError as exc:
                raised.append(exc.errno)
        assert set(raised) <= {errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS}
        dropped = blocked.reader.stats["send_dropped"]
        assert dropped > 0
        assert len(raised) == dropped
        assert not blocked.errors
        assert blocked.drain() + dropped == total
    finally:
        blocked.close()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_a_session_send_that_would_block_is_dropped_quietly() -> None:
    """The Python path's sends (`Port.sendto`: requests, keystrokes, its ACKs) are dropped
    and counted when the socket is full, never raised into the session: the retransmit
    timer covers a lost request, as it covers one lost on the wire."""
    blocked = Blocked()
    try:
        shared = udp_pool.SharedSocket(None, socket.AF_INET)  # type: ignore[arg-type]
        shared.reader = blocked.reader
        port = udp_pool.Port(shared, ("127.0.0.1", 9), Collect())
        port._raw = blocked.raw  # noqa: SLF001 - the full Unix socket's address
        blocked.fill()
        dropped = blocked.reader.stats["send_dropped"]
        port.sendto(b"request")
        assert blocked.reader.stats["send_dropped"] == dropped + 1
        assert not blocked.errors
    finally:
        blocked.close()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_a_fast_path_ack_that_would_block_is_an_ack_failure_and_the_bytes_come_out() -> None:
    """What /metrics calls `solgate_sol_fast_path_ack_failures_total` counts the ACKs the
    reader dropped because the socket was full: the packet is taken all the same (its
    characters are delivered; the BMC resends and the Python path ACKs the copy)."""
    suite = CIPHER_SUITES[17]
    k1, k2, iv = bytes(range(1, 33)), bytes(range(101, 133)), bytes(range(0xA0, 0xB0))
    bmc = PacketProtector(suite, k1, k2, random=lambda n: bytes(16), native=False)
    ours = PacketProtector(suite, k1, k2, random=lambda n: iv, native=True)
    blocked = Blocked()
    try:
        fast = crypto._native.SolFastPath(ours._native, ours._random,  # noqa: SLF001
                                          lambda full: None, 8192)
        fast.arm(blocked.reader.sendto, blocked.raw, 0x11223344, 0x55667788, 41, 1, 32, 16,
                 7, 4, (1, 2, 3), 1, True, 0, 0)
        assert fast.receive(bmc.seal(PayloadType.SOL, 0x11223344, 42,
                                     b"\x05\x00\x00\x00one")) is True
        assert (fast.handled, fast.ack_failures) == (1, 0)  # the ACK went out
        blocked.fill()
        dropped = blocked.reader.stats["send_dropped"]
        assert fast.receive(bmc.seal(PayloadType.SOL, 0x11223344, 43,
                                     b"\x06\x00\x00\x00two")) is True
        assert (fast.handled, fast.ack_failures) == (2, 1)
        assert blocked.reader.stats["send_dropped"] == dropped + 1
        assert fast.take() == b"onetwo"
        assert not blocked.errors
    finally:
        blocked.close()


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
def test_v4_mapped_sources_on_a_dual_stack_socket_are_spelled_and_routed_as_python_does() -> None:
    """A dual-stack IPv6 socket hears 127.0.0.1 as ::ffff:127.0.0.1: the fallback gets the
    address socket.recvfrom gives, and sockaddr() of that address arms a fast path."""
    def dual_stack() -> socket.socket:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 0))
        s.settimeout(2)
        return s

    sock, plain, bmc = dual_stack(), dual_stack(), bound_socket()
    got: list[tuple[bytes, Any]] = []
    reader = Reader(sock.fileno(), lambda d, a: got.append((d, a)), print, READS_PER_WAKEUP)
    try:
        bmc.sendto(b"probe", ("127.0.0.1", plain.getsockname()[1]))
        spelled = plain.recvfrom(100)[1]
        assert spelled[0] == "::ffff:127.0.0.1"
        fast = Fast(reader.sendto, Reader.sockaddr(spelled))
        reader.set_fast(Reader.sockaddr(spelled), fast)
        bmc.sendto(b"F1", ("127.0.0.1", sock.getsockname()[1]))
        bmc.sendto(b"P1", ("127.0.0.1", sock.getsockname()[1]))
        time.sleep(0.05)
        reader()
        assert fast.taken == [b"F1"]
        assert got == [(b"P1", spelled)]
        assert bmc.recvfrom(100) == (b"ack F1", ("127.0.0.1", sock.getsockname()[1]))
    finally:
        reader.close()
        for s in (sock, plain, bmc):
            s.close()


def test_an_error_that_repeats_ends_the_wakeup() -> None:
    """An error on every read (here the fd is not a socket; in life one closed under the
    reader) is reported once or twice per wake-up, not once per datagram of the bound."""
    r, w = os.pipe()
    errors: list[OSError] = []
    reader = Reader(r, print, errors.append, READS_PER_WAKEUP)
    try:
        reader()
        assert 1 <= len(errors) <= 2
        assert {e.errno for e in errors} == {errno.ENOTSOCK}
    finally:
        reader.close()
        os.close(r)
        os.close(w)


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
@pytest.mark.parametrize("factory", LOOPS)
def test_one_address_behind_two_interfaces_gets_two_sockets(factory: Any) -> None:
    """Two BMCs with one link-local address behind two interfaces differ only in scope ID,
    which neither the sessions' keys nor the reader's raw keys hold: the pool puts them on
    separate sockets, so each socket's datagrams reach its own session and fast path.
    (Loopback has no link-local address; ::1 with scope IDs 0 and 1 stands in, and the
    kernel reports its sources with scope ID 0, as it would the interface's for fe80::.)"""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        bmc = bound_socket(socket.AF_INET6, "::1")
        host, port = bmc.getsockname()[:2]
        try:
            clients = [Collect(), Collect()]
            ports = [await SocketPool.of(loop).attach(socket.AF_INET6, (host, port, 0, scope),
                                                      client)
                     for scope, client in zip((0, 1), clients, strict=True)]
            assert ports[0]._shared is not ports[1]._shared  # noqa: SLF001
            fasts = [Fast(*p.fast_sendto()) for p in ports]
            for p, f in zip(ports, fasts, strict=True):
                p.set_fast(f)
            sources = []
            for i, p in enumerate(ports):
                p.sendto(b"hello %d" % i)
                data, source = bmc.recvfrom(100)
                assert data == b"hello %d" % i
                sources.append(source)
            for i, source in enumerate(sources):
                bmc.sendto(b"F%d" % i, source)
                bmc.sendto(b"P%d" % i, source)
            await until(lambda: all(c.got for c in clients))
            assert [c.got for c in clients] == [[b"P0"], [b"P1"]]
            assert [f.taken for f in fasts] == [[b"F0"], [b"F1"]]
            for p in ports:
                p.close()
        finally:
            bmc.close()
    run(factory, main)
