"""`solgate screen`, `export` and `grep` on logs written by the real engine from a
simulated host over real UDP: the screen at T is what the host had printed by T, a
recording replays to the same screen, and grep finds exactly the lines written."""

from __future__ import annotations

import asyncio
import calendar
import json
import time
from pathlib import Path

import pytest

from solgate.cli import main
from solgate.console.log import ConsoleLog, format_time
from solgate.console.logindex import Timeline
from solgate.console.logread import iter_log_files
from solgate.console.screen import Screen
from solgate.forensics import host_read, parse_time
from solgate.sim.fleet import SimFleet
from tests.engine_helpers import (
    engine_config,
    log_bytes,
    prompt,
    running_manager,
    sim_factory,
    wait_active,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


def screen_of(data: bytes) -> list[str]:
    screen = Screen(80, 25)
    screen.feed(data)
    return [row.rstrip() for row in screen.display]


def printed_screen(out: str) -> tuple[str, list[str]]:
    header, *rows = out.splitlines()
    return header, rows


def host_part(worker, n: int) -> bytes:
    """The host's bytes among the first `n` of the console's log, by the time index."""
    return host_read(Timeline(iter_log_files(worker.log_path)), 0, n)


def all_log_bytes(worker) -> bytes:
    """The console's log across its rotated files."""
    return b"".join(f.read_bytes() for f in iter_log_files(worker.log_path))


async def type_and_wait(worker, name: str, command: str, reply: bytes) -> None:
    worker.send_input(command.encode() + b"\r")
    await wait_for(lambda: all_log_bytes(worker).endswith(reply + prompt(name)), 10.0,
                   f"the output of {command!r}")


async def quiet_moment() -> float:
    """A moment with no output around it (the index records the first write after it)."""
    await asyncio.sleep(0.6)
    at = time.time()
    await asyncio.sleep(0.4)
    return at


async def test_screen_at_a_moment_and_a_recording_that_replays_to_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with SimFleet(1, base_port=0, config_factory=sim_factory()) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port})
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            start = await quiet_moment()
            await type_and_wait(worker, bmc.name, "echo first", b"first\r\n")
            at = await quiet_moment()
            before = log_bytes(worker)
            host_before = host_part(worker, len(before))
            await type_and_wait(worker, bmc.name, "clear", b"\x1b[H\x1b[2J")
            await type_and_wait(worker, bmc.name, "echo second", b"second\r\n")
            end = await quiet_moment()
            after = log_bytes(worker)
            host_after = host_part(worker, len(after))
    data = str(tmp_path / "data")

    assert main(["screen", "node", "--at", format_time(at, millis=True),
                 "--data-dir", data]) == 0
    header, rows = printed_screen(capsys.readouterr().out)
    assert rows == screen_of(host_before)
    assert "first" in rows[1]
    assert not any("second" in r for r in rows)
    assert header.startswith("# node at ")
    assert f"replayed {len(before)} bytes written since " in header
    assert "time index" in header

    assert main(["screen", "node", "--at", format_time(end, millis=True),
                 "--data-dir", data]) == 0
    _, rows_end = printed_screen(capsys.readouterr().out)
    assert rows_end == screen_of(host_after)
    assert rows_end[0] == "root@node-000:~# echo second" or "second" in rows_end[1]

    cast = tmp_path / "node.cast"
    assert main(["export", "node", "--from", format_time(start, millis=True), "--to",
                 format_time(end, millis=True), "-o", str(cast), "--data-dir", data]) == 0
    capsys.readouterr()
    head, *lines = cast.read_text().splitlines()
    header_obj = json.loads(head)
    assert header_obj["version"] == 2
    assert (header_obj["width"], header_obj["height"]) == (80, 25)
    assert header_obj["timestamp"] == int(parse_time(format_time(start, millis=True)))
    events = [json.loads(line) for line in lines]
    times = [e[0] for e in events]
    assert all(isinstance(e, list) and len(e) == 3 and e[1] in ("o", "m")
               and isinstance(e[0], float | int) and isinstance(e[2], str) for e in events)
    assert times == sorted(times)
    assert 0 <= times[0]
    assert times[-1] <= end - start + 0.001
    # Real timing: "second" came out about (its write time - start) into the recording.
    second_at = next(e[0] for e in events if e[1] == "o" and "second\r\n" in e[2])
    assert at - start < second_at < end - start
    replay = Screen(80, 25)
    for _t, kind, text in events:
        if kind == "o":
            replay.feed(text.encode())
    assert [r.rstrip() for r in replay.display] == rows_end


def test_parse_time_forms() -> None:
    now = 1_780_000_000.0
    assert parse_time("-15m", now=now) == now - 900
    assert parse_time("2h", now=now) == now - 7200
    assert parse_time("now", now=now) == now
    utc = calendar.timegm((2026, 12, 6, 3, 12, 0))
    assert parse_time("2026-12-06T03:12:00Z") == utc
    assert parse_time("2026-12-06T04:12:00+01:00") == utc
    local = time.localtime(now)
    got = time.localtime(parse_time("03:12", now=now))
    assert (got.tm_year, got.tm_yday, got.tm_hour, got.tm_min) == (
        local.tm_year, local.tm_yday, 3, 12)


