"""The shared UDP sockets of IPMI sessions: one socket carries many BMCs.

Theory of operation
-------------------
An unconnected UDP socket can talk to any address, so up to `CLIENTS_PER_SOCKET`
sessions (each to a different BMC address) share one, and its datagrams are routed by
source address to the session registered for it; anything from an address with no
session is dropped and counted, as a connected socket's kernel filter would have dropped
it. Thousands of consoles then need a few hundred descriptors, not one each. A session
sees its share as a `Port` (`sendto`, `close`); the pool is per event loop.

With `transport.py` this is the only asyncio and socket code in `solgate/ipmi/`
(tests/test_gates.py); the session logic stays in the sans-I/O `ClientSession`.

Reading in C
------------
With the compiled module, a socket is not an asyncio datagram endpoint: a C
`_speedups.DatagramReader` is registered with `loop.add_reader` and, per wake-up, reads
up to `READS_PER_WAKEUP` datagrams with one `recvmmsg`, hands those from an armed fast
path's address straight to it (no address tuple, no Python frame) and the rest to
`SharedSocket._fallback` with the (host, port) the kernel reported; sends go out on the
fd (`DatagramReader.sendto`, a raw sockaddr made once per port). At 115200 baud each SOL
packet arrives alone, so this per-wake-up cost is most of the per-packet cost
(docs/benchmarks.md). The pure-Python build keeps the datagram endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from solgate.ipmi import crypto

__all__ = ["CLIENTS_PER_SOCKET", "COUNTERS", "SOCKET_RECEIVE_BUFFER", "FastReceiver", "Port",
           "Receiver", "SocketPool", "counters", "numeric_address"]

log = logging.getLogger("solgate.ipmi.transport")  # the name operators filter on, as before


class Receiver(Protocol):
    """What the pool hands a session's datagrams to (`transport.IpmiClient`)."""

    def _datagram_received(self, data: bytes) -> None: ...

    def _connection_lost(self) -> None: ...


class FastReceiver(Protocol):
    """A session's compiled SOL path while armed (`fastpath.FastPath`, C `SolFastPath`):
    takes a datagram whole, or declines it (False) with nothing changed."""

    def receive(self, data: bytes) -> bool: ...


CLIENTS_PER_SOCKET = 64  # sessions sharing one UDP socket (pyghmi uses 64 too)
SOCKET_RECEIVE_BUFFER = 1 << 20  # asked for; the kernel caps it at net.core.rmem_max
# Datagrams read per wake-up of a socket. asyncio reads one per loop iteration, and the
# handshakes under way share few sockets (they fill up in order): in a failover of
# thousands, whose loop iterations are long while consoles start, a handshake then
# advanced by one datagram per socket per iteration.
READS_PER_WAKEUP = 64
MAX_DATAGRAM = 65536
# What the shared sockets count, summed over a loop's sockets (`counters`, /metrics):
# sends dropped because they would block and datagrams too long for the C reader's slot
# (both only with the C reader: asyncio queues such sends, and reads 64 KiB), socket
# errors, and datagrams from an address with no session.
COUNTERS = ("send_dropped", "truncated", "errors", "stray")


