"""Fleet actions end to end: `run_server` with the real engine in front of `solgate sim` BMCs.

One server, 50 simulated BMCs whose hosts sit at their shell prompt; 20 carry the tag
rack12. Over the REST API (bearer tokens) and the `solgate power` CLI in a subprocess:
a dry run touches nothing; a viewer is refused everywhere; an operator whose access list
covers 5 of the 20 gets 5 broadcasts done and 15 refused; an admin's broadcast reaches
each selected host exactly once; a power cycle of tag:rack12 reboots exactly those 20
simulated hosts, paced by [server] fleet_rate (measured from the simulator's clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from solgate.cli import build_parser
from tests.engine_helpers import (
    FLEET_COUNT,
    RATE,
    TOKENS,
    names,
    running_stack,
    tagged,
    wait_for,
)

COUNT, TAGGED = FLEET_COUNT, 20
ROOT = Path(__file__).resolve().parents[1]


async def fleet_post(url: str, user: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKENS[user]}"}
    async with aiohttp.ClientSession(headers=headers) as http, \
            http.post(f"{url}/api/fleet", json=body) as response:
        return response.status, await response.json()


def by_status(result: dict[str, Any], status: str) -> list[str]:
    return sorted(r["console"] for r in result["results"] if r["status"] == status)


def fleet_events(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "events.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == "fleet"]


RACK = {"selection": {"tags": ["rack12"]}}


async def cli(url: str, *argv: str) -> tuple[int, str, str]:
    """`solgate ARGV --server URL` in this process (the server keeps running on this loop)."""
    args = build_parser().parse_args([*argv, "--server", url])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = await args.handler(args)
    return code, out.getvalue(), err.getvalue()


async def test_fleet_actions_on_simulated_hosts(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLGATE_TOKEN", TOKENS["root"])
    data = tmp_path / "data"
    rack = sorted(n for n in names() if tagged(n))
    async with running_stack(data) as stack:
        await wait_for(lambda: all(c.state == "active" for c in stack.manager.consoles()),
                       60, "every console to be active")
        for h in stack.inputs.values():
            h.data.clear()

        # A dry run lists the 20 and touches nothing.
        status, plan = await fleet_post(stack.url, "root", {
            **RACK, "action": "power", "args": {"power": "cycle"}, "dry_run": True})
        assert status == 200, plan
        assert sorted(plan["would_touch"]) == rack
        assert plan["confirm_needed"] == TAGGED
        # Without the count (or with a wrong one) nothing happens either.
        status, refused = await fleet_post(stack.url, "root", {
            **RACK, "action": "power", "args": {"power": "cycle"}, "confirm_count": 19})
        assert status == 409
        assert refused["confirm_needed"] == TAGGED
        # The CLI: --dry-run lists; without --yes it refuses and names the count.
        code, out, _ = await cli(stack.url, "do", "power", "cycle", "--tag", "rack12",
                                 "--dry-run")
        assert code == 0
        assert "dry run: power cycle would touch 20 consoles, 0 refused" in out
        code, _, err = await cli(stack.url, "power", "--tag", "rack12", "cycle")
        assert code == 1
        assert "would touch 20 consoles; run again with --yes" in err
        await asyncio.sleep(0.3)
        assert stack.cycles == []
        assert fleet_events(data) == []

        # A viewer may act on none of them.
        status, result = await fleet_post(stack.url, "vera", {
            **RACK, "action": "break", "confirm_count": TAGGED})
        assert status == 200, result
        assert by_status(result, "refused") == rack
        assert result["summary"] == {"total": 20, "done": 0, "refused": 20, "unseen": 0,
                                     "error": 0}

        # An operator whose access list covers 5 of the 20: 5 done, 15 refused (unnamed).
        status, result = await fleet_post(stack.url, "olga", {
            **RACK, "action": "broadcast", "args": {"text": "echo olga-was-here", "line": True}})
        assert status == 200, result
        assert by_status(result, "done") == rack[:5]
        assert result["summary"]["refused"] == 15
        assert result["summary"]["unseen"] == 15
        assert not set(rack[5:]) & {r["console"] for r in result["results"]}
        for name, seen in stack.inputs.items():
            assert seen.data.count(b"echo olga-was-here\r") == (name in rack[:5]), name

        # An admin's broadcast reaches each selected host exactly once, and no other.
        status, result = await fleet_post(stack.url, "root", {
            "selection": {"filter": "tag:rack12 n1*"}, "action": "broadcast",
            "args": {"text": "uptime", "line": True}})
        assert status == 200, result
        chosen = [n for n in rack if n.startswith("n1")]
        assert by_status(result, "done") == chosen
        for name, seen in stack.inputs.items():
            assert seen.data.count(b"uptime\r") == (name in chosen), name

        # The CLI: power-cycle tag rack12; exactly those 20 hosts reboot, paced.
        env = {**os.environ, "SOLGATE_TOKEN": TOKENS["root"], "PYTHONPATH": str(ROOT)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "solgate.cli", "power", "--tag", "rack12", "cycle",
            "--yes", "--server", stack.url, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode()
        assert proc.returncode == 0, text + err.decode()
        assert "power cycle: 20 consoles: 20 done, 0 refused, 0 failed" in text
        assert sorted(n for n, _ in stack.cycles) == rack
        assert all(stack.host(n).state.value == "shell" for n in names() if n not in rack)

        def booted(name: str) -> bool:
            return b"Linux version" in (data / "logs" / f"{name}.log").read_bytes()

        # The cycled hosts boot again (their boot log reaches the console logs); the
        # others were never interrupted.
        await wait_for(lambda: all(booted(n) for n in rack), 20, "the cycled hosts to boot")
        assert not any(booted(n) for n in names() if n not in rack)
        times = sorted(t for _, t in stack.cycles)
        span = times[-1] - times[0]
        assert span >= 0.8 * (TAGGED - 1) / RATE, f"{TAGGED} cycles within {span:.2f} s"

        # Recorded: every cycled console's log names the user and the selection.
        records = [e for e in fleet_events(data) if e.get("action") == "power cycle"]
        assert sorted(e["console"] for e in records if e["console"]) == rack
        assert all(e["user"] == "root" and e["selection"] == "--tag rack12" for e in records)
        note = b"fleet power cycle by root (selection --tag rack12; 20 consoles): done"
        # A note may wait (at most a second) for the end of the console line it interrupts.
        await wait_for(lambda: note in (data / "logs" / f"{rack[0]}.log").read_bytes(), 5,
                       "the fleet note in the console log")
