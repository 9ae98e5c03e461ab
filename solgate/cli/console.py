"""`solgate console`: this terminal on a console, through a running server's WebSocket API.

The client is `solgate.terminal`; it needs neither the server nor the configuration
modules (`[server] listen` is read with tomllib when --server is not given), so the
command starts quickly, which an sshd ForceCommand notices on every login.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from solgate.cli.config import add_config_argument, listen_from_config
from solgate.errors import ConfigError
from solgate.terminal import (
    DEFAULT_RETRIES,
    DEFAULT_TOKEN_FILE,
    SSH_COMMAND_ENV,
    TOKEN_ENV,
    URL_ENV,
    ClientOptions,
    ConsoleClient,
    console_from_ssh_command,
    read_token,
    resolve_server_url,
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


def options_from_args(args: argparse.Namespace,
                      environ: Mapping[str, str] | None = None) -> ClientOptions:
    """The client's options from the arguments, $SOLGATE_URL/$SOLGATE_TOKEN and, as an
    sshd ForceCommand, $SSH_ORIGINAL_COMMAND; `[server] listen` only without a URL."""
    environ = os.environ if environ is None else environ
    if getattr(args, "token_argument", None) is not None:
        raise ConfigError(f"--token is not accepted: a token on the command line is visible "
                          f"to every user of this machine; set ${TOKEN_ENV} or use "
                          "--token-file FILE")
    name, flags = console_from_ssh_command(args.name, environ.get(SSH_COMMAND_ENV))
    explicit_url = args.server or environ.get(URL_ENV)
    server = resolve_server_url(explicit_url, environ,
                                None if explicit_url else listen_from_config(args))
    escape = args.escape
    no_escape = escape is not None and escape.lower() == "none"
    if escape is not None and not no_escape:
        if len(escape.encode()) != 1 or escape.isalnum() or escape.isspace():
            raise ConfigError(f"--escape {escape!r}: give one punctuation character such as "
                              "~ or &, or none")
    if args.retries < 0:
        raise ConfigError("--retries: give 0 or more")

    def warn(text: str) -> None:
        print(f"solgate: {text}", file=sys.stderr)

    return ClientOptions(
        name=name, server=server, token=read_token(args.token_file, environ, warn),
        escape=None if no_escape else escape, no_escape=no_escape,
        read_only=args.read_only or "read_only" in flags,
        force=args.force or "force" in flags, retries=args.retries,
    )


async def run_console(args: argparse.Namespace) -> int:
    """`solgate console`: attach until the user leaves (or the retries run out)."""
    options = options_from_args(args)
    return await ConsoleClient(options).run()
