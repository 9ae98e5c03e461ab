"""Reading console logs back: the files of one log, lines from the end, the tail, and
the note lines `log.py` writes.

The writer (`log.py`, with `notes.py` placing the notes) defines the format; every
reader (the web log view, `solgate logs`, the replay, forensics, the cluster's history)
reads it through this module, so a change of the format has one reader to follow.

A note line is `[-- solgate <time>: <text> --]` on a line of its own, after the line's
stamp `[<time>] ` when the log is stamped; a note that broke a console line follows
`notes.BREAK_MARK`. `parse_note` reads one shown line; the byte patterns serve readers
that work on the raw stream.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "NOTE_LINE",
    "NOTE_TEXT",
    "STAMP",
    "iter_log_files",
    "is_writer_note",
    "lines_backwards",
    "lines_backwards_at",
    "parse_note",
    "read_tail",
]

_NOTE = re.compile(r"^(?:\[[0-9T:.Z-]+\] )?\[-- solgate ([0-9T:.Z-]+): (.*) --\]$")
# The log writer's own notes, which have no events.jsonl record.
_WRITER_NOTE = re.compile(r"MARK|log write failed \(.*\); \d+ bytes of console output lost")

NOTE_LINE = re.compile(rb"(?:\[\d{4}-\d\d-\d\dT[\d:.]+Z\] )?\[-- solgate [^\r\n]*? --\]\r\n")
"""A whole note line in the raw log, its stamp and line end included."""
STAMP = re.compile(rb"(?:(?<=\n)|^)\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] ")
"""The stamp `timestamps=True` writes at the start of a line."""
NOTE_TEXT = re.compile(rb"\[-- solgate [^\r\n]*? --\]")
"""The note itself, without stamp or line end."""


def parse_note(text: str) -> tuple[str, str] | None:
    """(time, text) of a shown log line that reads as a note (stamped or not), else None."""
    match = _NOTE.match(text)
    return None if match is None else (match.group(1), match.group(2))


def is_writer_note(text: str) -> bool:
    """Whether a note's text is one the log writer adds itself (a MARK, a loss note)."""
    return _WRITER_NOTE.fullmatch(text) is not None


def iter_log_files(path: Path) -> list[Path]:
    """The files of one console log, oldest first: name.log.<N> ... name.log.1, name.log."""
    path = Path(path)
    prefix = path.name + "."
    numbered: list[tuple[int, Path]] = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        names = []
    for name in names:
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            numbered.append((int(name[len(prefix) :]), path.parent / name))
    numbered.sort(reverse=True)
    files = [p for _, p in numbered]
    if path.exists():
        files.append(path)
    return files


def lines_backwards_at(
    fd: int, end: int, *, block: int = 1 << 16, max_line: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """(start offset, line) for the lines of an open file before offset `end`, last first.

    Each line keeps its `\\n` (the final one may lack it). Fixed-size blocks are read
    from the end, so a huge file costs only what the caller consumes. A line longer than
    `max_line` is handed out in pieces (its end first) instead of held whole in memory.
    """
    pos, buf = end, b""
    while pos > 0:
        step = min(block, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        # Every complete line sits after a newline inside buf (or at the file start).
        stop = len(buf)
        cut = buf.rfind(b"\n", 0, stop - 1)
        while cut >= 0:
            yield pos + cut + 1, buf[cut + 1 : stop]
            stop = cut + 1
            cut = buf.rfind(b"\n", 0, stop - 1)
        buf = buf[:stop]
        if max_line is not None and len(buf) > max_line and pos > 0:
            yield pos, buf
            buf = b""
    if buf:
        yield 0, buf


def lines_backwards(path: Path, *, block: int = 1 << 16) -> Iterator[bytes]:
    """Lines of a file from the last to the first, each with its `\\n` (the final one may
    lack it), reading fixed-size blocks from the end so a huge file costs little."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        for _, line in lines_backwards_at(f.fileno(), end, block=block):
            yield line


def read_tail(path: Path, n_lines: int, *, max_bytes: int | None = None) -> list[bytes]:
    """The last `n_lines` lines across the current and rotated files, newest last.

    Each line keeps its terminator, so `b"".join(...)` is the raw tail of the log.
    With `max_bytes`, the tail stops before the line that would pass that many bytes
    (a server answering a request must not hold a few endless lines in memory).
    """
    if n_lines <= 0:
        return []
    out: list[bytes] = []
    size = 0
    full = False
    for file in reversed(iter_log_files(path)):
        try:
            for line in lines_backwards(file):
                size += len(line)
                full = max_bytes is not None and size > max_bytes
                if full:
                    break
                out.append(line)
                full = len(out) >= n_lines
                if full:
                    break
        except OSError:
            continue
        if full:
            break
    out.reverse()
    return out
