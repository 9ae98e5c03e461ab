"""The console engine over real UDP to a simulated BMC, on a clean and on a faulty wire.

For each wire (`engine_helpers.check_wire`): a console reaches `active`; the host boots
and its whole boot log lands in `<data_dir>/logs/<name>.log` byte for byte; `flood N`
lands there whole (checked line by line by the host's flood checker: nothing lost,
doubled or moved); a line typed through the hub's writer attachment reaches the host's
serial port exactly as typed (600 characters: 19 SOL packets, so the 4-bit sequence
number wraps in that direction too); and the session never drops (one "SOL up", no "SOL down").
The 300 ms delay wire is in test_engine_delay.py (it is slow by nature).

Sizes and timers (CI runs this on two cores): every flood is 1 MB.
- clean wire and 10% duplication: about 1 s each with the fast simulated UART
  (duplicated datagrams die in the session's replay window, so they cost nothing).
- 20% loss both ways: with one SOL packet in flight, each lost packet or ACK waits one
  BMC retry interval; 1 MB is ~4,000 packets and ~2,400 retries, so the simulated BMC
  retries after 2 ms (a loopback round trip is ~0.1 ms) and 60 times (not ipmi_sim's 4),
  so that its giving up (which loses data by design) is out of the picture: ~12 s.
  The typed line is 200 characters (7 packets): solgate waits 0.5 s before resending a
  lost keystroke packet, so 600 characters would add ~7 s.
- 25% reordering (a datagram held until the next one passes, or 50 ms): the BMC's
  retransmission after 5 ms is what passes a held packet, ~11 s.
Fault randomness is seeded, so a failure reproduces.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from solgate.sim.faults import FaultConfig
from tests.engine_helpers import Wire, check_wire

pytestmark = pytest.mark.timeout(150)

WIRES = {
    "clean": Wire(None, 1_000_000),
    "loss-20%": Wire(
        FaultConfig.symmetric(drop=0.2, seed=11), 1_000_000,
        sim={"sol_retry_interval": 0.002, "sol_retry_count": 60}, timeout=90.0,
        typed=200,  # solgate retries its own SOL packets after 0.5 s: keep the line short
    ),
    "duplicate-10%": Wire(
        FaultConfig.symmetric(duplicate=0.1, seed=12), 1_000_000,
        sim={"sol_retry_interval": 0.05, "sol_retry_count": 40},
    ),
    "reorder-25%": Wire(
        FaultConfig.symmetric(reorder=0.25, seed=13), 1_000_000,
        sim={"sol_retry_interval": 0.005, "sol_retry_count": 40}, timeout=90.0,
    ),
}


@pytest.mark.parametrize("wire", list(WIRES.values()), ids=list(WIRES))
async def test_boot_flood_and_typing_arrive_exactly(tmp_path: Path, wire: Wire) -> None:
    await check_wire(tmp_path, wire)
