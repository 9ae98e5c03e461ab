"""Replaying a console log: the screen at a moment and a recording, from the log files.

Theory of operation
-------------------
The log files of a console, read as one stream through a `Timeline` (logindex.py),
are what the host printed plus solgate's own notes (and `log_timestamps` stamps). The
screen at a moment is rebuilt with pyte (`screen.py`) by replaying the bytes written
before that moment, starting `replay` bytes back (at a line start); `ScreenAt` says
where that replay started, in bytes and in time, so an operator knows how much of the
past the picture rests on. A recording (asciicast v2) paints the screen at its start,
then plays each stretch of output at the time the index says it was written, with
solgate's notes as markers.

solgate's notes (and stamps) are taken out of what is replayed: they were never on the
host's screen. Which bytes are notes is the time index's word (`Timeline.recorded_notes`:
the log recorded each note it wrote), never their look: a host that prints
`[-- solgate ...: ... --]` keeps those bytes in every replay. Only in a stretch no index
covers (a log written before the index existed) are notes recognised by their text,
the one thing there is to go by.

This module sits on the console floor, next to the writer that defines the format, so
the panic bundle (bundle.py) and the commands and web pages above
(`solgate.forensics`, `solgate.web.forensics`) share it.
"""

from __future__ import annotations

import codecs
import itertools
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

from solgate.console import screen as screen_module
from solgate.console.log import format_time
from solgate.console.logindex import Timeline
from solgate.console.logread import NOTE_LINE, NOTE_TEXT, STAMP
from solgate.console.notes import BREAK_MARK
from solgate.console.screen import Screen
from solgate.errors import ConfigError

__all__ = [
    "DEFAULT_COLS",
    "DEFAULT_REPLAY",
    "DEFAULT_ROWS",
    "ScreenAt",
    "asciicast",
    "elapsed_words",
    "host_read",
    "plain_text",
    "screen_at",
]

DEFAULT_REPLAY = 128 * 1024
DEFAULT_COLS, DEFAULT_ROWS = 80, 25


def elapsed_words(seconds: float) -> str:
    """A span of time as H:MM:SS, for what a replay rests on."""
    return str(timedelta(seconds=round(max(0.0, seconds))))


# --- the host's bytes ------------------------------------------------------------

MAX_NOTE = 4096
"""Bytes read to find a note's end (a note is one short line)."""


def _note_at(timeline: Timeline, offset: int) -> bytes:
    """What solgate wrote for the note that starts at `offset` (the index says one does):
    the break mark if it broke a console line, the line's stamp if lines are stamped,
    and the note's line; empty if the bytes there are not what the log writes."""
    blob = timeline.read(offset, offset + MAX_NOTE)
    pos = 0
    if blob.startswith(BREAK_MARK + b"\r\n"):
        pos = len(BREAK_MARK) + 2
    stamp = STAMP.match(blob, pos)
    if stamp is not None:
        pos = stamp.end()
    if not blob.startswith(b"[-- solgate ", pos):
        return b""  # not what the log writes: keep the bytes
    end = blob.find(b"\n", pos)
    return b"" if end < 0 else blob[: end + 1]


def _strip_by_look(data: bytes) -> bytes:
    """Notes recognised by their text: only for stretches no time index covers."""
    if b"[-- solgate" in data:
        data = data.replace(BREAK_MARK + b"\r\n", b"")
        data = NOTE_LINE.sub(b"", data)
    return data


def host_read(timeline: Timeline, start: int, end: int) -> bytes:
    """What the host printed in `[start, end)` of the stream: the log bytes without
    solgate's notes and line stamps.

    A note that had to break a console line (`BREAK_MARK`, then the notes on their own
    lines) is taken out with the break, so the line is whole again.
    """
    data = timeline.read(start, end)
    if not data:
        return data
    cuts: list[tuple[int, int]] = []  # (from, to) relative to start, in order
    for offset in timeline.recorded_notes(max(0, start - MAX_NOTE), end):
        length = len(_note_at(timeline, offset))
        a, b = max(offset, start), min(offset + length, end)
        if a < b:
            cuts.append((a - start, b - start))
    looks = [(a - start, b - start) for a, b in timeline.by_look(start, end)]
    if not cuts and not looks:
        return _unstamped(data)
    # Each piece between two notes starts a line of the log, so its stamp goes too
    # (a line a note broke goes on after the notes with a stamp of its own).
    pieces = []
    pos = 0
    for a, b, kind in sorted([(a, b, "note") for a, b in cuts]
                             + [(a, b, "look") for a, b in looks]):
        if a < pos:
            continue
        pieces.append(_unstamped(data[pos:a]))
        if kind == "look":
            pieces.append(_unstamped(_strip_by_look(data[a:b])))
        pos = b
    pieces.append(_unstamped(data[pos:]))
    return b"".join(pieces)


