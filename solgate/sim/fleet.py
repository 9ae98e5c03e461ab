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

`base_port=0` gives every BMC a free port (tests); otherwise BMC ``i`` listens on
``base_port + i``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
    transport: asyncio.DatagramTransport | None = field(default=None, repr=False)
    deadline: float | None = None

    @property
    def host(self) -> SimHost | None:
        return self.core.host

    @property
    def faults(self) -> FaultConfig:
        return self.link.faults

    def restart(self) -> None:
        """Forget every session, as if the BMC rebooted (the host keeps running)."""
        self.link.restart()


class _BmcProtocol(asyncio.DatagramProtocol):
    __slots__ = ("fleet", "handle")

    def __init__(self, fleet: SimFleet, handle: SimBmcHandle) -> None:
        self.fleet = fleet
        self.handle = handle

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.fleet._datagram(self.handle, data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("%s: socket error %s", self.handle.name, exc)


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
            for index in range(self.count):
                handle = self._make(index, now)
                port = self.base_port + index if self.base_port else 0
                try:
                    transport, _ = await loop.create_datagram_endpoint(
                        functools.partial(_BmcProtocol, self, handle),
                        local_addr=(self.bind_host, port),
                    )
                except OSError as exc:
                    raise SolgateError(
                        f"simulated BMC {handle.name} cannot listen on "
                        f"{self.bind_host}:{port}: {exc.strerror or exc}; pick another "
                        "--base-port or stop whatever uses it"
                    ) from exc
                handle.transport = transport
                handle.port = transport.get_extra_info("sockname")[1]
                handle.core.port = handle.port
                self.bmcs.append(handle)
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
        for handle in self.bmcs:
            if handle.transport is not None:
                handle.transport.close()
                handle.transport = None
        self._heap.clear()
        await asyncio.sleep(0)  # let the transports finish closing

    @property
    def ports(self) -> list[int]:
        return [h.port for h in self.bmcs]

    # ------------------------------------------------------------------ I/O and timers

    def _datagram(self, handle: SimBmcHandle, data: bytes, addr: Address) -> None:
        assert self._loop is not None
        try:
            handle.link.receive_datagram(data, addr, self._loop.time())
        except Exception:  # a core bug must not take 2,000 BMCs down with it
            self.errors += 1
            log.exception("%s: simulated BMC failed on a datagram", handle.name)
        self._flush(handle)
        self._refile(handle)
        self._arm()

    def _flush(self, handle: SimBmcHandle) -> None:
        transport = handle.transport
        for data, addr in handle.link.datagrams_to_send():
            if transport is not None:
                transport.sendto(data, addr)

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


def _raise_file_limit(wanted: int) -> None:
    """One socket per BMC: lift the soft open-files limit toward the hard one if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
