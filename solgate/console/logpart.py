"""One member's part of a console's history, read from its log files: the last lines,
or the lines up to the end of an epoch, and the epoch the part starts in.

The history page's older pages ask each member for its part up to an epoch; a part that
starts in the middle of a piece carries that piece's epoch, so merging by epoch puts it
in its place (`solgate.console.epochs.Part`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from solgate.console.epochs import OWNS, Part
from solgate.console.logread import iter_log_files, lines_backwards_at

MAX_SCAN_BYTES = 256 * 1024 * 1024  # how far back a member looks for an epoch's end
MAX_PART_BYTES = 16 * 1024 * 1024  # one member's part of a history, in one answer


class TooDeep(Exception):
    """The end of the asked epoch is further back than `MAX_SCAN_BYTES` of log."""


def _backwards(files: list[Path], index: int,
               end: int | None) -> Iterator[tuple[int, int, bytes]]:
    """`(file index, offset, line)` from offset `end` of file `index` (None: its end)
    back to the start of the oldest file."""
    for i in range(index, -1, -1):
        try:
            fd = os.open(files[i], os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            stop = end if i == index and end is not None else os.fstat(fd).st_size
            for start, line in lines_backwards_at(fd, stop, max_line=1 << 16):
                yield i, start, line
        finally:
            os.close(fd)


def note_epoch(line: bytes) -> tuple[int, int] | None:
    """(offset in the line, epoch) of an ownership note in `line`."""
    m = OWNS.search(line) if b"owns the console" in line else None
    return (m.start(), int(m.group("epoch"))) if m is not None else None


def read_part(path: Path, lines: int, through: int | None = None, *, max_bytes: int,
              max_scan: int = MAX_SCAN_BYTES) -> Part:
    """The last `lines` lines (at most `max_bytes`) of this member's log of a console,
    across rotated files, with the epoch of the piece they start in; with `through`,
    up to the end of its pieces of that epoch or older.

    Epochs grow with every change of owner and a member's pieces are in its file in the
    order it held the console, so the part ends where the oldest of the trailing pieces
    newer than `through` begins, and the epoch a tail starts in is the first note before
    it: both found by reading backwards, at most `max_scan` bytes."""
    files = iter_log_files(path)
    if not files:
        return Part(b"")
    scanned = 0
    cut: tuple[int, int | None] = (len(files) - 1, None)
    if through is not None:
        for index, start, line in _backwards(files, len(files) - 1, None):
            scanned += len(line)
            if scanned > max_scan:
                raise TooDeep(f"epoch {through} ends more than {max_scan // 2**20} MiB "
                              "back in the log")
            note = note_epoch(line)
            if note is not None:
                if note[1] <= through:
                    break
                cut = (index, start + note[0])
    out: list[bytes] = []
    size = 0
    walk = _backwards(files, *cut)
    for _, _, line in walk:
        if size + len(line) > max_bytes or len(out) >= lines:
            note = note_epoch(line)
            if note is not None:
                return Part(b"".join(reversed(out)), note[1])
            break
        size += len(line)
        out.append(line)
    else:
        return Part(b"".join(reversed(out)))  # the whole log: starts before any note
    for _, _, line in walk:  # the epoch the part starts in: the note before it
        scanned += len(line)
        note = note_epoch(line)
        if note is not None:
            return Part(b"".join(reversed(out)), note[1])
        if scanned > max_scan:
            break
    return Part(b"".join(reversed(out)))
