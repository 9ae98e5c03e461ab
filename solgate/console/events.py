"""`<data_dir>/events.jsonl`: what happened to every console, one JSON object a line.

Panics, SOL up/down, attach/detach, breaks, forced deactivations and power actions
land here so an operator can answer "what happened to web01 last night" with `grep`
or `jq`, and the web UI can list recent incidents without scanning console logs.

Each record is appended with one `os.write` on an `O_APPEND` descriptor, so lines from
several writers (the daemon and a `solgate power` run) never interleave. A failing
disk never raises: records wait in a bounded in-memory queue, `error` and
`write_errors` say what is wrong, and the next `append` or `flush` retries. Readers
skip lines that do not parse (a torn last line after a crash or a full disk).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from solgate.console.log import AppendFile, format_time
from solgate.console.logread import lines_backwards

__all__ = ["MAX_PENDING_RECORDS", "EventLog", "filter_records", "read_events",
           "record_time"]

_LOG = logging.getLogger(__name__)

_DEFAULT_SEVERITY = {
    "panic": "error",
    "sol-down": "warning",
    "stolen": "warning",
    "log-error": "error",
}
MAX_PENDING_RECORDS = 10_000
# Fields of these types read back as written: `append` returns the record itself instead
# of parsing the line it just wrote (a failover writes thousands of records a second).
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def record_time(record: dict[str, Any]) -> float | None:
    """Epoch seconds of a record's `time`, or None when it has none that parses."""
    value = record.get("time")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def filter_records(
    lines: Iterable[bytes],
    *,
    since: float | None = None,
    console: str | None = None,
    kinds: frozenset[str] = frozenset(),
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Records from `lines` given newest first (as `lines_backwards` yields), newest last.

    Stops at the first record older than `since` (records are appended in time order)
    and once `limit` records matched (None or 0 or less: no limit); lines that are not
    JSON objects (a torn last line) are skipped.
    """
    out: list[dict[str, Any]] = []
    if limit is not None and limit <= 0:
        limit = None
    for raw in lines:
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(record, dict):
            continue
        if since is not None:
            t = record_time(record)
            if t is not None and t < since:
                break
        if console is not None and record.get("console") != console:
            continue
        if kinds and record.get("kind") not in kinds:
            continue
        out.append(record)
        if limit is not None and len(out) >= limit:
            break
    out.reverse()
    return out


def _lines_or_nothing(path: Path) -> Iterable[bytes]:
    """The file's lines backwards; none when it does not exist, or cannot be read."""
    try:
        yield from lines_backwards(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        _LOG.warning("cannot read events file %s: %s", path, exc.strerror or exc)


def read_events(
    path: Path,
    since: float | None = None,
    console: str | None = None,
    limit: int | None = None,
    kinds: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Records of an events file, newest last, optionally filtered (see `filter_records`).

    The file is read backwards, so `limit` and `since` cost only the lines they need.
    A `limit` of 0 or less gives no records.
    """
    if limit is not None and limit <= 0:
        return []
    return filter_records(_lines_or_nothing(Path(path)), since=since, console=console,
                          kinds=kinds, limit=limit)


class EventLog:
    """Appends console events to a JSON-lines file; never raises on disk errors."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        max_pending: int = MAX_PENDING_RECORDS,
    ) -> None:
        self._path = Path(path)
        self._clock = clock
        self._file = AppendFile(self._path, clock=clock, label="events file",
                                hint="will retry", logger=_LOG)
        self._pending: deque[tuple[dict[str, Any], bytes]] = deque(maxlen=max(1, max_pending))
        self._dropped = 0
        self._closed = False
        self._open()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def error(self) -> str | None:
        """What is wrong with the disk right now, or None."""
        return self._file.error

    @property
    def write_errors(self) -> int:
        """How many disk operations failed since this log was opened."""
        return self._file.write_errors

    @property
    def records_dropped(self) -> int:
        """Records lost because the pending queue overflowed while the disk failed."""
        return self._dropped

    def append(
        self,
        kind: str,
        console: str | None,
        *,
        severity: str | None = None,
        user: str | None = None,
        message: str | None = None,
        now: float | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Record one event and return it as written (for fan-out to the web UI).

        `now` defaults to the clock given at construction; extra keyword arguments
        become extra fields (anything not JSON-native is written as its `str`).
        """
        if self._closed:
            raise ValueError(f"event log {self._path} is closed")
        t = self._clock() if now is None else now
        record: dict[str, Any] = {
            "time": format_time(t, millis=True),
            "console": console,
            "kind": kind,
            "severity": severity or _DEFAULT_SEVERITY.get(kind, "info"),
            "user": user,
            "message": message,
        }
        for key, value in fields.items():
            if key not in record:
                record[key] = value
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        try:
            data = line.encode("utf-8")
            native = all(type(v) in _JSON_SCALARS for v in fields.values())
        except UnicodeEncodeError:  # a lone surrogate: written as "?"
            data = line.encode("utf-8", "replace")
            native = False
        # As a reader will see it: JSON-native (parsed back only when it would differ).
        written: dict[str, Any] = record if native else json.loads(data)
        if (self._pending or self._file.fd is None) and self._clock() >= self._file.retry_at:
            self.flush()
        if self._pending or self._file.fd is None or not self._write(data):
            if len(self._pending) == self._pending.maxlen:
                self._dropped += 1
            self._pending.append((written, data))
        return written

    def flush(self) -> None:
        """Retry writing records the disk refused earlier, in order."""
        if self._file.fd is None and not self._open():
            return
        while self._pending:
            _, data = self._pending[0]
            if not self._write(data):
                return
            self._pending.popleft()
        self._file.recovered()

    def read(
        self,
        since: float | None = None,
        console: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Records newest last, including any still waiting for the disk."""
        records = read_events(self._path, since=since, console=console, limit=limit)
        for record, _ in self._pending:
            t = record_time(record)
            if since is not None and t is not None and t < since:
                continue
            if console is not None and record["console"] != console:
                continue
            records.append(dict(record))
        if limit is not None:
            records = records[-limit:] if limit > 0 else []
        return records

    def reopen(self) -> None:
        """Reopen the path after an external logrotate renamed the file."""
        self._file.close(sync=True)
        self._open()
        if self._pending:
            self.flush()

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        if self._pending:
            _LOG.warning(
                "events file %s closed with %d records the disk never took (%s)",
                self._path,
                len(self._pending),
                self._file.error,
            )
            self._dropped += len(self._pending)
            self._pending.clear()
        self._file.close(sync=True)
        self._closed = True

    # -- internals ----------------------------------------------------------------

    def _open(self) -> bool:
        if self._file.open() is None:
            return False
        if not self._file.last_byte_is_newline():
            # A crash left half a record: end it so our first record stands alone.
            self._file.write(b"\n")
        return True

    def _write(self, data: bytes) -> bool:
        """One record, whole. A short write is completed; a failure leaves it pending."""
        done = self._file.write(data)
        if done == len(data):
            return True
        if done and self._file.fd is not None:
            # Half a record is on disk: end that torn line so the retry starts clean.
            try:
                os.write(self._file.fd, b"\n")
            except OSError:
                pass
        return False
