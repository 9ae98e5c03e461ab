"""The console engine recovering by itself, over real UDP to simulated BMCs.

What an operator relies on when the network or a BMC misbehaves: a BMC that never
answers is shown as unreachable with the BMC named, retried on a backoff that grows and
stops at `reconnect_max`, and taken up the moment it answers; a session whose keepalives
go unanswered is ended with "SOL down" and the reason, and comes back without losing a
byte of what the host prints afterwards; a fleet starting at once never has more session
handshakes in flight at the BMCs than `setup_concurrency`; a reload that changes one
console restarts that one only. State changes are observed as a viewer sees them (the
hub's StateChanged messages), handshakes from the BMCs' side.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from solgate.console.attachment import StateChanged
from solgate.console.worker import ConsoleWorker
from solgate.ipmi.codec import Privilege
from solgate.sim.bmc import SimBmcConfig
from solgate.sim.bmc_session import Address
from solgate.sim.faults import FaultConfig, LinkFaults
from solgate.sim.fleet import SimBmcHandle, SimFleet
from tests.engine_helpers import (
    engine_config,
    event_lines,
    events_path,
    log_bytes,
    prompt,
    read_events,
    run_flood,
    running_manager,
    sim_factory,
    wait_active,
    wait_for,
)

pytestmark = pytest.mark.timeout(30)

SOL_UP = "SOL up (cipher suite 17)"


@contextlib.asynccontextmanager
async def watch_states(worker: ConsoleWorker) -> AsyncIterator[list[tuple[float, str, str]]]:
    """What a read-only viewer of `worker` is told: (when, state, detail), in order.

    `when` is the worker's own timestamp of entering the state (`state_since`, wall
    clock), so a viewer that reads late does not shift it.
    """
    loop = asyncio.get_running_loop()
    seen: list[tuple[float, str, str]] = []
    viewer = worker.hub.attach("watcher", can_write=False)

    async def read() -> None:
        async for item in viewer:
            if isinstance(item, StateChanged):
                current = worker.state == item.state
                seen.append(
                    (worker.state_since if current else time.time(), item.state, item.detail)
                )

    task = loop.create_task(read())
    try:
        yield seen
    finally:
        viewer.detach()
        await asyncio.wait_for(task, 5)


def sol_lines(worker: ConsoleWorker) -> list[str]:
    """The console log's event lines about SOL (not viewers coming and going)."""
    return [t for t in event_lines(log_bytes(worker)) if t.startswith("SOL")]


async def answers_hostname(worker: ConsoleWorker, bmc: SimBmcHandle) -> None:
    """Type `hostname` on the console; its answer and the next prompt reach the log."""
    worker.send_input(b"hostname\r")
    reply = f"hostname\r\n{bmc.name}\r\n".encode() + prompt(bmc.name)
    await wait_for(lambda: log_bytes(worker).endswith(reply), 5, f"console {worker.name} to answer")


def runs(seen: list[tuple[float, str, str]]) -> list[tuple[float, str, str]]:
    """State changes only: the first message of each run of the same state."""
    out: list[tuple[float, str, str]] = []
    for entry in seen:
        if not out or out[-1][1] != entry[1]:
            out.append(entry)
    return out


