"""The console log and the events file: what an operator finds on disk after the fact."""

from __future__ import annotations

import errno
import json
import os
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solgate.console.events import EventLog, read_events
from solgate.console.log import ConsoleLog, format_time
from solgate.console.logread import iter_log_files, lines_backwards, lines_backwards_at, read_tail
from solgate.console.notes import BREAK_MARK, NOTE_HOLD

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z, a fixed wall clock
STAMP = re.compile(rb"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] ")
EVENT = re.compile(rb"^\[-- solgate \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: .* --\]\r$")


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def all_bytes(path) -> bytes:
    """Everything a console log holds, rotated files first."""
    return b"".join(p.read_bytes() for p in iter_log_files(path))


def make(tmp_path, clock, **kw) -> ConsoleLog:
    return ConsoleLog(tmp_path / "logs" / "web01.log", clock=clock, **kw)


class DiskFull:
    """Stands in for os.write while the disk refuses everything."""

    def __init__(self, err: int = errno.ENOSPC) -> None:
        self.err = err
        self.calls = 0

    def __call__(self, fd, data):
        self.calls += 1
        raise OSError(self.err, os.strerror(self.err))


# -- raw bytes ----------------------------------------------------------------------


def test_bytes_land_raw_and_in_order(tmp_path, clock):
    log = make(tmp_path, clock)
    rng = random.Random(1)
    chunks = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(200)]
    for c in chunks:
        log.write(c)
    # Nothing waits in the process: the file holds it all before close().
    assert log.path.read_bytes() == b"".join(chunks)
    assert log.bytes_written == sum(map(len, chunks))
    log.close()
    assert log.path.read_bytes() == b"".join(chunks)
    assert log.path.parent.name == "logs"


def test_appends_to_an_existing_log(tmp_path, clock):
    path = tmp_path / "web01.log"
    path.write_bytes(b"before restart\r\nlogin: ")
    log = ConsoleLog(path, clock=clock)
    log.event("SOL up")
    log.write(b"root\r\n")
    log.close()
    # The old file ended mid-line, so the event starts a fresh line.
    assert path.read_bytes().startswith(b"before restart\r\nlogin: \r\n[-- solgate ")
    assert path.read_bytes().endswith(b"--]\r\nroot\r\n")


def test_write_after_close_is_a_bug(tmp_path, clock):
    log = make(tmp_path, clock)
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.write(b"x")


# -- event lines ----------------------------------------------------------------------


def test_event_line_format(tmp_path, clock):
    clock.t = 1_795_317_247.0  # date -u -d 2026-11-22T03:14:07Z +%s
    log = make(tmp_path, clock)
    log.event("SOL up (cipher suite 17)")
    when = format_time(clock.t)
    assert log.path.read_bytes() == f"[-- solgate {when}: SOL up (cipher suite 17) --]\r\n".encode()
    assert when == "2026-11-22T03:14:07Z"


def test_event_waits_for_the_console_line_to_end_and_keeps_its_time(tmp_path, clock):
    clock.t = 1_795_317_247.0  # 2026-11-22T03:14:07Z
    log = make(tmp_path, clock)
    log.write(b"Booting kern")
    log.event("SOL down (BMC stopped answering)")
    assert log.notes_held
    clock.t += 0.5
    log.write(b"el\r\nlog")  # the line ends: the event goes right after it
    assert not log.notes_held
    log.write(b"in: \r\n")
    log.event("SOL up")  # at a line start: at once
    log.write(b"login: ")
    assert log.path.read_bytes() == (
        b"Booting kernel\r\n"
        b"[-- solgate 2026-11-22T03:14:07Z: SOL down (BMC stopped answering) --]\r\n"
        b"login: \r\n"
        b"[-- solgate 2026-11-22T03:14:07Z: SOL up --]\r\n"
        b"login: "
    )


def test_a_line_still_open_after_the_hold_is_broken_with_a_visible_mark(tmp_path, clock):
    clock.t = 1_795_317_247.0  # 2026-11-22T03:14:07Z
    log = make(tmp_path, clock)
    log.write(b"root@web01:~# ")
    log.event("alice attached")
    clock.t += 0.6
    log.event("alice detached")
    assert log.next_deadline() == 1_795_317_248.0  # the first note's time + NOTE_HOLD
    clock.t += 0.3
    log.tick()
    assert log.path.read_bytes() == b"root@web01:~# "  # not yet
    clock.t = 1_795_317_248.0
    log.tick()
    log.write(b"uname\r\n")
    assert log.path.read_bytes() == (
        b"root@web01:~#  [-- solgate: line continues below --]\r\n"
        b"[-- solgate 2026-11-22T03:14:07Z: alice attached --]\r\n"
        b"[-- solgate 2026-11-22T03:14:07Z: alice detached --]\r\n"
        b"uname\r\n"
    )


