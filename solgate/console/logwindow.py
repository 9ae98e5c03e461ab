"""A console's log between two times across members, as one log file with its time index.

`solgate screen`, `solgate export` and the web screen page replay a console's log
(`solgate.console.replay`, over a `Timeline`). In a cluster the moment asked for may be
in any member's log, and the screen at that moment may rest on bytes an earlier owner
logged. So each member cuts its own log between the two times (plus the bytes a replay
needs before the first) with the time index of those bytes (`read_window`, served at
`/api/cluster/peer/window/NAME`), and the asking side puts the members' pieces in epoch
order, as the history does (`solgate.console.epochs`), and writes them as one log file
with a sidecar index in a temporary directory (`merge_windows`). The replay code then
runs unchanged on a `Timeline` of that file: the notes stay notes (the sidecar records
them), the times stay the times each member recorded.

A window is bounded (`MAX_WINDOW_BYTES` from each member): a replay needs at most
`DEFAULT_REPLAY` bytes, and a recording the web serves at most 32 MiB.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from solgate.console.epochs import split_by_epoch
from solgate.console.logindex import (
    HEADER,
    MAGIC,
    NOTE_FLAG,
    RECORD,
    Timeline,
    first_time,
    index_path,
    read_index,
    scan_notes,
)
from solgate.console.logpart import note_epoch
from solgate.console.logread import iter_log_files

MAX_WINDOW_BYTES = 40 * 1024 * 1024  # one member's part of a window: a 32 MiB cast + replay
MAX_NOTE_LINE = 4096


class WindowTooBig(Exception):
    """More than the asked maximum of log between the two times."""


@dataclass(frozen=True, slots=True)
class Window:
    """One member's log of a console between two times, with what a replay needs."""

    data: bytes = b""
    epoch: int = 0  # the epoch of the piece `data` starts in (0: before any note)
    marks: list[tuple[float, int, bool]] = field(default_factory=list)  # time, offset, note
    from_oldest: bool = True  # `data` starts at the first byte of the oldest kept file
    exact: bool = True  # every byte's time comes from a time index
    first: float | None = None  # when this member's oldest kept log began
    last: float | None = None  # when it wrote its newest byte
    note_before: float | None = None  # its last note before the window's first time
    note_after: float | None = None  # its first note after the window's last time

    def encode(self) -> bytes:
        """One JSON line (everything but the bytes), then the bytes."""
        meta = {"epoch": self.epoch, "marks": self.marks, "from_oldest": self.from_oldest,
                "exact": self.exact, "first": self.first, "last": self.last,
                "note_before": self.note_before, "note_after": self.note_after}
        return json.dumps(meta).encode() + b"\n" + self.data

    @classmethod
    def decode(cls, body: bytes) -> Window:
        head, _, data = body.partition(b"\n")
        meta = json.loads(head)

        def number(key: str) -> float | None:
            value = meta.get(key)
            return float(value) if isinstance(value, int | float) else None

        return cls(data, int(meta.get("epoch") or 0),
                   [(float(t), int(o), bool(n)) for t, o, n in meta.get("marks") or ()],
                   bool(meta.get("from_oldest")), bool(meta.get("exact")),
                   number("first"), number("last"), number("note_before"),
                   number("note_after"))


def _note_offsets(file: Path) -> list[int]:
    """Where notes start in one log file: from its time index (cheap: 16 bytes a
    record), and by their look where no index covers it (older logs)."""
    marks = read_index(file)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        size = os.fstat(fd).st_size
        indexed_from = marks[0].offset if marks else size
        found = [m.offset for m in scan_notes(fd, 0, indexed_from)] if indexed_from else []
    finally:
        os.close(fd)
    return found + [m.offset for m in marks or () if m.note]


def _epoch_at(files: list[Path], path: Path, offset: int) -> int:
    """The epoch of the last ownership note before `offset` of log file `path`: its
    notes, newest first, back through the older files (a piece may span rotations)."""
    if path not in files:
        return 0
    for index in range(files.index(path), -1, -1):
        file = files[index]
        try:
            with open(file, "rb") as f:
                for at in sorted(_note_offsets(file), reverse=True):
                    if file == path and at >= offset:
                        continue
                    f.seek(at)
                    note = note_epoch(f.readline(MAX_NOTE_LINE))
                    if note is None and f.tell() - at < MAX_NOTE_LINE:
                        note = note_epoch(f.readline(MAX_NOTE_LINE))  # after a line break
                    if note is not None:
                        return note[1]
        except OSError:
            continue
    return 0


