"""Keepalive wake-ups of many consoles share loop turns (worker.on_grid).

At 1,000 consoles each keepalive had its own timer and loop wake-up; arming the worker's
timer at the next grid point lets one wake-up serve every console due in that second
(idle CPU at 1,000 consoles halved, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import math

from solgate.console.worker import on_grid


async def test_timers_on_the_grid_wake_together_and_never_early():
    loop = asyncio.get_running_loop()
    grid = 0.5
    start = loop.time()
    point = math.floor(start / grid) * grid + grid  # the end of the cell we are in
    woke: dict[float, float] = {}
    done = asyncio.Event()
    delays = (0.01, 0.05, 0.1)

    def fire(delay: float) -> None:
        woke[delay] = loop.time()
        if len(woke) == len(delays):
            done.set()

    # Due at different times within one grid cell: all wake at its end, in one loop turn.
    asked = loop.time()
    for delay in delays:
        due = asked + delay
        at = on_grid(due, grid)
        assert due <= at < due + grid  # never early, at most one cell late
        loop.call_at(at, fire, delay)
    await asyncio.wait_for(done.wait(), 5)
    for delay, when in woke.items():
        assert when >= asked + delay - 1e-3  # never early (but for clock resolution)
    if asked + max(delays) <= point:  # all due in the same cell: one wake-up
        assert min(woke.values()) >= point - 1e-3
        assert max(woke.values()) - min(woke.values()) < grid / 2
