"""The daemon's SIGHUP reload is a task it holds: a failure is logged and reaches
`solgate reload`, and shutdown waits for a reload in flight instead of leaving it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from solgate.config import Config, parse_config
from solgate.console.manager import ConsoleManager
from solgate.daemon import RELOAD_STATUS_FILE, run_server


def _config(tmp_path: Path) -> Config:
    return parse_config(f'data_dir = "{tmp_path / "data"}"\n', str(tmp_path / "solgate.toml"))


async def _serve_and_hang_up(tmp_path: Path, reload_config: Callable[[], Config]) -> None:
    """Start the daemon (no consoles, no web), send it SIGHUP, and stop it as soon as the
    reload has begun (it reads the configuration first)."""
    shutdown = asyncio.Event()

    def ready(*_: object) -> None:
        if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
            pytest.skip("run_server could not install its SIGHUP handler here")
        os.kill(os.getpid(), signal.SIGHUP)

    def read_and_stop() -> Config:
        shutdown.set()
        return reload_config()

    await asyncio.wait_for(run_server(_config(tmp_path), shutdown=shutdown, web_enabled=False,
                                      reload_config=read_and_stop, on_ready=ready), timeout=30)


async def test_a_reload_that_fails_is_logged_and_told_to_solgate_reload(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Config:
        raise RuntimeError("disk on fire")

    with caplog.at_level(logging.ERROR, logger="solgate.serve"):
        await _serve_and_hang_up(tmp_path, broken)
    assert any("reload failed: disk on fire" in r.getMessage() for r in caplog.records)
    verdict = json.loads((tmp_path / "data" / RELOAD_STATUS_FILE).read_text())
    assert verdict["ok"] is False
    assert "disk on fire" in verdict["message"]


async def test_shutdown_waits_for_a_reload_in_flight(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    engine_reload = ConsoleManager.reload

    async def slow_reload(self: ConsoleManager, config: Config) -> dict[str, list[str]]:
        await asyncio.sleep(0.3)  # a reload that takes a while (consoles to restart)
        return await engine_reload(self, config)

    monkeypatch.setattr(ConsoleManager, "reload", slow_reload)
    await _serve_and_hang_up(tmp_path, lambda: _config(tmp_path))
    # run_server has returned: the reload asked for before the stop has run to its end.
    verdict = json.loads((tmp_path / "data" / RELOAD_STATUS_FILE).read_text())
    assert verdict["ok"] is True, verdict
