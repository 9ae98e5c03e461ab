"""The `[defaults]` and `[consoles.NAME]` tables: each console's BMC, how to log in, and
how its output is kept.

Each console is `[defaults]` overlaid by its own table; the console wins, and a password
or K_g source in the console replaces every source of [defaults]. Secrets are resolved at
load time (`password_env`, `password_file`), so a missing secret is found by
`solgate check-config`, not at three in the morning.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from solgate.config.checks import (
    Invalid,
    did_you_mean,
    want_bool,
    want_duration,
    want_env_name,
    want_env_names,
    want_int,
    want_nonempty_str,
    want_secret_str,
    want_size,
    want_str,
    want_str_list,
    want_url,
)
from solgate.config.source import Source, table_name
from solgate.errors import ConfigError
from solgate.ipmi.codec import Privilege
from solgate.ipmi.crypto import CIPHER_SUITES, AuthAlgorithm
from solgate.ipmi.target import DEFAULT_CIPHER_SUITES, BmcTarget
from solgate.units import MB, SECONDS, kind, toml_repr

MAX_USERNAME_BYTES = 16  # IPMI v2.0 user name field
MAX_PASSWORD_BYTES = 20  # IPMI v2.0 password (K_uid)
MAX_KG_BYTES = 20  # IPMI v2.0 BMC key (K_g)

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

# What each insecure suite lacks, for the refusal message.
INSECURE_SUITES = {
    sid: ("no authentication" if s.auth == AuthAlgorithm.NONE else "no integrity check")
    for sid, s in CIPHER_SUITES.items() if not s.secure
}

_CONSOLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """One console: its BMC, how to log in, and how its output is kept.

    `password` and `kg` are secrets: they are left out of repr() and must never be logged.
    """

    name: str
    host: str
    port: int = 623
    username: str = ""
    password: bytes = field(default=b"", repr=False)
    password_source: str = ""  # where the password came from, e.g. "env SOLGATE_BMC_PASSWORD"
    kg: bytes | None = field(default=None, repr=False)
    cipher_suites: tuple[int, ...] = DEFAULT_CIPHER_SUITES
    privilege: Privilege = Privilege.ADMINISTRATOR
    allow_insecure: bool = False
    workarounds: frozenset[str] = frozenset()
    retransmit_timeout: float = 1 * SECONDS
    max_tries: int = 4
    keepalive_interval: float = 20 * SECONDS
    session_timeout: float = 60 * SECONDS
    steal: bool = True
    reconnect_max: float = 60 * SECONDS
    tags: tuple[str, ...] = ()
    log_max: int = 50 * MB
    log_keep: int = 5
    log_timestamps: bool = False
    log_index: bool = True  # the <name>.log.idx time index beside each log file
    mark: float | None = None  # seconds between "-- MARK --" lines; None = off
    panic_patterns: tuple[str, ...] = DEFAULT_PANIC_PATTERNS  # extra, beside the built-in ones
    on_panic_command: tuple[str, ...] = ()  # argv run (no shell) with the event JSON on stdin
    on_panic_webhook: str = ""  # URL that gets the event JSON in a POST
    # Variables of solgate's environment on_panic_command also gets (it gets no others
    # but PATH, HOME, locale and TZ, so BMC passwords in password_env stay out of it).
    on_panic_pass_env: tuple[str, ...] = ()
    escape: str = "~"

    def target(self) -> BmcTarget:
        """What the IPMI layer needs to reach this console's BMC."""
        return BmcTarget(
            host=self.host,
            port=self.port,
            username=self.username.encode(),
            password=self.password,
            kg=self.kg,
            cipher_suites=self.cipher_suites,
            privilege=self.privilege,
            allow_insecure=self.allow_insecure,
            workarounds=self.workarounds,
            retransmit_timeout=self.retransmit_timeout,
            max_tries=self.max_tries,
            keepalive_interval=self.keepalive_interval,
            session_timeout=self.session_timeout,
            name=self.name,
        )


