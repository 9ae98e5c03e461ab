"""Many simulated BMCs on one asyncio loop: the thin shell around `SimBmc` cores.

Theory of operation
-------------------
Each BMC gets one UDP socket (its own port, as real BMCs have their own address) and a
`FaultyBmc` wrapper around its sans-I/O core. A datagram is handed to the wrapper with
`loop.time()`, whatever it queued is sent at once, and the BMC's next deadline is
re-filed. All BMCs share ONE timer heap and ONE `loop.call_at` for its earliest entry:
entries are ``(deadline, index)`` and are stale (skipped) when the BMC's current deadline
differs, so re-filing never searches the heap. An idle BMC has no deadline, hence no
entry and no cost; 2,000 BMCs are 2,000 sockets and nothing else.

The sockets are plain non-blocking sockets in ONE epoll set of the fleet's own, and the
loop watches only that set's descriptor: a wake-up asks the set which sockets are ready
and reads each one until it is empty (at most `READ_BATCH` datagrams), with one loop
callback for all of them instead of one per socket and datagram. A datagram is sent with
the socket's own `sendto`; should the kernel refuse for a full send buffer, the rest waits
in the BMC's backlog for the socket to become writable, in order. Where there is no epoll
(not Linux) each socket gets its own loop reader; the rest is the same.

Under load the timer fires late. Before it runs any BMC's timers it reads what is already
waiting in the sockets, so an ACK that reached a BMC's socket before its retransmit fell
due counts, as it would on a real BMC with its own CPU; a late simulator then does not
resend (and in the end give up on) packets that were acknowledged in time.

`base_port=0` gives every BMC a free port (tests); otherwise BMC ``i`` listens on
``base_port + i``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import resource
import select
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from solgate.addresses import join_host_port
from solgate.errors import SolgateError
from solgate.sim.bmc import SimBmc, SimBmcConfig
from solgate.sim.bmc_session import Address
from solgate.sim.faults import FaultConfig, FaultyBmc
from solgate.sim.host import SimHost

if TYPE_CHECKING:
    from types import TracebackType

log = logging.getLogger(__name__)

ConfigFactory = Callable[[int, str], SimBmcConfig]
FaultsFactory = Callable[[int], FaultConfig]

READ_BATCH = 64  # datagrams read from one socket per wake-up before the next socket's turn
MAX_DATAGRAM = 65536


def default_name(index: int, count: int) -> str:
    """sim001, sim002, ... (wider when there are more than 999)."""
    return f"sim{index + 1:0{max(3, len(str(count)))}d}"


def default_config(index: int, name: str) -> SimBmcConfig:
    """One BMC with user admin/password and a simulated host."""
    return SimBmcConfig(name=name, host=SimHost(name, seed=index))


def make_host(name: str, **kwargs: Any) -> SimHost:
    """A simulated host; kept for callers written before `SimHost` existed."""
    return SimHost(name, **kwargs)


@dataclass(eq=False)
class SimBmcHandle:
    """One running BMC: where it listens and the objects behind it."""

    index: int
    name: str
    core: SimBmc
    link: FaultyBmc
    port: int = 0
    sock: socket.socket | None = field(default=None, repr=False)
    deadline: float | None = None
    # Datagrams the kernel would not take yet (full send buffer), oldest first.
    backlog: deque[tuple[bytes, Address]] | None = field(default=None, repr=False)

    @property
    def host(self) -> SimHost | None:
        return self.core.host

    @property
    def faults(self) -> FaultConfig:
        return self.link.faults

    def restart(self) -> None:
        """Forget every session, as if the BMC rebooted (the host keeps running)."""
        self.link.restart()


class SimFleet:
    """`count` simulated BMCs on `host`, ports `base_port`.. (or free ports with 0)."""

    def __init__(self, count: int, base_port: int = 9001, host: str = "127.0.0.1", *,
                 config_factory: ConfigFactory = default_config,
                 faults: FaultConfig | FaultsFactory | None = None,
                 power_on: bool = True) -> None:
        if count < 1:
            raise SolgateError("a simulated fleet needs at least one BMC (--count)")
        if base_port and base_port + count - 1 > 65535:
            raise SolgateError(
                f"ports {base_port}..{base_port + count - 1} run past 65535; "
                "lower --base-port or --count"
            )
        self.count = count
        self.base_port = base_port
        self.bind_host = host
        self.power_on = power_on
        self.bmcs: list[SimBmcHandle] = []
        self._config_factory = config_factory
        self._faults = faults
        self._heap: list[tuple[float, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: select.epoll | None = None
        self._by_fd: dict[int, SimBmcHandle] = {}
        self.use_epoll = hasattr(select, "epoll")  # False: one loop reader per socket
        self.errors = 0  # exceptions raised by a core (bugs), logged and survived

    async def __aenter__(self) -> SimFleet:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        _raise_file_limit(self.count + 256)
        now = loop.time()
        try:
            family, address = _bind_address(self.bind_host)
            if self.use_epoll:
                self._poller = select.epoll()
                loop.add_reader(self._poller.fileno(), self._poll_input)
            for index in range(self.count):
                handle = self._make(index, now)
                port = self.base_port + index if self.base_port else 0
                sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    sock.setblocking(False)
                    sock.bind((address[0], port, *address[2:]))
                except OSError as exc:
                    sock.close()
                    raise SolgateError(
                        f"simulated BMC {handle.name} cannot listen on "
                        f"{join_host_port(self.bind_host, port)}: {exc.strerror or exc}; "
                        "pick another "
                        "--base-port or stop whatever uses it"
                    ) from exc
                handle.sock = sock
                handle.port = sock.getsockname()[1]
                handle.core.port = handle.port
                self.bmcs.append(handle)
                self._by_fd[sock.fileno()] = handle
                if self._poller is not None:
                    self._poller.register(sock.fileno(), select.EPOLLIN)
                else:
                    loop.add_reader(sock.fileno(), self._read_socket, handle)
        except BaseException:
            await self.stop()
            raise

    def _make(self, index: int, now: float) -> SimBmcHandle:
        name = default_name(index, self.count)
        config = self._config_factory(index, name)
        faults = self._faults(index) if callable(self._faults) else self._faults
        core = SimBmc(config)
        if self.power_on and core.host is not None and not core.host.powered:
            core.host.power_on(now)
        return SimBmcHandle(index, config.name, core, FaultyBmc(core, faults, index=index))

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = self._loop
        if self._poller is not None:
            if loop is not None:
                loop.remove_reader(self._poller.fileno())
            self._poller.close()
            self._poller = None
        for handle in self.bmcs:
            sock = handle.sock
            if sock is not None:
                if loop is not None and not self.use_epoll:
                    loop.remove_reader(sock.fileno())
                if loop is not None and handle.backlog:
                    loop.remove_writer(sock.fileno())
                sock.close()
                handle.sock = None
                handle.backlog = None
        self._by_fd.clear()
        self._heap.clear()
        await asyncio.sleep(0)

    @property
    def ports(self) -> list[int]:
        return [h.port for h in self.bmcs]

    # ------------------------------------------------------------------ I/O and timers

    def _poll_input(self) -> None:
        """The epoll set is readable: read every ready socket, then re-arm the timer once."""
        poller = self._poller
        if poller is None:
            return
        by_fd = self._by_fd
        for fd, _ in poller.poll(0, len(by_fd) or 1):
            handle = by_fd.get(fd)
            if handle is not None:
                self._read(handle)
        self._arm()

    def _read_socket(self, handle: SimBmcHandle) -> None:
        """One socket is readable (the loop-reader path, without epoll)."""
        self._read(handle)
        self._arm()

    def _read(self, handle: SimBmcHandle) -> None:
        """Hand up to `READ_BATCH` waiting datagrams to the BMC; send what it queued."""
        sock = handle.sock
        if sock is None:
            return
        assert self._loop is not None
        clock = self._loop.time
        link = handle.link
        got = False
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # an ICMP error for an earlier send: nothing to read
                log.debug("%s: socket error %s", handle.name, exc)
                continue
            got = True
            try:
                link.receive_datagram(data, addr, clock())
            except Exception:  # a core bug must not take 2,000 BMCs down with it
                self.errors += 1
                log.exception("%s: simulated BMC failed on a datagram", handle.name)
            self._flush(handle)
        if got:
            self._refile(handle)

    def _flush(self, handle: SimBmcHandle) -> None:
        out = handle.link.datagrams_to_send()
        if not out:
            return
        sock = handle.sock
        if sock is None:
            return
        backlog = handle.backlog
        for item in out:
            if backlog:
                backlog.append(item)
                continue
            try:
                sock.sendto(*item)
            except (BlockingIOError, InterruptedError):
                backlog = handle.backlog = deque([item])
                assert self._loop is not None
                self._loop.add_writer(sock.fileno(), self._drain_backlog, handle)
            except OSError as exc:  # e.g. the console's port is gone (ICMP): lost, as UDP is
                log.debug("%s: send failed: %s", handle.name, exc)

    def _drain_backlog(self, handle: SimBmcHandle) -> None:
        """The socket is writable again: send the backlog in order."""
        sock, backlog = handle.sock, handle.backlog
        while sock is not None and backlog:
            try:
                sock.sendto(*backlog[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("%s: send failed: %s", handle.name, exc)
            backlog.popleft()
        handle.backlog = None
        if sock is not None and self._loop is not None:
            self._loop.remove_writer(sock.fileno())

    def _refile(self, handle: SimBmcHandle) -> None:
        deadline = handle.link.next_deadline()
        if deadline != handle.deadline:
            handle.deadline = deadline
            if deadline is not None:
                heapq.heappush(self._heap, (deadline, handle.index))

    def poke(self, handle: SimBmcHandle) -> None:
        """Re-file a BMC's deadline after changing its state from outside (a test, a host
        power action): its new timers are then honoured."""
        self._flush(handle)
        self._refile(handle)
        self._arm()

    def _arm(self) -> None:
        heap = self._heap
        while heap and self.bmcs[heap[0][1]].deadline != heap[0][0]:
            heapq.heappop(heap)  # stale
        if not heap:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = self._timer_when = None
            return
        when = heap[0][0]
        if self._timer is not None and self._timer_when == when:
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_at(when, self._fire)
        self._timer_when = when

    def _fire(self) -> None:
        self._timer = self._timer_when = None
        assert self._loop is not None
        if self._poller is not None:  # what already arrived first (module docstring)
            for fd, _ in self._poller.poll(0, len(self._by_fd) or 1):
                handle = self._by_fd.get(fd)
                if handle is not None:
                    self._read(handle)
        now = self._loop.time()
        heap = self._heap
        due: list[tuple[float, SimBmcHandle]] = []
        while heap and heap[0][0] <= now:
            deadline, index = heapq.heappop(heap)
            handle = self.bmcs[index]
            if handle.deadline == deadline:
                handle.deadline = None
                due.append((deadline, handle))
        for deadline, handle in due:
            try:
                handle.link.handle_timeout(max(now, deadline))
            except Exception:
                self.errors += 1
                log.exception("%s: simulated BMC failed on a timer", handle.name)
            self._flush(handle)
            self._refile(handle)
        self._arm()


def _bind_address(host: str) -> tuple[int, tuple[Any, ...]]:
    """The address family and sockaddr (port 0) to bind `host` (a name is resolved once, at
    start, in this thread: the loop's resolver pool would keep a thread for nothing).

    The whole sockaddr is kept: for "fe80::11%v1" it is (host, port, flowinfo, scope_id),
    and a link-local address bound without its scope ID is refused (EINVAL)."""
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise SolgateError(f"simulated BMCs cannot listen on {host}: {exc}") from exc
    family, _, _, _, sockaddr = infos[0]
    return family, tuple(sockaddr)


def _raise_file_limit(wanted: int) -> None:
    """One socket per BMC: lift the soft open-files limit toward the hard one if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
