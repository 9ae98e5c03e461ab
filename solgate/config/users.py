"""The `[users.NAME]` tables: who may log in, with what role, to which consoles.

What a role allows, and how passwords and tokens are hashed, is `solgate.users`; this
module only reads the tables into its `User`s. The ssh keys are kept as written (key
lines, a file path): `solgate.ssh` turns them into keys, so loading the configuration
needs no ssh library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from solgate.config.source import Source, detached
from solgate.units import toml_repr
from solgate.users import Role, User, is_password_hash

USER_KEYS = frozenset({"password_hash", "role", "consoles", "tags", "api_tokens",
                       "ssh_keys", "authorized_keys"})

# User names appear in pages, logs, events and ssh logins: printable, one line, no markup.
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


def parse_users(raw: Mapping[str, Any], src: Source | None = None) -> dict[str, User]:
    """Turn the `[users.NAME]` tables into `User`s, in the file's order; errors name the
    table and the fix (and the line, given the file's `src`)."""
    src = src or detached()
    return {name: _user(src, name, table) for name, table in raw.items()}


def _user(src: Source, name: str, table: object) -> User:
    where = ("users", name)
    if not _USER_NAME.fullmatch(name):
        raise src.fail(("users",), name, f"{_shown_name(name)} cannot be a user name; use up "
                       "to 64 letters, digits, '.', '_', '@', '+' and '-', starting with a "
                       "letter or digit")
    if not isinstance(table, Mapping):
        raise src.fail(where, None, "must be a table with password_hash and role")
    unknown = sorted(set(table) - USER_KEYS)
    if unknown:
        raise src.unknown(where, unknown[0], sorted(USER_KEYS))
    role_text = table.get("role", "viewer")
    try:
        role = Role[str(role_text).upper()]
    except KeyError:
        raise src.fail(where, "role", f"role = {toml_repr(role_text)} is unknown; use viewer, "
                       "operator or admin") from None
    password_hash = table.get("password_hash") or ""
    if password_hash and not is_password_hash(password_hash):
        raise src.fail(where, "password_hash", "password_hash is not a solgate scrypt hash; "
                       "create one with `solgate passwd`")

    def str_list(key: str, default: list[str] | None) -> tuple[str, ...]:
        value = table.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise src.fail(where, key, f'{key} must be a list of strings, like ["web*"]')
        return tuple(value)

    tokens = str_list("api_tokens", [])
    if not all(token.startswith("sha256$") for token in tokens):
        raise src.fail(where, "api_tokens",
                       'api_tokens holds hashes ("sha256$..."), never tokens')
    consoles = None if table.get("consoles") is None else str_list("consoles", None)
    tags = str_list("tags", [])
    ssh_keys = table.get("ssh_keys", [])
    if not isinstance(ssh_keys, list) or not all(isinstance(k, str) for k in ssh_keys):
        raise src.fail(where, "ssh_keys", "ssh_keys must be a list of public key lines, "
                       'like ["ssh-ed25519 AAAA... alice@laptop"]')
    return User(name=name, role=role, password_hash=password_hash, consoles=consoles,
                tags=tags, api_token_hashes=frozenset(tokens), ssh_keys=tuple(ssh_keys),
                authorized_keys=_authorized_keys(src, where, table.get("authorized_keys")))


def _authorized_keys(src: Source, where: tuple[str, ...], value: object) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise src.fail(where, "authorized_keys", "authorized_keys must be the path of a file")
    return src.path(value)


def _shown_name(name: str) -> str:
    """A refused name as one safe line: control characters escaped, long names cut."""
    shown = repr(name[:80])
    return shown[:-1] + "...'" if len(name) > 80 else shown
