"""Units and value checks for `solgate.toml`: each check turns one TOML value into what
solgate uses, or raises `Invalid` with the problem and the fix.

Kept apart from `solgate.config` (which walks the tables and places errors on lines) so
each module stays short; nothing outside the configuration code should need this one,
except through the names `solgate.config` re-exports.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from solgate.errors import ConfigError
from solgate.ipmi.codec import Privilege
from solgate.ipmi.crypto import CIPHER_SUITES, AuthAlgorithm

# Units, so defaults read like prose: `keepalive_interval = 20 * SECONDS`.
MILLISECONDS = 0.001
SECONDS = 1.0
MINUTES = 60 * SECONDS
HOURS = 60 * MINUTES
DAYS = 24 * HOURS
BYTES = 1
KB, MB, GB, TB = 1000, 1000**2, 1000**3, 1000**4
KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_USERNAME_BYTES = 16  # IPMI v2.0 user name field
MAX_PASSWORD_BYTES = 20  # IPMI v2.0 password (K_uid)
MAX_KG_BYTES = 20  # IPMI v2.0 BMC key (K_g)

# FreeIPMI workaround flag names (protocol digest section 8.1).
# BMC quirks, by FreeIPMI's flag names where one exists (ipmi-sol-protocol.md section 8).
WORKAROUNDS_ACTED_ON = (
    "authcap", "supermicro20", "sun20", "nochecksumcheck", "solpayloadsize", "solport",
    # solgate's own: send privilege 0 ("highest") in Open Session; skip Get Channel Auth Caps.
    "open_session_priv_highest", "skip_auth_caps",
)
# What these flags ask for is what solgate always does, so they are accepted and change
# nothing: explicit Open Session privilege, no Get Channel Payload Support, alerts
# deferred in Activate Payload, no activation-status probe, next SOL seq after a stall.
WORKAROUNDS_ALWAYS_ON = (
    "opensesspriv", "solchannelsupport", "serialalertsdeferred", "solstatus", "solpacketseq",
)
WORKAROUNDS = WORKAROUNDS_ACTED_ON + WORKAROUNDS_ALWAYS_ON
# Known quirks solgate cannot work around yet: refused, so nobody believes they are on.
WORKAROUNDS_NOT_IMPLEMENTED = ("intel20", "integritycheckvalue")

PRIVILEGES = {
    "administrator": Privilege.ADMINISTRATOR,
    "operator": Privilege.OPERATOR,
    "user": Privilege.USER,
}

# Extra panic patterns a console adds to the detector's built-in ones (kernel panic, Oops,
# BUG, lockups, hung tasks, OOM killer, machine checks: solgate/console/panic.py).
DEFAULT_PANIC_PATTERNS: tuple[str, ...] = ()

# --------------------------------------------------------------------------- units


_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)", re.IGNORECASE)
_DURATION = re.compile(r"(?:\s*(?:\d+(?:\.\d*)?|\.\d+)\s*(?:ms|s|m|h|d))+", re.IGNORECASE)
_DURATION_UNITS = {"ms": MILLISECONDS, "s": SECONDS, "m": MINUTES, "h": HOURS, "d": DAYS}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]i?b|b)?\s*", re.IGNORECASE)
_SIZE_UNITS = {
    "b": BYTES, "kb": KB, "mb": MB, "gb": GB, "tb": TB,
    "kib": KIB, "mib": MIB, "gib": GIB, "tib": TIB,
}
_DURATION_HELP = 'write a number with a unit, like "500ms", "20s", "5m" or "1h"'
_SIZE_HELP = 'write a number with a unit, like "64KiB", "50MB" or "1GiB"'


def duration_seconds(value: object) -> float:
    """Seconds from "500ms", "20s", "5m", "1h", "1h30m" or a number; ValueError if not."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration, got {kind(value)}; {_DURATION_HELP}")
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return float(text)
        if not _DURATION.fullmatch(text):
            raise ValueError(f"{toml_repr(value)} is not a duration; {_DURATION_HELP}")
        return sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in _DURATION_PART.findall(text))
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value} is not a duration; use a positive number of seconds")
    return seconds


