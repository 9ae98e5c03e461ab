"""`solgate passwd` and `solgate token`: make the secrets `[users.NAME]` stores.

Both print a line to paste into solgate.toml; neither reads or writes the file, so
they need no privileges and leave the configuration under the operator's control.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from solgate.errors import ConfigError


def register(subparsers: Any) -> None:
    """Add `passwd` and `token` to the `solgate` command."""
    passwd = subparsers.add_parser(
        "passwd", help="hash a web login password for [users.NAME] password_hash",
        description="Prompts for a password twice and prints the password_hash line.",
    )
    passwd.add_argument("--stdin", action="store_true",
                        help="read the password from the first line of stdin (for scripts)")
    passwd.set_defaults(handler=run_passwd)
    token = subparsers.add_parser(
        "token", help="make a bearer token for scripts ([users.NAME] api_tokens)",
        description="Prints a new token (give it to the script) and its hash (for the config).",
    )
    token.set_defaults(handler=run_token)


def run_passwd(args: argparse.Namespace) -> int:
    # The hashing is imported here, as in every handler: each `solgate` command builds
    # this parser, and `solgate console` needs none of it.
    from solgate.users import hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New web password: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("the two passwords differ; nothing was printed")
    print(f'password_hash = "{hash_password(password)}"')
    return 0


def run_token(args: argparse.Namespace) -> int:
    from solgate.users import new_api_token

    token, digest = new_api_token()
    print(f"token (give to the script, shown once): {token}", file=sys.stderr)
    print(f'api_tokens = ["{digest}"]')
    return 0
