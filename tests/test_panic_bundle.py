"""The panic bundle: the simulated BMC's event log records a host's panic and power
changes as real BMCs do, solgate reads it over RMCP+ when a panic closes, and stores
one bundle per incident with the SEL entries in words, the chassis status and the
screen at the panic."""

from __future__ import annotations

from pathlib import Path

import pytest

from solgate.cli import main
from solgate.console import bundle
from solgate.ipmi import sel
from solgate.ipmi.codec import IpmiMessage
from solgate.sim.fleet import SimFleet
from solgate.sim.sel import SimSel
from tests.engine_helpers import (
    engine_config,
    events_path,
    read_events,
    running_manager,
    sim_factory,
    wait_active,
    wait_for,
)
from tests.ipmi_sim import ipmi_sim_fixture  # noqa: F401  (provides `ipmi_sim`)

pytestmark = pytest.mark.timeout(60)


class SelOverCalls:
    """A SimSel answering `request()` directly, to test the reading logic alone."""

    def __init__(self, log: SimSel) -> None:
        self.log = log
        self.calls = 0

    async def request(self, netfn: int, cmd: int, data: bytes = b"") -> IpmiMessage:
        self.calls += 1
        handler = {sel.GET_SEL_INFO: self.log.info, sel.RESERVE_SEL: self.log.reserve,
                   sel.GET_SEL_ENTRY: self.log.entry}[cmd]
        cc, body = handler(data)
        return IpmiMessage(netfn=netfn | 1, cmd=cmd, rq_seq=0, data=bytes((cc,)) + body)


def test_records_say_in_words_what_happened() -> None:
    clock = [1_780_000_000.0]
    log = SimSel(clock=lambda: clock[0])
    for kind in ("power-on", "panic", "power-off", "reset"):
        log.host_event(kind)
        clock[0] += 10
    words = [sel.parse_record(r).words() for r in log.records]
    assert words == [
        "System Boot / Restart Initiated: initiated by power up",
        "OS Critical Stop: run-time critical stop (panic) [reported by the OS]",
        "Power Unit: power off / power down",
        "System Boot / Restart Initiated: initiated by hard reset",
    ]
    panic = sel.parse_record(log.records[1])
    assert (panic.generator, panic.sensor_type, panic.event_type) == (0x41, 0x20, 0x6F)
    assert panic.timestamp == 1_780_000_010


async def test_read_sel_reads_newest_first_and_stops_at_the_window() -> None:
    clock = [1_780_000_000.0]
    log = SimSel(clock=lambda: clock[0])
    for _ in range(100):
        log.host_event("power-on")
        clock[0] += 60
    client = SelOverCalls(log)
    entries = await bundle.read_sel(client, "bmc", since=clock[0] - 60 * 5)
    assert [e.record_id for e in entries] == [96, 97, 98, 99, 100]
    assert client.calls < 12  # info, reserve, last, then back to the window's start
    everything = await bundle.read_sel(SelOverCalls(log), "bmc")
    assert [e.record_id for e in everything] == list(range(1, 101))


async def test_a_panic_on_the_simulated_host_leaves_a_bundle_with_the_os_stop_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bundle, "DELAY", 0.3)
    async with SimFleet(1, base_port=0, config_factory=sim_factory()) as fleet:
        config = engine_config(tmp_path, {"node": fleet.bmcs[0].port})
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            worker.send_input(b"panic\r")

            def panics() -> list[dict]:
                return [e for e in read_events(events_path(config)) if e["kind"] == "panic"]

            await wait_for(panics, 10, "a panic event in events.jsonl")
            [event] = panics()
            ident = event["bundle"]
            path = bundle.bundle_path(tmp_path / "data", ident)
            await wait_for(path.exists, 10, f"the panic bundle {path}")
    data = bundle.read_bundle(tmp_path / "data", ident)
    words = [e["words"] for e in data["sel"]]
    assert "OS Critical Stop: run-time critical stop (panic) [reported by the OS]" in words
    assert data["chassis"]["power"] == "on"
    assert any("Kernel panic - not syncing" in row for row in data["screen"])
    assert any("Kernel panic - not syncing" in line for line in data["log"])
    assert main(["events", "--bundle", ident, "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"panic bundle {ident}: console node at ")
    assert "OS Critical Stop: run-time critical stop (panic)" in out
    assert main(["events", "--kind", "panic", "--data-dir", str(tmp_path / "data")]) == 0
    assert f"--bundle {ident}" in capsys.readouterr().out


async def test_read_sel_against_openipmi_ipmi_sim(ipmi_sim) -> None:  # noqa: ANN001
    """ipmi_sim keeps a SEL (it does not take Platform Event Messages over LAN, so the
    record a panicking Linux's IPMI driver leaves is added with Add SEL Entry), and
    read_sel reads it back, in words, over RMCP+."""
    from solgate.ipmi.transport import IpmiClient

    async with await IpmiClient.connect(ipmi_sim.target()) as client:
        before = await bundle.read_sel(client, "ipmi_sim")
        record = sel.encode_record(0, 1_780_000_000, 0x41, 0x20, ord("K"), 0x6F, b"\xa1er")
        msg = await client.request(sel.STORAGE, 0x44, record)  # Add SEL Entry
        assert msg.completion_code == 0, msg
        after = await bundle.read_sel(client, "ipmi_sim")
    new = after[len(before):]
    assert [e.words() for e in new] == [
        "OS Critical Stop: run-time critical stop (panic) [reported by the OS]"]
    assert new[0].sensor_number == ord("K")
