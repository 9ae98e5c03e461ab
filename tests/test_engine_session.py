"""The console engine's session life over real UDP: BMC reboots, thieves, bad passwords, idling.

Each test runs a `ConsoleManager` against simulated BMCs on loopback and checks what an
operator sees: the worker's state and detail, the console log's event lines and
events.jsonl, and what the simulated BMC saw (sessions, SOL owner, failed logins).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from solgate.console.lifecycle import AUTH_FAILURE_BACKOFF
from solgate.console.manager import ConsoleManager
from solgate.errors import SolgateError
from solgate.ipmi.transport import IpmiClient
from solgate.sim.bmc_sol import PHANTOM_SESSION_ID
from solgate.sim.faults import FaultConfig
from solgate.sim.fleet import SimFleet
from tests.engine_helpers import (
    HostInput,
    engine_config,
    event_lines,
    events_path,
    log_bytes,
    prompt,
    read_events,
    running_manager,
    sim_factory,
    wait_active,
    wait_for,
)
from tests.sim_helpers import make_target

pytestmark = pytest.mark.timeout(60)


async def test_bmc_restart_mid_stream_reconnects_by_itself(tmp_path: Path) -> None:
    async with SimFleet(1, base_port=0, config_factory=sim_factory()) as fleet:
        bmc = fleet.bmcs[0]
        # A dead session is noticed after session_timeout without an authenticated packet.
        config = engine_config(tmp_path, {"node": bmc.port}, keepalive_interval="500ms",
                               max_tries=3, session_timeout="1500ms", reconnect_max="1s")
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            first = set(bmc.core.sessions)
            worker.send_input(b"flood 50M\r")  # 50 s of output at the simulated baud
            await wait_for(lambda: len(log_bytes(worker)) > 200_000, 10,
                           "the flood to be under way")

            bmc.restart()  # the BMC reboots: every session and the SOL owner are gone
            fleet.poke(bmc)
            size_at_restart = len(log_bytes(worker))
            await wait_for(lambda: event_lines(log_bytes(worker)).count("SOL up (cipher "
                                                                        "suite 17)") == 2,
                           10, "SOL to come back up after the BMC restart")
            await wait_active(worker)
            lines = event_lines(log_bytes(worker))
            assert lines[0] == "SOL up (cipher suite 17)"
            assert lines[1].startswith("SOL down: nothing authenticated from the BMC for 1."), lines
            assert lines[1].endswith(" unanswered"), lines
            assert lines[2] == "SOL up (cipher suite 17)"
            assert len(lines) == 3, lines

            # The new session is a different one, and output flows through it again.
            assert set(bmc.core.sessions).isdisjoint(first)
            assert bmc.core.sol.owner in bmc.core.sessions
            grown = len(log_bytes(worker))
            await wait_for(lambda: len(log_bytes(worker)) > grown + 100_000, 10,
                           "the flood to keep arriving after the reconnect")
            assert grown > size_at_restart

            kinds = [e["kind"] for e in read_events(events_path(config))]
            assert kinds == ["sol-up", "sol-down", "sol-up"]


async def test_phantom_sol_owner_is_stolen_when_steal_is_true(tmp_path: Path) -> None:
    faults = FaultConfig(phantom_sol_owner=True)
    async with SimFleet(1, base_port=0, config_factory=sim_factory(), faults=faults) as fleet:
        bmc = fleet.bmcs[0]
        assert bmc.core.sol.phantom
        config = engine_config(tmp_path, {"node": bmc.port}, steal=True)
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            assert not bmc.core.sol.phantom
            assert bmc.core.sol.owner in bmc.core.sessions  # ours now

            displaced = f"session 0x{PHANTOM_SESSION_ID:08x}"
            lines = event_lines(log_bytes(worker))
            assert lines == [
                f"SOL was held by {displaced}; forcing deactivate (steal = true)",
                "SOL up (cipher suite 17)",
            ]
            events = read_events(events_path(config))
            assert [e["kind"] for e in events] == ["deactivate", "sol-up"]
            assert displaced in events[0]["message"]

            # And the stolen console works: a typed line comes back.
            typed = HostInput(bmc.host)  # type: ignore[arg-type]
            worker.send_input(b"hostname\r")
            await wait_for(lambda: log_bytes(worker).endswith(
                f"hostname\r\n{bmc.name}\r\n".encode() + prompt(bmc.name)), 5,
                "the host to answer `hostname`")
            assert bytes(typed.data) == b"hostname\r"


async def test_phantom_sol_owner_is_left_alone_when_steal_is_false(tmp_path: Path) -> None:
    faults = FaultConfig(phantom_sol_owner=True)
    async with SimFleet(1, base_port=0, config_factory=sim_factory(), faults=faults) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port}, steal=False,
                               reconnect_max="500ms")
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_for(lambda: worker.state == "held-elsewhere", 5,
                           "the console to report SOL held elsewhere")
            assert "already active in another session" in worker.state_detail
            assert f"BMC node (127.0.0.1:{bmc.port})" in worker.state_detail
            # It keeps asking (backoff capped at 0.5 s here) and never takes SOL over.
            await wait_for(lambda: worker.reconnects >= 3, 5, "a few more attempts")
            assert bmc.core.sol.phantom
            assert bmc.core.sol.owner == PHANTOM_SESSION_ID
            assert worker.state in ("held-elsewhere", "connecting", "activating")
            assert not [e for e in read_events(events_path(config))
                        if e["kind"] in ("deactivate", "sol-up")]
            assert event_lines(log_bytes(worker)) == []

            # When the holder lets go, the console comes up by itself.
            faults.phantom_sol_owner = False
            bmc.link.restart()  # drops the phantom (and the sessions) as an operator would
            fleet.poke(bmc)
            await wait_active(worker, timeout=5)
            assert event_lines(log_bytes(worker)) == ["SOL up (cipher suite 17)"]


async def test_wrong_password_backs_off_for_minutes(tmp_path: Path) -> None:
    """auth-failed with a clear detail after two logins over UDP: the first failure only
    gets the short backoff (a lone handshake error may be forged), the second confirms it
    and the console waits minutes. (The numbers of the waits over ten simulated minutes
    are a fake-clock test of the core: tests/test_console_lifecycle.py.)"""
    async with SimFleet(1, base_port=0, config_factory=sim_factory()) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port}, password="not-the-password")
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_for(lambda: worker.state == "auth-failed", 10,
                           "the console to report auth-failed")

            detail = worker.state_detail
            assert f"BMC node (127.0.0.1:{bmc.port})" in detail
            assert "password" in detail
            assert "not-the-password" not in detail
            assert bmc.core.stats.logins_failed == 2
            deadline = worker.life.next_deadline()
            assert deadline is not None
            wait = deadline - asyncio.get_running_loop().time()
            first = AUTH_FAILURE_BACKOFF
            assert first / 2 - 1 <= wait <= first  # 300 s, with jitter in its upper half
            assert bmc.core.stats.sessions_opened == 0
            # Nothing more happens in real time while the backoff runs.
            await asyncio.sleep(0.5)
            assert bmc.core.stats.logins_failed == 2
            auth_events = [e for e in read_events(events_path(config))
                           if e["kind"] in ("sol-up", "sol-down")]
            assert auth_events == []


async def test_idle_console_stays_up_across_many_bmc_session_timeouts(tmp_path: Path) -> None:
    """The BMC forgets a session after 2 s of silence (a real one after 30-60 s), the
    console is idle for 4.5 s (more than two of those), and keepalives every 0.4 s (a real
    config: 20 s) keep the session and SOL alive throughout over UDP. The margin (1.6 s)
    covers a loaded CI box; the keepalive schedule over a simulated hour is a fake-clock
    test of the lifecycle core (tests/test_console_lifecycle.py)."""
    factory = sim_factory(session_timeout=2.0)
    async with SimFleet(1, base_port=0, config_factory=factory) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port}, keepalive_interval="400ms")
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            sessions = set(bmc.core.sessions)
            since = worker.state_since
            await asyncio.sleep(4.5)

            assert worker.state == "active"
            assert worker.state_since == since
            assert set(bmc.core.sessions) == sessions
            assert bmc.core.stats.sessions_opened == 1
            assert bmc.core.stats.sessions_timed_out == 0
            assert bmc.core.sol.owner in sessions
            assert event_lines(log_bytes(worker)) == ["SOL up (cipher suite 17)"]

            # Still a live console, not just a live session.
            worker.send_input(b"echo still here\r")
            await wait_for(lambda: log_bytes(worker).endswith(
                b"echo still here\r\nstill here\r\n" + prompt(bmc.name)), 5,
                "the host to answer after the idle spell")


async def test_operator_deactivate_frees_sol_held_elsewhere(tmp_path: Path) -> None:
    """With steal = false the console waits; an operator's forced deactivate (the web's
    "deactivate" button) frees the stuck slot once and the console comes up."""
    faults = FaultConfig(phantom_sol_owner=True)
    async with SimFleet(1, base_port=0, config_factory=sim_factory(), faults=faults) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port}, steal=False,
                               reconnect_max="500ms")
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_for(lambda: worker.state == "held-elsewhere", 5,
                           "the console to report SOL held elsewhere")
            await manager.deactivate("node", "alice")
            await wait_active(worker, timeout=5)
            assert not bmc.core.sol.phantom
            assert bmc.core.sol.owner in bmc.core.sessions
            displaced = f"session 0x{PHANTOM_SESSION_ID:08x}"
            lines = event_lines(log_bytes(worker))
            assert any(displaced in line for line in lines), lines
            assert lines[-1] == "SOL up (cipher suite 17)"
            events = read_events(events_path(config))
            assert [e["user"] for e in events if e["kind"] == "deactivate"][0] == "alice"


async def test_stop_during_activation_leaves_the_bmc_free(tmp_path: Path) -> None:
    """stop() while the handshake is still in flight (a slow, 300 ms wire) neither hangs
    nor leaves SOL active on the BMC once the activation completes."""
    faults = FaultConfig.symmetric(delay=1.0, max_delay=0.3, seed=5)
    async with SimFleet(1, base_port=0, config_factory=sim_factory(), faults=faults) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port}, retransmit_timeout="700ms")
        manager = ConsoleManager(config)
        await manager.start()
        worker = manager.get("node")
        assert worker is not None
        await wait_for(lambda: worker.state == "activating", 10, "the activation to start")
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(manager.stop(), 10)
        assert loop.time() - start < 4.0, "stop() waited for its timeout"
        assert worker.state == "stopped"
        await wait_for(lambda: bmc.core.sol.owner is None and not bmc.core.sessions, 5,
                       "the BMC to have neither SOL active nor a session")


async def test_sol_taken_by_another_tool_is_reported_and_not_stolen_back(
        tmp_path: Path) -> None:
    """Another client (an operator's ipmitool, say) forces SOL over. With steal = false
    the console says SOL went down and who holds it, leaves it alone, and comes back by
    itself once the other tool lets go."""
    async with SimFleet(1, base_port=0, config_factory=sim_factory()) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port}, steal=False,
                               reconnect_max="500ms")
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            ours = bmc.core.sol.owner
            thief = await IpmiClient.connect(make_target(bmc.port))
            try:
                assert await thief.deactivate_sol()
                await thief.activate_sol()
                theirs = bmc.core.sol.owner
                assert theirs not in (None, ours)
                await wait_for(lambda: worker.state == "held-elsewhere", 5,
                               "the console to see SOL held elsewhere")
                lines = event_lines(log_bytes(worker))
                assert lines[:2] == ["SOL up (cipher suite 17)",
                                     "SOL down: BMC deactivated SOL"], lines
                await wait_for(lambda: worker.reconnects >= 3, 5, "a few more attempts")
                assert bmc.core.sol.owner == theirs
                assert ours not in bmc.core.sessions  # our old session was closed
            finally:
                with contextlib.suppress(SolgateError):
                    await thief.deactivate_sol()
                await thief.close()
            await wait_active(worker, timeout=5)
            assert event_lines(log_bytes(worker))[-1] == "SOL up (cipher suite 17)"
