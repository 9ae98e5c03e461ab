"""`solgate console` starts without the server, the crypto or the configuration modules.

An sshd ForceCommand runs `solgate console` at every login, and every command builds
the whole `solgate` parser; the command modules (`solgate.cli.*`) therefore import the
work they start inside their command functions. A fresh interpreter checks it, since
this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

from solgate import config
from solgate.cli import config as cli_config

# Modules `solgate console NAME --server URL` must not load before it connects.
HEAVY = (
    "solgate.config",
    "solgate.ipmi.crypto",
    "cryptography",
    "solgate.console.manager",
    "solgate.web.app",
    "aiohttp.web",
    "solgate.serve_cli",
    "solgate.daemon",
    "solgate.sim.bmc",
)

PROBE = """
import json, sys
from solgate.cli import build_parser
from solgate.cli.console import options_from_args
args = build_parser().parse_args(["console", "web01", "--server", "http://127.0.0.1:1"])
options_from_args(args, {})
print(json.dumps(sorted(sys.modules)))
"""


def test_solgate_console_starts_without_the_server_crypto_or_config() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    loaded = set(json.loads(out))
    assert "solgate.terminal" in loaded
    assert [name for name in HEAVY if name in loaded] == []


def test_the_config_option_names_the_configs_variable() -> None:
    # Spelled out in solgate.cli.config so the parser needs no configuration module.
    assert cli_config.CONFIG_ENV == config.CONFIG_ENV


def test_python_m_solgate_cli_runs_the_command() -> None:
    result = subprocess.run([sys.executable, "-m", "solgate.cli", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("solgate ")
