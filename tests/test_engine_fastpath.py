"""The compiled SOL fast path in the whole engine, over real UDP to a simulated BMC.

A flood goes through the armed fast path (its counter says so), and the log and a live
viewer get every byte in order; keystrokes typed during a flood still reach the host (a
Ctrl-C stops it) and its answer comes back. On the pure-Python path (SOLGATE_NATIVE=0,
or no compiler) the same runs with the fast path never attached.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from solgate.console.attachment import Closed, Lagged
from solgate.ipmi import fastpath
from solgate.sim.fleet import SimFleet
from solgate.sim.host import verify_flood
from tests.engine_helpers import (
    Watching,
    engine_config,
    log_bytes,
    prompt,
    run_flood,
    running_manager,
    sim_factory,
    wait_active,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("suite", [17, 3])
async def test_a_flood_through_the_fast_path_reaches_log_and_viewer_and_typing_works(
        tmp_path: Path, suite: int) -> None:
    size = 1_000_000
    async with SimFleet(1, base_port=0, config_factory=sim_factory()) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port}, cipher_suites=[suite])
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            client = worker._client  # noqa: SLF001 - which path ran
            assert client is not None
            viewer = Watching(worker.hub.attach("viewer", can_write=False))
            try:
                await run_flood(worker, bmc.name, size, timeout=20)
                echo = f"flood {size}\r\n".encode()
                await wait_for(lambda: viewer.flood_after(echo, size) is not None, 5,
                               "the viewer to get the flood")
                ok, detail = verify_flood(viewer.flood_after(echo, size) or b"", size)
                assert ok, f"the viewer's copy: {detail}"
                assert not [c for c in viewer.controls if isinstance(c, Lagged | Closed)]
                fast = client.fastpath  # made at the first SOL datagram
                assert (fast is not None) == fastpath.available()
                if fast is not None:
                    # most of the flood's ~4,000 packets were taken in C
                    assert fast.handled > size // 255 // 2, fast.handled
                    assert worker.sol_counters()["fast_path_packets"] == fast.handled

                # Typing while a flood runs: Ctrl-C stops it, then a command is answered.
                before = fast.handled if fast is not None else 0
                start = len(log_bytes(worker))
                worker.send_input(b"flood 8000000\r")
                await wait_for(lambda: len(log_bytes(worker)) > start + 200_000, 10,
                               "the second flood to be under way")
                if fast is not None:
                    assert fast.handled > before
                worker.send_input(b"\x03")
                await wait_for(lambda: log_bytes(worker).endswith(b"^C\r\n" + prompt(bmc.name)),
                               10, "the flood to stop at Ctrl-C")
                worker.send_input(b"echo typed-during-flood\r")
                await wait_for(lambda: b"\r\ntyped-during-flood\r\n" + prompt(bmc.name)
                               in log_bytes(worker), 5, "the host's answer")
                counters = worker.sol_counters()
                assert counters["stalls"] == 0
            finally:
                await viewer.close()


@pytest.mark.skipif(not fastpath.available(), reason="the compiled path is not built")
async def test_keepalives_leave_an_idle_console_disarmed_and_output_arms_it(
        tmp_path: Path) -> None:
    """A console quiet but for its keepalives stays on the Python path (a keepalive's
    question and answer cost no disarm and re-arm each, and one that never printed has no
    compiled object at all); its next output is taken in C."""
    async with SimFleet(1, base_port=0, config_factory=sim_factory()) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port}, keepalive_interval="1s")
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            client = worker._client  # noqa: SLF001 - which path runs
            assert client is not None
            asked: list[object] = []
            real_send = client.send_request

            def counting_send(req):  # type: ignore[no-untyped-def]
                asked.append(req)
                return real_send(req)

            client.send_request = counting_send  # type: ignore[method-assign]
            await wait_for(lambda: len(asked) >= 3, 10, "three keepalives")
            await asyncio.sleep(0.2)  # the last answer is in
            assert client.fastpath is None or not client.fastpath.armed
            handled = client.fastpath.handled if client.fastpath is not None else 0
            await run_flood(worker, bmc.name, 200_000, timeout=20)
            assert client.fastpath is not None
            assert client.fastpath.handled - handled > 200_000 // 255 // 2