def _unstamped(data: bytes) -> bytes:
    """`log_timestamps` stamps taken off the lines they start."""
    return STAMP.sub(b"", data) if b"Z] " in data else data


def _line_start_after(timeline: Timeline, start: int, limit: int = 4096) -> int:
    """`start` moved to just after the next newline (if one is near), not mid-sequence."""
    if start <= 0:
        return 0
    data = timeline.read(start - 1, start - 1 + limit)
    nl = data.find(b"\n")
    return start if nl < 0 else start + nl


@dataclass
class ScreenAt:
    """A console's screen at a moment, and what the picture rests on."""

    screen: Screen
    at: float
    start: int  # stream offset the replay started from
    end: int  # bytes written by `at`
    start_time: float | None
    exact: bool  # every file had its time index
    from_oldest: bool = True  # offset 0 is the start of the oldest log file kept

    def header(self, name: str) -> str:
        parts = [f"{name} at {format_time(self.at, millis=True)}"]
        if self.start_time is None:
            parts.append("nothing was written by then")
        else:
            back = self.at - self.start_time
            parts.append(f"replayed {self.end - self.start} bytes written since "
                         f"{format_time(self.start_time)} ({elapsed_words(back)} earlier)"
                         + ("" if self.start or not self.from_oldest
                            else ", the start of the kept logs"))
        parts.append("times exact to the write (time index)" if self.exact else
                     "times to the nearest note (part of the log has no time index)")
        return "; ".join(parts)

def screen_at(timeline: Timeline, at: float, *, cols: int = DEFAULT_COLS,
              rows: int = DEFAULT_ROWS, replay: int = DEFAULT_REPLAY) -> ScreenAt:
    """Rebuild the screen as it was at `at` from the last `replay` bytes before it."""
    end = timeline.offset_at(at)
    start = _line_start_after(timeline, max(0, end - replay))
    screen = Screen(cols, rows)
    pos = start
    while pos < end:  # in pieces, so a large replay does not hold a second copy
        step = min(1 << 20, end - pos)
        screen.feed(host_read(timeline, pos, pos + step))
        pos += step
    start_time = timeline.time_at(start) if end > 0 else None
    return ScreenAt(screen, at, start, end, start_time, timeline.exact, timeline.from_oldest)

# --- recordings --------------------------------------------------------------------------

def asciicast(timeline: Timeline, t1: float, t2: float, out: IO[str], *,
              cols: int = DEFAULT_COLS, rows: int = DEFAULT_ROWS,
              replay: int = DEFAULT_REPLAY, title: str = "") -> int:
    """Write an asciicast v2 recording of `[t1, t2]`; return the number of events.

    The first event (at 0.0) paints the screen as it was at `t1`; then each stretch of
    output comes at the time the index says it was written, and each note becomes a
    marker ("m"). Players start from a clean terminal, so the recording stands alone.
    """
    if t2 < t1:
        raise ConfigError("--to is before --from; give the earlier time first")
    first = screen_at(timeline, t1, cols=cols, rows=rows, replay=replay)
    header: dict[str, Any] = {"version": 2, "width": cols, "height": rows,
                              "timestamp": int(t1), "duration": round(t2 - t1, 6),
                              "env": {"TERM": "xterm-256color"}}
    if title:
        header["title"] = title
    out.write(json.dumps(header) + "\n")
    decoder = _decoder()
    events = 0

    def emit(t: float, kind: str, text: str) -> None:
        nonlocal events
        if text:
            out.write(json.dumps([round(max(0.0, t - t1), 6), kind, text]) + "\n")
            events += 1

    emit(t1, "o", first.screen.render(scrollback=False).decode("utf-8"))
    end = timeline.offset_at(t2)
    inside = timeline.marks_between(first.end, end)
    bounds = sorted({first.end, end, *(m.offset for m in inside)})
    notes = {m.offset for m in inside if m.note}
    for a, b in itertools.pairwise(bounds):
        t = max(t1, timeline.time_at(a) or t1)
        if a in notes:
            note = NOTE_TEXT.search(_note_at(timeline, a))
            if note:
                emit(t, "m", note.group(0).decode("utf-8", "replace"))
        emit(t, "o", decoder.decode(host_read(timeline, a, b)))
    emit(t2, "o", decoder.decode(b"", final=True))
    return events

def _decoder() -> Any:
    return codecs.getincrementaldecoder("utf-8")(screen_module._CP437_ERRORS)  # noqa: SLF001

# --- log lines as text ----------------------------------------------------------

_ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")

def plain_text(line: bytes) -> str:
    """A log line as text: no escape sequences, no control characters but tabs."""
    text = _ANSI.sub(b"", line).decode("utf-8", "replace")
    return "".join(c for c in text if c >= " " or c == "\t").rstrip()
