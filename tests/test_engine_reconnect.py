"""A reload seen by a viewer (the rest is in test_engine_recovery.py).

Over real UDP, a reload that changes one console restarts it while its viewer stays
attached and the others keep their sessions. The backoff's doubling, jitter and cap are
numbers of the lifecycle core: tests/test_console_lifecycle.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from solgate.sim.fleet import SimFleet
from tests.engine_helpers import (
    HostInput,
    engine_config,
    event_lines,
    log_bytes,
    running_manager,
    sim_factory,
    wait_active,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


async def test_reload_restarts_only_the_changed_console(tmp_path: Path) -> None:
    async with SimFleet(3, base_port=0, config_factory=sim_factory()) as fleet:
        ports = {name: bmc.port for name, bmc in zip("abc", fleet.bmcs, strict=True)}
        old = engine_config(tmp_path, ports)
        async with running_manager(old) as manager:
            workers = {name: manager.get(name) for name in "abc"}
            for worker in workers.values():
                await wait_active(worker)
            viewer = workers["b"].hub.attach("ops", can_write=False)
            typist = workers["b"].hub.attach("ann", can_write=True)
            host_b = fleet.bmcs[1].host
            assert host_b is not None
            typed = HostInput(host_b)
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
            # ... and the kept hub was handed to the new worker: typing reaches the host
            # over the new session, and who leaves is written in the new worker's log.
            assert typist.send(b"uname\r")
            await wait_for(lambda: b"uname\r" in typed.data, 5, "the keys at the host")
            typist.detach()
            await wait_for(lambda: b"ann detached" in log_bytes(b), 5, "the detach note")
            for name in "ac":
                assert manager.get(name) is workers[name]
                assert workers[name].reconnects == 0
                assert [t for t in event_lines(log_bytes(workers[name]))
                        if t.startswith("SOL")] == ["SOL up (cipher suite 17)"]
            assert set(fleet.bmcs[0].core.sessions) == sessions["a"]
            assert set(fleet.bmcs[2].core.sessions) == sessions["c"]
            viewer.detach()
