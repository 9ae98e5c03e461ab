"""Differential fuzzer of the compiled `DatagramReader` over real loopback sockets.

Each round opens a reader's socket (IPv4, IPv6 `::1`, or a dual-stack IPv6 socket fed
from 127.0.0.1, whose sources are v4-mapped), several peers (some armed as fast paths,
one a real unarmed `SolFastPath`), and sends bursts of random datagrams (0..70000 bytes;
the kernel refuses what is over the protocol's limit). Loopback delivers in send order,
so every callback is checked online against the next datagram sent: same bytes, same
source, spelled as `socket.recvfrom` spells it, routed to the fast path armed for that
source at that moment (its table is shadowed here), else to the fallback. Callbacks also
re-arm, disarm, send, raise and close the reader. Datagrams over the reader's slot
size must be dropped and counted as truncated. At the end, object counts and traced memory
must not grow with the rounds.

    python bench/fuzz_reader.py --rounds 300 --seed 1

Under ASan+UBSan, build the extension with `-fsanitize=address,undefined` and run with
`LD_PRELOAD` of libasan and libubsan and `PYTHONMALLOC=malloc` (the sanitizer then sees
every object).
"""

from __future__ import annotations

import argparse
import gc
import random
import socket
import sys
import time
import tracemalloc

from solgate.ipmi import crypto

native = crypto._native  # noqa: SLF001
Reader = native.DatagramReader
SLOT = 4096  # READER_SLOT_SIZE in _speedups.c
SO_RCVBUFFORCE = 33  # Linux; root may exceed rmem_max


class Stop(Exception):
    """Raised by a fallback on purpose."""


class Fast:
    def __init__(self, fuzz: Fuzz, src: int) -> None:
        self.fuzz, self.src = fuzz, src

    def receive(self, data: bytes) -> bool:
        return self.fuzz.on_fast(self, data)


