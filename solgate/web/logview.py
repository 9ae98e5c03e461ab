"""Reading a console log for people: pages of clean lines across rotated files, search, panics.

Theory of operation
-------------------
A console's log is `name.log` plus rotated `name.log.1` .. `name.log.<keep>` (renamed,
never copied: see `solgate.console.log`). A position in it is a *cursor*
`<inode>-<offset>`: the inode names the file whatever it is called now, so a cursor
handed to the browser still points at the same bytes after a rotation renamed
`name.log` to `name.log.1`. Only a file deleted beyond `keep` loses its cursors; the
reader then says so and starts again from the newest lines (should the filesystem hand
that inode to a newer log file, the link shows lines of that file instead: harmless).

A page is `limit` lines ending just before a cursor (`before`, walking back through
older files) or starting just after one (`after`, walking forward through newer
files); no cursor is the newest page. With a search term only matching lines count,
and a search reads at most `MAX_SCAN_BYTES` per page, so one request never reads a
whole disk; the page says when it stopped early and offers the cursor to go on.

Lines are shown as a terminal would have left them: escape sequences removed, a
carriage return overwrites from the start of the line, other control characters
dropped, text decoded as `solgate.console.panic.clean_line` does. Kernel panics are
marked two ways: solgate's own `[-- solgate ...: PANIC ... --]` event lines, and the
console line each panic record of `events.jsonl` names as its headline.

Solgate's notes and the host's bytes share one raw file, and a host can print
`[-- solgate <time>: PANIC ... --]` itself. So a line that looks like a note is shown
as one only when solgate really wrote it: every note the daemon writes for an event
(panics, SOL up and down, attach, break, power, ...) has a record in `events.jsonl`
with the same text and second (`verify_notes`). A look-alike without its record is
the host's output and is shown as such, kind "host-note", never as a note or a panic.
Two notes come from the log writer itself and have no record: `MARK`, and the note
saying how many bytes a failing disk lost; they are shown as notes by their exact
wording (a host can imitate those two, which claim nothing about the host).

Everything here is blocking file I/O: the web layer runs it in a thread.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from solgate.console.logread import (
    is_writer_note,
    iter_log_files,
    lines_backwards,
    lines_backwards_at,
    parse_note,
)
from solgate.console.panic import clean_line

MAX_PAGE_LINES = 5000
DEFAULT_PAGE_LINES = 500
MAX_SCAN_BYTES = 64 * 1024 * 1024
MAX_LINE_SHOWN = 4096  # characters; a line without newlines is cut for display
BLOCK = 1 << 16
MAX_PANIC_RECORDS = 200
MAX_EVENTS_SCAN_BYTES = 16 * 1024 * 1024

_CURSOR = re.compile(r"(\d{1,20})-(\d{1,20})")
MAX_NOTE_SCAN_BYTES = 64 * 1024 * 1024
NOTE_SLACK = 60.0  # seconds: records of several writers may be a little out of order


class BadCursor(ValueError):
    """A `before`/`after` value that is not `<inode>-<offset>`."""


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line as shown: `kind` is "out", "event", "panic" (a panic headline),
    "panic-event" (solgate's PANIC event line) or "host-note" (console output that looks
    like a solgate note; see `verify_notes`); `start`/`end` are cursors around it."""

    text: str
    kind: str
    start: str
    end: str


@dataclass(slots=True)
class LogPage:
    lines: list[LogLine] = field(default_factory=list)  # oldest first
    older: str | None = None  # cursor for the page before this one, None at the very start
    newer: str | None = None  # cursor for the page after this one, None at the very end
    scanned_bytes: int = 0
    stopped_early: bool = False  # a search hit MAX_SCAN_BYTES before filling the page
    cursor_lost: bool = False  # the cursor's file was deleted by rotation
    files: int = 0


@dataclass(frozen=True, slots=True)
class PanicRecord:
    time: str
    severity: str
    line: str


def parse_cursor(value: str) -> tuple[int, int]:
    match = _CURSOR.fullmatch(value)
    if match is None:
        raise BadCursor(f"{value!r} is not a log position; use a link from the log page")
    return int(match.group(1)), int(match.group(2))


def display_text(raw: bytes) -> str:
    """One raw log line as a terminal would show it (see the module docstring)."""
    raw = raw.rstrip(b"\n").rstrip(b"\r")
    if b"\r" in raw:
        shown: list[str] = []
        for segment in raw.split(b"\r"):
            piece = clean_line(segment)
            shown[: len(piece)] = piece
        return "".join(shown)[:MAX_LINE_SHOWN].rstrip()
    return clean_line(raw)[:MAX_LINE_SHOWN]


