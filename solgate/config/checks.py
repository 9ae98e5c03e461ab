"""Checks shared by every table of `solgate.toml`: each turns one TOML value into what
solgate uses, or raises `Invalid` with the problem and the fix.

A table's own checks live with its table (`consoles.py`: cipher suites, privileges, K_g);
the table's module places the error on a line (`source.py`).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from solgate.units import duration_seconds, kind, size_bytes, toml_repr

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Invalid(Exception):
    """A value is wrong; `text` follows "key: " (or "key = value " when show_value)."""

    def __init__(self, text: str, *, show_value: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.show_value = show_value


def did_you_mean(word: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else ""


def want_str(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {kind(value)}")
    return value


def want_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {kind(value)}")
    return value


def want_int(lo: int, hi: int | None = None) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected an integer, got {kind(value)}")
        if value < lo or (hi is not None and value > hi):
            span = f"from {lo} to {hi}" if hi is not None else f"{lo} or more"
            raise Invalid(f"{value} is out of range; use a whole number {span}")
        return value
    return check


def want_str_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid(f'expected a list of strings, like ["a", "b"], got {kind(value)}')
    return tuple(value)


def want_duration(*, positive: bool = True) -> Callable[[object], float]:
    def check(value: object) -> float:
        try:
            seconds = duration_seconds(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if positive and seconds <= 0:
            raise Invalid(f"{toml_repr(value)} is too short; use a duration above zero")
        return seconds
    return check


def want_size(value: object) -> int:
    try:
        return size_bytes(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def want_secret_str(value: object) -> str:
    """A string that is a secret: a wrong type is named, the value never shown."""
    if not isinstance(value, str):
        what = kind(value).split(" (")[0]  # "a number", not "a number (1234)"
        raise Invalid(f'expected a string, got {what}; put the value in quotes, like "..."')
    return value


def want_env_name(value: object) -> str:
    name = want_str(value)
    if not _ENV_NAME.fullmatch(name):
        raise Invalid(f"{toml_repr(name)} is not an environment variable name; "
                       'use letters, digits and "_", like "SOLGATE_BMC_PASSWORD"')
    return name


def want_env_names(value: object) -> tuple[str, ...]:
    names = want_str_list(value)
    for name in names:
        want_env_name(name)
    return names


def want_nonempty_str(value: object) -> str:
    text = want_str(value)
    if not text:
        raise Invalid("is empty; give a value or remove the line")
    return text


def want_file(value: object, resolve: Callable[[str], Path]) -> Path:
    """An existing file, its path resolved by `resolve` (relative to the config file)."""
    path = resolve(want_nonempty_str(value))
    if not path.is_file():
        raise Invalid(f"{path} does not exist or is not a file; fix the path")
    return path


def want_url(value: object) -> str:
    url = want_str(value)
    if url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise Invalid(f"{toml_repr(value)} is not an http:// or https:// URL")
    return url


# Headers a proxy must never be trusted to set for a user: they carry other meanings.
_RESERVED_HEADERS = frozenset({
    "authorization", "cookie", "host", "origin", "content-type", "content-length",
    "connection", "upgrade", "x-csrf-token", "sec-fetch-site", "sec-websocket-key",
})


def want_header_name(value: object) -> str:
    name = want_nonempty_str(value).strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", name):
        raise Invalid(f"{toml_repr(value)} is not an HTTP header name; use letters, digits "
                      'and "-", e.g. "X-Remote-User"')
    if name.lower() in _RESERVED_HEADERS:
        raise Invalid(f"{name} has its own meaning in HTTP; use a header only the proxy "
                      'sets, e.g. "X-Remote-User"')
    return name


def want_networks(value: object) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    texts = want_str_list(value)
    if not texts:
        raise Invalid('the list is empty; name the proxy\'s address, e.g. ["127.0.0.1"]')
    nets = []
    for text in texts:
        try:
            nets.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise Invalid(f"{toml_repr(text)} is not an IP address or network; use e.g. "
                          '"10.0.0.5" or "10.0.0.0/24" (names are not resolved)') from None
    return tuple(nets)


def want_origins(value: object) -> tuple[str, ...]:
    """Browser origins, exactly as a browser sends them: scheme://host[:port]."""
    out = []
    for text in want_str_list(value):
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            parts = None
        if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
                or parts.path or parts.query or parts.fragment or parts.username):
            raise Invalid(f"{toml_repr(text)} is not an origin; write it as the browser "
                          'sends it, like "https://console.example.com" (scheme://host[:port], '
                          "no path)")
        out.append(text.lower())
    return tuple(out)
