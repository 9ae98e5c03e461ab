"""`solgate screen`, `solgate export` and `solgate grep`: the morning after, from disk.

The work is `solgate.forensics` (the screen at a moment, recordings, grep over logs);
here are only the arguments and the commands that print its answers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from solgate.cli.logs import add_data_dir, data_dir_from_args
from solgate.console.log import format_time
from solgate.console.logindex import Timeline
from solgate.console.replay import (
    DEFAULT_COLS,
    DEFAULT_REPLAY,
    DEFAULT_ROWS,
    asciicast,
    elapsed_words,
    screen_at,
)
from solgate.errors import ConfigError
from solgate.forensics import (
    DEFAULT_GREP_BUDGET,
    DEFAULT_GREP_LIMIT,
    GrepResult,
    console_files,
    console_names,
    grep_logs,
    parse_time,
)

if TYPE_CHECKING:
    from solgate.config import Config


INCOMPLETE = 2  # exit status: a member did not answer, its part is missing


def _files_for(args: argparse.Namespace) -> list[Path]:
    data_dir, _ = data_dir_from_args(args)
    return console_files(data_dir, args.name)


def _cluster_of(args: argparse.Namespace, command: str) -> Config | None:
    """The configuration when the command should read every member's logs: a
    `[cluster]` member with a member secret, without `--local`."""
    if getattr(args, "data_dir", None) or args.local:
        return None
    _, config = data_dir_from_args(args)
    if config is None or config.cluster is None:
        return None
    if not config.cluster.member_secret:
        print(f"solgate {command}: [cluster] has no member secret to ask the other members "
              "with; only this member's logs are read", file=sys.stderr)
        return None
    return config


def _say_missing(command: str, missing: dict[str, str], what: str) -> None:
    for member, why in sorted(missing.items()):
        who = "etcd" if member == "etcd" else f"member {member}"
        print(f"solgate {command}: {who}: {why}", file=sys.stderr)
    if missing:
        print(f"solgate {command}: {what} is incomplete: it lacks what the members above "
              "logged", file=sys.stderr)


@contextlib.contextmanager
def _timeline(args: argparse.Namespace, command: str, t1: float,
              t2: float) -> Iterator[tuple[Timeline, bool]]:
    """The console's timeline between two times: this member's files, or in a cluster
    every member's log merged (`solgate.console.logwindow`); and whether parts are missing."""
    config = _cluster_of(args, command)
    if config is None:
        yield Timeline.around(_files_for(args), t1, t2), False
        return
    from solgate.cluster.clitools import member_windows
    from solgate.console.logwindow import merge_windows

    if args.name not in config.consoles:
        raise ConfigError(f"no console named {args.name!r} in the configuration; check "
                          "the name")
    windows, missing = member_windows(config, args.name, t1, t2, args.replay)
    _say_missing(command, missing, "the picture" if command == "screen" else "the recording")
    with tempfile.TemporaryDirectory(prefix="solgate-replay-") as tmp:
        yield merge_windows(windows, Path(tmp)).timeline, bool(missing)


def run_screen(args: argparse.Namespace) -> int:
    """`solgate screen NAME --at TIME`."""
    at = parse_time(args.at)
    with _timeline(args, "screen", at, at) as (timeline, incomplete):
        result = screen_at(timeline, at, cols=args.cols, rows=args.rows, replay=args.replay)
    status = INCOMPLETE if incomplete else 0
    out = sys.stdout
    if args.raw:
        print(result.header(args.name), file=sys.stderr)
        sys.stdout.buffer.write(result.screen.render())
        sys.stdout.buffer.flush()
        return status
    print(f"# {result.header(args.name)}", file=out)
    for row in result.screen.display:
        print(row.rstrip(), file=out)
    out.flush()
    return status


def run_export(args: argparse.Namespace) -> int:
    """`solgate export NAME --from T1 --to T2 -o file.cast`."""
    t1 = parse_time(getattr(args, "from"))
    t2 = parse_time(args.to)
    title = f"{args.name} {format_time(t1)} - {format_time(t2)}"
    with _timeline(args, "export", t1, t2) as (timeline, incomplete):
        status = INCOMPLETE if incomplete else 0
        if args.output == "-":
            asciicast(timeline, t1, t2, sys.stdout, cols=args.cols, rows=args.rows,
                      replay=args.replay, title=title)
            return status
        tmp = Path(args.output + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            events = asciicast(timeline, t1, t2, f, cols=args.cols, rows=args.rows,
                               replay=args.replay, title=title)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}: {events} events over {elapsed_words(t2 - t1)}"
          + ("" if timeline.exact else " (times to the nearest note: no time index)")
          + (" (incomplete: see above)" if incomplete else ""),
          file=sys.stderr)
    return status


