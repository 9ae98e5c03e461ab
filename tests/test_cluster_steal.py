"""A cluster member forces another session off SOL only while etcd says the console is its."""

from __future__ import annotations

from pathlib import Path

import pytest

from solgate.console.manager import ConsoleManager
from solgate.sim.bmc_sol import PHANTOM_SESSION_ID
from solgate.sim.faults import FaultConfig
from solgate.sim.fleet import SimFleet
from tests.engine_helpers import (
    engine_config,
    event_lines,
    log_bytes,
    sim_factory,
    wait_active,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


async def test_no_deactivate_unless_the_ownership_check_says_the_console_is_ours(
        tmp_path: Path) -> None:
    faults = FaultConfig(phantom_sol_owner=True)
    async with SimFleet(1, base_port=0, config_factory=sim_factory(), faults=faults) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port}, steal=True, reconnect_max="500ms")
        asked: list[str] = []
        ours = False

        async def still_owner(name: str) -> bool:
            asked.append(name)
            return ours

        manager = ConsoleManager(config)
        manager.steal_check = still_owner
        await manager.start()
        try:
            worker = manager.get("node")
            assert worker is not None
            await wait_for(lambda: len(asked) >= 2, 5, "the worker to ask twice")
            assert worker.state in ("held-elsewhere", "backoff", "connecting", "activating")
            assert bmc.core.sol.owner == PHANTOM_SESSION_ID  # left alone
            assert not any("forcing deactivate" in line
                           for line in event_lines(log_bytes(worker)))

            ours = True  # etcd now says the console is ours (with our epoch)
            await wait_active(worker, timeout=5)
            assert bmc.core.sol.owner in bmc.core.sessions
            assert any("forcing deactivate" in line for line in event_lines(log_bytes(worker)))
        finally:
            await manager.stop()
