"""`solgate demo`, the command README tells a newcomer to type, works end to end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from solgate.cli.demo import demo_config_text, demo_names, own_ssh_keys
from solgate.config import parse_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_names_start_with_the_consoles_readme_mentions():
    assert demo_names(6) == ["web01", "web02", "db01", "db02", "node05", "node06"]


def test_demo_config_is_valid_and_offers_ssh_only_with_keys(tmp_path):
    text = demo_config_text([9001, 9002], ["web01", "web02"], listen="127.0.0.1:8080",
                            data_dir=str(tmp_path), ssh_listen="127.0.0.1:2222",
                            ssh_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake demo"])
    config = parse_config(text, "<demo>")
    assert list(config.consoles) == ["web01", "web02"]
    assert config.server.auth == "none"
    assert config.ssh is not None
    assert config.ssh.listen == "127.0.0.1:2222"
    without = parse_config(demo_config_text([9001], ["web01"], listen="127.0.0.1:8080",
                                            data_dir=str(tmp_path), ssh_listen="127.0.0.1:2222"),
                           "<demo>")
    assert without.ssh is None


def test_own_ssh_keys_reads_public_keys_only(tmp_path):
    (tmp_path / "id_ed25519.pub").write_text("ssh-ed25519 AAAAkey1 me@host\n")
    (tmp_path / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (tmp_path / "authorized_keys").write_text(
        "# comment\nssh-ed25519 AAAAkey1 me@host\necdsa-sha2-nistp256 AAAAkey2 x\n")
    assert own_ssh_keys(tmp_path) == ["ssh-ed25519 AAAAkey1 me@host",
                                      "ecdsa-sha2-nistp256 AAAAkey2 x"]
    assert own_ssh_keys(tmp_path / "missing") == []


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def test_demo_brings_consoles_alive_and_stops_cleanly(tmp_path: Path):
    port = _free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "solgate.cli", "demo", "--count", "2", "--listen",
         f"127.0.0.1:{port}", "--no-ssh", "--boot-speed", "20", "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 30
        consoles: list[dict] = []
        while time.monotonic() < deadline:
            try:
                consoles = _get_json(f"http://127.0.0.1:{port}/api/consoles")["consoles"]
            except OSError:
                consoles = []
            log = data / "logs" / "web01.log"
            if (consoles and all(c["state"] == "active" for c in consoles)
                    and log.exists() and b"root@web01:~# " in log.read_bytes()):
                break
            time.sleep(0.2)
        assert [c["name"] for c in consoles] == ["web01", "web02"]
        assert all(c["state"] == "active" for c in consoles), consoles
        logged = (data / "logs" / "web01.log").read_bytes()
        assert b"SOL up (cipher suite 17)" in logged
        assert b"Linux version 6.1.0-sim" in logged  # the boot log, from power-on
        assert b"root@web01:~# " in logged
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode(errors="replace")
    assert b"open http://127.0.0.1:" in out
    assert b"SOL down: solgate stopping" in (data / "logs" / "web01.log").read_bytes()
