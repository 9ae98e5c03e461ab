"""`solgate screen`, `solgate export` and `solgate grep`: the morning-after questions.

"What did the console show at 03:12", "give me a recording of that to share" and "which
servers printed `Machine check` last night" are answered from the files under
`data_dir` alone (like `solgate tail`), so they work while the server is down.

All three read a console's log files as one stream, oldest first, across rotations, and
ask a `Timeline` (`console/logindex.py`) when each byte was written: exact to the write
where the time index exists, to the nearest note where it does not (older logs).

The screen at a moment and the recordings are `solgate.console.replay` (shared with
the panic bundle): the output says where a replay started, in bytes and in time, so an
operator knows how much of the past the picture rests on, and solgate's own notes are
taken out of what is replayed.

`grep` reads each log backwards from the newest byte and stops at `--since`, after
`--limit` hits, or when its time budget is spent, whichever comes first, and says which.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from solgate.console.logindex import Timeline
from solgate.console.logread import iter_log_files, lines_backwards_at
from solgate.console.replay import (
    ScreenAt,
    asciicast,
    host_read,
    plain_text,
    screen_at,
)
from solgate.errors import ConfigError
from solgate.logtools import log_path, parse_since

if TYPE_CHECKING:
    from solgate.config import Config

__all__ = [
    "GrepResult",
    "Hit",
    "ScreenAt",
    "asciicast",
    "console_files",
    "console_names",
    "grep_logs",
    "host_read",
    "parse_time",
    "screen_at",
]

DEFAULT_GREP_LIMIT = 100
DEFAULT_GREP_BUDGET = 10.0

# --- time -------------------------------------------------------------------------------

_CLOCK = re.compile(r"(\d{1,2}):(\d\d)(?::(\d\d)(?:\.(\d+))?)?")


def parse_time(text: str, *, now: float | None = None) -> float:
    """Epoch seconds from an ISO 8601 time, "now", "-15m" / "15m" (ago) or "03:12" (today).

    A time without a zone is local time, as `date` prints it.
    """
    now = time.time() if now is None else now
    raw = text.strip()
    if raw == "now":
        return now
    try:  # how long ago, or an ISO time: what `--since` takes everywhere
        return parse_since(raw[1:] if raw.startswith("-") else raw.removesuffix(" ago"),
                           now=now)
    except ConfigError:
        pass
    clock = _CLOCK.fullmatch(raw)
    if clock:
        hour, minute, sec, frac = clock.groups()
        today = datetime.fromtimestamp(now).astimezone()
        stamp = today.replace(hour=int(hour), minute=int(minute), second=int(sec or 0),
                              microsecond=int((frac or "0").ljust(6, "0")[:6]))
        return stamp.timestamp()
    raise ConfigError(f"{text!r} is not a time; give an ISO time "
                      "(2026-12-06T03:12:00Z), a time today (03:12), or how long ago "
                      "(-15m, 2h)")


# --- replaying --------------------------------------------------------------------------

def console_files(data_dir: Path, name: str) -> list[Path]:
    """A console's log files, oldest first; ConfigError if it has none."""
    path = log_path(data_dir, name)
    files = iter_log_files(path)
    if not files:
        raise ConfigError(f"no log for console {name!r} at {path}; check the name, or "
                          "-c/--data-dir")
    return files


# --- grep -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hit:
    console: str
    time: float | None
    line: str
    member: str | None = None  # in a cluster, the member whose log it is in


@dataclass
class GrepResult:
    hits: list[Hit]
    stopped: str | None  # why the search stopped early, or None if it read all it had to


def _console_hits(path: Path, name: str, pattern: re.Pattern[str], since: float | None,
                  until: float | None, deadline: float,
                  cancelled: Callable[[], bool]) -> Iterator[Hit]:
    """Hits in one console's logs, newest first, one file's timeline at a time."""
    for file in reversed(iter_log_files(path)):
        try:
            if since is not None and os.stat(file).st_mtime < since:
                return  # its last byte, and everything older, came before `since`
            fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        timeline = Timeline([file], from_oldest=False)
        size = timeline.size
        try:
            for n, (offset, line) in enumerate(lines_backwards_at(fd, size, max_line=1 << 16)):
                if n % 256 == 0 and (time.monotonic() > deadline or cancelled()):
                    raise TimeoutError
                t = timeline.time_at(offset)
                if since is not None and t is not None and t < since:
                    return
                if until is not None and t is not None and t > until:
                    continue
                text = plain_text(line)
                if pattern.search(text):
                    yield Hit(name, t, text)
        finally:
            os.close(fd)


def grep_logs(consoles: list[tuple[str, Path]], pattern: re.Pattern[str], *,
              since: float | None = None, until: float | None = None,
              limit: int = DEFAULT_GREP_LIMIT, budget: float = DEFAULT_GREP_BUDGET,
              cancelled: Callable[[], bool] = lambda: False) -> GrepResult:
    """The newest `limit` hits across `(name, log path)` consoles, newest first.

    Stops when `budget` seconds are spent or `cancelled()` (polled every 256 lines)
    says the asker went away; `stopped` says why.
    """
    deadline = time.monotonic() + budget
    hits: list[Hit] = []
    stopped = None
    full = False
    for name, path in consoles:
        if cancelled():
            stopped = "the search was cancelled"
            break
        if time.monotonic() > deadline:
            stopped = f"the time budget ({budget:g} s) ran out before console {name}"
            break
        found = 0
        try:
            for hit in _console_hits(path, name, pattern, since, until, deadline,
                                     cancelled):
                hits.append(hit)
                found += 1
                if found >= limit:
                    full = True  # older hits of this console may exist
                    break
        except TimeoutError:
            stopped = ("the search was cancelled" if cancelled() else
                       f"the time budget ({budget:g} s) ran out in console {name}")
            break
    hits.sort(key=lambda h: -(h.time or 0.0))
    if full:
        del hits[limit:]
        stopped = stopped or f"the limit of {limit} hits was reached"
    return GrepResult(hits, stopped)


def console_names(logs_dir: Path, config: Config | None, glob: str | None,
                   tag: str | None) -> list[str]:
    names: set[str] = set()
    if config is not None:
        names.update(config.consoles)
    with contextlib.suppress(OSError):
        names.update(n[:-4] for n in os.listdir(logs_dir) if n.endswith(".log"))
    if tag is not None:
        if config is None:
            raise ConfigError("--tag needs the configuration (where the tags are); give "
                              "-c instead of --data-dir, or use --console GLOB")
        names = {n for n in names if n in config.consoles and tag in config.consoles[n].tags}
    if glob is not None:
        names = {n for n in names if fnmatch.fnmatchcase(n, glob)}
    return sorted(names)
