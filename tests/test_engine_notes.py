"""Event lines never cut a console line in two: notes during a flood, real UDP to the simulator.

The log exists to be grepped; a line split by `[-- solgate ...: alice detached --]`
is a line a script never matches (a panic cut in two is a panic missed).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from solgate.console.notes import BREAK_MARK
from solgate.sim.fleet import SimFleet
from solgate.sim.host import verify_flood
from tests.engine_helpers import (
    engine_config,
    event_lines,
    log_bytes,
    prompt,
    running_manager,
    sim_factory,
    wait_active,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)

_EVENT_LINE = re.compile(rb"\[-- solgate \S+: [^\r\n]*? --\]\r\n")


async def test_fifty_notes_during_a_flood_leave_every_flood_line_whole(tmp_path: Path) -> None:
    size = 1_600_000  # 25,000 lines, about 2 s at 8 Mbaud: the notes all land inside it
    async with SimFleet(1, base_port=0, config_factory=sim_factory(baud=8_000_000)) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port})
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            start = len(log_bytes(worker))
            worker.send_input(f"flood {size}\r".encode())
            await wait_for(lambda: len(log_bytes(worker)) - start > 100_000, 10,
                           "the flood to be under way")
            for i in range(25):  # 25 x (attach, detach) ... and 25 breaks: 75 notes
                viewer = worker.hub.attach(f"user{i}", can_write=False)
                await asyncio.sleep(0.005)
                assert worker.send_break(f"user{i}")
                await asyncio.sleep(0.005)
                viewer.detach()
                await asyncio.sleep(0.01)
            during = len(log_bytes(worker))
            tail = prompt(bmc.name)
            await wait_for(lambda: log_bytes(worker).endswith(tail), 20, "the flood to end")
            log = log_bytes(worker)[start:]  # (stopping adds "SOL down" after the prompt)
    assert during - start < size, "the flood was over before the notes: make it longer"
    notes = event_lines(log)
    assert len([n for n in notes if "attached" in n]) == 25
    assert len([n for n in notes if "detached" in n]) == 25
    assert len([n for n in notes if "serial BREAK sent" in n]) == 25
    # Every note sits at a line boundary of the console's output, none broke a line.
    assert BREAK_MARK not in log
    for match in _EVENT_LINE.finditer(log):
        assert log[match.start() - 1 : match.start()] == b"\n", log[match.start() - 80:
                                                                     match.end()]
    # Without the notes the flood is whole, every line intact and in order.
    echo = f"flood {size}\r\n".encode()
    console = _EVENT_LINE.sub(b"", log)
    begin = console.index(echo) + len(echo)
    ok, detail = verify_flood(console[begin : begin + size], size)
    assert ok, detail
    assert console[begin + size :].endswith(tail)
