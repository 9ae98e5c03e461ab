"""The console engine when a BMC is unreachable, many start at once, or a console changes.

Real UDP on loopback: a silent socket stands in for a BMC that never answers, then a
simulated BMC takes its port; a fleet starts under a small setup-concurrency limit; a
reload changes one console's settings while others keep their sessions.
"""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

import pytest

from solgate.console.manager import ConsoleManager
from solgate.console.worker import Backoff
from solgate.sim.faults import FaultConfig
from solgate.sim.fleet import SimFleet
from tests.engine_helpers import (
    engine_config,
    event_lines,
    log_bytes,
    running_manager,
    sim_factory,
    wait_active,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


def test_backoff_grows_with_jitter_and_stops_at_the_cap() -> None:
    backoff = Backoff(cap=60.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(60.0, 2.0**n) for n in range(12)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling  # jitter, inside the doubling window
    assert max(delays) <= 60.0
    assert delays[-1] >= 30.0  # at the cap, still jittered
    assert len({round(d, 6) for d in delays[-4:]}) == 4  # consoles do not retry in step
    backoff.reset()
    assert backoff.next_delay() <= 1.0


async def test_an_unreachable_bmc_is_retried_until_it_answers(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.setblocking(False)
    port = silent.getsockname()[1]
    config = engine_config(tmp_path, {"node": port}, retransmit_timeout="100ms", max_tries=2,
                           reconnect_max="1s")
    try:
        async with running_manager(config) as manager:
            worker = manager.get("node")
            await wait_for(lambda: worker.state == "unreachable", 10, "state unreachable")
            assert f"127.0.0.1:{port}" in worker.state_detail or "node" in worker.state_detail
            assert worker.state_detail  # the last error, in words
            # It keeps trying, at most a capped backoff apart.
            await wait_for(lambda: worker.reconnects >= 3, 10, "three retries")
            seen = 0
            while True:
                try:
                    silent.recv(2048)
                except BlockingIOError:
                    break
                seen += 1
            assert seen >= 6, "each attempt sends its request and its retries"
            # The BMC comes up on that port: the console is active by itself.
            silent.close()
            async with SimFleet(1, base_port=port, config_factory=sim_factory()) as fleet:
                assert fleet.bmcs[0].port == port
                await wait_active(worker, timeout=10)
                assert event_lines(log_bytes(worker)) == ["SOL up (cipher suite 17)"]
    finally:
        silent.close()


class CountingSemaphore(asyncio.Semaphore):
    """The engine's setup semaphore, counting how many hold it at once."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.holding = 0
        self.most = 0
        self.entries = 0

    async def __aenter__(self) -> None:
        await super().__aenter__()
        self.holding += 1
        self.entries += 1
        self.most = max(self.most, self.holding)

    async def __aexit__(self, *exc: object) -> None:
        self.holding -= 1
        await super().__aexit__(*exc)


async def test_many_consoles_start_within_the_setup_limit(tmp_path: Path) -> None:
    # 20 ms each way on every datagram, so handshakes overlap if nothing limits them.
    faults = FaultConfig.symmetric(delay=1.0, max_delay=0.02, seed=3)
    async with SimFleet(12, base_port=0, config_factory=sim_factory(), faults=faults) as fleet:
        consoles = {f"n{i:02d}": bmc.port for i, bmc in enumerate(fleet.bmcs)}
        config = engine_config(tmp_path, consoles, retransmit_timeout="500ms")
        manager = ConsoleManager(config)
        slots = CountingSemaphore(2)
        manager.setup_slots = slots
        await manager.start()
        try:
            for worker in manager.consoles():
                await wait_active(worker, timeout=20)
        finally:
            await asyncio.wait_for(manager.stop(), 15)
        assert slots.entries >= 12  # every console's setup went through it
        assert slots.most == 2, f"at most 2 setups at once, saw {slots.most}"
        peaks = [bmc.core.stats.sessions_opened for bmc in fleet.bmcs]
        assert all(p >= 1 for p in peaks)


async def test_reload_restarts_only_the_changed_console(tmp_path: Path) -> None:
    async with SimFleet(3, base_port=0, config_factory=sim_factory()) as fleet:
        ports = {name: bmc.port for name, bmc in zip("abc", fleet.bmcs, strict=True)}
        old = engine_config(tmp_path, ports)
        async with running_manager(old) as manager:
            workers = {name: manager.get(name) for name in "abc"}
            for worker in workers.values():
                await wait_active(worker)
            viewer = workers["b"].hub.attach("ops", can_write=False)
            sessions = {name: set(bmc.core.sessions)
                        for name, bmc in zip("abc", fleet.bmcs, strict=True)}

            new = engine_config(tmp_path, ports, per_console={"b": {"keepalive_interval": "3s"}})
            summary = await asyncio.wait_for(manager.reload(new), 10)
            assert summary == {"added": [], "removed": [], "changed": ["b"]}

            b = manager.get("b")
            assert b is not workers["b"]
            assert b.console.keepalive_interval == 3.0
            await wait_active(b)
            assert [t for t in event_lines(log_bytes(b)) if t.startswith("SOL")] == [
                "SOL up (cipher suite 17)", "SOL down: solgate stopping",
                "SOL up (cipher suite 17)"]
            assert not viewer.closed  # a viewer of the changed console stays attached
            for name in "ac":
                assert manager.get(name) is workers[name]
                assert workers[name].reconnects == 0
                assert [t for t in event_lines(log_bytes(workers[name]))
                        if t.startswith("SOL")] == ["SOL up (cipher suite 17)"]
            assert set(fleet.bmcs[0].core.sessions) == sessions["a"]
            assert set(fleet.bmcs[2].core.sessions) == sessions["c"]
            viewer.detach()
