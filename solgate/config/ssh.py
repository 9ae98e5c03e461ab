"""The `[ssh]` table: where the ssh gateway listens and its host key (the users' keys
are in `[users.NAME]`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solgate.addresses import split_listen
from solgate.config.source import Source

SSH_KEYS = ("listen", "host_key")
DEFAULT_LISTEN = "127.0.0.1:2222"
HOST_KEY_NAME = "ssh_host_ed25519_key"


@dataclass(frozen=True, slots=True)
class SshConfig:
    """The `[ssh]` table, checked: the gateway is on."""

    listen: str
    host: str
    port: int
    host_key: Path  # generated there on first start when missing


def parse_ssh(src: Source, raw: Mapping[str, Any], data_dir: Path) -> SshConfig | None:
    """`[ssh]` as settings, or None when the gateway is off (no `listen`)."""
    where = ("ssh",)
    unknown = sorted(set(raw) - set(SSH_KEYS))
    if unknown:
        raise src.unknown(where, unknown[0], SSH_KEYS)
    listen = raw.get("listen")
    if listen is None:
        return None
    if not isinstance(listen, str):
        raise src.fail(where, "listen", f'listen must be a string like "{DEFAULT_LISTEN}"')
    try:
        host, port = split_listen(listen)
    except ValueError as exc:
        raise src.fail(where, "listen", f"listen: {exc}") from None
    host_key = raw.get("host_key")
    if host_key is None:
        key_path = data_dir / HOST_KEY_NAME
    elif isinstance(host_key, str) and host_key.strip():
        key_path = src.path(host_key)
    else:
        raise src.fail(where, "host_key", "host_key must be the path of a private key file")
    return SshConfig(listen=listen.strip(), host=host, port=port, host_key=key_path)
