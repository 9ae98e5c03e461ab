"""What `solgate tail` and `solgate events` read: console logs and the events file on disk.

Both open the files under `data_dir` themselves and never ask the server, so they keep
working while `solgate serve` is stopped, restarting or wedged: exactly when an
operator wants the last lines a host printed before it died.

`tail -f` follows a log the way `tail -F` does. solgate rotates by rename
(`web01.log` -> `web01.log.1`, then a fresh `web01.log`), so the follower keeps reading
the renamed file to its end and then switches to the new one, noticed by its inode
changing; a file that shrinks under the same name (an external copy-and-truncate) is
read again from the start. `LogFollower.poll()` does one such step without sleeping,
so the rotation logic is tested without a clock. The commands themselves are
`solgate.cli.logs`.
"""

from __future__ import annotations

import contextlib
import os
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from solgate.console.events import filter_records as filter_events
from solgate.console.logread import iter_log_files, lines_backwards, lines_backwards_at
from solgate.errors import ConfigError

__all__ = [
    "LogFollower",
    "filter_events",
    "format_event",
    "log_path",
    "parse_since",
]

FOLLOW_INTERVAL = 0.25  # seconds between polls of a followed log


# --- locating files ------------------------------------------------------------------------


def log_path(data_dir: Path, name: str) -> Path:
    """`<data_dir>/logs/<name>.log`; refuses names that would leave the logs directory."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise ConfigError(f"{name!r} is not a console name; give the name as in "
                          "[consoles.NAME]")
    return data_dir / "logs" / f"{name}.log"


# --- tail ----------------------------------------------------------------------------------


class LogFollower:
    """Hands out what is appended to one console log, across rotation by rename.

    `from_end=True` starts at the current end (after the caller printed a tail);
    a file that does not exist yet is read from its start once it appears.
    """

    def __init__(self, path: Path, *, from_end: bool = True) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None
        self._id: tuple[int, int] | None = None
        self.rotations = 0
        self._open(at_end=from_end)

    def _open(self, *, at_end: bool) -> bool:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - kept open across polls
        except FileNotFoundError:
            return False
        st = os.fstat(f.fileno())
        if at_end:
            f.seek(0, os.SEEK_END)
        self._file, self._id = f, (st.st_dev, st.st_ino)
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> LogFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self) -> bytes:
        """Bytes appended since the last call (the rest of a rotated file, then the new one)."""
        if self._file is None and not self._open(at_end=False):
            return b""
        assert self._file is not None
        out = [self._file.read()]
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return b"".join(out)  # renamed away, the new file is not there yet: keep reading
        if (st.st_dev, st.st_ino) != self._id:
            out.append(self._file.read())  # whatever was written before the rename
            self.close()
            self.rotations += 1
            out.extend(self._skipped_files())
            if self._open(at_end=False) and self._file is not None:
                out.append(self._file.read())
        elif st.st_size < self._file.tell():
            self._file.seek(0)  # truncated in place: start over
            out.append(self._file.read())
        return b"".join(out)

    def before(self, n_lines: int, *, max_bytes: int) -> bytes:
        """The last `n_lines` lines before where `poll()` goes on (at most `max_bytes`),
        across rotated files: a tail and then a follow with nothing lost or repeated in
        between, even while the console writes."""
        lines: list[bytes] = []
        size = 0

        def take(line: bytes) -> bool:
            nonlocal size
            size += len(line)
            if size > max_bytes or len(lines) >= n_lines:
                return False
            lines.append(line)
            return True

        files = iter_log_files(self.path)
        if self._file is not None:
            end = self._file.tell()
            for _, line in lines_backwards_at(self._file.fileno(), end):
                if not take(line):
                    return b"".join(reversed(lines))
            files = self._older_than_ours(files)
        for file in reversed(files):
            with contextlib.suppress(OSError):
                for line in lines_backwards(file):
                    if not take(line):
                        return b"".join(reversed(lines))
        return b"".join(reversed(lines))

    def _older_than_ours(self, files: list[Path]) -> list[Path]:
        """The rotated files older than the one open (all but the newest when it is
        the current log)."""
        for i, file in enumerate(files):
            with contextlib.suppress(OSError):
                st = os.stat(file)
                if (st.st_dev, st.st_ino) == self._id:
                    return files[:i]
        return files[:-1] if files else []

    def _skipped_files(self) -> list[bytes]:
        """Whole files rotated in between: newer than the one we read, older than the log."""
        files = iter_log_files(self.path)[:-1]  # rotated ones, oldest first
        ids = []
        for file in files:
            try:
                st = os.stat(file)
            except OSError:
                st = None
            ids.append((st.st_dev, st.st_ino) if st else None)
        if self._id not in ids:
            return []  # ours is gone (beyond `keep`); nothing to place after it
        out = []
        for file in files[ids.index(self._id) + 1:]:
            with contextlib.suppress(OSError):
                out.append(file.read_bytes())
        return out


# --- events --------------------------------------------------------------------------------


def parse_since(text: str, *, now: float | None = None) -> float:
    """Epoch seconds from "1h" / "30m" / "2d" (that long ago) or an ISO time."""
    from solgate.units import duration_seconds  # as in forensics.parse_time

    now = time.time() if now is None else now
    try:
        return now - duration_seconds(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r}: give a duration such as 1h, 30m or 2d, or a "
                          "time such as 2026-11-22T03:00Z") from None
    if stamp.tzinfo is None:
        stamp = stamp.astimezone()  # a time without zone is local time, as `date` prints it
    return stamp.timestamp()


def format_event(record: dict[str, Any]) -> str:
    """One line for a person: time, console, kind, severity, user and message."""
    severity = record.get("severity") or "info"
    user = record.get("user")
    message = record.get("message") or ""
    parts = [str(record.get("time", "?")), str(record.get("console") or "-"),
             str(record.get("kind", "?"))]
    if severity != "info":
        parts.append(severity.upper())
    if user:
        parts.append(f"by {user}")
    line = "  ".join(parts)
    if message:
        line += f": {message}"
    if record.get("bundle"):
        line += f"  [solgate events --bundle {record['bundle']}]"
    # A message is one line on screen, whatever the host put into it.
    return line.replace("\r", "\\r").replace("\n", "\\n")
