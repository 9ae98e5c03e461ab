"""`solgate console`: this terminal on a console, through a running server's WebSocket API.

The client is `solgate.terminal`; it needs neither the server nor the configuration
modules (`[server] listen` is read with tomllib when --server is not given), so the
command starts quickly, which an sshd ForceCommand notices on every login.
"""

from __future__ import annotations

import argparse
from typing import Any

from solgate.cli.config import add_config_argument
from solgate.terminal import (
    DEFAULT_RETRIES,
    DEFAULT_TOKEN_FILE,
    TOKEN_ENV,
    URL_ENV,
    run_console,
)


def register(subparsers: Any) -> None:
    """Add `console` to the `solgate` command."""
    console = subparsers.add_parser(
        "console",
        help="attach this terminal to a console (through a running solgate server)",
        description="Attach the terminal to console NAME through the server's WebSocket "
                    "API. ~. leaves, ~B sends a serial BREAK, ~w takes the write lock, "
                    "~D forces the BMC to drop SOL and reconnect, ~? lists them. The API "
                    f"token comes from ${TOKEN_ENV} or --token-file, never the command "
                    f"line. As an sshd ForceCommand, $SSH_ORIGINAL_COMMAND names the console.",
    )
    console.add_argument("name", metavar="NAME", nargs="?",
                         help="console name (else taken from $SSH_ORIGINAL_COMMAND)")
    console.add_argument("--server", metavar="URL",
                         help=f"server address, e.g. https://solgate.example:8443 (default: "
                              f"${URL_ENV}, else the configuration's [server] listen)")
    console.add_argument("--escape", metavar="CHAR",
                         help="escape character instead of the server's (~); 'none' turns "
                              "escapes off")
    console.add_argument("--read-only", action="store_true",
                         help="watch only: never send a keystroke")
    console.add_argument("--force", action="store_true",
                         help="take the write lock on connect")
    console.add_argument("--token-file", metavar="FILE",
                         help=f"file holding the API token (default {DEFAULT_TOKEN_FILE})")
    # Hidden, and only to refuse: without it argparse would take `--token VALUE` as an
    # abbreviation of --token-file and print VALUE back in "no such file".
    console.add_argument("--token", dest="token_argument", nargs="?", const="",
                         help=argparse.SUPPRESS)
    console.add_argument("--retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                         help=f"reconnect attempts after a lost connection ({DEFAULT_RETRIES})")
    add_config_argument(console)
    console.set_defaults(handler=run_console)
