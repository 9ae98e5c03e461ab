"""One console's log across members: reading a member's part (up to an epoch, for a follow
stream) and merging the parts by ownership epoch, whole or streamed."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from solgate.cluster.download import merge_streams
from solgate.cluster.follow import start_bytes
from solgate.console.epochs import Part, merge_logs
from solgate.console.log import ConsoleLog
from solgate.console.logpart import TooDeep, read_part
from solgate.logtools import LogFollower


def note(member: str, epoch: int) -> bytes:
    return f"[-- solgate 2026-12-06T05:00:00Z: cluster: {member} owns the console " \
           f"(epoch {epoch}) --]\r\n".encode()


def test_pieces_come_out_in_epoch_order_whatever_member_holds_them() -> None:
    a = b"before the cluster\r\n" + note("a", 10) + b"one\r\n" + note("a", 30) + b"three\r\n"
    b = note("b", 20) + b"two, cut mid-li"
    merged = merge_logs({"b": b, "a": a})
    assert merged == (b"before the cluster\r\n" + note("a", 10) + b"one\r\n" + note("b", 20)
                      + b"two, cut mid-li\r\n" + note("a", 30) + b"three\r\n")


def test_a_member_without_notes_keeps_its_text_first() -> None:
    assert merge_logs({"a": b"x\r\n", "b": note("b", 5) + b"y\r\n"}) == \
        b"x\r\n" + note("b", 5) + b"y\r\n"


def test_a_members_part_up_to_an_epoch_across_rotated_files(tmp_path: Path) -> None:
    """What an older history page asks each member for: its log up to the end of an
    epoch, the last N lines of it, however the pieces are spread over rotated files."""
    log = ConsoleLog(tmp_path / "web01.log", max_bytes=120, keep=20)
    pieces = [b"before the cluster\r\n", note("a", 10) + b"one\r\n" * 6,
              note("a", 30) + b"three\r\n" * 6, note("a", 50) + b"five\r\n" * 3]
    for piece in pieces:
        log.write(piece)
    log.close()
    assert (tmp_path / "web01.log.2").exists()  # the pieces span files

    def part(lines: int, through: int | None) -> Part:
        return read_part(tmp_path / "web01.log", lines, through, max_bytes=1 << 20)

    assert part(100, 60) == part(100, None) == Part(b"".join(pieces))
    assert part(100, 30) == Part(b"".join(pieces[:3]))
    assert part(100, 29) == part(100, 10) == Part(b"".join(pieces[:2]))
    assert part(100, 9) == Part(pieces[0])
    # A part that starts inside a piece names its epoch, so it merges in its place.
    assert part(3, 30) == Part(b"three\r\n" * 3, 30)
    assert part(2, None) == Part(b"five\r\n" * 2, 50)
    assert merge_logs({"a": part(2, None), "b": note("b", 40) + b"four\r\n"}) == \
        note("b", 40) + b"four\r\n" + b"five\r\n" * 2
    with pytest.raises(TooDeep):
        read_part(tmp_path / "web01.log", 3, 10, max_bytes=1 << 20, max_scan=50)


async def test_the_streamed_download_is_the_merge_of_the_whole_logs() -> None:
    """The download merges members' streams a line at a time; it must give the same
    bytes as merging the whole logs, however the bytes arrive."""
    logs = {
        "a": b"before the cluster\r\n" + note("a", 10) + b"one\r\n" * 3 + note("a", 30)
        + b"three, then a fence\r\n" + note("a", 30) + b"three again\r\n" + note("a", 50),
        "b": note("b", 20) + b"two, cut mid-li",
        "c": b"c before the cluster, no newline" + note("c", 40) + b"four\r\n" + b"x" * 70000,
    }

    logs["d"] = b"".join(b"d" * n + b"\r\n" + note("d", 60 + n) for n in range(0, 3000, 97))

    async def chunks(data: bytes, seed: int) -> AsyncIterator[bytes]:
        sizes = random.Random(seed)
        at = 0
        while at < len(data):
            size = sizes.choice((1, 7, 1021, 1024, 1025, 4096, 1 << 16))
            yield data[at:at + size]
            at += size

    for seed in range(8):  # notes land on every side of the chunk boundaries
        broken: list[str] = []
        out = b"".join([piece async for piece in merge_streams(
            {m: chunks(d, seed) for m, d in logs.items()}, broken)])
        assert out == merge_logs(logs), seed
        assert broken == []


def test_a_follow_stream_starts_at_the_asked_epoch_or_names_the_epoch_of_its_tail(
        tmp_path: Path) -> None:
    """What a member's follow stream begins with: for a new owner, its piece of the
    epoch the follower found in etcd; for the first look, the last lines and the epoch
    they start in. Then the follow goes on from there, nothing lost in between."""
    path = tmp_path / "web01.log"
    path.write_bytes(note("b", 20) + b"two\r\n" * 5 + note("b", 40) + b"four\r\n" * 3)
    with LogFollower(path, from_end=True) as follower:
        assert start_bytes(follower, 2, None) == Part(b"four\r\n" * 2, 40)
        assert start_bytes(follower, 4, None) == Part(note("b", 40) + b"four\r\n" * 3)
        assert start_bytes(follower, 0, 40) == Part(note("b", 40) + b"four\r\n" * 3)
        assert start_bytes(follower, 0, 30) == start_bytes(follower, 0, 40)
        assert start_bytes(follower, 0, 50) == Part(b"")  # its note is not written yet
        with path.open("ab") as f:
            f.write(note("b", 50) + b"five\r\n")
        assert follower.poll() == note("b", 50) + b"five\r\n"


def _timed_note(member: str, epoch: int, clock: str, what: str = "owns") -> bytes:
    verb = "owns the console" if what == "owns" else "hands the console over"
    return f"[-- solgate 2026-12-06T05:00:{clock}Z: cluster: {member} {verb} " \
           f"(epoch {epoch}) --]\r\n".encode()


def test_a_screen_rests_on_every_members_window_in_epoch_order(tmp_path: Path) -> None:
    """The screen after a move is replayed from the old owner's bytes and the new one's,
    in epoch order (not by member name), and the merged window's notes stay notes."""
    from datetime import UTC, datetime

    from solgate.console.logwindow import Window, merge_windows, read_window
    from solgate.console.replay import screen_at

    def at(clock: str) -> float:
        return datetime(2026, 12, 6, 5, 0, int(clock), tzinfo=UTC).timestamp()

    old, new = tmp_path / "zz", tmp_path / "aa"
    old.mkdir()
    new.mkdir()
    (old / "web01.log").write_bytes(_timed_note("zz", 4, "00") + b"first screen\r\n"
                                    + _timed_note("zz", 4, "10", "hands"))
    (new / "web01.log").write_bytes(_timed_note("aa", 9, "11") + b"second screen\r\n")
    os.utime(old / "web01.log", (at("10"), at("10")))
    os.utime(new / "web01.log", (at("12"), at("12")))
    windows = {m: Window.decode(read_window(d / "web01.log", at("12"), at("12"),
                                            110).encode())
               for m, d in (("zz", old), ("aa", new))}
    assert windows["zz"].data.startswith(b"first screen")  # from a line's start
    assert windows["zz"].epoch == 4  # it starts after its note: the note before says
    merged = merge_windows(windows, tmp_path)
    rows = [r.rstrip() for r in screen_at(merged.timeline, at("12")).screen.display]
    assert rows[:2] == ["first screen", "second screen"], rows
    assert merged.first == at("00")
    assert merged.last == at("12")
    # Only the old owner's part at a moment before the move.
    before = {m: read_window(d / "web01.log", at("05"), at("05"), 1000)
              for m, d in (("zz", old), ("aa", new))}
    rows = screen_at(merge_windows(before, tmp_path).timeline, at("05")).screen.display
    assert "second screen" not in "".join(rows)


def test_a_window_inside_a_long_piece_names_its_epoch_from_an_older_file(
        tmp_path: Path) -> None:
    """A member's piece may span rotated files: a window that starts deep inside it
    still sorts by the piece's epoch (found through the time index's note records)."""
    from solgate.console.logwindow import read_window

    now = [1_800_000_000.0]
    log = ConsoleLog(tmp_path / "web01.log", max_bytes=200, keep=20, note_hold=0,
                     clock=lambda: now[0])
    log.event("cluster: gw1 owns the console (epoch 7)")
    log.write(b"the host prints this line, say a 20 bytes\r\n" * 20)
    log.event("SOL down: not an ownership note")  # a note, but not whose piece it is
    log.write(b"last line\r\n")
    log.close()
    assert (tmp_path / "web01.log.3").exists()  # the piece spans files
    window = read_window(tmp_path / "web01.log", now[0], now[0], 60)
    assert window.epoch == 7
    assert window.data.endswith(b"last line\r\n")
    assert b"owns the console" not in window.data