def size_bytes(value: object) -> int:
    """Bytes from "50MB", "64KiB", "1.5GB" or an integer; ValueError if not."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a size, got {kind(value)}; {_SIZE_HELP}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is not a size; sizes cannot be negative")
        return value
    m = _SIZE.fullmatch(value)
    if not m:
        raise ValueError(f"{toml_repr(value)} is not a size; {_SIZE_HELP}")
    return int(round(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]))


def parse_duration(value: str | int | float) -> float:
    """Seconds from "500ms", "20s", "5m", "1h" (or "1h30m"); a bare number means seconds."""
    try:
        return duration_seconds(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def parse_size(value: str | int) -> int:
    """Bytes from "50MB" (decimal), "64KiB" (binary) or a plain integer."""
    try:
        return size_bytes(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


# --------------------------------------------------------------------------- value checks


class Invalid(Exception):
    """A value is wrong; `text` follows "key: " (or "key = value " when show_value)."""

    def __init__(self, text: str, *, show_value: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.show_value = show_value


def kind(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({toml_repr(value)})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({toml_repr(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def toml_repr(value: object) -> str:
    """Render a value the way it would be written in the file (for messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_repr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{...}"
    return str(value)


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


def want_mark(value: object) -> float | None:
    if value == "" or (not isinstance(value, bool) and value == 0):
        return None
    return want_duration()(value)


def want_size(value: object) -> int:
    try:
        return size_bytes(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def want_host(value: object) -> str:
    host = want_str(value).strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() for c in host):
        raise Invalid(f'{toml_repr(value)} is not a host; write a name or address, like "10.0.0.5"')
    return host


def want_username(value: object) -> str:
    name = want_str(value)
    if len(name.encode()) > MAX_USERNAME_BYTES:
        raise Invalid(f"is longer than {MAX_USERNAME_BYTES} bytes; IPMI user names are at "
                       f"most {MAX_USERNAME_BYTES} bytes")
    return name


def want_secret_str(value: object) -> str:
    """A string that is a secret: a wrong type is named, the value never shown."""
    if not isinstance(value, str):
        what = kind(value).split(" (")[0]  # "a number", not "a number (1234)"
        raise Invalid(f'expected a string, got {what}; put the value in quotes, like "..."')
    return value


def want_password(value: object) -> str:
    secret = want_secret_str(value)
    if not secret:
        raise Invalid('is empty; an empty source is an error: put the BMC password here, '
                      'or use password_env = "VAR" or password_file = "PATH"')
    if len(secret.encode()) > MAX_PASSWORD_BYTES:
        raise Invalid(f"is longer than {MAX_PASSWORD_BYTES} bytes; IPMI v2.0 passwords are "
                       f"at most {MAX_PASSWORD_BYTES} bytes")
    return secret


def want_env_name(value: object) -> str:
    name = want_str(value)
    if not _ENV_NAME.fullmatch(name):
        raise Invalid(f"{toml_repr(name)} is not an environment variable name; "
                       'use letters, digits and "_", like "SOLGATE_BMC_PASSWORD"')
    return name


def want_nonempty_str(value: object) -> str:
    text = want_str(value)
    if not text:
        raise Invalid("is empty; give a value or remove the line")
    return text


def want_kg(value: object) -> bytes:
    kg = want_secret_str(value).encode()
    if not kg:
        raise Invalid("is empty; remove the key when the BMC has no K_g")
    if len(kg) > MAX_KG_BYTES:
        raise Invalid(f"is longer than {MAX_KG_BYTES} bytes; K_g is at most {MAX_KG_BYTES} "
                       "bytes (use kg_hex for a binary key)")
    return kg


def want_kg_hex(value: object) -> bytes:
    text = want_secret_str(value).strip()
    text = text[2:] if text.lower().startswith("0x") else text
    try:
        kg = bytes.fromhex(text)
    except ValueError:
        raise Invalid("is not hexadecimal; write the key as hex digits, like "
                       '"0102030405060708090a0b0c0d0e0f1011121314"') from None
    if not kg:
        raise Invalid("is empty; remove the key when the BMC has no K_g")
    if len(kg) > MAX_KG_BYTES:
        raise Invalid(f"is {len(kg)} bytes; K_g is at most {MAX_KG_BYTES} bytes "
                       f"({2 * MAX_KG_BYTES} hex digits)")
    return kg


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


def want_suites(value: object) -> tuple[int, ...]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise Invalid(f"expected a non-empty list of cipher suite numbers, like [17, 3], "
                       f"got {kind(value)}")
    seen: set[int] = set()
    for suite in value:
        if suite not in CIPHER_SUITES:
            supported = ", ".join(str(s) for s in CIPHER_SUITES)
            raise Invalid(f"is not supported: solgate has no suite {suite}; use 17 or 3 "
                           f"(supported: {supported})", show_value=True)
        if suite in seen:
            raise Invalid(f"lists suite {suite} twice; list each suite once, in order of "
                           "preference", show_value=True)
        seen.add(suite)
    return tuple(value)


def want_privilege(value: object) -> Privilege:
    name = want_str(value).lower()
    if name not in PRIVILEGES:
        hint = did_you_mean(name, list(PRIVILEGES))
        raise Invalid(f"{toml_repr(value)} is not a privilege level; use "
                       f'"administrator", "operator" or "user"' + (f" ({hint})" if hint else ""))
    return PRIVILEGES[name]


def want_workarounds(value: object) -> frozenset[str]:
    names = want_str_list(value)
    for name in names:
        if name in WORKAROUNDS_NOT_IMPLEMENTED:
            raise Invalid(f"{toml_repr(name)} is a known BMC quirk that solgate does not work "
                          "around yet; remove it (and try cipher suite 3 or a firmware update)")
        if name not in WORKAROUNDS:
            hint = did_you_mean(name, WORKAROUNDS)
            raise Invalid(f"unknown workaround {toml_repr(name)}" + (f" ({hint})" if hint else "")
                           + "; valid names: " + ", ".join(WORKAROUNDS))
    return frozenset(names)


def want_patterns(value: object) -> tuple[str, ...]:
    patterns = want_str_list(value)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise Invalid(f"{toml_repr(pattern)} is not a valid regular expression ({exc}); "
                           "fix it (TOML literal strings in single quotes keep backslashes)"
                           ) from None
    return patterns


def want_command(value: object) -> tuple[str, ...]:
    argv = want_str_list(value)
    if argv and not argv[0]:
        raise Invalid('names no program; write it like ["/usr/local/bin/page-oncall", "--sev", '
                      '"high"] (run directly, no shell)')
    return argv


def want_env_names(value: object) -> tuple[str, ...]:
    names = want_str_list(value)
    for name in names:
        want_env_name(name)
    return names


def want_url(value: object) -> str:
    url = want_str(value)
    if url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise Invalid(f"{toml_repr(value)} is not an http:// or https:// URL")
    return url


def want_escape(value: object) -> str:
    char = want_str(value)
    if len(char) != 1 or char.isspace() or char.isalnum():
        raise Invalid(f"{toml_repr(value)} is not one punctuation character; use a single "
                       'character such as "~" or "&"')
    return char


# Keys of `[consoles.NAME]` and `[defaults]` and the check for each. Defaults live on
# `solgate.config.ConsoleConfig`, the one place they are written.
CONSOLE_KEYS: dict[str, Callable[[object], Any]] = {
    "host": want_host,
    "port": want_int(1, 65535),
    "username": want_username,
    "password": want_password,
    "password_file": want_nonempty_str,
    "password_env": want_env_name,
    "kg": want_kg,
    "kg_hex": want_kg_hex,
    "cipher_suites": want_suites,
    "privilege": want_privilege,
    "allow_insecure": want_bool,
    "workarounds": want_workarounds,
    "retransmit_timeout": want_duration(),
    "max_tries": want_int(1, 100),
    "keepalive_interval": want_duration(),
    "session_timeout": want_duration(),
    "steal": want_bool,
    "reconnect_max": want_duration(),
    "tags": want_str_list,
    "log_max": want_size,
    "log_keep": want_int(0, 1000),
    "log_timestamps": want_bool,
    "log_index": want_bool,
    "mark": want_mark,
    "panic_patterns": want_patterns,
    "on_panic_command": want_command,
    "on_panic_webhook": want_url,
    "on_panic_pass_env": want_env_names,
    "escape": want_escape,
}
PASSWORD_KEYS = ("password", "password_file", "password_env")
KG_KEYS = ("kg", "kg_hex")
SERVER_KEYS = ("listen", "auth", "tls_cert", "tls_key", "setup_concurrency",
               "proxy_user_header", "trusted_proxies", "client_idle_timeout",
               "allowed_origins", "max_connections", "max_connections_per_address",
               "request_timeout",
               "fleet_concurrency", "fleet_rate", "fleet_confirm_over")
# What each insecure suite lacks, for the refusal message.
INSECURE_SUITES = {
    sid: ("no authentication" if s.auth == AuthAlgorithm.NONE else "no integrity check")
    for sid, s in CIPHER_SUITES.items() if not s.secure
}


def is_loopback(host: str) -> bool:
    """Whether a listen host only accepts connections from this machine ("[::1]" too)."""
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_listen(listen: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^\s:\[\]]+):(\d+)", listen.strip())
    port = int(m.group(2) or m.group(4)) if m else -1
    if not m or port > 65535:
        raise Invalid(f'{toml_repr(listen)} is not HOST:PORT; write it like "127.0.0.1:8080", '
                       '"0.0.0.0:8443" or "[::1]:8080"')
    return (m.group(1) or m.group(3)), port
