"""The durable record of one console: every byte the host sent, raw, in order, on disk.

Theory of operation
-------------------
`<data_dir>/logs/<console>.log` is a plain append-only file, so `tail -F`, `grep`,
`less -R` and logrotate work on it. `ConsoleLog` writes each chunk of console output
with one `os.write` on an `O_APPEND` descriptor: nothing waits in a Python buffer, so
a crash of solgate loses nothing the host printed before it (a panic is exactly when
that matters). `fsync` happens on rotation and close, not per chunk: the page cache
survives a solgate crash, and per-chunk fsync for thousands of consoles would not.

Event lines (`[-- solgate 2026-11-22T03:14:07Z: SOL up --]`, conserver style) always
sit on a line of their own, and never cut a line of the console's output in two: an
event that comes while the console is mid-line waits for the line's end, at most
`NOTE_HOLD` seconds, then ends the line with a visible `BREAK_MARK` (`notes.py` decides;
the time in the line is the event's, not the writing's). Only the loss note of a failing
disk bypasses this: it marks the gap exactly where it is. The owner passes `schedule`
(the loop's `call_later`) so a held note is written on time even if no byte follows.
Periodic `MARK` lines show a quiet console was still being watched.

With `timestamps=True` a stamp `[2026-11-22T03:14:07.123Z] ` is written before the
first byte that follows a newline, at the time that byte arrives (never at the
newline itself, so a stamp is never left dangling before content that has not come
yet, and never splits a line or an escape sequence).

A sidecar `name.log.idx` records when each stretch of bytes was written, and where
each note is (see `logindex.py`): the log tells it where it put its notes, so text a
host prints that looks like a note is never taken for one. It is rotated and removed
with its log.

Rotation is by rename (`name.log` -> `name.log.1` -> ... -> `name.log.<keep>`),
never copy-and-truncate, which loses what arrives between the copy and the truncate.
Once the file passes `max_bytes`, rotation waits for the next newline if one comes
within `LINE_SLACK` bytes, otherwise it rotates anyway so one endless line cannot
grow a file without bound. `reopen()` serves an external logrotate (SIGHUP), and
`tick()` notices by itself when the file was renamed or deleted under us.

A failing disk (ENOSPC, EIO, a vanished directory) never raises out of `write`,
`event` or `tick`: the bytes wait in a bounded pending buffer (oldest dropped first,
counted), `error` says what is wrong, and the next write or tick retries. When the
disk recovers, the pending bytes are written in order, preceded by an event line
saying how many bytes were lost, placed exactly where the gap is.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from solgate.console.logindex import IndexWriter, rotate_index_files
from solgate.console.logread import iter_log_files
from solgate.console.notes import BREAK, BREAK_MARK, NOTE_HOLD, Item, NotePlacer

__all__ = [
    "LINE_SLACK",
    "AppendFile",
    "MAX_PENDING",
    "ConsoleLog",
    "format_time",
]

_LOG = logging.getLogger(__name__)

MiB = 2**20
LINE_SLACK = 4096
"""How far past `max_bytes` a file may grow while rotation waits for a newline."""
MAX_PENDING = 4 * MiB
"""Bytes kept in memory while the disk refuses writes; older bytes are dropped beyond it."""
RETRY_INTERVAL = 1.0
"""Seconds between retries of a failing disk from `write`/`event` (`tick` always retries)."""
ROTATE_RETRY_INTERVAL = 30.0
"""Seconds before an automatic rotation that failed (rename refused) is tried again."""
FILE_MODE = 0o640

_NL = 0x0A


@functools.lru_cache(maxsize=4)
def _iso_second(secs: int) -> str:
    """One strftime per second: thousands of notes a second share it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))


def format_time(t: float, *, millis: bool = False) -> str:
    """UTC ISO 8601 with a `Z`, the one time format of every solgate file."""
    secs = math.floor(t)
    base = _iso_second(secs)
    if not millis:
        return base + "Z"
    ms = min(int((t - secs) * 1000), 999)
    return f"{base}.{ms:03d}Z"


