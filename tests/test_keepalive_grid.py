"""Keepalive wake-ups of many consoles share loop turns (worker.sleep_on_grid).

At 1,000 consoles each keepalive had its own timer and loop wake-up; sleeping until the
next grid point lets one wake-up serve every console due in that second (idle CPU at
1,000 consoles halved, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import math

from solgate.console.worker import sleep_on_grid


async def test_sleepers_wake_together_on_the_grid_and_never_early():
    loop = asyncio.get_running_loop()
    grid = 0.5
    await sleep_on_grid(0.001, grid)  # start just after a grid point
    start = loop.time()
    point = math.floor(start / grid) * grid + grid  # the end of the cell we are in
    woke: dict[float, float] = {}

    async def sleeper(delay: float) -> None:
        asked = loop.time()
        await sleep_on_grid(delay, grid)
        woke[delay] = loop.time()
        assert woke[delay] >= asked + delay - 1e-3  # never early (but for clock resolution)

    # Due at different times within one grid cell: all wake at its end, in one loop turn.
    await asyncio.gather(*(sleeper(d) for d in (0.01, 0.05, 0.1)))
    assert min(woke.values()) >= point - 1e-3
    assert max(woke.values()) - min(woke.values()) < grid / 2