async def test_a_silent_bmc_is_unreachable_and_retried_on_a_capped_backoff(tmp_path: Path) -> None:
    """Every datagram to the BMC is lost: the console says which BMC does not answer,
    retries with waits in the windows [0.5, 1] s, then [1, 2] s and never more than
    reconnect_max = 2 s (uncapped, the fourth would be 4-8 s), and is active by itself
    once the BMC answers."""
    faults = FaultConfig(inbound=LinkFaults(drop=1.0))
    async with SimFleet(1, base_port=0, config_factory=sim_factory(), faults=faults) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(
            tmp_path,
            {"node": bmc.port},
            retransmit_timeout="100ms",
            max_tries=2,
            reconnect_max="2s",
        )
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            async with watch_states(worker) as seen:

                def attempts() -> int:
                    return sum(1 for _, state, _ in runs(seen) if state == "connecting")

                await wait_for(
                    lambda: attempts() >= 5 and runs(seen)[-1][1] == "unreachable",
                    15,
                    "five failed connection attempts",
                )
                changes = runs(seen)
                assert {state for _, state, _ in changes} == {"connecting", "unreachable"}
                for _, state, detail in changes:
                    if state == "unreachable":
                        assert f"no answer from BMC node (127.0.0.1:{bmc.port})" in detail
                assert worker.state_detail.startswith(
                    f"no answer from BMC node (127.0.0.1:{bmc.port}) after 2 tries"
                )
                assert bmc.core.stats.received == 0  # the fault really lost everything

                # The wait before each retry: from "unreachable" to the next "connecting".
                gaps = [
                    changes[i + 1][0] - changes[i][0]
                    for i in range(len(changes) - 1)
                    if changes[i][1] == "unreachable"
                ]
                assert len(gaps) >= 4, changes
                slack = 1.0  # a loaded CI box: the loop may wake late, never early
                assert 0.5 - 0.05 <= gaps[0] <= 1.0 + slack, gaps
                assert gaps[1] >= 1.0 - 0.05, f"the second wait did not grow: {gaps}"
                assert all(g <= 2.0 + slack for g in gaps), f"a wait beyond the cap: {gaps}"
                assert worker.reconnects in (attempts() - 1, attempts())
                assert sol_lines(worker) == []

                # The BMC answers again: the console comes up without anyone's help.
                faults.inbound.drop = 0.0
                await wait_active(worker, timeout=10)
                assert runs(seen)[-1][1] == "active"

            assert sol_lines(worker) == [SOL_UP]
            assert [
                e["kind"] for e in read_events(events_path(config)) if e["kind"].startswith("sol")
            ] == ["sol-up"]
            assert bmc.core.stats.sessions_opened == 1
            assert bmc.core.sol.owner in bmc.core.sessions
            await answers_hostname(worker, bmc)


async def test_unanswered_keepalives_end_sol_and_it_comes_back_by_itself(tmp_path: Path) -> None:
    """Mid-session the BMC goes silent both ways: once nothing authenticated has come for
    session_timeout the console leaves `active` and logs "SOL down" with the reason and
    the numbers; once the BMC answers again it reconnects by itself and what the host
    prints afterwards is logged exactly."""
    faults = FaultConfig()
    async with SimFleet(1, base_port=0, config_factory=sim_factory(), faults=faults) as fleet:
        bmc = fleet.bmcs[0]
        host = bmc.host
        assert host is not None
        config = engine_config(
            tmp_path,
            {"node": bmc.port},
            keepalive_interval="500ms",
            retransmit_timeout="100ms",
            max_tries=3,
            session_timeout="1500ms",
            reconnect_max="1s",
        )
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            first = bmc.core.sol.owner
            assert first is not None

            faults.inbound.drop = faults.outbound.drop = 1.0
            # Dead after 1.5 s without an authenticated packet; 5 s leaves room.
            await wait_for(lambda: worker.state != "active", 5, "the console to leave active")
            lines = event_lines(log_bytes(worker))
            assert lines[0] == SOL_UP
            assert re.fullmatch(r"SOL down: nothing authenticated from the BMC for 1\.\d s; "
                                r"[1-9] keepalives? unanswered", lines[1]), lines
            assert len(lines) == 2, lines
            # While the BMC stays silent it is retried, and the page says why it is down.
            await wait_for(lambda: worker.state == "unreachable", 5, "state unreachable")
            assert f"BMC node (127.0.0.1:{bmc.port})" in worker.state_detail
            retries = worker.reconnects
            await wait_for(lambda: worker.reconnects >= retries + 2, 6, "two more retries")
            assert worker.state != "active"

            faults.inbound.drop = faults.outbound.drop = 0.0
            await wait_active(worker, timeout=10)
            lines = event_lines(log_bytes(worker))
            # The BMC never heard the old session close, so SOL was still its; steal = true
            # (the default) takes it back, saying so.
            assert len(lines) == 4, lines
            assert lines[2] == (
                f"SOL was held by session 0x{first:08x}; forcing deactivate (steal = true)"
            )
            assert lines[3] == SOL_UP
            assert bmc.core.sol.owner not in (None, first)

            # Output after the recovery: 300 kB flooded by the host, in the log byte for
            # byte, once, with no event line inside it.
            await run_flood(worker, host.name, 300_000, 10)
            assert worker.state == "active"
            kinds = [e["kind"] for e in read_events(events_path(config))]
            assert kinds == ["sol-up", "sol-down", "deactivate", "sol-up"], kinds


class HandshakeCounter:
    """Counts, from the BMCs' side, sessions opened but not yet through RAKP 3, over all
    BMCs of a fleet, after every datagram any of them receives; keeps the peak."""

    def __init__(self, bmcs: list[SimBmcHandle]) -> None:
        self.bmcs = bmcs
        self.peak = 0
        for handle in bmcs:
            core = handle.core
            core.receive_datagram = self._counting(core.receive_datagram)  # type: ignore[method-assign,assignment]

    def _counting(
        self, receive: Callable[[bytes, Address, float], None]
    ) -> Callable[[bytes, Address, float], None]:
        def counted(data: bytes, addr: Address, now: float) -> None:
            receive(data, addr, now)
            self.peak = max(self.peak, self.in_flight())

        return counted

    def in_flight(self) -> int:
        return sum(1 for b in self.bmcs for s in b.core.sessions.values() if not s.active)


