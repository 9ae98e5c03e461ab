"""contrib/: the systemd unit, alert rules, dashboard and logrotate snippet, checked by
the tools that will read them (each test skips with a message when its tool is missing).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry
from sim_helpers import running_fleet

from solgate.config import parse_config
from solgate.console.manager import ConsoleManager
from solgate.web.metrics import SolgateCollector

ROOT = Path(__file__).resolve().parents[1]
CONTRIB = ROOT / "contrib"
UNIT = CONTRIB / "systemd" / "solgate.service"
RULES = CONTRIB / "prometheus" / "solgate-alerts.yml"
DASHBOARD = CONTRIB / "grafana" / "solgate-dashboard.json"
LOGROTATE = CONTRIB / "logrotate" / "solgate"
SOLGATE = [sys.executable, "-c", "import sys; from solgate.cli import main; sys.exit(main())"]


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                  else None)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install "
                    f"{ {'promtool': 'prometheus', 'systemd-analyze': 'systemd'}.get(name, name)})")
    return path


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_has_what_the_daemon_relies_on() -> None:
    s = _unit_settings()
    assert s["Type"] == ["notify"]  # solgate sends READY=1 itself
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "WatchdogSec" in s
    assert s["NotifyAccess"] == ["main"]
    assert s["User"] == ["solgate"]
    assert s["StateDirectory"] == ["solgate"]
    assert s["ReadWritePaths"] == ["/var/lib/solgate"]
    assert s["ProtectSystem"] == ["strict"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert s[key] == ["yes"], key
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert s["ExecStart"][0].split()[1:] == ["serve", "-c", "/etc/solgate/solgate.toml"]


def test_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    """`systemd-analyze verify` (warnings count as failures) and its exposure score.

    verify insists that ExecStart's program exists, so a copy runs with the program
    replaced by an existing one (this solgate, or the interpreter); the rest is as shipped.
    """
    analyze = _tool("systemd-analyze")
    program = shutil.which("solgate") or sys.executable
    unit = tmp_path / "solgate.service"
    unit.write_text(UNIT.read_text().replace("ExecStart=/usr/local/bin/solgate ",
                                             f"ExecStart={program} "))
    assert f"ExecStart={program} serve" in unit.read_text()
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    ours = [ln for ln in (result.stdout + result.stderr).splitlines() if "solgate" in ln]
    assert result.returncode == 0, result.stdout + result.stderr
    assert not ours, ours  # verify only warns (exit 0) about unknown keys and bad values
    # 0 is locked down, 10 is exposed; the shipped unit scores 1.6.
    security = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20",
                               "--no-pager", str(unit)], capture_output=True, text=True,
                              timeout=60, check=False)
    if "--offline" in security.stderr and "unrecognized" in security.stderr:
        pytest.skip("this systemd-analyze has no `security --offline` (systemd < 250)")
    assert security.returncode == 0, security.stdout[-3000:] + security.stderr


def test_alert_rules_pass_promtool() -> None:
    promtool = _tool("promtool")
    for args in (["check", "rules", str(RULES)],
                 ["test", "rules", str(RULES.with_name("solgate-alerts.test.yml"))]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60,
                                check=False, cwd=RULES.parent)
        assert result.returncode == 0, result.stdout + result.stderr


async def _exposed_metric_names(tmp_path: Path) -> set[str]:
    """Every series name a real engine exposes on /metrics."""
    async with running_fleet(1) as fleet:
        config = parse_config("\n".join([
            f'data_dir = "{tmp_path}"', "[defaults]", 'username = "admin"',
            'password = "password"', "[consoles.web01]", 'host = "127.0.0.1"',
            f"port = {fleet.ports[0]}"]), "<test>")
        manager = ConsoleManager(config)
        await manager.start()
        try:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(SolgateCollector(manager, web_sessions=lambda: 0))
            text = generate_latest(registry).decode()
        finally:
            await manager.stop()
    # TYPE lines name every family, with or without samples (a counter's is `x_total`)
    return set(re.findall(r"^# TYPE (\S+) \S+$", text, re.M))


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(solgate_[a-z_]+)\b", expr))


async def test_dashboard_and_rules_use_metrics_that_exist(tmp_path: Path) -> None:
    exposed = await _exposed_metric_names(tmp_path)
    assert "solgate_console_up" in exposed
    assert "solgate_console_panics_total" in exposed

    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    assert all(_metric_names(e) for e in exprs)
    rules = [ln.split("expr:", 1)[1] for ln in RULES.read_text().splitlines()
             if ln.strip().startswith("expr:")]
    assert len(rules) >= 7
    used = set().union(*(_metric_names(e) for e in exprs + rules))
    assert used <= exposed, f"not exposed by solgate: {sorted(used - exposed)}"


async def test_logrotate_snippet_rotates_events_and_solgate_reopens(tmp_path: Path) -> None:
    """Run the shipped snippet with logrotate itself against a running `solgate serve`:
    events.jsonl is renamed, the postrotate reload makes solgate write a new one, and no
    record is lost or lands in the renamed file after the reload."""
    logrotate = _tool("logrotate")
    data = tmp_path / "data"
    async with running_fleet(1) as fleet:
        cfg = tmp_path / "solgate.toml"
        cfg.write_text("\n".join([
            f'data_dir = "{data}"', "[server]", 'listen = "127.0.0.1:0"', 'auth = "none"',
            "[defaults]", 'username = "admin"', 'password = "password"',
            "[consoles.web01]", 'host = "127.0.0.1"', f"port = {fleet.ports[0]}", ""]))
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get(
            "PYTHONPATH", ""))
        proc = await asyncio.create_subprocess_exec(
            *SOLGATE, "serve", "-c", str(cfg), "--event-loop", "asyncio", env=env,
            stderr=asyncio.subprocess.PIPE)
        try:
            assert proc.stderr is not None
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            while "solgate: serving" not in line:
                line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            url = re.search(r"http://\S+/", line).group(0)  # type: ignore[union-attr]
            events = data / "events.jsonl"
            for _ in range(500):
                if events.exists() and '"sol-up"' in events.read_text():
                    break
                await asyncio.sleep(0.02)
            assert '"sol-up"' in events.read_text()

            conf = tmp_path / "logrotate.conf"
            conf.write_text(
                LOGROTATE.read_text()
                .replace("/var/lib/solgate", str(data))
                .replace("    su solgate solgate\n", "")
                .replace("systemctl reload solgate.service", f"kill -HUP {proc.pid}"))
            result = subprocess.run([logrotate, "-f", "-s", str(tmp_path / "state"),
                                     str(conf)], capture_output=True, text=True, timeout=60,
                                    check=False)
            assert result.returncode == 0, result.stdout + result.stderr
            rotated = data / "events.jsonl.1"
            assert '"sol-up"' in rotated.read_text()
            for _ in range(500):  # the reload reopened events.jsonl
                if events.exists():
                    break
                await asyncio.sleep(0.02)
            assert events.exists(), "solgate did not reopen events.jsonl after the rotation"
            before = rotated.read_text()

            import aiohttp

            async with aiohttp.ClientSession() as session, \
                    session.ws_connect(f"{url}ws/consoles/web01") as ws:
                await ws.receive(timeout=10)
            for _ in range(500):
                if '"detach"' in events.read_text():
                    break
                await asyncio.sleep(0.02)
            assert '"attach"' in events.read_text()
            assert '"detach"' in events.read_text()
            assert rotated.read_text() == before  # nothing went to the renamed file
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 30)