def classify(text: str, panic_lines: frozenset[str]) -> str:
    """The kind of a line by its text alone; `verify_notes` then checks the notes."""
    event = parse_note(text)
    if event is not None:
        return "panic-event" if event[1].startswith("PANIC") else "event"
    if panic_lines and any(line in text for line in panic_lines):
        return "panic"
    return "out"


# --- raw lines with their positions ------------------------------------------------------


def _forwards(fd: int, start: int) -> Iterator[tuple[int, bytes]]:
    """(start offset, line) from `start` to the end of the file as it is now."""
    pos, buf = start, b""
    while True:
        chunk = os.pread(fd, BLOCK, pos + len(buf))
        if not chunk:
            break
        buf += chunk
        cut = buf.find(b"\n")
        while cut >= 0:
            yield pos, buf[: cut + 1]
            pos += cut + 1
            buf = buf[cut + 1:]
            cut = buf.find(b"\n")
        if len(buf) > MAX_LINE_SHOWN * 4:
            yield pos, buf
            pos += len(buf)
            buf = b""
    if buf:
        yield pos, buf


class _Files:
    """The log's files, oldest first, opened once so renames during the read do no harm."""

    def __init__(self, path: Path) -> None:
        self.fds: list[tuple[int, int, int]] = []  # (fd, inode, size)
        for file in iter_log_files(path):
            try:
                fd = os.open(file, os.O_RDONLY)
            except OSError:
                continue
            st = os.fstat(fd)
            self.fds.append((fd, st.st_ino, st.st_size))

    def close(self) -> None:
        for fd, _, _ in self.fds:
            os.close(fd)

    def find(self, inode: int) -> int | None:
        for index, (_, ino, _) in enumerate(self.fds):
            if ino == inode:
                return index
        return None


def read_page(path: Path, *, before: str | None = None, after: str | None = None,
              query: str = "", limit: int = DEFAULT_PAGE_LINES,
              panic_lines: frozenset[str] = frozenset()) -> LogPage:
    """One page of the log at `path` (see the module docstring); raises BadCursor."""
    limit = max(1, min(MAX_PAGE_LINES, limit))
    needle = query.casefold()
    files = _Files(path)
    page = LogPage(files=len(files.fds))
    try:
        if not files.fds:
            return page
        forward = after is not None and before is None
        cursor = after if forward else before
        index, offset = len(files.fds) - 1, files.fds[-1][2]
        if cursor is not None:
            inode, offset = parse_cursor(cursor)
            found = files.find(inode)
            if found is None:
                page.cursor_lost = True
                forward = False
                index, offset = len(files.fds) - 1, files.fds[-1][2]
            else:
                index, offset = found, min(offset, files.fds[found][2])
        if forward:
            _fill_forwards(files, index, offset, needle, limit, panic_lines, page)
        else:
            _fill_backwards(files, index, offset, needle, limit, panic_lines, page)
    finally:
        files.close()
    return page


def _line(ino: int, start: int, raw: bytes, panic_lines: frozenset[str]) -> LogLine:
    text = display_text(raw)
    return LogLine(text, classify(text, panic_lines), f"{ino}-{start}", f"{ino}-{start + len(raw)}")


def _walk_back(files: _Files, index: int, offset: int) -> Iterator[tuple[int, int, bytes]]:
    for i in range(index, -1, -1):
        fd, ino, size = files.fds[i]
        end = offset if i == index else size
        # One endless line is shown by its end, never read whole.
        for start, raw in lines_backwards_at(fd, end, block=BLOCK, max_line=MAX_LINE_SHOWN * 4):
            yield ino, start, raw


def _walk_forward(files: _Files, index: int, offset: int) -> Iterator[tuple[int, int, bytes]]:
    for i in range(index, len(files.fds)):
        fd, ino, _size = files.fds[i]
        for start, raw in _forwards(fd, offset if i == index else 0):
            yield ino, start, raw


def _collect(walk: Iterator[tuple[int, int, bytes]], needle: str, limit: int,
             panic_lines: frozenset[str], page: LogPage) -> tuple[list[LogLine], LogLine | None]:
    """Lines in walking order, and the last line read if the walk stopped before its end."""
    out: list[LogLine] = []
    for ino, start, raw in walk:
        page.scanned_bytes += len(raw)
        line = _line(ino, start, raw, panic_lines)
        if not needle or needle in line.text.casefold():
            out.append(line)
        if len(out) >= limit:
            return out, line
        if needle and page.scanned_bytes >= MAX_SCAN_BYTES:
            page.stopped_early = True
            return out, line
    return out, None