def test_held_events_are_written_by_the_scheduled_timer_and_on_close(tmp_path, clock):
    timers: list[tuple[float, object]] = []
    log = make(tmp_path, clock, note_hold=2.0,
               schedule=lambda delay, callback: timers.append((delay, callback)))
    log.write(b"progress 10%")
    log.event("break sent")
    assert [delay for delay, _ in timers] == [2.0]
    clock.t += 1.99  # a timer that fires early (another clock) waits and asks again
    timers.pop()[1]()
    assert log.path.read_bytes() == b"progress 10%"
    assert [round(delay, 6) for delay, _ in timers] == [0.01]
    clock.t += 0.01
    timers.pop()[1]()
    assert log.path.read_bytes().endswith(b"--]\r\n")
    assert not log.notes_held
    # Closing (shutdown) writes what is held at once.
    log.write(b"progress 20%")
    log.event("SOL down (solgate stopping)")
    log.close()
    assert log.path.read_bytes().endswith(
        b"progress 20% [-- solgate: line continues below --]\r\n"
        + f"[-- solgate {format_time(clock.t)}: SOL down (solgate stopping) --]\r\n".encode())


def test_rotate_and_reopen_write_held_events_into_the_file_they_belong_to(tmp_path, clock):
    log = make(tmp_path, clock)
    log.write(b"half a line")
    log.event("rotating")
    log.rotate()
    old = log.path.with_name("web01.log.1").read_bytes()
    assert old.startswith(b"half a line [-- solgate: line continues below --]\r\n")
    assert b"rotating --]\r\n" in old
    log.write(b"more")
    log.event("reopening")
    moved = log.path.with_name("web01.log-20261122")
    os.rename(log.path, moved)
    log.reopen()
    assert moved.read_bytes().endswith(b"reopening --]\r\n")
    assert log.path.read_bytes() == b""


def test_event_text_stays_on_one_line(tmp_path, clock):
    log = make(tmp_path, clock)
    log.event("attach by alice\r\nfrom 10.0.0.1")
    data = log.path.read_bytes()
    assert data.count(b"\n") == 1
    assert b"attach by alice  from 10.0.0.1" in data


# -- timestamps -------------------------------------------------------------------------


def test_timestamps_at_every_line_start_and_never_split_a_line(tmp_path, clock):
    log = make(tmp_path, clock, timestamps=True)
    text = b"first line\r\nsecond\r\n\r\nfourth after blank\r\npartial"
    rng = random.Random(7)
    pos = 0
    while pos < len(text):
        n = rng.randrange(1, 6)
        log.write(text[pos : pos + n])
        clock.t += 0.25
        pos += n
    data = log.path.read_bytes()
    lines = data.split(b"\n")
    for line in lines:
        assert STAMP.match(line), line
        assert len(STAMP.findall(line)) == 1
    assert [STAMP.sub(b"", ln) for ln in lines] == text.split(b"\n")


def test_timestamp_is_the_time_of_the_lines_first_byte(tmp_path, clock):
    log = make(tmp_path, clock, timestamps=True)
    clock.t = 1_795_317_247.5
    log.write(b"one\n")  # the newline arrives at :07.5, the next line a minute later
    clock.t = 1_795_317_308.75
    log.write(b"two")
    lines = log.path.read_bytes().split(b"\n")
    assert lines[0] == b"[2026-11-22T03:14:07.500Z] one"
    assert lines[1] == b"[2026-11-22T03:15:08.750Z] two"
    # No stamp is written for a line that has not started yet.
    log.write(b"\n")
    assert log.path.read_bytes().endswith(b"two\n")


def test_events_and_marks_are_stamped_too(tmp_path, clock):
    log = make(tmp_path, clock, timestamps=True)
    log.write(b"half")
    log.event("break sent")
    log.write(b"next\nthird\n")
    lines = log.path.read_bytes().split(b"\n")
    assert all(STAMP.match(ln) for ln in lines[:-1])
    assert STAMP.sub(b"", lines[0]) == b"halfnext"
    assert STAMP.sub(b"", lines[1]).startswith(b"[-- solgate ")
    assert STAMP.sub(b"", lines[2]) == b"third"


