"""`solgate sim --powered-off`: SIGUSR2 restores power to the fleet, at once or, with
`--power-on-spread`, in sequence (the boot-storm benchmark relies on both)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from solgate.cli.sim import PowerRestore, power_on_offsets
from solgate.sim.bmc import SimBmcConfig
from solgate.sim.fleet import SimFleet
from solgate.sim.host import HostState, SimHost

ROOT = Path(__file__).resolve().parents[1]
SOLGATE = [sys.executable, "-c", "import sys; from solgate.cli import main; sys.exit(main())"]


def test_offsets_are_even_over_the_spread_and_zero_without_one() -> None:
    assert power_on_offsets(4, 1.0) == [0.0, 0.25, 0.5, 0.75]
    assert power_on_offsets(3, 0.0) == [0.0, 0.0, 0.0]
    assert power_on_offsets(0, 5.0) == []


def _fast_booting(index: int, name: str) -> SimBmcConfig:
    return SimBmcConfig(name=name, host=SimHost(name, seed=index, boot_speed=1000.0))


@pytest.mark.parametrize("spread", [0.0, 1.0])
async def test_a_power_restore_boots_every_host_at_once_or_in_sequence(spread: float) -> None:
    loop = asyncio.get_running_loop()
    async with SimFleet(4, base_port=0, power_on=False, config_factory=_fast_booting) as fleet:
        hosts = [h.host for h in fleet.bmcs]
        restore = PowerRestore(fleet, spread)
        restore.start(loop)
        await asyncio.sleep(0.1)
        powered = [h is not None and h.powered for h in hosts]
        # At once: all four are on. In sequence: only the first (the next is due at 0.25 s).
        assert powered == ([True] * 4 if not spread else [True, False, False, False])
        restore.start(loop)  # a second signal mid-sequence reschedules nobody
        await asyncio.sleep(spread + 1.0)
        for host in hosts:
            assert host is not None
            host.available(loop.time())  # the host runs its boot script up to now
            assert host.state is HostState.SHELL  # booted to its prompt
            assert host.output_bytes > 2000
        delays = [restore.delays[h.index] for h in fleet.bmcs]
    for i, delay in enumerate(delays):
        scheduled = spread * i / 4
        assert scheduled <= delay < scheduled + 0.2, delays  # in port order, none early
    assert (delays[-1] - delays[0] >= 0.7) if spread else delays == [0.0] * 4, delays


def _wait_for_text(path: Path, text: str, proc: subprocess.Popen[bytes],
                   timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, path.read_text(errors="replace")
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path}: {path.read_text(errors='replace')}")


def test_sim_sigusr2_with_a_spread_powers_on_in_sequence_and_reports_when(
        tmp_path: Path) -> None:
    stats, err = tmp_path / "stats.json", tmp_path / "sim.err"
    spread = 1.0
    cmd = [*SOLGATE, "sim", "--count", "4", "--base-port", "0", "--powered-off",
           "--power-on-spread", "1s", "--stats", str(stats)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with err.open("w") as err_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file, env=env)
    try:
        _wait_for_text(err, "started 4 BMCs", proc)
        proc.send_signal(signal.SIGUSR2)
        _wait_for_text(err, "powering on 4 hosts over 1 s", proc)
        time.sleep(spread + 1.5)  # the last host's slot, and room for a loaded machine
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, err.read_text()
    rows = json.loads(stats.read_text())["bmcs"]
    assert len(rows) == 4
    delays = [row["power_on_s"] for row in rows]
    assert all(delay is not None for delay in delays), delays
    assert delays == sorted(delays), delays  # in port order
    for i, delay in enumerate(delays):
        # never before its slot; late only by the loop's wake-up (generous: CI runs the
        # suite in four workers on two cores)
        assert spread * i / 4 <= delay < spread * i / 4 + 1.0, delays


def test_sim_help_says_what_the_spread_does() -> None:
    out = subprocess.run([*SOLGATE, "sim", "--help"], capture_output=True, text=True,
                         check=True).stdout
    text = " ".join(out.split())
    assert "--power-on-spread T" in text
    assert "in sequence over T instead of at once" in text