@pytest.mark.parametrize("limit", [2, 12])
async def test_setup_concurrency_bounds_handshakes_at_the_bmcs(tmp_path: Path, limit: int) -> None:
    """12 consoles start at once. With setup_concurrency = 2 the BMCs never see more than
    2 handshakes in flight; with 12 (no effective limit) they see more, so the count is
    one that would notice. Every console comes up either way."""
    # Up to 20 ms each way on every datagram, so handshakes overlap unless limited; a 1 s
    # retransmit timeout so no retransmitted Open Session muddles the count.
    faults = FaultConfig.symmetric(delay=1.0, max_delay=0.02, seed=11)
    async with SimFleet(12, base_port=0, config_factory=sim_factory(), faults=faults) as fleet:
        counter = HandshakeCounter(fleet.bmcs)
        consoles = {f"n{i:02d}": bmc.port for i, bmc in enumerate(fleet.bmcs)}
        config = engine_config(tmp_path, consoles, retransmit_timeout="1s")
        config = config.with_server(setup_concurrency=limit)
        assert config.server.setup_concurrency == limit
        async with running_manager(config) as manager:
            for worker in manager.consoles():
                await wait_active(worker, timeout=20)
            assert counter.in_flight() == 0
            for bmc in fleet.bmcs:
                assert bmc.core.stats.sessions_opened == 1
                assert bmc.core.sol.owner in bmc.core.sessions
        if limit == 2:
            assert counter.peak == 2, f"{counter.peak} handshakes in flight at once"
        else:
            assert counter.peak > 2, "handshakes never overlapped: the count proves nothing"


def two_user_factory(index: int, name: str) -> SimBmcConfig:
    """The usual simulated BMC with a second account, `operator`."""
    base = sim_factory()(index, name)
    users = dict(base.users)
    users["operator"] = (b"second-password", Privilege.ADMINISTRATOR)
    return dataclasses.replace(base, users=users)


async def test_reload_of_a_changed_console_restarts_it_alone(tmp_path: Path) -> None:
    """Three consoles active; a reload gives `b` another BMC account. `b` logs out and in
    again as that user; `a` and `c` keep their very sessions and log nothing new."""
    async with SimFleet(3, base_port=0, config_factory=two_user_factory) as fleet:
        bmcs = dict(zip("abc", fleet.bmcs, strict=True))
        ports = {name: bmc.port for name, bmc in bmcs.items()}
        async with running_manager(engine_config(tmp_path, ports)) as manager:
            workers = {name: manager.get(name) for name in "abc"}
            for worker in workers.values():
                assert worker is not None
                await wait_active(worker)
            before = {
                name: (set(bmc.core.sessions), bmc.core.sol.owner) for name, bmc in bmcs.items()
            }
            old_b = bmcs["b"].core.sol.owner
            assert [s.username for s in bmcs["b"].core.active_sessions()] == ["admin"]

            new = engine_config(
                tmp_path,
                ports,
                per_console={"b": {"username": "operator", "password": "second-password"}},
            )
            summary = await asyncio.wait_for(manager.reload(new), 10)
            assert summary == {"added": [], "removed": [], "changed": ["b"]}

            b = manager.get("b")
            assert b is not None
            assert b is not workers["b"]
            await wait_active(b)
            assert [t for t in event_lines(log_bytes(b)) if t.startswith("SOL")] == [
                SOL_UP,
                "SOL down: solgate stopping",
                SOL_UP,
            ]
            assert old_b not in bmcs["b"].core.sessions  # the old session was closed
            assert [s.username for s in bmcs["b"].core.active_sessions()] == ["operator"]
            assert bmcs["b"].core.sol.owner in bmcs["b"].core.sessions

            for name in "ac":
                worker = workers[name]
                assert worker is not None
                assert manager.get(name) is worker
                assert worker.state == "active"
                assert worker.reconnects == 0
                assert event_lines(log_bytes(worker)) == [SOL_UP]
                bmc = bmcs[name]
                assert (set(bmc.core.sessions), bmc.core.sol.owner) == before[name]
                assert bmc.core.stats.sessions_opened == 1
                # ... and the untouched session still carries the console.
                await answers_hostname(worker, bmc)
