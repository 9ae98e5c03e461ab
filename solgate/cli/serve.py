"""`solgate serve` and `solgate reload`: start the daemon, and ask a running one to reload.

The daemon itself (signals, reload, pid file, shutdown) is `solgate.daemon.run_server`;
here are the arguments, the event loop it runs on, and the ready line.

`serve` and `demo` run on uvloop when it is installed (`pip install 'solgate[fast]'`):
the event loop and its UDP and TCP transports in C take about a third off the CPU each
console byte costs. `--event-loop asyncio` (or `SOLGATE_EVENT_LOOP=asyncio`) keeps the
standard loop; the ready line says which one runs.

Every `solgate` command builds its parser through this module, so the server (aiohttp's
web side, the engine, the configuration) is imported inside the command functions only:
`solgate console` starts without it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import logging
import os
import signal
import sys
import time
import tomllib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from solgate.cli.config import add_config_argument
from solgate.errors import ConfigError

if TYPE_CHECKING:
    from solgate.config import Config
    from solgate.console.manager import ConsoleManager

logger = logging.getLogger("solgate.serve")
RELOAD_WAIT = 30.0  # how long `solgate reload` waits for the server's verdict
# The cyclic garbage collector's thresholds for `solgate serve` (Python's are 700, 10,
# 10). Starting or taking over thousands of consoles creates long-lived objects by the
# million; with the defaults the collector ran 11 full collections in one 5,000-console
# takeover, 2.3 s of its 9.2 s of CPU; with these it spent 0.3 s (docs/benchmarks.md,
# "Cluster failover"). Garbage without cycles is freed at once either way; cycles wait
# for at most 50,000 new objects.
GC_THRESHOLDS = (50_000, 20, 10)
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
EVENT_LOOP_ENV = "SOLGATE_EVENT_LOOP"
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def add_event_loop_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default=None,
                        help="uvloop when installed (auto, the default, or $"
                             f"{EVENT_LOOP_ENV}), or the standard asyncio loop")


def register(subparsers: Any) -> None:
    """Add `serve` to the `solgate` command."""
    serve = subparsers.add_parser(
        "serve",
        help="run the console server: SOL sessions, logs and the web console",
        description="Keep a SOL session open to every console in the configuration, log "
                    "all output under data_dir, and serve the web console. SIGHUP (or "
                    "`solgate reload`) re-reads the configuration; SIGTERM stops cleanly, "
                    "deactivating every SOL payload.",
    )
    add_config_argument(serve)
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="web server address (overrides [server] listen)")
    serve.add_argument("--no-web", action="store_true",
                       help="run consoles and logs only, without the web server")
    add_event_loop_argument(serve)
    serve.set_defaults(handler=_serve_command)


def register_reload(subparsers: Any) -> None:
    """Add `reload` to the `solgate` command."""
    reload_ = subparsers.add_parser(
        "reload",
        help="tell a running `solgate serve` to re-read its configuration (SIGHUP)",
        description="Signal the `solgate serve` whose pid file is in data_dir (read from "
                    "the configuration file; nothing else in it is loaded here, so the BMC "
                    "secrets need not be in this shell) and print its verdict: what the "
                    "reload changed, or why it was refused.",
    )
    add_config_argument(reload_)
    reload_.set_defaults(handler=_reload_command)


# --- the event loop ----------------------------------------------------------------------------


def event_loop_choice(flag: str | None) -> tuple[LoopFactory | None, str]:
    """The loop factory for `flag` (or $SOLGATE_EVENT_LOOP, or "auto") and its name.

    A None factory is asyncio's own loop. "auto" takes uvloop when it imports; asking for
    "uvloop" without it installed is a configuration error that says how to install it.
    """
    choice = flag or os.environ.get(EVENT_LOOP_ENV, "").strip().lower() or "auto"
    if choice not in EVENT_LOOPS:
        raise ConfigError(f"{EVENT_LOOP_ENV}={choice!r}: use one of {', '.join(EVENT_LOOPS)}")
    if choice == "asyncio":
        return None, "asyncio"
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("the uvloop event loop was asked for but is not installed; "
                              "pip install 'solgate[fast]', or use --event-loop asyncio"
                              ) from None
        logger.info("uvloop is not installed (pip install 'solgate[fast]'): "
                    "running on asyncio's own event loop")
        return None, "asyncio"
    factory: LoopFactory = uvloop.new_event_loop
    return factory, f"uvloop {getattr(uvloop, '__version__', '')}".strip()


def run_on_event_loop(flag: str | None,
                      main: Callable[[str], Coroutine[Any, Any, int]]) -> int:
    """Run `main(loop_name)` to completion on the chosen event loop."""
    factory, name = event_loop_choice(flag)
    logger.info("event loop: %s", name)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main(name))


# --- the commands -----------------------------------------------------------------------------


def _serve_command(args: argparse.Namespace) -> int:
    gc.set_threshold(*GC_THRESHOLDS)
    return run_on_event_loop(args.event_loop, lambda loop: _serve(args, loop))


async def _serve(args: argparse.Namespace, loop_name: str) -> int:
    from solgate.config import default_config_path, load_config
    from solgate.daemon import run_server
    from solgate.ipmi.crypto import packet_path

    path = default_config_path(args.config)
    config = load_config(path)
    if args.listen:
        config = config.with_server(listen=args.listen)

    def reload_config() -> Config:
        fresh = load_config(path)
        return fresh.with_server(listen=args.listen) if args.listen else fresh

    def ready(manager: ConsoleManager, url: str | None, ssh: str | None) -> None:
        where = f"; web console on {url}" if url else ""
        where += f"; ssh gateway on {ssh}" if ssh else ""
        serving = f"serving {len(config.consoles)} consoles"
        if config.cluster is not None:  # placement goes on after this line: M grows
            serving = (f"member {config.cluster.name} of the cluster, owns "
                       f"{len(manager.consoles())} of {len(config.consoles)} consoles")
        print(f"solgate: {serving} from {path}{where} "
              f"(event loop: {loop_name}; packet path: {packet_path()})", file=sys.stderr,
              flush=True)

    return await run_server(config, web_enabled=not args.no_web,
                            reload_config=reload_config, on_ready=ready)


def data_dir_of(path: Path) -> Path:
    """`data_dir` of a configuration file, reading nothing else: a shell that signals the
    server need not hold the BMC secrets the rest of the file refers to."""
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file; pass the -c that solgate "
                          "serve runs with") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); fix it, or send solgate serve "
                          "SIGHUP yourself") from None
    base = path.parent.absolute()
    value = data.get("data_dir")
    if isinstance(value, str) and value.strip():
        return base / Path(value).expanduser()
    return base / "data"


def _reload_command(args: argparse.Namespace) -> int:
    from solgate.config import default_config_path  # reads no file; see data_dir_of
    from solgate.daemon import PID_FILE, RELOAD_STATUS_FILE

    data_dir = data_dir_of(default_config_path(args.config))
    pid_path = data_dir / PID_FILE
    try:
        pid = int(pid_path.read_text().strip())
    except FileNotFoundError:
        raise ConfigError(f"no running solgate serve found ({pid_path} is missing); start it "
                          "with `solgate serve`, or pass the -c it runs with") from None
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "no pid in it"
        raise ConfigError(f"cannot read {pid_path} ({why}); is solgate serve running with "
                          "this data_dir? Send it SIGHUP yourself to reload") from None
    sent = time.time()
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ConfigError(f"solgate serve (pid {pid} in {pid_path}) is not running; start it "
                          "with `solgate serve` (the pid file is left from an earlier run)"
                          ) from None
    except PermissionError:
        raise ConfigError(f"pid {pid} in {pid_path} belongs to another user; run "
                          "`solgate reload` as the user solgate serve runs as") from None
    return _await_verdict(data_dir / RELOAD_STATUS_FILE, pid, sent)


def _await_verdict(path: Path, pid: int, sent: float, wait: float = RELOAD_WAIT) -> int:
    """Wait for the server's verdict on the reload asked for at `sent`; print it."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = None
        if (isinstance(record, dict) and record.get("pid") == pid
                and isinstance(record.get("at"), int | float) and record["at"] >= sent):
            message = str(record.get("message", ""))
            if record.get("ok"):
                print(f"solgate: pid {pid}: {message}")
                return 0
            raise ConfigError(f"solgate serve (pid {pid}): {message}")
        time.sleep(0.1)
    raise ConfigError(f"sent SIGHUP to pid {pid} but it gave no verdict in {path} within "
                      f"{wait:.0f} s; see its log for how the reload went")