class SharedSocket(asyncio.DatagramProtocol):
    """One unconnected UDP socket carrying up to `CLIENTS_PER_SOCKET` sessions.

    Each session talks to a different BMC address, so an incoming datagram goes to the
    client registered for its source address; datagrams from anyone else are dropped and
    counted (`stray`), as a connected socket's kernel filter would have dropped them.
    Sharing keeps a 10,000-console server at ~160 sockets instead of 10,000 descriptors.
    """

    def __init__(self, pool: SocketPool, family: int) -> None:
        self.pool = pool
        self.family = family
        self.clients: dict[tuple[Any, ...], Receiver] = {}
        # Armed compiled paths by address, for the datagram endpoint (the C reader keeps
        # its own table): tried first, the client gets what they decline.
        self.fast: dict[tuple[Any, ...], FastReceiver] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.sock: socket.socket | None = None  # the same socket, read directly (asyncio)
        self.reader: Any = None  # the C DatagramReader, when it reads the socket instead
        self.closed = False
        self.stray = 0
        self.errors = 0  # reported to error_received (the C reader counts its own)

    def usable(self) -> bool:
        """Whether new ports may go on this socket (it is open)."""
        if self.reader is not None:
            return not self.closed
        return self.transport is not None and not self.transport.is_closing()

    def counters(self) -> dict[str, int]:
        """This socket's `COUNTERS` since it was opened."""
        if self.reader is not None:
            stats = self.reader.stats
            return {"send_dropped": stats["send_dropped"], "truncated": stats["truncated"],
                    "errors": stats["errors"], "stray": self.stray}
        return {"send_dropped": 0, "truncated": 0, "errors": self.errors, "stray": self.stray}

    def _fallback(self, data: bytes, addr: Any) -> None:
        """A datagram no armed fast path took (declined, a handshake, a request's answer,
        a stray), from the C reader or `_deliver`: to its session, or counted."""
        client = self.clients.get(addr[:2])
        if client is None:
            self.stray += 1
            return
        client._datagram_received(data)

    def close(self) -> None:
        """Stop reading (C reader), close the socket, tell the sessions left."""
        if self.closed:
            return
        self.closed = True
        reader, sock = self.reader, self.sock
        if reader is not None and sock is not None:
            if not self.pool.loop.is_closed():
                self.pool.loop.remove_reader(reader.fd)
            reader.close()
            sock.close()
        elif self.transport is not None:
            self.transport.close()
            return  # connection_lost follows from the transport
        self.connection_lost(None)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """One datagram from asyncio, then whatever else waits on the socket (bounded).

        An armed fast path is called from `_deliver`, so a SOL data datagram costs two
        Python frames and one C call (fastpath.py)."""
        self._deliver(data, addr)
        sock, transport = self.sock, self.transport
        if sock is None or transport is None:
            return
        for _ in range(READS_PER_WAKEUP - 1):
            if transport.is_closing():
                return
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.error_received(exc)
                return
            self._deliver(data, addr)

    def _deliver(self, data: bytes, addr: Any) -> None:
        """The datagram endpoint's route: an armed fast path first, then the client."""
        fast = self.fast.get(addr[:2])
        if fast is not None and fast.receive(data):
            return
        self._fallback(data, addr)

    def error_received(self, exc: Exception) -> None:
        # Unconnected sockets rarely see ICMP errors; the retransmit timer reports failures.
        self.errors += 1
        log.debug("shared IPMI socket error %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        for client in list(self.clients.values()):
            client._connection_lost()
        self.clients.clear()
        self.fast.clear()


class Port:
    """One client's view of a shared socket: `sendto(data)` goes to its BMC's address."""

    __slots__ = ("_shared", "_address", "_key", "_client", "_closed", "_raw")

    def __init__(self, shared: SharedSocket, address: Any, client: Receiver) -> None:
        self._shared = shared
        self._address = address
        self._key = tuple(address[:2])
        self._client = client
        self._closed = False
        # The C reader's spelling of the address, made once: what it sends to and routes by.
        self._raw: bytes | None = None
        if shared.reader is not None:
            host, *rest = address
            self._raw = shared.reader.sockaddr((str(host).split("%")[0], *rest))
        shared.clients[self._key] = client

    def sendto(self, data: bytes) -> None:
        """Send to this port's BMC. With the C reader a send that would block is dropped
        (counted in the reader's `send_dropped`): the retransmit timer covers it."""
        shared = self._shared
        if shared.reader is not None:
            if not shared.closed:
                try:
                    shared.reader.sendto(data, self._raw)
                except BlockingIOError:
                    pass
            return
        transport = shared.transport
        if transport is not None:
            transport.sendto(data, self._address)

    def fast_sendto(self) -> tuple[Callable[[bytes, Any], object], Any]:
        """The socket's own send and this port's address, for a compiled caller."""
        shared = self._shared
        if shared.reader is not None:
            if shared.closed or self._closed:
                return _discard, self._raw
            return shared.reader.sendto, self._raw
        transport = shared.transport
        if transport is None or self._closed:
            return _discard, self._address
        return transport.sendto, self._address

    def set_fast(self, fast: FastReceiver | None) -> None:
        """Route this address's datagrams to `fast` first (None: to the client only)."""
        shared = self._shared
        if shared.reader is not None:  # the C reader keeps its own table, by raw address
            if not shared.closed and (fast is None or not self._closed):
                shared.reader.set_fast(self._raw, fast)
        elif fast is None:
            shared.fast.pop(self._key, None)
        elif not self._closed:
            shared.fast[self._key] = fast

    def is_closing(self) -> bool:
        return self._closed or not self._shared.usable()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        shared = self._shared
        self.set_fast(None)
        if shared.clients.get(self._key) is self._client:
            del shared.clients[self._key]
        if not shared.clients:
            shared.pool.forget(shared)
            shared.close()
        shared.pool.loop.call_soon(self._client._connection_lost)


class SocketPool:
    """The shared sockets of one event loop, filled up to `CLIENTS_PER_SOCKET` each."""

    _pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SocketPool] = (
        weakref.WeakKeyDictionary())

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sockets: list[SharedSocket] = []
        self._lock = asyncio.Lock()
        self._retired = dict.fromkeys(COUNTERS, 0)  # counts of the sockets closed so far

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> SocketPool:
        pool = cls._pools.get(loop)
        if pool is None:
            pool = cls._pools[loop] = cls(loop)
        return pool

    def _find(self, family: int, key: tuple[Any, ...]) -> SharedSocket | None:
        """A socket with room and no session to `key` (host, port): routing by source
        address (and the C reader's raw key) then needs no IPv6 scope ID."""
        for shared in self.sockets:
            if (shared.family == family and len(shared.clients) < CLIENTS_PER_SOCKET
                    and key not in shared.clients and shared.usable()):
                return shared
        return None

    async def attach(self, family: int, address: Any, client: Receiver) -> Port:
        """A port on a socket with room and no other session to the same BMC address."""
        key = tuple(address[:2])
        shared = self._find(family, key)
        if shared is None:
            async with self._lock:
                shared = self._find(family, key)
                if shared is None:
                    shared = await self._open(family)
        return Port(shared, address, client)

    async def _open(self, family: int) -> SharedSocket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RECEIVE_BUFFER)
            sock.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))  # noqa: S104
            shared = SharedSocket(self, family)
            reader_type = _reader_type()
            if reader_type is not None:
                shared.reader = reader_type(sock.fileno(), shared._fallback,
                                            shared.error_received, READS_PER_WAKEUP)
                shared.sock = sock
                self.loop.add_reader(sock.fileno(), shared.reader)
                self.sockets.append(shared)
                return shared
            transport, _ = await self.loop.create_datagram_endpoint(lambda: shared, sock=sock)
        except BaseException:
            sock.close()
            raise
        shared.transport = transport
        if isinstance(self.loop, asyncio.SelectorEventLoop):
            # asyncio's selector loop hands over one datagram per wake-up, so the rest are
            # read here; uvloop (libuv) reads until the socket is empty, and one more read
            # would only fail (a system call and an exception per datagram).
            shared.sock = sock
        self.sockets.append(shared)
        return shared

    def forget(self, shared: SharedSocket) -> None:
        if shared in self.sockets:
            self.sockets.remove(shared)
            for key, value in shared.counters().items():
                self._retired[key] += value

    def counters(self) -> dict[str, int]:
        """`COUNTERS` over every socket this pool opened, closed ones included (a counter
        that fell when a socket closed would read as a reset to Prometheus)."""
        totals = dict(self._retired)
        for shared in self.sockets:
            for key, value in shared.counters().items():
                totals[key] += value
        return totals


