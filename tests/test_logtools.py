"""`solgate tail` and `solgate events`: the files under data_dir, read with the server down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from solgate.cli import main
from solgate.console.events import EventLog
from solgate.console.log import ConsoleLog
from solgate.errors import ConfigError
from solgate.logtools import LogFollower, format_event, parse_since

REPO = Path(__file__).resolve().parents[1]


def make_log(data_dir: Path, name: str = "web01", **kwargs) -> ConsoleLog:
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    return ConsoleLog(data_dir / "logs" / f"{name}.log", **kwargs)


def test_tail_n_spans_rotated_files(tmp_path, capfdbinary) -> None:
    log = make_log(tmp_path, max_bytes=40, keep=5)
    for i in range(20):
        log.write(f"line {i:02d} of the boot log\n".encode())
    log.close()
    assert (tmp_path / "logs" / "web01.log.1").exists()  # it did rotate
    assert main(["tail", "web01", "-n", "5", "--data-dir", str(tmp_path)]) == 0
    out = capfdbinary.readouterr().out
    assert out == b"".join(f"line {i:02d} of the boot log\n".encode() for i in range(15, 20))


def test_tail_of_an_unknown_console_is_one_line(tmp_path, capfd) -> None:
    (tmp_path / "logs").mkdir()
    assert main(["tail", "nosuch", "--data-dir", str(tmp_path)]) == 1
    err = capfd.readouterr().err
    assert err.startswith("solgate: no log for console 'nosuch' at ")
    assert len(err.splitlines()) == 1
    assert main(["tail", "../etc/passwd", "--data-dir", str(tmp_path)]) == 1
    assert "is not a console name" in capfd.readouterr().err


def test_follower_reads_across_rotation_by_rename(tmp_path) -> None:
    log = make_log(tmp_path, max_bytes=64, keep=3)
    log.write(b"before the follower started\n")
    follower = LogFollower(log.path, from_end=True)
    seen = bytearray()
    written = bytearray()
    for i in range(40):
        chunk = f"chunk {i:02d}: some console output\r\n".encode()
        log.write(chunk)
        written += chunk
        if i % 7 == 0:  # two rotations between some polls
            seen += follower.poll()
    seen += follower.poll()
    assert bytes(seen) == bytes(written)  # nothing lost, nothing twice
    assert follower.rotations >= 5
    log.close()
    follower.close()


def test_tail_then_follow_loses_and_repeats_nothing_written_in_between(tmp_path) -> None:
    """`before()` is the tail up to where `poll()` goes on, across rotated files."""
    log = make_log(tmp_path, max_bytes=64, keep=5)
    lines = [f"line {i:02d} of the console\n".encode() for i in range(12)]
    for line in lines[:8]:
        log.write(line)
    follower = LogFollower(log.path, from_end=True)
    for line in lines[8:]:
        log.write(line)  # written after the follower looked, before the tail is read
    assert follower.before(5, max_bytes=1 << 20) == b"".join(lines[3:8])
    assert follower.before(100, max_bytes=1 << 20) == b"".join(lines[:8])  # rotated too
    assert follower.before(5, max_bytes=50) == b"".join(lines[6:8])
    assert follower.poll() == b"".join(lines[8:])
    log.close()
    follower.close()


def test_follower_waits_for_a_missing_file_and_rereads_a_truncated_one(tmp_path) -> None:
    path = tmp_path / "web01.log"
    follower = LogFollower(path)
    assert follower.poll() == b""
    path.write_bytes(b"first\n")
    assert follower.poll() == b"first\n"
    with open(path, "ab") as f:
        f.write(b"second\n")
    assert follower.poll() == b"second\n"
    with open(path, "r+b") as f:  # copy-and-truncate by an outside tool
        f.truncate(0)
        f.write(b"new\n")
    assert follower.poll() == b"new\n"
    follower.close()


@pytest.mark.timeout(30)
def test_tail_follow_as_a_process_across_rotation(tmp_path) -> None:
    log = make_log(tmp_path, max_bytes=10_000, keep=2)
    log.write(b"old line\nlast line\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "solgate.cli", "tail", "-f", "-n", "1", "web01",
         "--data-dir", str(tmp_path)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"last line\n"
        log.write(b"before rotation\n")
        log.rotate()
        log.write(b"after rotation\n")
        got = proc.stdout.readline() + proc.stdout.readline()
        assert got == b"before rotation\nafter rotation\n"
    finally:
        proc.kill()
        proc.wait(5)
        proc.stdout.close()
        log.close()


@pytest.fixture
def events_dir(tmp_path: Path) -> Path:
    now = time.time()
    events = EventLog(tmp_path / "events.jsonl")
    events.append("sol-up", "web01", message="SOL up", now=now - 7200)
    events.append("panic", "web01", message="Kernel panic - not syncing", now=now - 5400)
    events.append("panic", "db01", message="Oops: 0002", now=now - 1800)
    events.append("attach", "web01", user="alice", message="alice attached", now=now - 600)
    events.append("panic", "web01", message="Kernel panic again\nsecond line", now=now - 60)
    events.close()
    with open(tmp_path / "events.jsonl", "ab") as f:
        f.write(b'{"torn": ')  # a crash mid-line is skipped
    return tmp_path


def run_events(capfd, data_dir: Path, *args: str) -> list[str]:
    assert main(["events", "--data-dir", str(data_dir), *args]) == 0
    return capfd.readouterr().out.splitlines()


def test_events_filters(events_dir, capfd) -> None:
    lines = run_events(capfd, events_dir, "--json")
    assert [json.loads(x)["kind"] for x in lines] == [
        "sol-up", "panic", "panic", "attach", "panic"]
    lines = run_events(capfd, events_dir, "--json", "--kind", "panic", "--console", "web01")
    assert [json.loads(x)["message"] for x in lines] == [
        "Kernel panic - not syncing", "Kernel panic again\nsecond line"]
    lines = run_events(capfd, events_dir, "--json", "--since", "1h")
    assert [json.loads(x)["console"] for x in lines] == ["db01", "web01", "web01"]
    lines = run_events(capfd, events_dir, "--json", "-n", "2", "--kind", "panic,attach")
    assert [json.loads(x)["kind"] for x in lines] == ["attach", "panic"]


def test_events_human_format(events_dir, capfd) -> None:
    lines = run_events(capfd, events_dir, "--since", "15m")
    assert len(lines) == 2
    assert lines[0].endswith("  web01  attach  by alice: alice attached")
    assert lines[1].endswith("  web01  panic  ERROR: Kernel panic again\\nsecond line")


def test_since_accepts_durations_and_times() -> None:
    assert parse_since("1h", now=10_000.0) == 10_000.0 - 3600
    assert parse_since("2026-11-22T03:00:00Z") == 1795316400.0
    with pytest.raises(ConfigError, match="--since 'yesterday'"):
        parse_since("yesterday")
    assert format_event({"time": "t", "console": "c", "kind": "k"}) == "t  c  k"


def test_events_without_a_file_says_where_it_looked(tmp_path, capfd) -> None:
    assert main(["events", "--data-dir", str(tmp_path)]) == 1
    assert f"no events file at {tmp_path / 'events.jsonl'}" in capfd.readouterr().err


def test_tail_reads_data_dir_from_the_config(tmp_path, capfdbinary) -> None:
    data = tmp_path / "data"
    log = make_log(data)
    log.write(b"hello from the config's data_dir\n")
    log.close()
    config = tmp_path / "solgate.toml"
    config.write_text(f'data_dir = "{data}"\n[consoles.web01]\nhost = "10.0.0.5"\n'
                      'username = "admin"\npassword = "secret"\n')
    assert main(["tail", "web01", "-c", str(config)]) == 0
    assert capfdbinary.readouterr().out == b"hello from the config's data_dir\n"


