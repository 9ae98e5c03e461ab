"""The `solgate` command: one entry point, one module per command group.

Each module of this package adds its subcommands with a `register(subparsers)` function
that sets `handler` on its parser; `build_parser` calls them in the order `solgate
--help` lists them. A handler takes the parsed arguments and returns an exit code (or a
coroutine that does). Any `SolgateError` becomes one line on stderr and exit status 1;
nothing prints a traceback for an operator's mistake.

Every command builds the whole parser, so these modules import only what the parsers
need; the work (the daemon, the configuration, the IPMI client, the simulator) is
imported inside the command functions. `solgate console`, which an sshd ForceCommand
runs at every login, thus starts without the server, crypto or configuration modules
(tests/test_cli_startup.py holds it to that).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import sys
from collections.abc import Sequence

from solgate import __version__, logformat
from solgate.cli import (
    cluster,
    config,
    console,
    demo,
    fleet,
    forensics,
    ipmi,
    logs,
    serve,
    sim,
    web,
)
from solgate.errors import SolgateError

EXIT_ERROR = 1
EXIT_USAGE = 2

# The subcommands' registrations, in the order `solgate --help` lists them.
REGISTRATIONS = (
    config.register,          # check-config
    ipmi.register,            # power, info, deactivate
    sim.register,             # sim
    serve.register,           # serve
    demo.register,            # demo
    serve.register_reload,    # reload
    web.register,             # passwd, token
    console.register,         # console
    logs.register,            # tail, events
    forensics.register,       # screen, export, grep
    fleet.register,           # do
    cluster.register,         # cluster status|drain|undrain|log
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solgate",
        description=(
            "A Serial-over-LAN console server: keeps an IPMI v2.0 SOL session open to "
            "every configured BMC, logs every byte, and shares each console."
        ),
    )
    parser.add_argument("--version", action="version", version=f"solgate {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="more log output (-v info, -vv debug); secrets are never logged",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in REGISTRATIONS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logformat.configure(level)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        result = handler(args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except SolgateError as exc:
        print(f"solgate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