# Whether the C reader reads the sockets when the compiled module is there (tests turn it
# off to compare; SOLGATE_NATIVE=0 turns off the whole compiled path).
USE_READER = True


def _reader_type() -> Any:
    """The compiled `DatagramReader`, or None (pure-Python build, SOLGATE_NATIVE=0)."""
    native = crypto._native  # noqa: SLF001
    if not USE_READER or not crypto.NATIVE or native is None:
        return None
    return getattr(native, "DatagramReader", None)


def counters(loop: asyncio.AbstractEventLoop) -> dict[str, int]:
    """The `COUNTERS` of `loop`'s shared sockets (zeros before its first session)."""
    pool = SocketPool._pools.get(loop)  # noqa: SLF001 - not made just to be read
    return pool.counters() if pool is not None else dict.fromkeys(COUNTERS, 0)


def _discard(data: bytes, address: Any) -> None:
    """Where a closed port's compiled caller sends (nowhere, as `IpmiClient` would)."""


def numeric_address(host: str, port: int) -> tuple[int, Any] | None:
    """(family, sockaddr) for an IP literal, or None for a name to resolve.

    asyncio resolves even literals in its thread pool; at start-up that was a fifth of
    the loop's time with 1,000 BMCs configured by address. The address is normalized as
    the kernel reports datagram sources, which is how `SharedSocket` routes them.
    """
    for family in (socket.AF_INET, socket.AF_INET6):
        if family == socket.AF_INET6 and "%" in host:
            return None  # a scope ID: let getaddrinfo fill it in
        try:
            packed = socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        text = socket.inet_ntop(family, packed)
        return family, ((text, port) if family == socket.AF_INET else (text, port, 0, 0))
    return None
