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
    grid = 0.2
    start = loop.time()
    woke: dict[float, float] = {}

    async def sleeper(delay: float) -> None:
        await sleep_on_grid(delay, grid)
        woke[delay] = loop.time()

    delays = (0.01, 0.05, 0.09)
    await asyncio.gather(*(sleeper(d) for d in delays))
    point = math.ceil((start + max(delays)) / grid) * grid
    assert all(t >= start + d for d, t in woke.items())
    assert all(t >= point - 1e-3 for t in woke.values())  # all on the same grid point
    assert max(woke.values()) - min(woke.values()) < grid / 2
