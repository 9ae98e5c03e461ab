"""The open-files limit a server needs is worked out from its consoles before any opens."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from solgate.config import parse_config
from solgate.console.manager import files_needed


def _config(tmp_path: Path, consoles: int, *, index: bool) -> str:
    lines = [f'data_dir = "{tmp_path}"', "[defaults]", 'username = "admin"',
             'password = "password"', f"log_index = {'true' if index else 'false'}"]
    for i in range(consoles):
        lines += [f"[consoles.n{i:05d}]", 'host = "127.0.0.1"', f"port = {10000 + i}"]
    return "\n".join(lines) + "\n"


def test_each_console_counts_its_log_and_its_time_index(tmp_path: Path) -> None:
    indexed = parse_config(_config(tmp_path, 640, index=True), "<t>", base_dir=tmp_path)
    plain = parse_config(_config(tmp_path, 640, index=False), "<t>", base_dir=tmp_path)
    # two files per console with an index, one without; a socket per 64 sessions; headroom
    assert files_needed(indexed.consoles.values()) == 1280 + 10 + 1024
    assert files_needed(plain.consoles.values()) == 640 + 10 + 1024


def test_a_hard_limit_below_the_logs_and_indexes_is_named_at_start(tmp_path: Path) -> None:
    """1,000 indexed consoles need ~3,000 files: under a hard limit of 2,500 the operator
    is told the number to set, where the logs alone (2,000) would have looked enough."""
    (tmp_path / "s.toml").write_text(_config(tmp_path, 1000, index=True))
    script = textwrap.dedent(f"""
        import logging, resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 2500))
        logging.basicConfig(level=logging.ERROR, format="%(message)s")
        from solgate.config import load_config
        from solgate.console.manager import raise_file_limit
        config = load_config({str(tmp_path / "s.toml")!r})
        print(raise_file_limit(config.consoles.values()))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    assert run.stdout.strip() == "(2500, 2500)"  # lifted as far as the hard limit allows
    assert "1000 consoles need about 3039 open files but the limit is 2500" in run.stderr
    assert "LimitNOFILE=3039" in run.stderr