# The built-in value of every console key, for checks that span keys.
_CONSOLE_DEFAULTS = {f.name: f.default for f in fields(ConsoleConfig)}


# --------------------------------------------------------------------------- value checks


def want_mark(value: object) -> float | None:
    if value == "" or (not isinstance(value, bool) and value == 0):
        return None
    return want_duration()(value)


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


def want_password(value: object) -> str:
    secret = want_secret_str(value)
    if not secret:
        raise Invalid('is empty; an empty source is an error: put the BMC password here, '
                      'or use password_env = "VAR" or password_file = "PATH"')
    if len(secret.encode()) > MAX_PASSWORD_BYTES:
        raise Invalid(f"is longer than {MAX_PASSWORD_BYTES} bytes; IPMI v2.0 passwords are "
                       f"at most {MAX_PASSWORD_BYTES} bytes")
    return secret


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


def want_escape(value: object) -> str:
    char = want_str(value)
    if len(char) != 1 or char.isspace() or char.isalnum():
        raise Invalid(f"{toml_repr(value)} is not one punctuation character; use a single "
                       'character such as "~" or "&"')
    return char


# Keys of `[consoles.NAME]` and `[defaults]` and the check for each. Defaults live on
# `ConsoleConfig`, the one place they are written.
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


# --------------------------------------------------------------------------- the tables

# A checked value and the table it was written in ([defaults] or the console's own).
_Placed = dict[str, tuple[Any, tuple[str, ...]]]


def parse_consoles(src: Source, defaults_raw: Mapping[str, Any], consoles_raw: Mapping[str, Any],
                   elsewhere: Mapping[str, str] | None = None) -> dict[str, ConsoleConfig]:
    """Every `[consoles.NAME]` over `[defaults]`, in the file's order; `elsewhere` maps
    keys of other tables to where they belong."""
    defaults = _console_table(src, ("defaults",), defaults_raw, elsewhere or {})
    consoles: dict[str, ConsoleConfig] = {}
    for name, raw in consoles_raw.items():
        where = ("consoles", name)
        if not _CONSOLE_NAME.fullmatch(name):
            raise src.fail(where, None, f"console name {toml_repr(name)} cannot be used in "
                           "file names and URLs; use up to 64 letters, digits, '.', '_' "
                           "and '-', starting with a letter or digit")
        own = _console_table(src, where, src.table(("consoles",), name, raw), elsewhere or {})
        consoles[name] = _console(src, name, defaults, own)
    return consoles


def _console_table(src: Source, where: tuple[str, ...], raw: Mapping[str, Any],
                   elsewhere: Mapping[str, str]) -> _Placed:
    """Check one table's keys on their own; values remember the table they came from."""
    out: _Placed = {}
    for key, value in raw.items():
        if key not in CONSOLE_KEYS:
            raise src.unknown(where, key, list(CONSOLE_KEYS), elsewhere.get(key, ""))
        for group in (PASSWORD_KEYS, KG_KEYS):
            other = next((k for k in group if k in out and k != key), None)
            if key in group and other:
                raise src.fail(where, key, f"{key}: conflicts with {other} in the same "
                               f"table; keep exactly one of {', '.join(group)}")
        try:
            out[key] = (CONSOLE_KEYS[key](value), where)
        except Invalid as exc:
            raise src.invalid(where, key, value, exc) from None
    return out