class Fuzz:
    def __init__(self, rng: random.Random, mode: str) -> None:
        self.rng, self.mode = rng, mode
        family = socket.AF_INET if mode == "v4" else socket.AF_INET6
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        if mode == "mapped":
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.sock.bind(("::", 0))
        else:
            self.sock.bind(("127.0.0.1" if mode == "v4" else "::1", 0))
        self.sock.setblocking(False)
        peer_family = socket.AF_INET6 if mode == "v6" else socket.AF_INET
        peer_host = "::1" if mode == "v6" else "127.0.0.1"
        self.target = (peer_host, self.sock.getsockname()[1])
        self.peers = []
        for _ in range(rng.randint(2, 6)):
            p = socket.socket(peer_family, socket.SOCK_DGRAM)
            p.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            p.bind((peer_host, 0))
            self.peers.append(p)
        self.spelling = self.python_spelling()
        self.raw = [Reader.sockaddr(a) for a in self.spelling]
        self.reader = Reader(self.sock.fileno(), self.on_fallback, self.on_error,
                             rng.choice([1, 3, 64, 64, 100, 200]))
        self.table: dict[int, object] = {}  # shadow of the reader's fast table
        self.expected: list[tuple[int, bytes]] = []  # sent, not yet delivered
        self.closed = False
        self.may_close = rng.random() < 0.1
        self.raised = 0
        self.counts = {"fast": 0, "fallback": 0, "truncated": 0, "sent": 0}
        self.unarmed = native.SolFastPath(native.Protector("sha256", 16, b"k" * 32, b"a" * 16),
                                          None, lambda full: None, 8192)
        for i in range(len(self.peers)):
            if rng.random() < 0.5:
                self.arm(i, rng.random() < 0.2)

    def python_spelling(self) -> list[tuple]:
        """What socket.recvfrom on a socket like the reader's says of each peer."""
        probe = socket.socket(self.sock.family, socket.SOCK_DGRAM)
        if self.mode == "mapped":
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            probe.bind(("::", 0))
        else:
            probe.bind((self.sock.getsockname()[0], 0))
        probe.settimeout(2)
        out = []
        for p in self.peers:
            p.sendto(b"probe", (self.target[0], probe.getsockname()[1]))
            out.append(probe.recvfrom(100)[1])
        probe.close()
        return out

    def arm(self, i: int, real: bool = False) -> None:
        fast = self.unarmed if real else Fast(self, i)
        self.reader.set_fast(self.raw[i], fast)
        self.table[i] = fast

    def disarm(self, i: int) -> None:
        self.reader.set_fast(self.raw[i], None)
        self.table.pop(i, None)

    def next_expected(self) -> tuple[int, bytes]:
        while self.expected:
            src, data = self.expected.pop(0)
            if len(data) > SLOT:
                self.counts["truncated"] += 1
                continue
            return src, data
        raise AssertionError("a datagram delivered that was not sent")

    def meddle(self) -> None:
        """What a callback may do to the reader: re-arm, disarm, send, close."""
        rng = self.rng
        r = rng.random()
        if r < 0.05:
            self.arm(rng.randrange(len(self.peers)), rng.random() < 0.2)
        elif r < 0.10:
            self.disarm(rng.randrange(len(self.peers)))
        elif r < 0.11:
            self.reader.set_fast(self.raw[0], None)  # also when not armed
            self.table.pop(0, None)
        elif r < 0.112 and self.may_close:
            self.reader.close()
            self.closed = True
        elif r < 0.114:
            try:  # dropped and counted if it would block (never on loopback UDP)
                self.reader.sendto(b"x" * rng.randint(0, 2000),
                                   self.raw[rng.randrange(len(self.raw))])
            except BlockingIOError:
                pass

    def on_fast(self, fast: Fast, data: bytes) -> bool:
        assert not self.closed, "a fast path called after close"
        src, want = self.next_expected()
        assert src == fast.src, (src, fast.src)
        assert self.table.get(src) is fast, "a fast path called for a source it is not armed for"
        assert data == want
        if not data.startswith(b"F"):
            self.expected.insert(0, (src, data))  # the fallback gets it next
            return False
        self.counts["fast"] += 1
        self.meddle()
        return True

    def on_fallback(self, data: bytes, addr: tuple) -> None:
        assert not self.closed, "the fallback called after close"
        src, want = self.next_expected()
        assert data == want, (len(data), len(want))
        assert addr == self.spelling[src], (addr, self.spelling[src])
        assert type(addr[0]) is str
        assert type(addr[1]) is int
        fast = self.table.get(src)
        assert fast is None or fast is self.unarmed or not data.startswith(b"F"), \
            "a datagram the fast path would take went to the fallback"
        self.counts["fallback"] += 1
        self.meddle()
        if self.rng.random() < 0.01:
            self.raised += 1
            raise Stop

    def on_error(self, exc: Exception) -> None:
        raise AssertionError(f"unexpected socket error {exc!r}")

    def payload(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.1:
            n = 0
        elif r < 0.7:
            n = rng.randint(1, 300)
        elif r < 0.85:
            n = rng.randint(300, SLOT + 10)
        else:
            n = rng.randint(SLOT, 70000)
        head = b"F" if rng.random() < 0.5 else b"P"
        return (head + rng.randbytes(n))[:n]

    def burst(self) -> None:
        rng = self.rng
        for _ in range(rng.choice([1, 5, 63, 64, 65, 130, 300])):
            i = rng.randrange(len(self.peers))
            data = self.payload()
            try:
                self.peers[i].sendto(data, self.target)
            except OSError:  # over the protocol's limit: nothing sent
                assert len(data) > 65000
                continue
            self.expected.append((i, data))
            self.counts["sent"] += 1

    def drain(self) -> None:
        for _ in range(1000):
            if self.closed or not self.expected:
                return
            before = len(self.expected)
            try:
                self.reader()
            except Stop:
                pass
            if len(self.expected) == before and all(len(d) <= SLOT for _, d in self.expected):
                time.sleep(0.001)
        if not self.closed:
            # only oversize datagrams may remain (dropped without a callback)
            while self.expected and len(self.expected[0][1]) > SLOT:
                self.expected.pop(0)
                self.counts["truncated"] += 1
            assert not self.expected, f"{len(self.expected)} datagrams never delivered"

    def run(self) -> None:
        for _ in range(self.rng.randint(1, 6)):
            self.burst()
            self.drain()
            if self.closed:
                break
        stats = self.reader.stats
        if not self.closed:
            assert stats["received"] == self.counts["sent"], (stats, self.counts)
            assert stats["truncated"] == self.counts["truncated"], (stats, self.counts)
            assert stats["fast"] == self.counts["fast"], (stats, self.counts)
            assert stats["armed"] == len(self.table), (stats, self.table)
        else:
            self.reader()  # closed: reads nothing, calls nothing
            assert self.reader.fd == -1
            assert self.reader.stats["armed"] == 0
        self.reader.close()
        self.sock.close()
        for p in self.peers:
            p.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tracemalloc.start()
    marks = []
    totals = {"fast": 0, "fallback": 0, "truncated": 0, "sent": 0, "closed": 0, "raised": 0}
    started = time.monotonic()
    for n in range(args.rounds):
        mode = rng.choice(["v4", "v6", "mapped"])
        fuzz = Fuzz(rng, mode)
        fuzz.run()
        for k in ("fast", "fallback", "truncated", "sent"):
            totals[k] += fuzz.counts[k]
        totals["closed"] += fuzz.closed
        totals["raised"] += fuzz.raised
        del fuzz
        if n % max(1, args.rounds // 10) == 0 or n == args.rounds - 1:
            gc.collect()
            marks.append((n, len(gc.get_objects()), tracemalloc.get_traced_memory()[0]))
    print(f"module: {native.__file__}")
    print(f"{args.rounds} rounds in {time.monotonic() - started:.1f} s: {totals}")
    for n, objects, traced in marks:
        print(f"  after round {n:5d}: {objects} gc objects, {traced} bytes traced")
    first, last = marks[1] if len(marks) > 2 else marks[0], marks[-1]
    if last[1] - first[1] > 200 or last[2] - first[2] > 200_000:
        print("GROWTH: objects or memory grew with the rounds")
        sys.exit(1)


if __name__ == "__main__":
    main()
