"""Which event loop `solgate serve` and `solgate demo` run on: uvloop when installed,
asyncio's own when asked or when uvloop is missing, and a clear error for a bad choice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from solgate.cli.serve import EVENT_LOOP_ENV, event_loop_choice, run_on_event_loop
from solgate.errors import ConfigError


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` now fails


@pytest.fixture(autouse=True)
def no_env_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)


def test_asyncio_when_asked():
    assert event_loop_choice("asyncio") == (None, "asyncio")


def test_auto_without_uvloop_falls_back_to_asyncio(no_uvloop):
    assert event_loop_choice(None) == (None, "asyncio")
    assert event_loop_choice("auto") == (None, "asyncio")


def test_asking_for_missing_uvloop_says_how_to_install_it(no_uvloop):
    with pytest.raises(ConfigError, match=r"pip install 'solgate\[fast\]'"):
        event_loop_choice("uvloop")


def test_environment_variable_chooses_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    assert event_loop_choice(None) == (None, "asyncio")
    monkeypatch.setenv(EVENT_LOOP_ENV, "tokio")
    with pytest.raises(ConfigError, match=f"{EVENT_LOOP_ENV}='tokio': use one of auto"):
        event_loop_choice(None)


def test_auto_takes_uvloop_when_installed():
    uvloop = pytest.importorskip("uvloop", exc_type=ImportError)
    factory, name = event_loop_choice(None)
    assert factory is not None
    assert name.startswith("uvloop")

    async def which() -> int:
        return int(isinstance(asyncio.get_running_loop(), uvloop.Loop))

    assert run_on_event_loop(None, lambda _name: which()) == 1


def test_run_on_the_asyncio_loop_passes_its_name():
    async def main(name: str) -> int:
        assert type(asyncio.get_running_loop()).__module__.startswith("asyncio")
        return len(name)

    assert run_on_event_loop("asyncio", main) == len("asyncio")


def test_serve_names_its_event_loop_and_packet_path_and_stops_on_sigterm(tmp_path: Path):
    cfg = tmp_path / "solgate.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n\n[server]\nlisten = "127.0.0.1:0"\n'
                   'auth = "none"\n')
    err = tmp_path / "serve.err"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "solgate.cli", "serve", "-c", str(cfg), "--no-web",
             "--event-loop", "asyncio"],
            stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, "SOLGATE_NATIVE": "0"})
    try:
        deadline = time.monotonic() + 30
        while "solgate: serving" not in err.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, err.read_text()
            time.sleep(0.1)
        # SOLGATE_NATIVE=0: the compiled per-packet path is off even where it is built.
        assert "(event loop: asyncio; packet path: pure Python)" in err.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
