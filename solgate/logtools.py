"""`solgate tail` and `solgate events`: read console logs and the events file from disk.

Both open the files under `data_dir` themselves and never ask the server, so they keep
working while `solgate serve` is stopped, restarting or wedged: exactly when an
operator wants the last lines a host printed before it died.

`tail -f` follows a log the way `tail -F` does. solgate rotates by rename
(`web01.log` -> `web01.log.1`, then a fresh `web01.log`), so the follower keeps reading
the renamed file to its end and then switches to the new one, noticed by its inode
changing; a file that shrinks under the same name (an external copy-and-truncate) is
read again from the start. `LogFollower.poll()` does one such step without sleeping,
so the rotation logic is tested without a clock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from solgate.config import Config
from solgate.config_cli import add_config_argument, config_from_args
from solgate.config_values import duration_seconds
from solgate.console.events import filter_records as filter_events
from solgate.console.log import iter_log_files, lines_backwards, read_tail
from solgate.errors import ConfigError

__all__ = [
    "LogFollower",
    "filter_events",
    "format_event",
    "log_path",
    "parse_since",
    "run_events",
    "run_tail",
]

FOLLOW_INTERVAL = 0.25  # seconds between polls of a followed log
DEFAULT_TAIL_LINES = 10
DEFAULT_EVENTS = 50


# --- locating files ------------------------------------------------------------------------


def _data_dir(args: argparse.Namespace) -> tuple[Path, Config | None]:
    """`--data-dir` if given (no configuration needed), else the configuration's data_dir."""
    explicit = getattr(args, "data_dir", None)
    if explicit:
        return Path(explicit), None
    config = config_from_args(args)
    return Path(config.data_dir), config


def log_path(data_dir: Path, name: str) -> Path:
    """`<data_dir>/logs/<name>.log`; refuses names that would leave the logs directory."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise ConfigError(f"{name!r} is not a console name; give the name as in "
                          "[consoles.NAME]")
    return data_dir / "logs" / f"{name}.log"


def _console_log(args: argparse.Namespace, *, must_exist: bool = True) -> Path:
    data_dir, config = _data_dir(args)
    path = log_path(data_dir, args.name)
    if must_exist and not iter_log_files(path):
        known = config is not None and args.name in config.consoles
        why = ("it has logged nothing yet" if known
               else f"no console named {args.name!r} in the configuration")
        raise ConfigError(f"no log for console {args.name!r} at {path} ({why}); check the "
                          "name, or -c/--data-dir")
    return path


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


def _write_out(out: IO[bytes], data: bytes) -> None:
    if data:
        out.write(data)
        out.flush()


def run_tail(args: argparse.Namespace) -> int:
    """`solgate tail NAME [-n N] [-f]`: the raw end of a console log, optionally followed."""
    # A followed log may not exist yet (a console just added): wait for it to appear.
    data_dir, config = _data_dir(args)
    clustered = (config is not None and config.cluster is not None
                 and bool(config.cluster.member_secret) and not args.local)
    if clustered and config is not None and args.name not in config.consoles:
        raise ConfigError(f"no console named {args.name!r} in the configuration; check "
                          "the name")
    path = (log_path(data_dir, args.name) if clustered
            else _console_log(args, must_exist=not args.follow))
    out = sys.stdout.buffer
    try:
        with LogFollower(path, from_end=True) as follower:
            head = b"".join(read_tail(path, args.lines))
            if clustered and config is not None:  # the history from every member
                from solgate.cluster.cli import cluster_tail

                head = cluster_tail(config, args.name, head, args.lines)
                if args.follow:
                    print(f"solgate: following what this member logs for {args.name}; "
                          "when another member runs it, follow there", file=sys.stderr)
            _write_out(out, head)
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


# --- events --------------------------------------------------------------------------------


def parse_since(text: str, *, now: float | None = None) -> float:
    """Epoch seconds from "1h" / "30m" / "2d" (that long ago) or an ISO time."""
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


def _kinds(values: list[str] | None) -> frozenset[str]:
    return frozenset(k.strip() for v in values or () for k in v.split(",") if k.strip())


def _event_lines(path: Path) -> Iterator[bytes]:
    try:
        yield from lines_backwards(path)
    except FileNotFoundError:
        return


def run_events(args: argparse.Namespace) -> int:
    """`solgate events`: recent records of events.jsonl, filtered."""
    data_dir, _ = _data_dir(args)
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


# --- argparse ------------------------------------------------------------------------------


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--data-dir", metavar="DIR",
                        help="read this data directory instead of the configuration's data_dir")


def register(subparsers: Any) -> None:
    """Add `tail` and `events` (called from `solgate.terminal_cli`)."""
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
                           "history from every member, with [cluster] member_secret_*)")
    _add_data_dir(tail)
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
    _add_data_dir(events)
    events.set_defaults(handler=run_events)