def _fill_backwards(files: _Files, index: int, offset: int, needle: str, limit: int,
                    panic_lines: frozenset[str], page: LogPage) -> None:
    out, last = _collect(_walk_back(files, index, offset), needle, limit, panic_lines, page)
    out.reverse()
    page.lines = out
    if last is not None and last.start != f"{files.fds[0][1]}-0":
        page.older = last.start
    if index != len(files.fds) - 1 or offset < files.fds[-1][2]:
        page.newer = f"{files.fds[index][1]}-{offset}"


def _fill_forwards(files: _Files, index: int, offset: int, needle: str, limit: int,
                   panic_lines: frozenset[str], page: LogPage) -> None:
    out, last = _collect(_walk_forward(files, index, offset), needle, limit, panic_lines, page)
    page.lines = out
    if last is not None and last.end != f"{files.fds[-1][1]}-{files.fds[-1][2]}":
        page.newer = last.end
    if index > 0 or offset > 0:
        page.older = f"{files.fds[index][1]}-{offset}"


def _same_text(text: str) -> str:
    """Note text as compared: cleaned like a displayed line, whitespace runs as one space."""
    return " ".join(clean_line(text.encode("utf-8", "replace")).split())


def _note_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def verify_notes(page: LogPage, events_path: Path, console: str) -> None:
    """Re-mark note look-alikes solgate did not write as "host-note" (module docstring)."""
    claims: list[tuple[int, float | None, str]] = []
    for index, line in enumerate(page.lines):
        if line.kind not in ("event", "panic-event"):
            continue
        note = parse_note(line.text)
        if note is None:  # pragma: no cover - classify() matched the same text
            continue
        if is_writer_note(note[1]):  # the writer's own notes have no events.jsonl record
            continue
        claims.append((index, _note_time(note[0]), _same_text(note[1])))
    if not claims:
        return
    times = [t for _, t, _ in claims if t is not None]
    real = _recorded_notes(events_path, console, min(times)) if times else set()
    for index, when, text in claims:
        if when is None or not any((int(when) + d, text) in real for d in (-1, 0, 1)):
            line = page.lines[index]
            page.lines[index] = LogLine(line.text, "host-note", line.start, line.end)


def _recorded_notes(events_path: Path, console: str, since: float) -> set[tuple[int, str]]:
    """(second, text) of every note the console's events.jsonl records imply since `since`."""
    out: set[tuple[int, str]] = set()
    scanned = 0
    try:
        for raw in lines_backwards(events_path):
            scanned += len(raw)
            if scanned > MAX_NOTE_SCAN_BYTES:
                break
            try:
                record: Any = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(record, dict):
                continue
            when = _note_time(str(record.get("time", "")))
            if when is None:
                continue
            if when < since - NOTE_SLACK:
                break
            if record.get("console") != console or not isinstance(record.get("message"), str):
                continue
            message = record["message"]
            if record.get("kind") == "panic":
                message = f"PANIC ({record.get('severity')}): {message}"
            out.add((int(when), _same_text(message)))
    except OSError:
        return out
    return out


def read_page_with_panics(path: Path, events_path: Path, console: str, *,
                          before: str | None = None, after: str | None = None,
                          query: str = "", limit: int = DEFAULT_PAGE_LINES,
                          ) -> tuple[list[PanicRecord], LogPage]:
    """The console's panic records and one page of its log, marked with them (one job)."""
    panics = panic_records(events_path, console)
    page = read_page(path, before=before, after=after, query=query, limit=limit,
                     panic_lines=frozenset(p.line for p in panics if p.line))
    verify_notes(page, events_path, console)
    return panics, page


# --- panics from events.jsonl ------------------------------------------------------------


def panic_records(events_path: Path, console: str, *,
                  limit: int = MAX_PANIC_RECORDS) -> list[PanicRecord]:
    """The console's panic records, newest first, reading at most MAX_EVENTS_SCAN_BYTES."""
    out: list[PanicRecord] = []
    scanned = 0
    try:
        for raw in lines_backwards(events_path):
            scanned += len(raw)
            if scanned > MAX_EVENTS_SCAN_BYTES:
                break
            if b'"panic"' not in raw:
                continue
            try:
                record: Any = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                continue
            if (not isinstance(record, dict) or record.get("kind") != "panic"
                    or record.get("console") != console):
                continue
            out.append(PanicRecord(str(record.get("time", "")),
                                   str(record.get("severity", "")),
                                   str(record.get("message") or record.get("line") or "")))
            if len(out) >= limit:
                break
    except OSError:
        return out
    return out