async def test_grep_finds_exactly_the_lines_written_across_a_rotation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with SimFleet(2, base_port=0, config_factory=sim_factory()) as fleet:
        ports = {"node": fleet.bmcs[0].port, "other": fleet.bmcs[1].port}
        config = engine_config(tmp_path, ports, log_max="1KB", log_keep=10)
        async with running_manager(config) as manager:
            worker = manager.get("node")
            other = manager.get("other")
            assert worker is not None
            assert other is not None
            await wait_active(worker)
            await wait_active(other)
            written = []
            for i in range(12):
                word = f"needle-{i:02d}-" + "x" * 60
                written.append(word)
                await type_and_wait(worker, fleet.bmcs[0].name, f"echo {word}",
                                    word.encode() + b"\r\n")
            await type_and_wait(other, fleet.bmcs[1].name, "echo haystack", b"haystack\r\n")
    logs = tmp_path / "data" / "logs"
    assert (logs / "node.log.1").exists()  # rotated: the needles are in both files
    assert b"needle-00" in (logs / "node.log.1").read_bytes()
    assert b"needle-11" in (logs / "node.log").read_bytes()
    data = str(tmp_path / "data")
    assert main(["grep", "^needle-", "--data-dir", data]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("  ", 1)[1] for line in out] == [
        f"node: {w}" for w in reversed(written)]
    stamps = [line.split("  ", 1)[0] for line in out]
    assert stamps == sorted(stamps, reverse=True)
    assert main(["grep", "needle|haystack", "--console", "oth*", "--data-dir", data]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("  ", 1)[1] for line in out] == ["other: haystack",
                                                        "other: echo haystack"]
    assert main(["grep", "^needle-", "-n", "3", "--data-dir", data]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3
    assert "limit of 3 hits" in captured.err
    assert main(["grep", "^needle-", "--since=-1h", "--until", "30m",
                 "--data-dir", data]) == 1


def test_a_log_without_index_still_answers_from_its_notes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "logs").mkdir()
    t0 = 1_780_000_000.0
    clock = [t0]
    log = ConsoleLog(tmp_path / "logs" / "old.log", clock=lambda: clock[0], index=False)
    log.event("SOL up")
    log.write(b"before\r\n")
    clock[0] = t0 + 120
    log.event("MARK")
    log.write(b"\x1b[H\x1b[2Jafter\r\n")
    log.close()
    assert main(["screen", "old", "--at", format_time(t0 + 60), "--data-dir",
                 str(tmp_path)]) == 0
    header, rows = printed_screen(capsys.readouterr().out)
    assert rows[0] == "before"
    assert "nearest note" in header


def test_a_note_that_broke_a_line_is_taken_out_of_the_replay(tmp_path: Path) -> None:
    clock = [1_780_000_000.0]
    log = ConsoleLog(tmp_path / "a.log", clock=lambda: clock[0])
    log.write(b"login: ")
    log.event("alice attached")  # mid-line: held, then breaks the line
    clock[0] += 5
    log.tick()
    log.write(b"root\r\n")
    log.close()
    data = (tmp_path / "a.log").read_bytes()
    assert b"line continues below" in data
    assert host_read(Timeline([tmp_path / "a.log"]), 0, len(data)) == b"login: root\r\n"


FAKE = "[-- solgate 2026-12-06T03:19:23Z: PANIC (critical): fake --]"


async def test_a_host_printing_a_fake_note_keeps_it_in_screen_and_export(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only what solgate wrote is a note: host text shaped like one is the host's."""
    async with SimFleet(1, base_port=0, config_factory=sim_factory()) as fleet:
        bmc = fleet.bmcs[0]
        config = engine_config(tmp_path, {"node": bmc.port})
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker)
            start = await quiet_moment()
            await type_and_wait(worker, bmc.name, f"echo {FAKE}", FAKE.encode() + b"\r\n")
            manager.get("node").log.event("a real note")
            await type_and_wait(worker, bmc.name, "echo after", b"after\r\n")
            end = await quiet_moment()
    data = str(tmp_path / "data")
    assert main(["screen", "node", "--at", format_time(end, millis=True),
                 "--data-dir", data]) == 0
    _, rows = printed_screen(capsys.readouterr().out)
    assert any(r.endswith(f"echo {FAKE}") for r in rows)  # the typed line, echoed whole
    assert FAKE in rows  # and the host's answer, on its own line
    assert not any("a real note" in r for r in rows)  # solgate's own note is taken out

    cast = tmp_path / "node.cast"
    assert main(["export", "node", "--from", format_time(start, millis=True), "--to",
                 format_time(end, millis=True), "-o", str(cast), "--data-dir", data]) == 0
    events = [json.loads(line) for line in cast.read_text().splitlines()[1:]]
    played = "".join(text for _, kind, text in events if kind == "o")
    assert played.count(FAKE) == 2
    assert "a real note" not in played
    markers = [text for _, kind, text in events if kind == "m"]
    assert any("a real note" in m for m in markers)
    assert not any("fake" in m for m in markers)
