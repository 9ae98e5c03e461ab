"""Listen addresses as an operator writes them ("127.0.0.1:8080", "[::1]:8080"), and
whether one is reachable from other machines.

The configuration, the web login and the command line read them alike; standard library
only, so a client command can use it without loading the configuration code.
"""

from __future__ import annotations

import ipaddress
import re

from solgate.units import toml_repr


def is_loopback(host: str) -> bool:
    """Whether a listen host only accepts connections from this machine ("[::1]" too)."""
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def join_host_port(host: str, port: int) -> str:
    """"HOST:PORT" as `split_listen` reads it: an IPv6 address goes in brackets
    ("[fe80::11%eth0]:623"), so the port cannot be taken for part of it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_listen(listen: str) -> tuple[str, int]:
    """(host, port) from "HOST:PORT" or "[IPv6]:PORT"; ValueError saying how to write it."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^\s:\[\]]+):(\d+)", listen.strip())
    port = int(m.group(2) or m.group(4)) if m else -1
    if not m or port > 65535:
        raise ValueError(f'{toml_repr(listen)} is not HOST:PORT; write it like '
                         '"127.0.0.1:8080", "0.0.0.0:8443" or "[::1]:8080"')
    return (m.group(1) or m.group(3)), port
