"""The `solgate` command: one entry point, one subcommand per job.

Each subcommand lives with the code it drives and registers itself here through a
`register(subparsers)` function that sets `handler` on its parser. A handler takes the
parsed arguments and returns an exit code (or a coroutine that does). Any `SolgateError`
becomes one line on stderr and exit status 1; nothing prints a traceback for an
operator's mistake.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import sys
from collections.abc import Sequence

from solgate import __version__, logformat
from solgate.errors import SolgateError

# Modules that contribute subcommands, in the order `solgate --help` lists them.
SUBCOMMAND_MODULES = (
    "solgate.config_cli",
    "solgate.ipmi_cli",
    "solgate.sim.cli",
    "solgate.serve_cli",
    "solgate.web.cli",
    "solgate.terminal_cli",
    "solgate.forensics",
    "solgate.fleet_cli",
    "solgate.cluster.cli",
)

EXIT_ERROR = 1
EXIT_USAGE = 2


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
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
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


if __name__ == "__main__":
    sys.exit(main())
