"""When was each byte of a console log written: a small time index beside every log file.

Theory of operation
-------------------
`web01.log` gets a sidecar `web01.log.idx`, rotated with it (`web01.log.1.idx`, ...)
and removed with it. The sidecar is a 16-byte header (`SOLGIDX2` and the inode of the
log file it describes) followed by 16-byte records `(time, offset)`: at `time` (epoch
seconds, a float) the log file held `offset` bytes and the next bytes were about to be
written. The top bit of `offset` marks a record for a note that solgate wrote there:
the note's line (`[-- solgate ...: ... --]`, after its stamp if lines are stamped), or
the `BREAK_MARK` that ended the console line the note had to break, then the note.

`IndexWriter.wrote(offset, notes)` is called by `ConsoleLog` for every chunk that
reaches the disk, with the positions of the notes the log itself put in that chunk.
It appends a record when the chunk is the first in a new second, or the first after a
pause of `PAUSE` seconds (so the moment before an operator's command is exact to the
write, not just to the second), and one for each of those notes. The index never
looks at the bytes: a host that prints text shaped like a note is not a note, so
replays (`replay.py`) keep the host's bytes and take out only what solgate wrote. A
busy console therefore adds at most a few records a second (~100 KB a day at worst);
a quiet one adds none. The sidecar's descriptor is closed by `tick()` once the console
has been quiet for `IDLE_CLOSE` seconds, so 10,000 idle consoles do not hold 10,000
more open files. The per-chunk cost is one clock read.

The index is a help, never a requirement. A sidecar whose header names another inode
(the log was rotated by an external logrotate, or copied), or another version of this
format (`SOLGIDX1` found its notes by scanning the bytes), is ignored and started
afresh. A disk that refuses the sidecar makes the writer give up until the log is
reopened or the log's own disk trouble is over, without touching the log itself.
Readers (`Timeline`) fall back to the notes' own timestamps (second precision at the
notes, nothing in between) for the bytes of a file written before its sidecar began:
logs written before the index existed still answer, coarsely, and there the notes can
only be known by their look.
After a sidecar's first record, only its records say where notes are.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import logging
import operator
import os
import re
import struct
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

__all__ = [
    "INDEX_SUFFIX",
    "PAUSE",
    "IndexWriter",
    "create_log_files",
    "Mark",
    "Timeline",
    "index_path",
    "read_index",
    "rotate_index_files",
    "first_time",
    "select_files",
]

_LOG = logging.getLogger(__name__)

INDEX_SUFFIX = ".idx"
MAGIC = b"SOLGIDX2"
HEADER = struct.Struct("<8sQ")  # magic, st_ino of the log file
RECORD = struct.Struct("<dQ")  # epoch seconds, offset (| NOTE_FLAG)
NOTE_FLAG = 1 << 63
PAUSE = 0.25
"""A write after this many quiet seconds gets its own record, even within a second."""
IDLE_CLOSE = 5.0
"""Seconds without a record after which `tick()` closes the sidecar's descriptor."""

_NOTE_RE = re.compile(rb"\[-- solgate (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z): ")
FILE_MODE = 0o640


def index_path(log_file: Path) -> Path:
    """The sidecar of one log file: `web01.log.2` -> `web01.log.2.idx`."""
    log_file = Path(log_file)
    return log_file.with_name(log_file.name + INDEX_SUFFIX)