def _console(src: Source, name: str, defaults: _Placed, own: _Placed) -> ConsoleConfig:
    """Overlay the console on [defaults] (a password or K_g source replaces them all)."""
    here = ("consoles", name)
    merged = dict(defaults)
    for group in (PASSWORD_KEYS, KG_KEYS):
        if any(k in own for k in group):
            for k in group:
                merged.pop(k, None)
    merged.update(own)

    def get(key: str) -> Any:
        return merged[key][0] if key in merged else _CONSOLE_DEFAULTS[key]

    def fail_at(key: str, text: str) -> ConfigError:
        origin = merged[key][1]
        suffix = f" (inherited by [{table_name(here)}])" if origin != here else ""
        return src.fail(origin, key, text + suffix)

    if "host" not in merged:
        raise src.fail(here, None, 'host: missing; every console needs the address of '
                       'its BMC, like host = "10.0.0.5"')
    _check_scope(src, name, merged["host"])
    suites = get("cipher_suites")
    if not get("allow_insecure"):
        for suite in suites:
            if suite in INSECURE_SUITES:
                raise fail_at("cipher_suites", f"cipher_suites = {toml_repr(list(suites))} is "
                              f"refused: suite {suite} has {INSECURE_SUITES[suite]}; use 17 or "
                              "3, or set allow_insecure = true")
    if get("keepalive_interval") >= get("session_timeout"):
        key = "keepalive_interval" if "keepalive_interval" in merged else "session_timeout"
        raise fail_at(key, f"{key}: keepalive_interval ({get('keepalive_interval'):g}s) "
                      f"must be shorter than session_timeout ({get('session_timeout'):g}s); "
                      'keepalives keep the session alive, e.g. keepalive_interval = "20s"')
    password, password_source = _password(src, name, merged, fail_at)
    kg = merged["kg"][0] if "kg" in merged else merged.get("kg_hex", (None,))[0]
    values = {k: v for k, (v, _) in merged.items() if k not in PASSWORD_KEYS + KG_KEYS}
    return ConsoleConfig(name=name, password=password, password_source=password_source,
                         kg=kg or None, **values)


def _check_scope(src: Source, name: str, host: tuple[str, tuple[str, ...]]) -> None:
    """Warn about a link-local IPv6 host without a scope ID ("fe80::13"). The kernel then
    sends through the first interface with a link-local route: right on a box with one
    interface, which is why it is not an error, but a second one (a VLAN, a bridge, a
    management port) may take its place and the console stays unreachable."""
    value, origin = host
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return  # a host name: resolved when the console connects
    if (isinstance(address, ipaddress.IPv6Address) and address.is_link_local
            and address.scope_id is None):
        src.warn(origin, "host", f"host: {value} is a link-local IPv6 address with no "
                 f"scope ID: console {name} reaches it through whichever interface the "
                 "kernel picks, the wrong one on a machine with several; write "
                 f'host = "{value}%IFACE" with the interface the BMC is on '
                 f'(e.g. "{value}%eth0")')


def _password(src: Source, name: str, merged: _Placed,
              fail_at: Callable[[str, str], ConfigError]) -> tuple[bytes, str]:
    """Resolve the console's one password source to bytes, now, so errors surface early."""
    if "password" in merged:
        return merged["password"][0].encode(), "inline"
    if "password_env" in merged:
        var = merged["password_env"][0]
        secret = src.environ.get(var)
        if secret is None:
            raise fail_at("password_env", f"password_env: environment variable {var} is "
                          f"not set; export {var} before starting solgate, or use "
                          "password_file")
        if not secret:
            raise fail_at("password_env", f"password_env: environment variable {var} is "
                          f"empty; put the BMC password in {var}")
        data, source = secret.encode(), f"env {var}"
        key = "password_env"
    elif "password_file" in merged:
        path = src.path(merged["password_file"][0])
        try:
            data = path.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise fail_at("password_file", f"password_file: cannot read {path} "
                          f"({exc.strerror or exc}); create it with the password on one "
                          "line, readable by solgate only, or fix the path") from None
        if not data:
            raise fail_at("password_file", f"password_file: {path} is empty; put the "
                          "BMC password on its first line")
        src.check_private(path, "password_file")
        source = f"file {path}"
        key = "password_file"
    else:
        raise src.fail(("consoles", name), None, "password: missing; set one of "
                       'password_env = "VAR", password_file = "PATH" or password = "..." '
                       "here or in [defaults]")
    if len(data) > MAX_PASSWORD_BYTES:
        raise fail_at(key, f"{key}: the password is {len(data)} bytes; IPMI v2.0 passwords "
                      f"are at most {MAX_PASSWORD_BYTES} bytes")
    return data, source