# -- marks and tick -----------------------------------------------------------------------


def test_mark_after_interval_of_quiet(tmp_path, clock):
    log = make(tmp_path, clock, mark_interval=600)
    clock.t += 599
    log.tick()
    assert log.path.read_bytes() == b""
    clock.t += 1
    log.tick()
    assert re.fullmatch(rb"\[-- solgate \S+Z: MARK --\]\r\n", log.path.read_bytes())
    clock.t += 300
    log.write(b"output\r\n")  # output restarts the interval
    clock.t += 599
    log.tick()
    assert log.path.read_bytes().count(b"MARK") == 1
    clock.t += 1
    log.tick()
    assert log.path.read_bytes().count(b"MARK") == 2


def test_no_marks_without_interval(tmp_path, clock):
    log = make(tmp_path, clock)
    clock.t += 10**6
    log.tick()
    assert log.path.read_bytes() == b""


# -- rotation ------------------------------------------------------------------------------


def test_rotation_by_rename_keeps_n_files_and_loses_nothing(tmp_path, clock):
    log = make(tmp_path, clock, max_bytes=1000, keep=3)
    written = bytearray()
    for i in range(200):  # 8400 bytes: 8 rotations, of which 3 are kept
        line = f"line {i:04d} ".encode() + b"x" * 30 + b"\r\n"
        log.write(line)
        written += line
    files = iter_log_files(log.path)
    assert [p.name for p in files] == ["web01.log.3", "web01.log.2", "web01.log.1", "web01.log"]
    # Rotated files start and end on line boundaries and respect the size.
    for p in files[:-1]:
        data = p.read_bytes()
        assert data.endswith(b"\r\n")
        assert data.startswith(b"line ")
        assert 1000 <= len(data) <= 1000 + 4096
    # Everything not rotated out of existence is there, in order.
    kept = all_bytes(log.path)
    assert bytes(written).endswith(kept)
    assert len(kept) >= 3 * 1000
    log.close()


def test_rotation_with_enough_keep_loses_nothing_at_all(tmp_path, clock):
    log = make(tmp_path, clock, max_bytes=500, keep=100)
    rng = random.Random(3)
    written = bytearray()
    for _ in range(300):
        n = rng.randrange(1, 80)
        chunk = bytes(rng.choice(b"abc\r\n") for _ in range(n))
        log.write(chunk)
        written += chunk
    log.close()
    assert len(iter_log_files(log.path)) > 10
    assert all_bytes(log.path) == bytes(written)


def test_rotation_waits_for_a_newline_but_not_forever(tmp_path, clock):
    log = make(tmp_path, clock, max_bytes=100, keep=5)
    log.write(b"a" * 150)  # past max, no newline yet: keep writing
    assert iter_log_files(log.path) == [log.path]
    log.write(b"bb\ncc")  # the newline ends the file
    assert log.path.with_name("web01.log.1").read_bytes() == b"a" * 150 + b"bb\n"
    assert log.path.read_bytes() == b"cc"
    # A flood without newlines is cut anyway, 4 KiB past the limit.
    log.write(b"z" * 20_000)
    sizes = [p.stat().st_size for p in iter_log_files(log.path)]
    assert max(sizes) <= 100 + 4096
    log.close()
    assert all_bytes(log.path).endswith(b"a" * 150 + b"bb\ncc" + b"z" * 20_000)


def test_rotation_with_timestamps_keeps_each_stamp_with_its_line(tmp_path, clock):
    log = make(tmp_path, clock, max_bytes=200, keep=50, timestamps=True)
    for i in range(40):
        log.write(f"message {i}\r\n".encode())
    log.close()
    for p in iter_log_files(log.path):
        data = p.read_bytes()
        assert data.endswith(b"\n")
        for line in data.split(b"\n")[:-1]:
            assert STAMP.match(line)


def test_explicit_rotate_and_keep_zero(tmp_path, clock):
    log = make(tmp_path, clock, keep=0)
    log.write(b"old\n")
    log.rotate()
    log.write(b"new\n")
    assert iter_log_files(log.path) == [log.path]
    assert log.path.read_bytes() == b"new\n"