class IndexWriter:
    """Appends `(time, offset)` records for one console log; never raises on disk errors."""

    __slots__ = ("_path", "_clock", "_fd", "_ino", "_second", "_last", "_broken")

    def __init__(self, log_path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._path = index_path(log_path)
        self._clock = clock
        self._fd: int | None = None
        self._ino = 0
        self._second = -1
        self._last = 0.0
        self._broken = False

    def attach(self, ino: int) -> None:
        """The log (re)opened a file with this inode: index that one from now on."""
        self.close()
        self._ino = ino
        self._second = -1
        self._broken = False

    def wrote(self, offset: int, notes: Sequence[int] = (), now: float | None = None) -> None:
        """A chunk is about to land at `offset` of the log file (or just did); `notes` are
        the positions in it of the notes the log wrote (never found by looking). `now`:
        the log's clock read for this chunk, so the clock is read once per write."""
        if now is None:
            now = self._clock()
        out = b""
        second = int(now)
        if second != self._second or now - self._last >= PAUSE:
            self._second = second
            out = RECORD.pack(now, offset)
        self._last = now
        if notes:
            out += b"".join(RECORD.pack(now, (offset + n) | NOTE_FLAG) for n in notes)
        if out and not self._broken:
            self._append(out)

    def resume(self) -> None:
        """The log's disk came back: try the sidecar again (it gave up when it failed)."""
        self._broken = False

    def tick(self, now: float) -> None:
        """Give the descriptor back when the console has gone quiet."""
        if self._fd is not None and now - self._last >= IDLE_CLOSE:
            self.close()

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _append(self, out: bytes) -> None:
        fd = self._fd
        try:
            if fd is None:
                fd = self._fd = self._open()
            if os.write(fd, out) != len(out):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as exc:
            _LOG.warning("console log index %s: %s; the log keeps being written, times for "
                         "it come from its notes until it is reopened", self._path,
                         exc.strerror or exc)
            self._broken = True
            self.close()

    def _open(self) -> int:
        """Append to a sidecar that describes our inode, or start a new one."""
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                     FILE_MODE)
        try:
            head = os.pread(fd, HEADER.size, 0)
            size = os.fstat(fd).st_size
            if head == HEADER.pack(MAGIC, self._ino):
                torn = (size - HEADER.size) % RECORD.size
                if torn:  # a crash in the middle of a record: drop the partial one
                    os.ftruncate(fd, size - torn)
            else:
                os.ftruncate(fd, 0)
                os.write(fd, HEADER.pack(MAGIC, self._ino))
        except OSError:
            os.close(fd)
            raise
        return fd


