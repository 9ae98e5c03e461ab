"""Secrets in the configuration: empty sources refused, readable files warned about, and
the example documents every users and ssh key; `check-config` starts without noise."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from solgate.config import parse_config
from solgate.config.ssh import SSH_KEYS
from solgate.config.users import USER_KEYS
from solgate.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONSOLE = '[consoles.web01]\nhost = "127.0.0.1"\n'


@pytest.mark.parametrize(("line", "key"), [
    ('password = ""', "password"),
    ('password = "pw"\nkg = ""', "kg"),
    ('password = "pw"\nkg_hex = ""', "kg_hex"),
])
def test_empty_secret_sources_are_refused(line: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"line \d+: \[consoles.web01\] {key}: is empty"):
        parse_config(CONSOLE + line + "\n", "solgate.toml")


def test_secret_files_readable_by_others_are_warned_about_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "bmc.password"
    secret.write_text("pw\n")
    key = tmp_path / "key.pem"
    key.write_text("not checked here\n")
    cert = tmp_path / "cert.pem"
    cert.write_text("not checked here\n")
    text = (f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
            f'[defaults]\npassword_file = "{secret}"\n'
            + "".join(f'[consoles.c{i}]\nhost = "127.0.0.1"\n' for i in range(3)))
    for path in (secret, key, cert):
        path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="solgate.config"):
        parse_config(text, "solgate.toml")
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        f"[server] tls_key {key} is readable by other users; chmod 600 {key}",
        f"password_file {secret} is readable by other users; chmod 600 {secret}",
    ]  # one line each, however many consoles share the file; the certificate is public
    caplog.clear()
    secret.chmod(0o600)
    key.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="solgate.config"):
        parse_config(text, "solgate.toml")
    assert caplog.records == []


def test_example_documents_every_users_and_ssh_key() -> None:
    text = (REPO / "solgate.toml").read_text()
    assert re.search(r"^# \[ssh\]$", text, re.MULTILINE)
    assert re.search(r"^# \[users\.\w+\]$", text, re.MULTILINE)
    for key in sorted(set(SSH_KEYS) | USER_KEYS | {"on_panic_pass_env"}):
        assert re.search(rf"^#?\s*{key}\s*=", text, re.MULTILINE), key


def test_check_config_prints_no_cryptography_warnings(tmp_path: Path) -> None:
    """asyncssh's DSA deprecation warnings were the first thing a newcomer saw."""
    path = tmp_path / "solgate.toml"
    path.write_text(CONSOLE + 'password = "pw"\n[ssh]\nlisten = "127.0.0.1:2222"\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "solgate.cli", "check-config", "-c", str(path)],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "ssh gateway" in result.stdout
    assert "Warning" not in result.stderr, result.stderr
