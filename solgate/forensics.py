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

import argparse
import contextlib
import fnmatch
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from solgate.config import Config
from solgate.config_values import duration_seconds
from solgate.console.log import format_time, iter_log_files, lines_backwards_at
from solgate.console.logindex import Timeline
from solgate.console.replay import (
    DEFAULT_COLS,
    DEFAULT_REPLAY,
    DEFAULT_ROWS,
    ScreenAt,
    asciicast,
    elapsed_words,
    host_read,
    plain_text,
    screen_at,
)
from solgate.errors import ConfigError
from solgate.logtools import _add_data_dir, _data_dir, log_path

__all__ = [
    "GrepResult",
    "Hit",
    "ScreenAt",
    "asciicast",
    "console_files",
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
    ago = raw[1:] if raw.startswith("-") else raw.removesuffix(" ago")
    try:
        return now - duration_seconds(ago)
    except ValueError:
        pass
    clock = _CLOCK.fullmatch(raw)
    if clock:
        hour, minute, sec, frac = clock.groups()
        today = datetime.fromtimestamp(now).astimezone()
        stamp = today.replace(hour=int(hour), minute=int(minute), second=int(sec or 0),
                              microsecond=int((frac or "0").ljust(6, "0")[:6]))
        return stamp.timestamp()
    try:
        stamp = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{text!r} is not a time; give an ISO time "
                          "(2026-12-06T03:12:00Z), a time today (03:12), or how long ago "
                          "(-15m, 2h)") from None
    if stamp.tzinfo is None:
        stamp = stamp.astimezone()
    return stamp.timestamp()


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


def _console_names(logs_dir: Path, config: Config | None, glob: str | None,
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


# --- the commands -------------------------------------------------------------------------


def _files_for(args: argparse.Namespace) -> list[Path]:
    data_dir, _ = _data_dir(args)
    return console_files(data_dir, args.name)


def run_screen(args: argparse.Namespace) -> int:
    """`solgate screen NAME --at TIME`."""
    at = parse_time(args.at)
    timeline = Timeline.around(_files_for(args), at, at)
    result = screen_at(timeline, at, cols=args.cols, rows=args.rows, replay=args.replay)
    out = sys.stdout
    if args.raw:
        print(result.header(args.name), file=sys.stderr)
        sys.stdout.buffer.write(result.screen.render())
        sys.stdout.buffer.flush()
        return 0
    print(f"# {result.header(args.name)}", file=out)
    for row in result.screen.display:
        print(row.rstrip(), file=out)
    out.flush()
    return 0


def run_export(args: argparse.Namespace) -> int:
    """`solgate export NAME --from T1 --to T2 -o file.cast`."""
    t1 = parse_time(getattr(args, "from"))
    t2 = parse_time(args.to)
    timeline = Timeline.around(_files_for(args), t1, t2)
    title = f"{args.name} {format_time(t1)} - {format_time(t2)}"
    if args.output == "-":
        asciicast(timeline, t1, t2, sys.stdout, cols=args.cols, rows=args.rows,
                  replay=args.replay, title=title)
        return 0
    tmp = Path(args.output + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        events = asciicast(timeline, t1, t2, f, cols=args.cols, rows=args.rows,
                           replay=args.replay, title=title)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}: {events} events over {elapsed_words(t2 - t1)}"
          + ("" if timeline.exact else " (times to the nearest note: no time index)"),
          file=sys.stderr)
    return 0


def run_grep(args: argparse.Namespace) -> int:
    """`solgate grep PATTERN`."""
    data_dir, config = _data_dir(args)
    logs_dir = data_dir / "logs"
    try:
        pattern = re.compile(args.pattern, re.IGNORECASE if args.ignore_case else 0)
    except re.error as exc:
        raise ConfigError(f"pattern {args.pattern!r} is not a regular expression ({exc}); "
                          "use -F for a plain string") from None
    if args.fixed:
        pattern = re.compile(re.escape(args.pattern), re.IGNORECASE if args.ignore_case else 0)
    names = _console_names(logs_dir, config, args.console, args.tag)
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    result = grep_logs([(n, logs_dir / f"{n}.log") for n in names], pattern, since=since,
                       until=until, limit=args.limit, budget=args.budget)
    try:
        for hit in result.hits:
            when = format_time(hit.time) if hit.time is not None else "?"
            if args.json:
                print(json.dumps({"time": when, "console": hit.console, "line": hit.line},
                                 ensure_ascii=False))
            else:
                print(f"{when}  {hit.console}: {hit.line}")
        sys.stdout.flush()
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if result.stopped:
        print(f"solgate grep: stopped early: {result.stopped}; narrow it with --since, "
              "--console or --limit", file=sys.stderr)
    return 0 if result.hits else 1