class AppendFile:
    """One `O_APPEND` descriptor that remembers disk failures instead of raising them.

    Shared by `ConsoleLog` and `EventLog`, so both say the same things about a failing
    disk: `error` is what is wrong now, `write_errors` counts failures, and `retry_at`
    is when the owner should try again (a failing disk is not hammered on every write).
    A failure is logged once per distinct error, its recovery once.
    """

    __slots__ = ("path", "fd", "error", "write_errors", "retry_at",
                 "_clock", "_label", "_hint", "_logger")

    def __init__(self, path: Path, *, clock: Callable[[], float], label: str, hint: str,
                 logger: logging.Logger = _LOG) -> None:
        self.path = path
        self.fd: int | None = None
        self.error: str | None = None
        self.write_errors = 0
        self.retry_at = 0.0
        self._clock = clock
        self._label = label  # "console log", "events file": how the warnings name it
        self._hint = hint  # what happens to the data meanwhile
        self._logger = logger

    def fail(self, exc: OSError, what: str) -> None:
        self.write_errors += 1
        message = exc.strerror or str(exc)
        if message != self.error:
            self._logger.warning("%s %s: %s failed: %s; %s", self._label, self.path, what,
                                 message, self._hint)
        self.error = message
        self.retry_at = self._clock() + RETRY_INTERVAL

    def recovered(self) -> None:
        """The owner's pending data reached the disk: the error is over."""
        if self.error is not None:
            self._logger.info("%s %s: writing again after: %s", self._label, self.path,
                              self.error)
        self.error = None

    def open(self) -> int | None:
        """Open (creating directory and file) for appending; None if the disk refused."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            try:
                self.fd = os.open(self.path, flags, FILE_MODE)
            except FileNotFoundError:  # the directory first (it is there nearly always)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.fd = os.open(self.path, flags, FILE_MODE)
        except OSError as exc:
            self.fail(exc, "open")
        return self.fd

    def last_byte_is_newline(self) -> bool:
        """Whether the file on disk ends a line (an empty or unreadable one counts as yes)."""
        try:
            with open(self.path, "rb") as f:
                if f.seek(0, os.SEEK_END) == 0:
                    return True
                f.seek(-1, os.SEEK_END)
                return f.read(1) == b"\n"
        except OSError:
            return True

    def write(self, data: bytes) -> int:
        """Write as much of `data` as the disk takes; return how many bytes landed."""
        fd = self.fd
        if fd is None:
            return 0
        done = 0
        try:
            done = os.write(fd, data)  # the common case: all of it at once
            if done < len(data):
                with memoryview(data) as view:
                    while done < len(data):
                        n = os.write(fd, view[done:])
                        if n <= 0:
                            raise OSError(errno.EIO, "write returned no progress")
                        done += n
        except OSError as exc:
            self.fail(exc, "write")
        return done

    def close(self, *, sync: bool) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        if sync:
            try:
                os.fsync(fd)
            except OSError as exc:
                self.fail(exc, "fsync")
        try:
            os.close(fd)
        except OSError as exc:
            self.fail(exc, "close")


def _clean_event_text(text: str) -> bytes:
    """An event must stay one line: control characters become spaces."""
    if text.isprintable():  # the usual case: no control characters at all
        return text.encode("utf-8", "replace")
    cleaned = "".join(" " if (ord(c) < 0x20 or ord(c) == 0x7F) else c for c in text)
    return cleaned.encode("utf-8", "replace")


class ConsoleLog:
    """Append-only raw log of one console, with rotation, marks, stamps and event lines.

    Writes are synchronous and cheap (one `os.write` per call), meant to be called from
    the asyncio loop before output is fanned out to viewers. The owner calls `tick()`
    about once a second. Opening failures do not raise either: check `error`.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 50 * MiB,
        keep: int = 5,
        timestamps: bool = False,
        mark_interval: float | None = None,
        clock: Callable[[], float] = time.time,
        max_pending: int = MAX_PENDING,
        note_hold: float = NOTE_HOLD,
        schedule: Callable[[float, Callable[[], None]], object] | None = None,
        index: bool = True,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        if keep < 0:
            raise ValueError(f"keep must be 0 or more, not {keep}")
        if mark_interval is not None and mark_interval <= 0:
            raise ValueError(f"mark_interval must be positive or None, not {mark_interval}")
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._keep = keep
        self._timestamps = timestamps
        self._mark_interval = mark_interval
        self._clock = clock
        self._max_pending = max(1, max_pending)

        self._file = AppendFile(
            self._path, clock=clock, label="console log",
            hint=f"keeping up to {self._max_pending} bytes in memory and retrying",
        )
        self._size = 0
        self._closed = False
        # The stream as generated (what stamps and event lines are placed against) ...
        self._at_line_start = True
        # ... and what actually reached the current file (where a loss note must start).
        self._disk_at_line_start = True

        self._pending: deque[bytes] = deque()
        self._pending_len = 0
        self._pending_notes: list[int] = []  # where notes start in the pending bytes
        self._lost = 0  # dropped since the last loss note
        self._lost_total = 0
        self._gap_at_line_start = True  # did the dropped bytes end with a newline?

        self._bytes_written = 0
        self._rotate_retry_at = 0.0
        self._last_activity = clock()
        # `schedule(delay, callback)` (the loop's call_later) wakes `handle_timeout` for a
        # held note; without it only `tick` and the next write release one.
        self._schedule = schedule
        self._scheduled_for: float | None = None
        # When each byte was written, in a sidecar file (see logindex.py).
        self._index = IndexWriter(self._path, clock=clock) if index else None

        if self._open():
            self._at_line_start = self._disk_at_line_start
        # A line the file ended with before this process started is not waited for: the
        # first event line after a restart goes in at once (on a fresh line).
        self._notes = NotePlacer(hold=note_hold)

    # -- public state -------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def bytes_written(self) -> int:
        """Bytes that reached the disk through this object, across rotations."""
        return self._bytes_written

    @property
    def error(self) -> str | None:
        """What is wrong with the disk right now (e.g. "No space left on device"), or None."""
        return self._file.error

    @property
    def write_errors(self) -> int:
        """How many disk operations failed since this log was opened."""
        return self._file.write_errors

    @property
    def _fd(self) -> int | None:
        return self._file.fd

    @property
    def bytes_lost(self) -> int:
        """Bytes dropped because the pending buffer overflowed while the disk failed."""
        return self._lost_total

    @property
    def pending_bytes(self) -> int:
        """Bytes waiting in memory for the disk to take them."""
        return self._pending_len

    @property
    def size(self) -> int:
        """Size of the current file as far as this object knows."""
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def notes_held(self) -> bool:
        """True while an event line waits for the console's current line to end."""
        return self._notes.holding

    def next_deadline(self) -> float | None:
        """When (on this log's clock) a held event line breaks the open line; None if none."""
        return self._notes.next_deadline()

    # -- writing --------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Append console output. Never raises on disk errors (see `error`)."""
        if self._closed:
            self._check_open()
        if not data:
            return
        if type(data) is not bytes:
            data = bytes(data)
        now = self._clock()  # one clock read per chunk, for the index too
        self._last_activity = now
        notes = self._notes
        if notes.holding:
            self._put(notes.output(data, now), now)
            return
        notes.at_line_start = data[-1] == _NL
        self._write_console(data, now)

    def _write_console(self, data: bytes, now: float) -> None:
        if (not self._pending and not self._timestamps and self._file.fd is not None
                and self._size + len(data) < self._max_bytes):
            # The common case, what the loop below comes to with a healthy disk and no
            # rotation due: one os.write.
            done = self._write_out(data, None, now)
            if done < len(data):
                self._enqueue(data[done:])
            self._at_line_start = data[-1] == _NL
            return
        self._maybe_retry(now)
        just_rotated = False
        while data:
            cut, rotate_after = self._plan_cut(data, now)
            if cut == 0:
                if just_rotated:  # the fresh file is already full: write rather than spin
                    cut, rotate_after = len(data), False
                else:
                    self._auto_rotate(now)
                    just_rotated = True
                    continue
            piece, data = data[:cut], data[cut:]
            if self._timestamps:
                self._emit(self._stamped(piece, now))
            else:
                self._emit(piece)
                self._at_line_start = piece[-1] == _NL
            just_rotated = False
            if rotate_after:
                self._auto_rotate(now)
                just_rotated = True

    def event(self, text: str) -> None:
        """Write `[-- solgate <time>: text --]` on a line of its own, at a line boundary."""
        self._check_open()
        now = self._clock()
        self._maybe_retry(now)
        self._note(text, now)

    def handle_timeout(self) -> None:
        """A held event line's time is up (the `schedule` callback): break the open line."""
        if self._closed:
            return
        now = self._clock()
        self._scheduled_for = None  # this call is that timer: a clock skew re-arms it
        self._put(self._notes.handle_timeout(now), now)
        self._arm(now)

    def tick(self) -> None:
        """Housekeeping about once a second: retry the disk, follow renames, write marks."""
        if self._closed:
            return
        now = self._clock()
        if self._pending or self._fd is None:
            self._retry(now)
        elif self._replaced_on_disk():
            self.reopen()
        self._put(self._notes.handle_timeout(now), now)
        if self._index is not None:
            self._index.tick(now)
        if self._mark_interval is not None and now - self._last_activity >= self._mark_interval:
            self._note("MARK", now)
        if self._size >= self._max_bytes and self._at_line_start and self._rotation_allowed(now):
            self._auto_rotate(now)

    def rotate(self) -> None:
        """Rename name.log -> name.log.1 -> ... (keeping `keep`) and start a new file."""
        self._check_open()
        now = self._clock()
        self._put(self._notes.flush(), now)
        self._rotate(now)

    def reopen(self) -> None:
        """Close and reopen the path, e.g. after an external logrotate renamed the file."""
        self._check_open()
        now = self._clock()
        self._put(self._notes.flush(), now)
        self._close_fd(sync=True)
        self._open()
        if self._pending:
            self._retry(now)

    def close(self) -> None:
        """Flush what is pending, fsync and close. Later writes raise ValueError."""
        if self._closed:
            return
        now = self._clock()
        self._put(self._notes.flush(), now)
        if self._pending or self._fd is None:
            self._retry(now)
        if self._pending_len:
            _LOG.warning(
                "console log %s closed with %d bytes the disk never took (%s)",
                self._path,
                self._pending_len,
                self._file.error,
            )
            self._lost_total += self._pending_len
            self._pending.clear()
            self._pending_len = 0
            self._pending_notes = []
        self._close_fd(sync=True)
        if self._index is not None:
            self._index.close()
        self._closed = True

    # -- internals: planning ----------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"console log {self._path} is closed")

    def _rotation_allowed(self, now: float) -> bool:
        return self._fd is not None and not self._pending and now >= self._rotate_retry_at

    def _plan_cut(self, data: bytes, now: float) -> tuple[int, bool]:
        """How many bytes of `data` go to the current file, and whether to rotate after.

        A cut of 0 means "rotate before writing anything".
        """
        if not self._rotation_allowed(now):
            return len(data), False
        if self._size >= self._max_bytes and self._at_line_start:
            return 0, True
        room = self._max_bytes - self._size
        if len(data) < room:
            return len(data), False
        hard = self._max_bytes + LINE_SLACK - self._size
        if hard <= 0:
            return 0, True
        nl = data.find(b"\n", max(room - 1, 0), hard)
        if nl >= 0:
            return nl + 1, True
        if len(data) >= hard:
            return hard, True
        return len(data), False

    def _stamp(self, now: float) -> bytes:
        return f"[{format_time(now, millis=True)}] ".encode()

    def _stamped(self, piece: bytes, now: float) -> bytes:
        """Insert a stamp before every byte that follows a newline (and updates the state)."""
        stamp = self._stamp(now)
        out = bytearray()
        pos = 0
        end = len(piece)
        while pos < end:
            if self._at_line_start:
                out += stamp
            nl = piece.find(b"\n", pos)
            if nl < 0:
                out += piece[pos:]
                self._at_line_start = False
                break
            out += piece[pos : nl + 1]
            self._at_line_start = True
            pos = nl + 1
        return bytes(out)

    def _event_bytes(self, text: str, now: float, *, newline_first: bool,
                     when: float | None = None) -> bytes:
        """The event line; `when` (the event's time, default `now`) goes in its text."""
        body = b"[-- solgate " + format_time(now if when is None else when).encode() + b": "
        body += _clean_event_text(text) + b" --]\r\n"
        if self._timestamps:
            body = self._stamp(now) + body
        return (b"\r\n" if newline_first else b"") + body

    def _note(self, text: str, now: float) -> None:
        """An event line through the placer: written now, or held for the line's end."""
        self._last_activity = now
        self._put(self._notes.note(text, now), now)
        self._arm(now)

    def _put(self, items: list[Item], now: float) -> None:
        """Write what the placer handed out, in order; the index learns where each note
        (with the break mark before it, if it broke a line) starts."""
        broke = False
        for item in items:
            if isinstance(item, bytes):
                self._write_console(item, now)
            elif item is BREAK:
                broke = True  # written with the note that follows, as one piece
                self._at_line_start = False
            else:
                line = self._event_bytes(item.text, now, when=item.when, newline_first=False)
                if broke:
                    self._emit(BREAK_MARK + b"\r\n" + line, note_at=0)
                elif not self._at_line_start:
                    self._emit(b"\r\n" + line, note_at=2)
                else:
                    self._emit(line, note_at=0)
                broke = False
                self._at_line_start = True
        if broke:  # the placer ends a break with its notes; never seen, kept for safety
            self._emit(BREAK_MARK)

    def _arm(self, now: float) -> None:
        """Ask the owner's loop to call `handle_timeout` when a held note is due."""
        deadline = self._notes.next_deadline()
        if deadline is None or self._schedule is None or deadline == self._scheduled_for:
            return
        self._scheduled_for = deadline
        self._schedule(max(0.0, deadline - now), self.handle_timeout)

    # -- internals: the disk ----------------------------------------------------

    def _open(self) -> bool:
        """Open for appending and learn the file's size and last byte; False on failure."""
        fd = self._file.open()
        if fd is None:
            return False
        try:
            st = os.fstat(fd)
            self._size = st.st_size
            if self._index is not None:
                self._index.attach(st.st_ino)
        except OSError:
            self._size = 0
        self._disk_at_line_start = self._size == 0 or self._file.last_byte_is_newline()
        return True

    def _close_fd(self, *, sync: bool) -> None:
        self._file.close(sync=sync)

    def _replaced_on_disk(self) -> bool:
        """True when the path no longer names our open file (renamed or deleted)."""
        if self._fd is None:
            return False
        try:
            ours = os.fstat(self._fd)
            theirs = os.stat(self._path)
        except OSError:
            return True
        return (ours.st_dev, ours.st_ino) != (theirs.st_dev, theirs.st_ino)

    def _write_out(self, data: bytes, notes: list[int] | None = None,
                   now: float | None = None) -> int:
        """Write as much of `data` as the disk takes; return how many bytes landed.

        `notes`: where in `data` solgate's notes start, for the index; `now`: the
        caller's clock read, if it has one (else the index reads the clock).
        """
        done = self._file.write(data)
        if done:
            if self._index is not None:
                self._index.wrote(self._size, [n for n in notes if n < done] if notes else (),
                                  now)
            self._size += done
            self._bytes_written += done
            self._disk_at_line_start = data[done - 1] == _NL
        return done

    def _emit(self, out: bytes, note_at: int | None = None) -> None:
        """Send generated bytes to the file, or to the pending buffer behind older bytes;
        `note_at`: a note of solgate's starts there."""
        notes = [] if note_at is None else [note_at]
        if self._pending or self._fd is None:
            self._enqueue(out, notes)
            return
        done = self._write_out(out, notes)
        if done < len(out):
            self._enqueue(out[done:], [n - done for n in notes if n >= done])

    def _enqueue(self, out: bytes, notes: list[int] | None = None) -> None:
        if notes:
            self._pending_notes += [self._pending_len + n for n in notes]
        self._pending.append(out)
        self._pending_len += len(out)
        before = self._pending_len
        while self._pending_len > self._max_pending:
            excess = self._pending_len - self._max_pending
            first = self._pending[0]
            if len(first) <= excess:
                self._pending.popleft()
                dropped = first
            else:
                self._pending[0] = first[excess:]
                dropped = first[:excess]
            self._pending_len -= len(dropped)
            self._lost += len(dropped)
            self._lost_total += len(dropped)
            self._gap_at_line_start = dropped[-1] == _NL
        gone = before - self._pending_len
        if gone and self._pending_notes:  # a note cut at its start is no longer one
            self._pending_notes = [n - gone for n in self._pending_notes if n >= gone]

    def _maybe_retry(self, now: float) -> None:
        if (self._pending or self._fd is None) and now >= self._file.retry_at:
            self._retry(now)

    def _retry(self, now: float) -> None:
        """Try the disk again: reopen if needed, then write pending bytes in order."""
        if self._fd is None and not self._open():
            return
        if self._pending:
            blob = b"".join(self._pending)
            notes = self._pending_notes
            lost = self._lost
            if lost:
                if not self._gap_at_line_start:
                    # Drop the rest of the torn line so what follows starts a line.
                    nl = blob.find(b"\n")
                    if 0 <= nl < len(blob) - 1:
                        lost += nl + 1
                        blob = blob[nl + 1 :]
                        notes = [n - nl - 1 for n in notes if n > nl]
                note = (
                    f"log write failed ({self._file.error or 'disk error'}); "
                    f"{lost} bytes of console output lost"
                )
                head = b"" if self._disk_at_line_start else b"\r\n"
                line = head + self._event_bytes(note, now, newline_first=False)
                notes = [len(head)] + [n + len(line) for n in notes]
                blob = line + blob
            if self._index is not None:
                self._index.resume()  # it failed with the disk; the notes in blob need it
            done = self._write_out(blob, notes)
            if done == 0:
                return
            self._lost_total += lost - self._lost
            self._lost = 0
            self._pending.clear()
            self._pending_len = 0
            self._pending_notes = []
            if done < len(blob):
                self._pending.append(blob[done:])
                self._pending_len = len(blob) - done
                self._pending_notes = [n - done for n in notes if n >= done]
                return
        self._file.recovered()

    # -- internals: rotation ----------------------------------------------------

    def _auto_rotate(self, now: float) -> None:
        if not self._rotate(now):
            self._rotate_retry_at = now + ROTATE_RETRY_INTERVAL

    def _rotated_name(self, n: int) -> Path:
        return self._path.with_name(f"{self._path.name}.{n}")

    def _rotate(self, now: float) -> bool:
        """Rotate by rename; on failure keep appending to the current file."""
        if self._pending or self._fd is None:
            self._retry(now)
        if self._size == 0 and self._fd is not None:
            return True
        self._close_fd(sync=True)
        ok = True
        try:
            for n in range(self._keep - 1, 0, -1):
                try:
                    os.replace(self._rotated_name(n), self._rotated_name(n + 1))
                except FileNotFoundError:
                    pass
            if self._keep > 0:
                os.replace(self._path, self._rotated_name(1))
            else:
                os.unlink(self._path)
        except FileNotFoundError:
            pass  # someone else moved it away already: a new file is what we want
        except OSError as exc:
            self._file.fail(exc, "rotate")
            ok = False
        if ok:
            self._remove_beyond_keep()
            rotate_index_files(self._path, self._keep)
            self._sync_directory()
        self._open()
        return ok

    def _remove_beyond_keep(self) -> None:
        """Delete name.log.<n> for n > keep, left over from a larger `keep` earlier."""
        for path in iter_log_files(self._path):
            suffix = path.name[len(self._path.name) + 1 :]
            if suffix.isdigit() and int(suffix) > self._keep:
                try:
                    path.unlink()
                except OSError as exc:
                    self._file.fail(exc, "remove old log")

    def _sync_directory(self) -> None:
        """Make the renames themselves durable."""
        try:
            dfd = os.open(self._path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)