def test_reopen_after_external_rename_continues_in_a_new_file(tmp_path, clock):
    log = make(tmp_path, clock)
    log.write(b"before\n")
    moved = log.path.with_name("web01.log-20261122")
    os.rename(log.path, moved)  # what logrotate does before SIGHUP
    log.write(b"still old fd\n")
    log.reopen()
    log.write(b"after\n")
    assert moved.read_bytes() == b"before\nstill old fd\n"
    assert log.path.read_bytes() == b"after\n"


def test_tick_notices_an_external_rename_by_itself(tmp_path, clock):
    log = make(tmp_path, clock)
    log.write(b"before\n")
    os.rename(log.path, log.path.with_name("web01.log.old"))
    log.tick()
    log.write(b"after\n")
    assert log.path.read_bytes() == b"after\n"
    log.path.unlink()  # an operator deleting the file also gets a fresh one
    log.tick()
    log.write(b"again\n")
    assert log.path.read_bytes() == b"again\n"


# -- a failing disk --------------------------------------------------------------------------


def test_disk_full_does_not_raise_and_pending_bytes_land_in_order(tmp_path, clock, monkeypatch):
    log = make(tmp_path, clock)
    log.write(b"one\r\n")
    full = DiskFull()
    real_write = os.write
    monkeypatch.setattr(os, "write", full)
    log.write(b"two\r\n")
    log.event("SOL down")
    log.write(b"thr")
    clock.t += 5
    log.tick()  # retries, still full
    log.write(b"ee\r\n")
    assert log.error == "No space left on device"
    assert log.write_errors >= 2
    assert full.calls >= 2
    assert log.path.read_bytes() == b"one\r\n"
    assert log.pending_bytes > 0

    monkeypatch.setattr(os, "write", real_write)
    log.tick()
    data = log.path.read_bytes()
    lines = data.split(b"\r\n")
    assert lines[0:2] == [b"one", b"two"]
    assert lines[2].startswith(b"[-- solgate ")
    assert lines[2].endswith(b"SOL down --]")
    assert lines[3:] == [b"three", b""]
    assert log.error is None
    assert log.pending_bytes == 0
    assert log.bytes_lost == 0
    assert b"lost" not in data


def test_disk_recovers_on_the_next_write_after_a_second(tmp_path, clock, monkeypatch):
    log = make(tmp_path, clock)
    real_write = os.write
    monkeypatch.setattr(os, "write", DiskFull(errno.EIO))
    log.write(b"a\n")
    assert log.error == "Input/output error"
    monkeypatch.setattr(os, "write", real_write)
    log.write(b"b\n")  # within a second of the failure: queued behind "a", not retried
    assert log.path.read_bytes() == b""
    clock.t += 1
    log.write(b"c\n")
    assert log.path.read_bytes() == b"a\nb\nc\n"
    assert log.error is None


def test_pending_buffer_is_bounded_and_the_loss_is_noted_at_the_gap(tmp_path, clock, monkeypatch):
    log = make(tmp_path, clock, max_pending=100)
    log.write(b"kept before\r\nmid-li")
    real_write = os.write
    monkeypatch.setattr(os, "write", DiskFull())
    for i in range(50):
        log.write(f"line {i:02d}\r\n".encode())
    assert log.pending_bytes <= 100
    monkeypatch.setattr(os, "write", real_write)
    log.tick()
    data = log.path.read_bytes()
    lines = data.split(b"\r\n")
    assert lines[0] == b"kept before"
    assert lines[1] == b"mid-li"  # the note starts a new line after the torn one
    note = lines[2].decode()
    m = re.fullmatch(
        r"\[-- solgate \S+Z: log write failed \(No space left on device\); "
        r"(\d+) bytes of console output lost --\]",
        note,
    )
    assert m, note
    lost = int(m.group(1))
    # What follows the note is the newest output, starting at a line boundary.
    rest = b"\r\n".join(lines[3:])
    assert rest.startswith(b"line ")
    assert rest.endswith(b"line 49\r\n")
    assert lost == 50 * 9 - len(rest)
    assert log.bytes_lost == lost


def test_unopenable_log_directory_does_not_raise(tmp_path, clock):
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the directory should be")
    log = ConsoleLog(blocker / "web01.log", clock=clock)
    assert log.error is not None
    log.write(b"held\n")
    log.tick()
    assert log.pending_bytes == 5
    blocker.unlink()
    log.tick()
    assert (blocker / "web01.log").read_bytes() == b"held\n"
    assert log.error is None


