"""The console engine over a wire that delays every datagram by up to 300 ms each way.

Same checks as test_engine_faults.py (`engine_helpers.check_wire`). Every datagram is
held a uniform 0..300 ms in each direction, which also reorders them. SOL moves one
packet per round trip (~0.3 s on average here), so throughput is under 1 KB/s: the
flood is 4 KiB (17 packets, enough to wrap the 4-bit SOL sequence number) after a 4 KiB
boot log. The IPMI retransmit timeout and the BMC's SOL retry interval are set above the
worst round trip (0.6 s), as an operator would for such a link; shorter, every handshake
step is retried before its answer can arrive and the session never opens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from solgate.sim.faults import FaultConfig
from tests.engine_helpers import Wire, check_wire

pytestmark = pytest.mark.timeout(60)

DELAY_300MS = Wire(
    FaultConfig.symmetric(delay=1.0, max_delay=0.3, seed=14), 4 * 1024,
    sim={"sol_retry_interval": 0.7, "sol_retry_count": 10},
    console={"retransmit_timeout": "700ms", "keepalive_interval": "3s"},
    timeout=25.0,
    typed=160,  # 5 SOL packets, one per round trip
)


async def test_boot_flood_and_typing_arrive_exactly_with_300ms_delay(tmp_path: Path) -> None:
    await check_wire(tmp_path, DELAY_300MS)