def _add_screen_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cols", type=int, default=DEFAULT_COLS, help="screen width (80)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="screen height (25)")
    parser.add_argument("--replay", type=int, default=DEFAULT_REPLAY, metavar="BYTES",
                        help=f"replay at most this many bytes before the moment "
                             f"({DEFAULT_REPLAY}); more for screens drawn long before")


TIME_HELP = ("ISO 8601 (2026-12-06T03:12:00Z), a time today (03:12), or how long ago "
             "(15m, 2h; with a minus sign write --at=-15m)")


def register(subparsers: Any) -> None:
    """Add `screen`, `export` and `grep`."""
    screen = subparsers.add_parser(
        "screen", help="print a console's screen as it was at a moment, from its log",
        description="Rebuild the screen of console NAME as it was at TIME from its log "
                    "files and their time index, and print it as text (or, with --raw, "
                    "as escape sequences that repaint a terminal, colours included).",
    )
    screen.add_argument("name", metavar="NAME", help="console name")
    screen.add_argument("--at", required=True, metavar="TIME", help=TIME_HELP)
    screen.add_argument("--raw", action="store_true",
                        help="print the repaint sequence instead of plain text")
    _add_screen_size(screen)
    _add_data_dir(screen)
    screen.set_defaults(handler=run_screen)

    export = subparsers.add_parser(
        "export", help="write an asciicast v2 recording of a console between two times",
        description="Write what console NAME showed from T1 to T2 as an asciicast v2 "
                    "file (asciinema play, or the web log page), with the real timing of "
                    "the output; solgate's notes become markers.",
    )
    export.add_argument("name", metavar="NAME", help="console name")
    export.add_argument("--from", required=True, metavar="T1", help=TIME_HELP)
    export.add_argument("--to", default="now", metavar="T2", help="end (now)")
    export.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="the .cast file to write (- for stdout)")
    _add_screen_size(export)
    _add_data_dir(export)
    export.set_defaults(handler=run_export)

    grep = subparsers.add_parser(
        "grep", help="search every console's logs (rotated ones too), newest first",
        description="Print the lines matching PATTERN (a Python regular expression, "
                    "matched against the text without escape sequences) in the consoles' "
                    "logs, newest first, each with the time it was written. Exit status 1 "
                    "when nothing matched.",
    )
    grep.add_argument("pattern", metavar="PATTERN")
    grep.add_argument("--since", metavar="TIME", help="only lines written after this: "
                      + TIME_HELP)
    grep.add_argument("--until", metavar="TIME", help="only lines written before this")
    grep.add_argument("--console", metavar="GLOB", help="only consoles whose name matches")
    grep.add_argument("--tag", metavar="TAG", help="only consoles with this tag")
    grep.add_argument("-i", "--ignore-case", action="store_true")
    grep.add_argument("-F", "--fixed", action="store_true", help="PATTERN is a plain string")
    grep.add_argument("-n", "--limit", type=int, default=DEFAULT_GREP_LIMIT, metavar="N",
                      help=f"at most N hits, the newest ({DEFAULT_GREP_LIMIT})")
    grep.add_argument("--budget", type=float, default=DEFAULT_GREP_BUDGET, metavar="S",
                      help=f"stop after this many seconds of reading ({DEFAULT_GREP_BUDGET:g})")
    grep.add_argument("--json", action="store_true", help="one JSON object per hit")
    _add_data_dir(grep)
    grep.set_defaults(handler=run_grep)
