"""`solgate tail` and `solgate events`: console logs and the events file, from disk.

Both read the files under `data_dir` themselves (`solgate.logtools`) and never ask the
server, so they keep working while `solgate serve` is stopped, restarting or wedged.
On a cluster member with a member secret, `solgate tail` shows the console's history
from every member and `-f` follows it wherever it runs (`solgate.cluster.follow`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from solgate.cli.config import add_config_argument, config_from_args
from solgate.errors import ConfigError

if TYPE_CHECKING:
    from solgate.config import Config

DEFAULT_TAIL_LINES = 10
DEFAULT_EVENTS = 50


def data_dir_from_args(args: argparse.Namespace) -> tuple[Path, Config | None]:
    """`--data-dir` if given (no configuration needed), else the configuration's data_dir."""
    explicit = getattr(args, "data_dir", None)
    if explicit:
        return Path(explicit), None
    config = config_from_args(args)
    return Path(config.data_dir), config


def _console_log(args: argparse.Namespace, *, must_exist: bool = True) -> Path:
    from solgate.console.logread import iter_log_files
    from solgate.logtools import log_path

    data_dir, config = data_dir_from_args(args)
    path = log_path(data_dir, args.name)
    if must_exist and not iter_log_files(path):
        known = config is not None and args.name in config.consoles
        why = ("it has logged nothing yet" if known
               else f"no console named {args.name!r} in the configuration")
        raise ConfigError(f"no log for console {args.name!r} at {path} ({why}); check the "
                          "name, or -c/--data-dir")
    return path


def _write_out(out: IO[bytes], data: bytes) -> None:
    if data:
        out.write(data)
        out.flush()



def _cluster_tail(args: argparse.Namespace, config: Config, out: IO[bytes]) -> bool:
    """The console's history from every member, followed to whichever member runs it
    (`solgate.cluster.follow`); False when etcd cannot say (then this member's log)."""
    from solgate.cluster.etcd import EtcdError
    from solgate.cluster.follow import follow_history

    def warn(text: str) -> None:
        print(f"solgate: {text}", file=sys.stderr, flush=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            follow_history(config, args.name, args.lines, follow=args.follow,
                           write=lambda data: _write_out(out, data), warn=warn)
    except (EtcdError, OSError, TimeoutError) as exc:
        warn(f"cannot ask etcd who runs {args.name} ({exc}); showing only what this member "
             "logged")
        return False
    return True


def run_tail(args: argparse.Namespace) -> int:
    """`solgate tail NAME [-n N] [-f]`: the raw end of a console log, optionally followed."""
    # The readers are imported here, not at the top: every `solgate` command parses its
    # arguments through this module, and `solgate console` should not load them.
    from solgate.logtools import FOLLOW_INTERVAL, LogFollower

    # A followed log may not exist yet (a console just added): wait for it to appear.
    data_dir, config = data_dir_from_args(args)
    clustered = (config is not None and config.cluster is not None
                 and bool(config.cluster.member_secret) and not args.local)
    if clustered and config is not None and args.name not in config.consoles:
        raise ConfigError(f"no console named {args.name!r} in the configuration; check "
                          "the name")
    out = sys.stdout.buffer
    try:
        if clustered and config is not None and _cluster_tail(args, config, out):
            return 0
        path = _console_log(args, must_exist=not args.follow)
        with LogFollower(path, from_end=True) as follower:
            _write_out(out, follower.before(args.lines, max_bytes=1 << 30)
                       if args.lines > 0 else b"")
            if not args.follow:
                return 0
            while True:
                _write_out(out, follower.poll())
                time.sleep(FOLLOW_INTERVAL)
    except BrokenPipeError:
        # `solgate tail -f web01 | head`: the reader left, which is not an error.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0


def _kinds(values: list[str] | None) -> frozenset[str]:
    return frozenset(k.strip() for v in values or () for k in v.split(",") if k.strip())


def _event_lines(path: Path) -> Iterator[bytes]:
    from solgate.console.logread import lines_backwards

    try:
        yield from lines_backwards(path)
    except FileNotFoundError:
        return


def run_events(args: argparse.Namespace) -> int:
    """`solgate events`: recent records of events.jsonl, filtered."""
    from solgate.logtools import filter_events, format_event, parse_since  # as in run_tail

    data_dir, _ = data_dir_from_args(args)
    if args.bundle:
        from solgate.console.bundle import format_bundle, read_bundle

        bundle = read_bundle(data_dir, args.bundle)
        print(json.dumps(bundle, ensure_ascii=False, indent=1) if args.json
              else format_bundle(bundle))
        return 0
    path = data_dir / "events.jsonl"
    if not path.exists():
        raise ConfigError(f"no events file at {path}; solgate serve writes it there once a "
                          "console has done something (check -c/--data-dir)")
    since = parse_since(args.since) if args.since else None
    records = filter_events(_event_lines(path), since=since, console=args.console,
                            kinds=_kinds(args.kind), limit=args.lines or None)
    try:
        for record in records:
            if args.json:
                print(json.dumps(record, ensure_ascii=False))
            else:
                print(format_event(record))
        sys.stdout.flush()
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--data-dir", metavar="DIR",
                        help="read this data directory instead of the configuration's data_dir")


def register(subparsers: Any) -> None:
    """Add `tail` and `events` to the `solgate` command."""
    tail = subparsers.add_parser(
        "tail", help="print (and follow) a console's log from disk; works with the server down",
        description="Print the last lines of <data_dir>/logs/NAME.log (across rotated "
                    "files) as raw bytes. With -f, keep printing what is appended, across "
                    "rotations, until Ctrl-C.",
    )
    tail.add_argument("name", metavar="NAME", help="console name")
    tail.add_argument("-n", "--lines", type=int, default=DEFAULT_TAIL_LINES, metavar="N",
                      help=f"how many lines to print first ({DEFAULT_TAIL_LINES})")
    tail.add_argument("-f", "--follow", action="store_true",
                      help="keep following the log, like tail -F")
    tail.add_argument("--local", action="store_true",
                      help="in a cluster, only this member's log (default: the console's "
                           "history from every member, and -f follows it to whichever "
                           "member runs it, with [cluster] member_secret_*)")
    add_data_dir(tail)
    tail.set_defaults(handler=run_tail)

    events = subparsers.add_parser(
        "events", help="list recent console events (panics, SOL up/down, attach, break...)",
        description="Read <data_dir>/events.jsonl directly, newest last.",
    )
    events.add_argument("--console", metavar="NAME", help="only this console")
    events.add_argument("--since", metavar="WHEN",
                        help="only events after this: a duration ago (1h, 30m, 2d) or a time")
    events.add_argument("--kind", action="append", metavar="KIND",
                        help="only these kinds (panic, sol-up, sol-down, stolen, attach, "
                             "detach, break, deactivate, power, ...); repeat or use commas")
    events.add_argument("-n", "--lines", type=int, default=DEFAULT_EVENTS, metavar="N",
                        help=f"at most N events, the newest ({DEFAULT_EVENTS}; 0 = all)")
    events.add_argument("--json", action="store_true",
                        help="print each record as a JSON line (for jq)")
    events.add_argument("--bundle", metavar="ID",
                        help="print the panic bundle ID (a panic event's bundle field): the "
                             "BMC's event log entries, chassis status, screen and log lines")
    add_data_dir(events)
    events.set_defaults(handler=run_events)