def read_window(path: Path, t1: float, t2: float, context: int, *,
                max_bytes: int = MAX_WINDOW_BYTES) -> Window:
    """What this member logged of a console (log file `path`) from `context` bytes
    before `t1` to `t2`, with its time marks; `WindowTooBig` past `max_bytes`."""
    files = iter_log_files(path)
    if not files:
        return Window()
    timeline = Timeline.around(files, t1, t2)
    if not timeline.files:
        return Window()
    end = timeline.offset_at(t2)
    start = max(0, timeline.offset_at(t1) - max(0, context))
    if start > 0:  # from a line's start: a note cut in half would read as the host's
        nl = timeline.read(start - 1, min(end, start - 1 + 4096)).find(b"\n")
        start = start + nl if nl >= 0 else start
    end = max(start, end)
    if end - start > max_bytes:
        raise WindowTooBig(f"more than {max_bytes // 2**20} MiB of log between those "
                           "times")
    notes = [m.time for m in timeline.notes()]
    before = [t for t in notes if t < t1 - 0.001]
    after = [t for t in notes if t > t2 + 0.001]
    marks: list[tuple[float, int, bool]] = []
    if end > start:
        marks.append((timeline.time_at(start) or t1, 0, False))
        for m in timeline.marks_between(start, end):
            if marks and m.offset == start and not m.note:
                continue
            marks.append((m.time, m.offset - start, m.note))
    where, local = timeline.locate(start)
    return Window(timeline.read(start, end), _epoch_at(files, where, local), marks,
                  timeline.from_oldest and start == 0, timeline.exact, first_time(files),
                  timeline.last_time, before[-1] if before else None,
                  after[0] if after else None)


@dataclass(frozen=True, slots=True)
class Merged:
    """The members' windows as one timeline (its files live in the caller's directory)."""

    timeline: Timeline
    first: float | None
    last: float | None
    note_before: float | None
    note_after: float | None


def merge_windows(windows: Mapping[str, Window], directory: Path) -> Merged:
    """Every member's window (member -> window) in epoch order, written as one log file
    with its time index under `directory`, and the timeline of it."""
    pieces: list[tuple[int, str, int, int, Window]] = []
    for member, window in windows.items():
        for epoch, _, pos, piece in split_by_epoch(member, window.data, window.epoch):
            pieces.append((epoch, member, pos, len(piece), window))
    pieces.sort(key=lambda p: (p[0], p[1], p[2]))
    out = bytearray()
    records: list[tuple[float, int]] = []
    for _, _, pos, length, window in pieces:
        base = len(out)
        out += window.data[pos:pos + length]
        offsets = [o for _, o, _ in window.marks]
        i = bisect.bisect_right(offsets, pos) - 1  # the time the piece's first byte had
        starts_with_mark = i >= 0 and offsets[i] == pos
        if i >= 0 and not starts_with_mark:
            records.append((window.marks[i][0], base))
        for t, offset, note in window.marks[max(0, i):]:
            if offset >= pos + length:
                break
            if offset >= pos:
                records.append((t, (offset - pos + base) | (NOTE_FLAG if note else 0)))
    log = directory / "merged.log"
    log.write_bytes(bytes(out))
    index_path(log).write_bytes(HEADER.pack(MAGIC, os.stat(log).st_ino)
                                + b"".join(RECORD.pack(t, o) for t, o in records))
    times = [t for t, _ in records]
    lasts = [w.last for w in windows.values() if w.last is not None]
    newest = max(times + lasts) if times or lasts else None
    if newest is not None:
        os.utime(log, (newest, newest))
    timeline = Timeline([log], from_oldest=all(w.from_oldest for w in windows.values()))
    timeline.exact = all(w.exact for w in windows.values())

    def known(values: list[float | None]) -> list[float]:
        return [v for v in values if v is not None]

    firsts = known([w.first for w in windows.values()])
    befores = known([w.note_before for w in windows.values()])
    afters = known([w.note_after for w in windows.values()])
    return Merged(timeline, min(firsts) if firsts else None, max(lasts) if lasts else None,
                  max(befores) if befores else None, min(afters) if afters else None)
