"""The console engine's data flow and lifecycle over real UDP to simulated BMCs.

Panics become one event with context; a viewer that never reads costs the log and the
other viewers nothing; a one-second stall of solgate's own event loop loses no byte;
reload starts, stops and keeps consoles as it should; stop leaves every BMC free.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from solgate.console.attachment import Closed, Lagged, Snapshot
from solgate.console.manager import ConsoleManager
from solgate.daemon import run_server
from solgate.sim.fleet import SimFleet
from solgate.sim.host import verify_flood
from tests.engine_helpers import (
    ThreadedFleet,
    Watching,
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

pytestmark = pytest.mark.timeout(60)


async def test_panic_typed_on_the_host_gives_one_event_with_context(tmp_path: Path) -> None:
    async with SimFleet(1, base_port=0, config_factory=sim_factory()) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port})
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            worker.send_input(b"panic\r")

            def panics() -> list[dict]:
                return [e for e in read_events(events_path(config)) if e["kind"] == "panic"]

            # The incident closes once the dead host has been quiet a few seconds.
            await wait_for(panics, 10, "a panic event in events.jsonl")
            await asyncio.sleep(1.5)  # a second event, if any, would be out by now
            assert bmc.host is not None
            assert bmc.host.panicked
            [event] = panics()
            assert event["console"] == "node"
            assert event["severity"] == "critical"
            assert "Kernel panic - not syncing: sysrq triggered crash" in event["message"]
            context = event["context"]
            assert "sysrq: Trigger a crash" in " ".join(context)
            assert any("Call Trace:" in line for line in context)
            assert any("---[ end Kernel panic" in line for line in context)
            assert len(context) >= 10
            assert worker.panic_count == 1
            panic_lines = [t for t in event_lines(log_bytes(worker)) if t.startswith("PANIC")]
            assert panic_lines == [f"PANIC (critical): {event['message']}"]


async def test_a_viewer_that_never_reads_delays_nobody(tmp_path: Path) -> None:
    size = 1_000_000  # four times a viewer's 256 KiB queue
    async with SimFleet(1, base_port=0, config_factory=sim_factory()) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port})
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            hub = worker.hub
            stuck = hub.attach("stuck", can_write=False)
            assert isinstance(await stuck.get(), Snapshot)  # looks once, then never again
            reader = Watching(hub.attach("reader", can_write=False))
            try:
                start = time.monotonic()
                await run_flood(worker, bmc.name, size, timeout=15)
                elapsed = time.monotonic() - start
                echo = f"flood {size}\r\n".encode()
                await wait_for(lambda: reader.flood_after(echo, size) is not None, 5,
                               "the reading viewer to get the flood")
            finally:
                await reader.close()
            ok, detail = verify_flood(reader.flood_after(echo, size) or b"", size)
            assert ok, f"the reading viewer's copy: {detail}"
            assert not [c for c in reader.controls if isinstance(c, Lagged | Closed)
                        and not (isinstance(c, Closed) and c.reason == "detached")]
            # The stuck viewer was resynced or dropped; its queue never held more than
            # its bound, and the flood went at full speed (~1 s) regardless.
            assert hub.lagged_total >= 1
            assert stuck.queued_bytes <= hub.queue_bytes
            assert elapsed < 10


async def test_a_one_second_stall_of_solgate_loses_nothing(tmp_path: Path) -> None:
    """solgate's loop freezes for 1 s mid-flood while the BMC (in its own thread) keeps
    retransmitting; every flood byte still lands in the log once, in order.

    The BMC retries every 0.25 s, 8 times (2 s of patience, a real BMC has a few seconds),
    so the stall surely makes it retransmit and surely not give up."""
    size = 3_000_000
    factory = sim_factory(baud=8_000_000, sol_retry_interval=0.25, sol_retry_count=8)
    with ThreadedFleet(1, config_factory=factory) as threaded:
        bmc = threaded.fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port})
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            flood = asyncio.create_task(run_flood(worker, bmc.name, size, timeout=25))
            await wait_for(lambda: len(log_bytes(worker)) > 300_000, 10,
                           "the flood to be under way")
            retries_before = threaded.call(lambda: bmc.core.sol.stream.counters["retransmits"])
            loop = asyncio.get_running_loop()
            stalled = loop.create_future()

            def stall() -> None:
                time.sleep(1.0)  # a blocking call in a loop callback: everything waits
                stalled.set_result(None)

            loop.call_soon(stall)
            await stalled
            log = await flood
            retries = threaded.call(lambda: bmc.core.sol.stream.counters["retransmits"])
            assert retries > retries_before, "the BMC should have had to retransmit"
            assert event_lines(log) == ["SOL up (cipher suite 17)"]
            assert worker.state == "active"


async def test_reload_adds_removes_and_keeps_consoles(tmp_path: Path) -> None:
    async with SimFleet(3, base_port=0, config_factory=sim_factory()) as fleet:
        a, b, c = fleet.bmcs
        old = engine_config(tmp_path, {"a": a.port, "b": b.port})
        async with running_manager(old) as manager:
            wa, wb = manager.get("a"), manager.get("b")
            assert wa is not None
            assert wb is not None
            await wait_active(wa)
            await wait_active(wb)
            sessions_a = set(a.core.sessions)

            new = engine_config(tmp_path, {"a": a.port, "c": c.port})
            summary = await asyncio.wait_for(manager.reload(new), 10)
            assert summary == {"added": ["c"], "removed": ["b"], "changed": []}

            assert manager.get("b") is None
            assert wb.state == "stopped"
            assert event_lines(log_bytes(wb))[-1] == "SOL down: solgate stopping"
            await wait_for(lambda: not b.core.sessions, 5, "b's BMC to be free")
            assert b.core.sol.owner is None

            wc = manager.get("c")
            assert wc is not None
            await wait_active(wc)
            assert c.core.sol.owner in c.core.sessions

            assert manager.get("a") is wa
            assert wa.state == "active"
            assert set(a.core.sessions) == sessions_a
            assert a.core.stats.sessions_opened == 1
            assert event_lines(log_bytes(wa)) == ["SOL up (cipher suite 17)"]
            await run_flood(wa, a.name, 100_000, timeout=10)  # and it still works
            kinds = [(e["console"], e["kind"]) for e in read_events(events_path(new))]
            assert ("a", "sol-down") not in kinds
            assert kinds.count(("a", "sol-up")) == 1


async def test_stop_leaves_every_bmc_without_sol_or_session(tmp_path: Path) -> None:
    async with SimFleet(2, base_port=0, config_factory=sim_factory()) as fleet:
        config = engine_config(tmp_path, {h.name: h.port for h in fleet.bmcs})
        async with running_manager(config) as manager:
            workers = list(manager.consoles())
            for worker in workers:
                await wait_active(worker)
            workers[0].send_input(b"flood 50M\r")  # one busy, one idle
            await wait_for(lambda: len(log_bytes(workers[0])) > 100_000, 10,
                           "the flood to be under way")
            for handle in fleet.bmcs:
                assert handle.core.sol.owner in handle.core.sessions
            await asyncio.wait_for(manager.stop(), 10)

        for worker in workers:
            assert worker.state == "stopped"
            assert event_lines(log_bytes(worker))[-1] == "SOL down: solgate stopping"
        # The Close Session datagram is on its way when stop() returns.
        await wait_for(lambda: all(not h.core.sessions for h in fleet.bmcs), 5,
                       "every simulated BMC to have no session left")
        for handle in fleet.bmcs:
            assert handle.core.sol.owner is None
            assert not handle.core.sol.active


async def test_the_daemon_reloads_on_sighup_and_frees_every_bmc_on_shutdown(
        tmp_path: Path) -> None:
    """`run_server` as `solgate serve --no-web` runs it: a real SIGHUP reloads (b goes,
    c comes, a keeps its session), and the shutdown event stops with every BMC free."""
    async with SimFleet(3, base_port=0, config_factory=sim_factory()) as fleet:
        a, b, c = fleet.bmcs
        old = engine_config(tmp_path, {"a": a.port, "b": b.port})
        new = engine_config(tmp_path, {"a": a.port, "c": c.port})
        shutdown = asyncio.Event()
        ready: asyncio.Future[ConsoleManager] = asyncio.get_running_loop().create_future()

        def on_ready(manager: ConsoleManager, *_: object) -> None:
            ready.set_result(manager)

        server = asyncio.create_task(run_server(old, shutdown=shutdown, web_enabled=False,
                                                reload_config=lambda: new, on_ready=on_ready))
        try:
            manager = await asyncio.wait_for(ready, 10)
            wa = manager.get("a")
            assert wa is not None
            await wait_active(wa)
            sessions_a = set(a.core.sessions)
            if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
                pytest.skip("run_server could not install its SIGHUP handler here")
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_for(lambda: manager.get("b") is None and manager.get("c") is not None,
                           5, "the SIGHUP reload")
            wc = manager.get("c")
            assert wc is not None
            await wait_active(wc)
            assert manager.get("a") is wa
            assert set(a.core.sessions) == sessions_a
            await wait_for(lambda: not b.core.sessions, 5, "b's BMC to be free")
        finally:
            shutdown.set()
            assert await asyncio.wait_for(server, 15) == 0
        await wait_for(lambda: all(not h.core.sessions and h.core.sol.owner is None
                                   for h in fleet.bmcs), 5,
                       "every simulated BMC to have neither session nor SOL")
        assert event_lines(log_bytes(wa)) == ["SOL up (cipher suite 17)",
                                              "SOL down: solgate stopping"]


async def test_break_and_power_cycle_from_an_operator(tmp_path: Path) -> None:
    """BREAK travels in SOL (the host takes the next key as SysRq); a power cycle goes over
    its own short session and the console shows the reboot without losing SOL."""
    factory = sim_factory(boot_speed=10.0)
    async with SimFleet(1, base_port=0, config_factory=factory) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port})
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)

            await manager.send_break("node", "alice")
            worker.send_input(b"h")  # queued behind the break, sent once it is acked
            await wait_for(lambda: b"sysrq: HELP : " in log_bytes(worker), 5,
                           "the host's SysRq help after BREAK h")

            assert await manager.power("node", "status", "alice") == "on"
            boots = bmc.host.boot_count if bmc.host is not None else 0
            assert await manager.power("node", "cycle", "alice") == "power cycle requested"
            await wait_for(lambda: log_bytes(worker).endswith(prompt(bmc.name))
                           and b"solgate-sim BIOS" in log_bytes(worker), 10,
                           "the power-cycled host to boot back to its prompt")
            assert bmc.host is not None
            assert bmc.host.boot_count == boots + 1
            assert worker.state == "active"
            lines = event_lines(log_bytes(worker))
            assert lines == ["SOL up (cipher suite 17)", "serial BREAK sent by alice",
                             "power cycle by alice"]
            assert set(bmc.core.sessions) == {bmc.core.sol.owner}  # the power session closed
            events = [(e["kind"], e["user"]) for e in read_events(events_path(config))]
            assert ("break", "alice") in events
            assert ("power", "alice") in events