# -- readers ---------------------------------------------------------------------------------


def test_read_tail_across_rotated_files(tmp_path, clock):
    log = make(tmp_path, clock, max_bytes=100, keep=10)
    for i in range(100):
        log.write(f"line {i}\n".encode())
    log.write(b"partial")
    log.close()
    assert len(iter_log_files(log.path)) > 3
    tail = read_tail(log.path, 25)
    assert tail == [f"line {i}\n".encode() for i in range(76, 100)] + [b"partial"]
    assert read_tail(log.path, 0) == []
    assert read_tail(tmp_path / "nothing.log", 5) == []
    # A byte budget keeps whole lines, newest first, and stops before the one that passes it.
    assert read_tail(log.path, 25, max_bytes=24) == [b"line 98\n", b"line 99\n", b"partial"]


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=80).map(lambda b: bytes(c % 3 + 0x0A for c in b)),
       block=st.integers(1, 9))
def test_lines_backwards_is_the_file_read_back_to_front(tmp_path, data, block):
    path = tmp_path / "f.log"
    path.write_bytes(data)
    lines = list(lines_backwards(path, block=block))
    assert b"".join(reversed(lines)) == data
    assert all(line.endswith(b"\n") for line in lines[1:])
    assert all(b"\n" not in line[:-1] for line in lines)
    with open(path, "rb") as f:
        pairs = list(lines_backwards_at(f.fileno(), len(data), block=block))
    assert [line for _, line in pairs] == lines
    assert all(data[start:start + len(line)] == line for start, line in pairs)


def test_lines_backwards_at_hands_out_an_endless_line_in_pieces(tmp_path):
    path = tmp_path / "f.log"
    path.write_bytes(b"head\n" + b"x" * 100)
    with open(path, "rb") as f:
        pairs = list(lines_backwards_at(f.fileno(), 105, block=8, max_line=20))
    assert all(len(line) <= 28 for _, line in pairs)
    assert pairs[-1] == (0, b"head\n")
    assert b"".join(line for _, line in reversed(pairs)) == b"head\n" + b"x" * 100


# -- events.jsonl -----------------------------------------------------------------------------


def test_events_append_and_read(tmp_path, clock):
    events = EventLog(tmp_path / "events.jsonl", clock=clock)
    events.append("sol-up", "web01", message="SOL up (cipher suite 17)", cipher_suite=17)
    clock.t += 10
    events.append("attach", "web02", user="alice", role="writer")
    clock.t += 10
    rec = events.append("panic", "web01", severity="critical", message="Kernel panic - not syncing")
    assert rec["time"] == format_time(clock.t, millis=True)
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first == {
        "time": format_time(T0, millis=True),
        "console": "web01",
        "kind": "sol-up",
        "severity": "info",
        "user": None,
        "message": "SOL up (cipher suite 17)",
        "cipher_suite": 17,
    }
    assert [r["kind"] for r in events.read()] == ["sol-up", "attach", "panic"]
    assert [r["kind"] for r in events.read(console="web01")] == ["sol-up", "panic"]
    assert [r["kind"] for r in events.read(since=T0 + 5)] == ["attach", "panic"]
    assert [r["kind"] for r in events.read(limit=2)] == ["attach", "panic"]
    assert [r["kind"] for r in events.read(console="web01", limit=1)] == ["panic"]
    assert events.read(console="nope") == []
    events.close()


def test_read_events_filters_kinds_before_the_limit(tmp_path, clock):
    """A page of panics reaches past newer records of other kinds."""
    path = tmp_path / "events.jsonl"
    events = EventLog(path, clock=clock)
    events.append("panic", "web01", message="Kernel panic - not syncing")
    for _ in range(5):
        events.append("attach", "web01", user="bob")
    events.close()
    kinds = frozenset({"panic"})
    assert [r["kind"] for r in read_events(path, kinds=kinds, limit=1)] == ["panic"]
    assert [r["kind"] for r in read_events(path, limit=1)] == ["attach"]
    assert read_events(path, kinds=kinds, limit=0) == []