def run_grep(args: argparse.Namespace) -> int:
    """`solgate grep PATTERN`."""
    data_dir, config = data_dir_from_args(args)
    logs_dir = data_dir / "logs"
    try:
        pattern = re.compile(args.pattern, re.IGNORECASE if args.ignore_case else 0)
    except re.error as exc:
        raise ConfigError(f"pattern {args.pattern!r} is not a regular expression ({exc}); "
                          "use -F for a plain string") from None
    if args.fixed:
        pattern = re.compile(re.escape(args.pattern), re.IGNORECASE if args.ignore_case else 0)
    names = console_names(logs_dir, config, args.console, args.tag)
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    cluster = _cluster_of(args, "grep")
    missing: dict[str, str] = {}
    if cluster is None:
        result = grep_logs([(n, logs_dir / f"{n}.log") for n in names], pattern,
                           since=since, until=until, limit=args.limit, budget=args.budget)
    else:
        result, missing = _grep_members(cluster, args, pattern, names, since, until)
    try:
        for hit in result.hits:
            when = format_time(hit.time) if hit.time is not None else "?"
            if args.json:
                print(json.dumps({"time": when, "console": hit.console, "line": hit.line,
                                  **({"member": hit.member} if hit.member else {})},
                                 ensure_ascii=False))
            elif hit.member:
                print(f"{when}  {hit.console} ({hit.member}): {hit.line}")
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
    _say_missing("grep", missing, "the search")
    return INCOMPLETE if missing else 0 if result.hits else 1


def _grep_members(config: Config, args: argparse.Namespace, pattern: re.Pattern[str],
                  names: list[str], since: float | None,
                  until: float | None) -> tuple[GrepResult, dict[str, str]]:
    """This member's logs from disk and every other member's asked at once, the hits
    merged newest first, each with its member."""
    from concurrent.futures import ThreadPoolExecutor

    from solgate.cluster.clitools import member_grep

    assert config.cluster is not None
    logs_dir = Path(config.data_dir) / "logs"
    params = {"pattern": pattern.pattern, "limit": str(args.limit),
              "budget": str(args.budget),
              **({"ignore_case": "1"} if pattern.flags & re.IGNORECASE else {}),
              **({"since": repr(since)} if since is not None else {}),
              **({"until": repr(until)} if until is not None else {}),
              **({"console": args.console} if args.console else {}),
              **({"tag": args.tag} if args.tag else {})}
    with ThreadPoolExecutor(1) as pool:
        others = pool.submit(member_grep, config, params)
        here = grep_logs([(n, logs_dir / f"{n}.log") for n in names], pattern, since=since,
                         until=until, limit=args.limit, budget=args.budget)
        hits, stopped, missing = others.result()
    merged = [replace(h, member=config.cluster.name) for h in here.hits] + hits
    merged.sort(key=lambda h: -(h.time or 0.0))
    reasons = ([f"{config.cluster.name}: {here.stopped}"] if here.stopped else []) + stopped
    if len(merged) > args.limit:
        del merged[args.limit:]
        reasons.append(f"the limit of {args.limit} hits was reached")
    return GrepResult(merged, "; ".join(reasons) or None), missing


def _add_screen_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cols", type=int, default=DEFAULT_COLS, help="screen width (80)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="screen height (25)")
    parser.add_argument("--replay", type=int, default=DEFAULT_REPLAY, metavar="BYTES",
                        help=f"replay at most this many bytes before the moment "
                             f"({DEFAULT_REPLAY}); more for screens drawn long before")


def _add_local(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local", action="store_true",
                        help="in a cluster, only this member's logs (default: every "
                             "member's, asked with [cluster] member_secret_*; exit status "
                             "2 when a member's part is missing)")


TIME_HELP = ("ISO 8601 (2026-12-06T03:12:00Z), a time today (03:12), or how long ago "
             "(15m, 2h; with a minus sign write --at=-15m)")


def register(subparsers: Any) -> None:
    """Add `screen`, `export` and `grep`."""
    screen = subparsers.add_parser(
        "screen", help="print a console's screen as it was at a moment, from its log",
        description="Rebuild the screen of console NAME as it was at TIME from its log "
                    "files and their time index, and print it as text (or, with --raw, "
                    "as escape sequences that repaint a terminal, colours included). "
                    "In a cluster the log is every member's, in the order they owned "
                    "the console.",
    )
    screen.add_argument("name", metavar="NAME", help="console name")
    screen.add_argument("--at", required=True, metavar="TIME", help=TIME_HELP)
    screen.add_argument("--raw", action="store_true",
                        help="print the repaint sequence instead of plain text")
    _add_screen_size(screen)
    _add_local(screen)
    add_data_dir(screen)
    screen.set_defaults(handler=run_screen)

    export = subparsers.add_parser(
        "export", help="write an asciicast v2 recording of a console between two times",
        description="Write what console NAME showed from T1 to T2 as an asciicast v2 "
                    "file (asciinema play, or the web log page), with the real timing of "
                    "the output; solgate's notes become markers. In a cluster the log "
                    "is every member's, in the order they owned the console.",
    )
    export.add_argument("name", metavar="NAME", help="console name")
    export.add_argument("--from", required=True, metavar="T1", help=TIME_HELP)
    export.add_argument("--to", default="now", metavar="T2", help="end (now)")
    export.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="the .cast file to write (- for stdout)")
    _add_screen_size(export)
    _add_local(export)
    add_data_dir(export)
    export.set_defaults(handler=run_export)

    grep = subparsers.add_parser(
        "grep", help="search every console's logs (rotated ones too), newest first",
        description="Print the lines matching PATTERN (a Python regular expression, "
                    "matched against the text without escape sequences) in the consoles' "
                    "logs, newest first, each with the time it was written. Exit status 1 "
                    "when nothing matched, 2 when a cluster member's logs could not be "
                    "searched (its name on stderr). In a cluster (-c with [cluster]) "
                    "every member's logs are searched and each hit names its member.",
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
    _add_local(grep)
    add_data_dir(grep)
    grep.set_defaults(handler=run_grep)
