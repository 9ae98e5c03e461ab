"""A lossy network and a busy BMC must not cost a session (issue 12 item 1).

Over real UDP to a simulated BMC that loses 25% of datagrams each way and retries SOL
like a real BMC (7 times, 100 ms apart: OpenBMC's settings; ipmi_sim uses 4 at 1 s),
the host floods while the BMC's command handler is starved, so every keepalive goes
unanswered. SOL keeps flowing, so the session must stay up: one "SOL up", no "SOL down",
no reconnect, and the log holds every flood byte except pieces of the packets the BMC
itself gave up on (it counts and keeps them; real BMCs give up too).

Size: one SOL packet is in flight at a time, and at 25% loss each packet needs ~0.8
retries of 100 ms on average, so ~12 packets (3 KB) a second get through; 24 KB (~100
packets) takes ~8 s. A 1 MB flood at these settings would take ~5 minutes: it is a
benchmark, not a test. Before the fix the first unanswered keepalive (after 0.5 s +
4 tries 0.2 s apart) tore the session down, and the reconnect could not even activate
SOL again while the BMC ignored commands.

`SOLGATE_LOSSY_FLOOD=1000000 python -m pytest -s tests/test_engine_lossy_keepalive.py`
runs the 1 MB version (docs/benchmarks.md has its result); the test prints its numbers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from solgate.sim.faults import FaultConfig
from solgate.sim.fleet import SimFleet
from solgate.sim.flood import flood_bytes
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

FLOOD = int(os.environ.get("SOLGATE_LOSSY_FLOOD", "24000"))
FLOOD_SECONDS = 40 + FLOOD / 2_000  # ~3 KB/s gets through; room for a loaded machine

pytestmark = pytest.mark.timeout(60 + FLOOD_SECONDS)


def missing_pieces(logged: bytes, expected: bytes) -> list[bytes]:
    """The pieces of `expected` that `logged` lacks; fails unless `logged` is `expected`
    with pieces cut out (nothing added, doubled or moved)."""
    pieces: list[bytes] = []
    i = j = 0
    while j < len(logged):
        while i < len(expected) and j < len(logged) and expected[i] == logged[j]:
            i += 1
            j += 1
        if j == len(logged):
            break
        resume = expected.find(logged[j:j + 80], i)
        assert resume > i, f"log byte {j} is not the host's output at that point"
        pieces.append(expected[i:resume])
        i = resume
    if i < len(expected):
        pieces.append(expected[i:])
    return pieces


async def test_flood_through_loss_and_a_busy_bmc_keeps_the_session(tmp_path: Path) -> None:
    faults = FaultConfig.symmetric(seed=5)
    factory = sim_factory(sol_retry_interval=0.1, sol_retry_count=7)
    async with SimFleet(1, base_port=0, config_factory=factory, faults=faults) as fleet:
        bmc = fleet.bmcs[0]
        host = bmc.host
        assert host is not None
        config = engine_config(tmp_path, {"node": bmc.port}, keepalive_interval="500ms",
                               retransmit_timeout="200ms", max_tries=4,
                               session_timeout="5s")
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            reconnects = worker.reconnects
            sol = bmc.core.sol
            sent, abandoned = sol.sent_bytes, sol.abandoned_bytes
            chunks_before = len(sol.abandoned_chunks)
            start = len(log_bytes(worker))

            faults.inbound.drop = faults.outbound.drop = 0.25
            faults.ignore_commands = True  # keepalives go unanswered from now on
            began = time.monotonic()
            worker.send_input(f"flood {FLOOD}\r".encode())
            tail = prompt(host.name)
            await wait_for(lambda: log_bytes(worker)[start:].endswith(tail), FLOOD_SECONDS,
                           "the flood and the prompt after it in the log")
            seconds = time.monotonic() - began
            faults.ignore_commands = False
            faults.inbound.drop = faults.outbound.drop = 0.0
            ignored = bmc.core.stats.commands_ignored
            assert ignored >= 4, "the BMC never had to ignore a keepalive"

            new = log_bytes(worker)[start:]
            echo = f"flood {FLOOD}\r\n".encode()
            begin = new.index(echo) + len(echo)
            body = new[begin:len(new) - len(tail)]
            assert event_lines(body) == []
            pieces = missing_pieces(body, flood_bytes(FLOOD))
            gave_up = b"".join(list(sol.abandoned_chunks)[chunks_before:])
            lost = sum(len(p) for p in pieces)
            print(f"flood {FLOOD} B in {seconds:.1f} s: {len(body)} logged, {lost} missing, "
                  f"the BMC abandoned {sol.abandoned_bytes - abandoned} B, {ignored} "
                  f"commands ignored, {worker.reconnects - reconnects} reconnects")
            # Every byte the host printed is in the log or in a packet the BMC gave up on.
            assert len(body) + lost == FLOOD
            assert all(p in gave_up for p in pieces), (pieces, gave_up)
            assert lost <= sol.abandoned_bytes - abandoned
            assert sol.sent_bytes - sent >= FLOOD

            lines = [t for t in event_lines(log_bytes(worker)) if t.startswith("SOL ")]
            assert lines == ["SOL up (cipher suite 17)"], lines
            assert worker.reconnects == reconnects
            assert worker.state == "active"