def test_events_torn_last_line_is_tolerated(tmp_path, clock):
    path = tmp_path / "events.jsonl"
    events = EventLog(path, clock=clock)
    events.append("power", "web01", user="bob", action="cycle")
    events.close()
    with open(path, "ab") as f:
        f.write(b'{"time": "2026-11-22T03:14:07.000Z", "console": "we')  # crash mid-write
    assert [r["kind"] for r in read_events(path)] == ["power"]
    # A new writer starts after the torn line and both remain readable.
    events = EventLog(path, clock=clock)
    events.append("break", "web01", user="bob")
    events.close()
    assert [r["kind"] for r in read_events(path)] == ["power", "break"]


def test_events_disk_full_never_raises_and_retries(tmp_path, clock, monkeypatch):
    path = tmp_path / "events.jsonl"
    events = EventLog(path, clock=clock)
    real_write = os.write
    monkeypatch.setattr(os, "write", DiskFull())
    events.append("sol-down", "web01", message="BMC stopped answering")
    events.append("sol-up", "web01")
    assert events.error == "No space left on device"
    assert events.write_errors >= 1
    assert path.read_bytes() == b""
    # Readers still see what is waiting for the disk.
    assert [r["kind"] for r in events.read()] == ["sol-down", "sol-up"]
    monkeypatch.setattr(os, "write", real_write)
    clock.t += 1
    events.append("attach", "web01", user="alice")
    assert [json.loads(x)["kind"] for x in path.read_text().splitlines()] == [
        "sol-down",
        "sol-up",
        "attach",
    ]
    assert events.error is None
    assert events.read()[0]["severity"] == "warning"


# -- property: nothing lost, nothing doubled, whatever the chunking --------------------------

EVENT_BODY = re.compile(rb"\[-- solgate [^\r\n]*--\]\r\n")
STAMP_ANY = re.compile(rb"\[\d{4}-\d\d-\d\dT[\d:.]+Z\] ")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.one_of(
            st.binary(min_size=1, max_size=300).map(lambda b: ("write", b)),
            st.sampled_from(
                [
                    ("write", b"\r\n"),
                    ("write", b"line\r\n"),
                    ("event", b""),
                    ("fail", b""),
                    ("heal", b""),
                    ("tick", b""),
                ]
            ),
        ),
        max_size=80,
    ),
    timestamps=st.booleans(),
)
def test_property_log_holds_exactly_the_console_bytes(
    tmp_path_factory, monkeypatch, ops, timestamps
):
    clock = FakeClock()
    path = tmp_path_factory.mktemp("prop") / "web01.log"
    real_write = os.write
    log = ConsoleLog(path, clock=clock, max_bytes=700, keep=1000, timestamps=timestamps)
    # The stream we expect: console bytes, with "<E>" for each event at the next line
    # boundary, or after the break mark where the line stayed open for NOTE_HOLD.
    expected = bytearray()
    at_line_start = True
    held, deadline = 0, 0.0

    def release() -> None:
        nonlocal held, at_line_start
        if not held:
            return
        expected.extend((b"" if at_line_start else BREAK_MARK + b"\r\n") + b"<E>" * held)
        held, at_line_start = 0, True

    with monkeypatch.context() as m:
        for op, payload in ops:
            clock.t += 0.4
            if op == "write":
                # Keep the console's own bytes free of what we rewrite below.
                payload = payload.replace(b"[", b"(")
                log.write(payload)
                if held and b"\n" in payload:
                    nl = payload.index(b"\n") + 1
                    expected.extend(payload[:nl] + b"<E>" * held + payload[nl:])
                    held = 0
                elif held and payload and clock.t >= deadline:
                    expected.extend(payload)
                    at_line_start = False
                    release()
                    continue
                else:
                    expected.extend(payload)
                if payload:
                    at_line_start = payload.endswith(b"\n")
            elif op == "event":
                log.event("SOL up")
                if at_line_start and not held:
                    expected.extend(b"<E>")
                else:
                    held += 1
                    deadline = clock.t + NOTE_HOLD if held == 1 else deadline
            elif op == "fail":
                m.setattr(os, "write", DiskFull())
            elif op == "heal":
                m.setattr(os, "write", real_write)
            else:
                log.tick()
                if held and clock.t >= deadline:
                    release()
        m.setattr(os, "write", real_write)
        log.close()
        release()
    assert log.bytes_lost == 0
    assert log.pending_bytes == 0
    data = all_bytes(path)
    if timestamps:
        data = STAMP_ANY.sub(b"", data)
    assert EVENT_BODY.sub(b"<E>", data) == bytes(expected)
