"""solgate under systemd: the notify protocol (solgate/sdnotify.py) and the graceful stop.

A real unix datagram socket stands in for systemd's $NOTIFY_SOCKET and a real
`solgate serve` process talks to simulated BMCs over loopback UDP: it must say READY=1
once it serves, RELOADING=1 then READY=1 around SIGHUP, WATCHDOG=1 at half
$WATCHDOG_USEC, STOPPING=1 on SIGTERM, and leave no SOL payload active and no session
open on any BMC when it exits (a real BMC would refuse the next client otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from pathlib import Path

import pytest
from sim_helpers import running_fleet

from solgate.sdnotify import Notifier
from tests.engine_helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]
SOLGATE = [sys.executable, "-c", "import sys; from solgate.cli import main; sys.exit(main())"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["SOLGATE_SIM_PASSWORD"] = "password"
    env.update(extra)
    return env


def _config(data_dir: Path, ports: list[int]) -> str:
    lines = [f'data_dir = "{data_dir}"', "[server]", 'listen = "127.0.0.1:0"', 'auth = "none"',
             "[defaults]", 'username = "admin"', 'password_env = "SOLGATE_SIM_PASSWORD"',
             "cipher_suites = [17, 3]", 'reconnect_max = "1s"']
    for i, port in enumerate(ports):
        lines += [f"[consoles.sim{i + 1:03d}]", 'host = "127.0.0.1"', f"port = {port}"]
    return "\n".join(lines) + "\n"


# --- the notifier itself ---------------------------------------------------------------------


def test_environment_is_read_once_and_unset() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000",
           "WATCHDOG_PID": str(os.getpid()), "OTHER": "kept"}
    n = Notifier.from_environment(env)
    assert n.address == "/run/systemd/notify"
    assert n.watchdog_interval == 15.0  # half of WatchdogSec, as systemd advises
    assert env == {"OTHER": "kept"}  # programs solgate runs do not inherit them


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    n = Notifier.from_environment({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000",
                                   "WATCHDOG_PID": "1"})
    assert n.address == "\0x"  # '@' is an abstract socket
    assert n.watchdog_interval is None


def test_abstract_socket_gets_the_datagram(tmp_path: Path) -> None:
    name = f"solgate-test-{os.getpid()}-{id(tmp_path)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        n = Notifier("@" + name)
        assert n.ready("serving 3 consoles")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving 3 consoles"
        n.close()


def test_no_socket_or_a_dead_one_never_raises(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    assert not Notifier(None).ready()
    dead = Notifier(str(tmp_path / "nobody-listens"))
    assert not dead.ready()
    assert not dead.stopping()
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1  # said once, not once per watchdog ping
    dead.close()


# --- a real daemon ---------------------------------------------------------------------------


async def test_daemon_notifies_ready_reload_watchdog_and_stopping(tmp_path: Path) -> None:
    notify_path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.setblocking(False)
    messages: list[list[str]] = []

    async def listen() -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(sock, 4096)
            messages.append(data.decode().split("\n"))

    def count(field: str) -> int:
        return sum(field in m for m in messages)

    listener = asyncio.get_running_loop().create_task(listen())
    async with running_fleet(2) as fleet:
        cfg = tmp_path / "solgate.toml"
        cfg.write_text(_config(tmp_path / "data", fleet.ports))
        proc = await asyncio.create_subprocess_exec(
            *SOLGATE, "serve", "-c", str(cfg), "--event-loop", "asyncio",
            env=_env(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="400000"),
            stderr=asyncio.subprocess.DEVNULL)
        try:
            await wait_for(lambda: count("READY=1") == 1, 30, "READY=1")
            ready = next(m for m in messages if "READY=1" in m)
            assert any(re.fullmatch(r"STATUS=serving 2 consoles; web console on "
                                    r"http://127\.0\.0\.1:\d+/", f) for f in ready), ready
            # WATCHDOG=1 every 0.2 s (half of 0.4 s)
            before = count("WATCHDOG=1")
            await wait_for(lambda: count("WATCHDOG=1") >= before + 3, 5, "watchdog pings")

            proc.send_signal(signal.SIGHUP)
            await wait_for(lambda: count("READY=1") == 2, 10, "READY=1 after the reload")
            reloading = [i for i, m in enumerate(messages) if "RELOADING=1" in m]
            again = [i for i, m in enumerate(messages) if "READY=1" in m][1]
            assert len(reloading) == 1
            assert reloading[0] < again
            assert any(f.startswith("MONOTONIC_USEC=") for f in messages[reloading[0]])

            await wait_for(lambda: all(h.core.sol.active for h in fleet.bmcs), 20,
                           "both consoles active")
            assert count("STOPPING=1") == 0
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await asyncio.sleep(0.05)  # the last datagram
        assert count("STOPPING=1") == 1
        stopping = next(i for i, m in enumerate(messages) if "STOPPING=1" in m)
        assert not any("READY=1" in m for m in messages[stopping:])
        # The graceful stop left every BMC free.
        assert [h.core.sol.active for h in fleet.bmcs] == [False, False]
        assert [len(h.core.sessions) for h in fleet.bmcs] == [0, 0]
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    sock.close()


async def test_sigterm_leaves_no_sol_active_on_the_simulator(tmp_path: Path) -> None:
    """`solgate sim` in its own process tells (SIGUSR1) how many BMCs hold SOL."""
    sim_err, sim_out = tmp_path / "sim.err", tmp_path / "sim.toml"
    with sim_err.open("w") as err, sim_out.open("w") as out:
        sim = await asyncio.create_subprocess_exec(
            *SOLGATE, "sim", "--count", "4", "--base-port", "0",
            "--password-env", "SOLGATE_SIM_PASSWORD", "--boot-speed", "1000",
            env=_env(), stdout=out, stderr=err)
    serve = None
    try:
        await wait_for(lambda: "started 4 BMCs" in sim_err.read_text(), 30, "the simulator")
        ports = [int(p) for p in re.findall(r"port = (\d+)", sim_out.read_text())]
        assert len(ports) == 4, sim_out.read_text()

        async def status() -> str:
            n = sim_err.read_text().count("status:")
            sim.send_signal(signal.SIGUSR1)
            await wait_for(lambda: sim_err.read_text().count("status:") > n, 10, "sim status")
            return [ln for ln in sim_err.read_text().splitlines() if "status:" in ln][-1]

        cfg = tmp_path / "solgate.toml"
        cfg.write_text(_config(tmp_path / "data", ports))
        serve = await asyncio.create_subprocess_exec(
            *SOLGATE, "serve", "-c", str(cfg), "--no-web", "--event-loop", "asyncio",
            env=_env(), stderr=asyncio.subprocess.DEVNULL)
        events = tmp_path / "data" / "events.jsonl"
        await wait_for(lambda: events.exists() and events.read_text().count('"sol-up"') == 4,
                       30, "4 consoles active")
        assert "4 with SOL active" in await status()
        serve.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(serve.wait(), 30) == 0
        assert "status: 4 BMCs, 0 with SOL active, 0 sessions open" in await status()
    finally:
        for proc in (serve, sim):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