def create_log_files(logs: Iterable[tuple[Path, bool]]) -> None:
    """Create each log file that does not exist yet, and its sidecar (`True`: indexed)
    with its header, so that opening them later is cheap. For a thread: a member taking
    over thousands of consoles creates twice as many files, and creating one costs a
    quarter of a millisecond of the kernel's time, which the event loop need not wait
    for. Errors are left for the log itself to meet and report when it opens the file."""
    for log_path, indexed in logs:
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                         FILE_MODE)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        finally:
            os.close(fd)
        if not indexed or st.st_size:
            continue
        try:
            ifd = os.open(index_path(log_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                          FILE_MODE)
        except OSError:
            continue
        try:
            if os.fstat(ifd).st_size == 0:
                os.write(ifd, HEADER.pack(MAGIC, st.st_ino))
        except OSError:
            pass
        finally:
            os.close(ifd)


def rotate_index_files(log_path: Path, keep: int) -> None:
    """Shift the sidecars the way `ConsoleLog` shifted its files (call after the logs)."""
    log_path = Path(log_path)

    def numbered(n: int) -> Path:
        return index_path(log_path.with_name(f"{log_path.name}.{n}"))

    for n in range(keep - 1, 0, -1):
        try:
            os.replace(numbered(n), numbered(n + 1))
        except OSError:
            pass  # a missing sidecar (an older log) is fine: readers fall back to notes
    try:
        if keep > 0:
            os.replace(index_path(log_path), numbered(1))
        else:
            os.unlink(index_path(log_path))
    except OSError:
        pass
    prefix = log_path.name + "."
    try:
        names = os.listdir(log_path.parent)
    except OSError:
        return
    for name in names:
        middle = name[len(prefix) : -len(INDEX_SUFFIX)]
        if (name.startswith(prefix) and name.endswith(INDEX_SUFFIX) and middle.isdigit()
                and int(middle) > keep):
            try:
                os.unlink(log_path.parent / name)
            except OSError:
                pass


# -- reading -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mark:
    """At `time`, `offset` bytes of the stream had been written; `note` if a note starts there."""

    time: float
    offset: int
    note: bool = False
    exact: bool = True  # False: from a note's text or the file's mtime (second precision)


def read_index(log_file: Path) -> list[Mark] | None:
    """The records of `log_file`'s sidecar, or None if it has none that describes it."""
    try:
        st = os.stat(log_file)
        with open(index_path(log_file), "rb") as f:
            blob = f.read()
    except OSError:
        return None
    if blob[: HEADER.size] != HEADER.pack(MAGIC, st.st_ino):
        return None
    body = blob[HEADER.size :]
    body = body[: len(body) - len(body) % RECORD.size]
    marks = []
    for t, raw in RECORD.iter_unpack(body):
        offset = raw & ~NOTE_FLAG
        if offset <= st.st_size:  # a log truncated in place: later records are void
            marks.append(Mark(t, offset, bool(raw & NOTE_FLAG)))
    return marks


def note_time(text: bytes) -> float:
    """Epoch seconds of a note's ISO timestamp."""
    return datetime.fromisoformat(text.decode().replace("Z", "+00:00")).timestamp()


def scan_notes(fd: int, start: int, end: int, *, block: int = 1 << 20) -> list[Mark]:
    """Marks from the notes between two offsets of a log file (the fallback, coarse)."""
    marks = []
    pos = start
    overlap = 64
    while pos < end:
        n = min(block, end - pos)
        chunk = os.pread(fd, n + overlap, pos)
        for m in _NOTE_RE.finditer(chunk):
            if m.start() >= n:
                break
            marks.append(Mark(note_time(m.group(1)), pos + m.start(), True, exact=False))
        pos += n
    return marks


def _index_arrays(log_file: Path, size: int) -> tuple[array[float], array[int],
                                                      list[int]] | None:
    """The sidecar's records as (times, offsets, positions of notes), compactly."""
    try:
        ino = os.stat(log_file).st_ino
        with open(index_path(log_file), "rb") as f:
            blob = f.read()
    except OSError:
        return None
    if blob[: HEADER.size] != HEADER.pack(MAGIC, ino):
        return None
    body = blob[HEADER.size :]
    body = body[: len(body) - len(body) % RECORD.size]
    both = array("d")
    both.frombytes(body)
    times = both[0::2]
    raw = array("q")
    raw.frombytes(body)
    offsets = raw[1::2]  # a note's flag is the sign bit
    notes = []
    if offsets and min(offsets) < 0:
        for k, value in enumerate(offsets):
            if value < 0:
                offsets[k] = value + NOTE_FLAG  # the signed view of offset | flag
                notes.append(k)
    # A log truncated in place voids the records beyond its size.
    keep = len(offsets)
    while keep and offsets[keep - 1] > size:
        keep -= 1
    if keep < len(offsets):
        del times[keep:], offsets[keep:]
        notes = [k for k in notes if k < keep]
    return times, offsets, notes


def first_time(files: list[Path]) -> float | None:
    """When the oldest of these files began, cheaply: its first index record, else its
    first note in the first 64 KiB, else its mtime."""
    if not files:
        return None
    oldest = files[0]
    try:
        st = os.stat(oldest)
        with open(index_path(oldest), "rb") as f:
            head = f.read(HEADER.size + RECORD.size)
        if head[: HEADER.size] == HEADER.pack(MAGIC, st.st_ino) and len(head) == 32:
            return float(RECORD.unpack_from(head, HEADER.size)[0])
    except OSError:
        pass
    try:
        fd = os.open(oldest, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        notes = scan_notes(fd, 0, min(os.fstat(fd).st_size, 1 << 16))
        return notes[0].time if notes else os.fstat(fd).st_mtime
    finally:
        os.close(fd)


def select_files(files: list[Path], t_from: float, t_to: float) -> tuple[list[Path], bool]:
    """The log files that may hold bytes written between two times, and the one before
    (context for a replay), from their mtimes alone; and whether the oldest is among them.

    File k was written after file k-1's last write (its mtime) and up to its own mtime.
    """
    mtimes = []
    for file in files:
        try:
            mtimes.append(os.stat(file).st_mtime)
        except OSError:
            mtimes.append(float("inf"))
    chosen = [k for k in range(len(files))
              if mtimes[k] >= t_from and (k == 0 or mtimes[k - 1] <= t_to)]
    if not chosen:
        chosen = [len(files) - 1] if files else []
    if chosen and chosen[0] > 0:
        chosen.insert(0, chosen[0] - 1)
    return [files[k] for k in chosen], bool(chosen) and chosen[0] == 0


class Timeline:
    """Time <-> offset for the concatenation of a console's log files, oldest first.

    Offsets are positions in that concatenation (file k starts where file k-1 ended),
    so a replay or a search can cross a rotation without caring. Built from the
    sidecars where they describe their file, from the notes before a sidecar's first
    record (or in a file without one), plus each file's mtime as the time of its last
    byte. `recorded_notes` are the notes a sidecar recorded (solgate wrote them);
    `by_look` the stretches where notes can only be recognised by their text. Kept as
    two arrays (16 bytes a record), so a year of a chatty console's index fits in
    memory; `Timeline.around` loads only the files a question needs.
    """

    def __init__(self, files: Iterable[Path], *, from_oldest: bool = True) -> None:
        self.files: list[Path] = []
        self.starts: list[int] = []  # global offset of each file's first byte
        self.from_oldest = from_oldest  # the first file is the oldest one kept
        self.exact = True  # every file had an index
        # One entry per mark, all files in order; offsets are within their file (file k's
        # marks are `_first[k]` to `_first[k + 1]`), so a file's records are taken with
        # one C-level copy, and a global offset is `offset + starts[k]`.
        self._times: array[float] = array("d")
        self._offsets: array[int] = array("q")
        self._first: list[int] = []
        self._notes: list[int] = []  # positions in the arrays of the notes' marks
        self._recorded: set[int] = set()  # ... of those a sidecar recorded
        self._look_until: list[int] = []  # per file: notes before this offset are by look
        total = 0
        for file in files:
            try:
                fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                self.files.append(Path(file))
                self.starts.append(total)
                self._first.append(len(self._times))
                self._add_file(fd, Path(file), st.st_size, st.st_mtime)
            finally:
                os.close(fd)
            total += st.st_size
        self._first.append(len(self._times))
        self.size = total
        # Times must not go back as offsets go forward (a clock step, a note's own time):
        # keep the running maximum so bisecting stays meaningful. Sorted is the rule and
        # cheap to check; the Python-speed fix runs only when it is needed.
        times = self._times
        if not all(map(operator.le, times, itertools.islice(times, 1, None))):
            self._times = array("d", itertools.accumulate(self._times, max))

    @classmethod
    def around(cls, files: list[Path], t_from: float, t_to: float) -> Timeline:
        """A timeline of only the files that matter between two times (see select_files)."""
        chosen, oldest = select_files(files, t_from, t_to)
        return cls(chosen, from_oldest=oldest)

    def _append(self, marks: list[Mark]) -> None:
        for m in marks:
            if m.note:
                self._notes.append(len(self._times))
            self._times.append(m.time)
            self._offsets.append(m.offset)

    def _add_file(self, fd: int, path: Path, size: int, mtime: float) -> None:
        indexed = _index_arrays(path, size)
        if indexed is None:
            self.exact = False
            self._look_until.append(size)
            self._append(scan_notes(fd, 0, size))
        else:
            times, offsets, notes = indexed
            first = offsets[0] if offsets else size
            # Before the sidecar began (a log older than the index, or an index started
            # afresh) the notes say when. From its first record on, only the sidecar
            # says where notes are: text after it that looks like one is the host's.
            self._look_until.append(first)
            if first > 0:
                self.exact = False
                self._append(scan_notes(fd, 0, first))
            at = len(self._times)
            self._notes.extend(at + k for k in notes)
            self._recorded.update(at + k for k in notes)
            self._times.extend(times)
            self._offsets.extend(offsets)
        self._append([Mark(mtime, size, False, exact=False)])

    def _file_of(self, k: int) -> int:
        return bisect.bisect_right(self._first, k) - 1

    def _global(self, k: int) -> int:
        return self._offsets[k] + self.starts[self._file_of(k)]

    def _position(self, offset: int, *, right: bool) -> int:
        """bisect_right (or _left) of a global offset among the marks."""
        if not self.files:
            return 0
        f = max(0, bisect.bisect_right(self.starts, offset) - 1)
        local = offset - self.starts[f]
        lo, hi = self._first[f], self._first[f + 1]
        if right:
            pos = bisect.bisect_right(self._offsets, local, lo, hi)
            # The next file's marks at its offset 0 are at the same global offset.
            while pos == hi and f + 1 < len(self.files) and offset >= self.starts[f + 1]:
                f += 1
                lo, hi = hi, self._first[f + 1]
                pos = bisect.bisect_right(self._offsets, offset - self.starts[f], lo, hi)
            return pos
        return bisect.bisect_left(self._offsets, local, lo, hi)

    @property
    def first_time(self) -> float | None:
        return self._times[0] if self._times else None

    @property
    def last_time(self) -> float | None:
        return self._times[-1] if self._times else None

    def offset_at(self, t: float) -> int:
        """How many bytes had been written at time `t` (to the record's precision)."""
        i = bisect.bisect_right(self._times, t)
        if i >= len(self._offsets):
            return self.size
        # Bytes between two marks were written from the first mark's time on, before the
        # second's: count them all (the burst `t` falls in), to the record's precision.
        return self._global(i) if i > 0 else 0

    def time_at(self, offset: int) -> float | None:
        """When the byte at `offset` was written, as near as the marks say (never later)."""
        i = self._position(offset, right=True) - 1
        if i < 0:
            return self._times[0] if self._times else None
        return self._times[i]

    def marks_between(self, start: int, end: int) -> list[Mark]:
        """The marks with `start <= offset < end`, in order."""
        out = []
        notes = set(self._notes)
        k = self._position(start, right=False)
        while k < len(self._times):
            offset = self._global(k)
            if offset >= end:
                break
            if offset >= start:
                out.append(Mark(self._times[k], offset, k in notes))
            k += 1
        return out

    def notes(self) -> list[Mark]:
        return [Mark(self._times[k], self._global(k), True) for k in self._notes]

    def recorded_notes(self, start: int, end: int) -> list[int]:
        """Offsets in `[start, end)` where a sidecar says solgate wrote a note, in order."""
        notes = self._notes
        lo = bisect.bisect_left(notes, self._position(start, right=False))
        hi = bisect.bisect_left(notes, self._position(end, right=False))
        return [self._global(k) for k in notes[lo:hi] if k in self._recorded]

    def by_look(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of `[start, end)` that no sidecar covers: notes there are known only
        by their text (logs older than the index)."""
        out = []
        for k, first in enumerate(self.starts):
            a, b = max(start, first), min(end, first + self._look_until[k])
            if a < b:
                out.append((a, b))
        return out

    def locate(self, offset: int) -> tuple[Path, int]:
        """The file holding a global offset, and the offset inside it."""
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        return self.files[i], offset - self.starts[i]

    def read(self, start: int, end: int) -> bytes:
        """Bytes `[start, end)` of the concatenated stream."""
        out = []
        for i, file in enumerate(self.files):
            lo = self.starts[i]
            hi = self.starts[i + 1] if i + 1 < len(self.files) else self.size
            a, b = max(start, lo), min(end, hi)
            if a >= b:
                continue
            try:
                with open(file, "rb") as f:
                    f.seek(a - lo)
                    out.append(f.read(b - a))
            except OSError:
                continue
        return b"".join(out)
