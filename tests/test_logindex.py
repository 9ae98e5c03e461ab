"""The console log's time index: what it records, rotation with its log, and the fallback
to the notes' times for logs written without it."""

from __future__ import annotations

import os
from pathlib import Path

from solgate.console.log import ConsoleLog
from solgate.console.logindex import Mark, Timeline, index_path, read_index
from solgate.console.logread import iter_log_files
from solgate.console.notes import BREAK_MARK
from solgate.console.replay import host_read

FAKE = b"[-- solgate 2026-12-06T03:19:23Z: PANIC (critical): fake --]\r\n"

T0 = 1_780_000_000.0  # a whole second


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_index_records_each_second_each_pause_and_each_note(tmp_path: Path) -> None:
    clock = Clock(T0 + 0.1)
    log = ConsoleLog(tmp_path / "web01.log", clock=clock)
    log.write(b"boot\r\n")  # first write: a record
    clock.t = T0 + 0.2
    log.write(b"more\r\n")  # same burst: none
    clock.t = T0 + 0.6
    log.write(b"$ ls\r\n")  # after a pause: a record
    clock.t = T0 + 1.05
    log.write(b"x")  # a new second: a record
    clock.t = T0 + 1.1
    log.event("SOL down")  # a note (and no new record: same burst)
    log.close()
    data = (tmp_path / "web01.log").read_bytes()
    marks = read_index(tmp_path / "web01.log")
    note_at = data.index(BREAK_MARK)  # the note broke the open line "x" when the log closed
    assert marks == [Mark(T0 + 0.1, 0), Mark(T0 + 0.6, 12), Mark(T0 + 1.05, 18),
                     Mark(T0 + 1.1, note_at, note=True)]


def test_timeline_answers_what_was_written_by_a_moment(tmp_path: Path) -> None:
    clock = Clock(T0)
    log = ConsoleLog(tmp_path / "a.log", clock=clock)
    log.write(b"one\r\n")
    clock.t = T0 + 5
    log.write(b"two\r\n")
    log.close()
    os.utime(tmp_path / "a.log", (T0 + 5, T0 + 5))
    tl = Timeline(iter_log_files(tmp_path / "a.log"))
    assert tl.exact
    assert tl.offset_at(T0 - 1) == 0
    assert tl.offset_at(T0 + 4.9) == 5
    assert tl.offset_at(T0 + 6) == 10
    assert tl.time_at(7) == T0 + 5


def test_sidecars_rotate_and_go_with_their_logs(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "web01.log"
    log = ConsoleLog(path, max_bytes=100, keep=2, clock=clock)
    for i in range(5):
        clock.t = T0 + 10 * i
        log.write(b"%d" % i * 99 + b"\n")
        log.tick()
    log.close()
    files = iter_log_files(path)
    assert [f.name for f in files] == ["web01.log.2", "web01.log.1", "web01.log"]
    assert files[2].stat().st_size == 0  # rotated at the newline; nothing since
    idx = sorted(p.name for p in tmp_path.glob("*.idx"))
    assert idx == ["web01.log.1.idx", "web01.log.2.idx"]
    # Each rotated sidecar still describes its own file: the times of lines 3 and 4.
    assert read_index(tmp_path / "web01.log.2") == [Mark(T0 + 30, 0)]
    assert read_index(tmp_path / "web01.log.1") == [Mark(T0 + 40, 0)]
    tl = Timeline(files)
    assert tl.offset_at(T0 + 35) == 100
    assert tl.read(95, 105) == b"3333\n44444"


def test_a_log_without_index_answers_from_its_notes(tmp_path: Path) -> None:
    clock = Clock(T0 + 3)
    log = ConsoleLog(tmp_path / "old.log", clock=clock, index=False)
    log.event("SOL up")
    log.write(b"hello\r\n")
    clock.t = T0 + 60
    log.event("MARK")
    log.write(b"later\r\n")
    log.close()
    assert not index_path(tmp_path / "old.log").exists()
    data = (tmp_path / "old.log").read_bytes()
    tl = Timeline([tmp_path / "old.log"])
    assert not tl.exact
    mark_at = data.index(b"[-- solgate", 5)
    assert tl.offset_at(T0 + 30) == mark_at  # to the second, at the notes only
    assert [m.time for m in tl.notes()] == [T0 + 3, T0 + 60]


def test_a_sidecar_of_another_file_is_ignored_and_restarted(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "web01.log"
    log = ConsoleLog(path, clock=clock)
    log.write(b"first file\n")
    os.rename(path, tmp_path / "web01.log-20261206")  # an external logrotate, no .idx
    log.reopen()
    assert read_index(path) is None  # the sidecar names the renamed file's inode
    clock.t = T0 + 2
    log.write(b"second\n")
    log.close()
    assert read_index(path) == [Mark(T0 + 2, 0)]


def test_a_sidecar_the_disk_refuses_does_not_stop_the_log(tmp_path: Path) -> None:
    path = tmp_path / "web01.log"
    index_path(path).mkdir()  # cannot be opened as a file
    log = ConsoleLog(path, clock=Clock())
    log.write(b"still logged\n")
    log.close()
    assert path.read_bytes() == b"still logged\n"
    assert log.error is None
    assert Timeline([path]).size == len(b"still logged\n")


def test_a_quiet_console_holds_no_sidecar_descriptor(tmp_path: Path) -> None:
    clock = Clock()
    log = ConsoleLog(tmp_path / "web01.log", clock=clock)
    before = len(os.listdir("/proc/self/fd"))
    log.write(b"login: ")
    assert len(os.listdir("/proc/self/fd")) == before + 1
    clock.t += 10
    log.tick()
    assert len(os.listdir("/proc/self/fd")) == before
    clock.t += 1
    log.write(b"root\r\n")  # reopened and appended to, not started afresh
    log.close()
    assert read_index(tmp_path / "web01.log") == [Mark(T0, 0), Mark(T0 + 11, 7)]


def test_around_loads_only_the_files_a_moment_needs(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "web01.log"
    log = ConsoleLog(path, max_bytes=100, keep=5, clock=clock)
    for i in range(5):  # one 100-byte line per file, 100 s apart
        clock.t = T0 + 100 * i
        log.write(b"%d" % i * 99 + b"\n")
        log.tick()
    log.close()
    files = iter_log_files(path)[:-1]  # the empty current file aside
    for i, file in enumerate(files):
        os.utime(file, (T0 + 100 * i, T0 + 100 * i))
    tl = Timeline.around(files, T0 + 250, T0 + 250)
    assert [f.name for f in tl.files] == ["web01.log.3", "web01.log.2"]  # context, then it
    assert not tl.from_oldest
    assert tl.read(tl.offset_at(T0 + 250) - 4, tl.offset_at(T0 + 250)) == b"222\n"
    assert Timeline.around(files, T0 - 5, T0 - 5).from_oldest


def note_starts(path: Path) -> list[bytes]:
    """The first bytes at each offset the index marks as a note."""
    data = path.read_bytes()
    return [data[m.offset : m.offset + 16] for m in read_index(path) or [] if m.note]


def test_notes_are_what_the_log_wrote_never_what_the_host_printed(tmp_path: Path) -> None:
    clock = Clock(T0)
    path = tmp_path / "web01.log"
    log = ConsoleLog(path, clock=clock, timestamps=True)
    log.write(b"login: ")
    log.event("alice attached")  # mid-line: held, then the line is broken
    clock.t += 5
    log.tick()
    log.write(b"root\r\n" + FAKE)
    log.event("SOL down")
    log.write(b"host says " + FAKE)
    log.close()
    starts = note_starts(path)
    assert len(starts) == 2  # the two notes, not the host's look-alikes
    assert starts[0].startswith(BREAK_MARK[:16])
    assert starts[1].startswith(b"[20")  # the stamp of the note's line
    data = path.read_bytes()
    assert host_read(Timeline([path]), 0, len(data)) == (
        b"login: root\r\n" + FAKE + b"host says " + FAKE)


def test_notes_written_after_a_disk_failure_are_recorded_where_they_land(
        tmp_path: Path, monkeypatch) -> None:
    clock = Clock(T0)
    path = tmp_path / "web01.log"
    log = ConsoleLog(path, clock=clock, max_pending=160)
    log.write(b"boot\r\n")
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    log.write(b"lost " * 30 + b"\r\n")  # partly dropped when the rest overflows
    log.event("held while the disk was full")
    log.write(FAKE)
    monkeypatch.setattr(os, "write", real_write)
    clock.t += 2
    log.tick()  # the disk is back: the loss note, the pending note and the host's line
    log.close()
    data = path.read_bytes()
    starts = note_starts(path)
    assert [s[:12] for s in starts] == [b"[-- solgate "] * 2
    assert b"log write failed" in data
    host = host_read(Timeline([path]), 0, len(data))
    assert host.endswith(FAKE)
    assert b"log write failed" not in host
    assert b"held while" not in host
