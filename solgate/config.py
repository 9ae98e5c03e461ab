"""`solgate.toml` -> frozen dataclasses, with errors that point at the line and name the fix.

Strategy: tomllib parses the text; this module then walks the resulting dicts with a
table of known keys per table (`CONSOLE_KEYS`, `SERVER_KEYS`), converts every value
(durations and sizes carry units: "20s", "50MB") and checks it. Each console is
`[defaults]` overlaid by its own `[consoles.NAME]` table; the console wins. Secrets are
resolved at load time (`password_env`, `password_file`), so a missing secret is found
by `solgate check-config`, not at three in the morning.

tomllib gives no positions, so `_Locator` scans the raw text for the table header and
the key to name a line in every error. Every error is one `ConfigError` line:

    solgate.toml line 14: [consoles.web01] <key>: <problem>; <fix>

Relative paths (`data_dir`, `password_file`, `tls_cert`, `tls_key`) are relative to the
directory holding the configuration file, so the daemon behaves the same whatever its
working directory.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from solgate.cluster.config import ClusterConfig, parse_cluster
from solgate.config_values import (
    BYTES,
    CONSOLE_KEYS,
    DAYS,
    DEFAULT_PANIC_PATTERNS,
    GB,
    GIB,
    HOURS,
    INSECURE_SUITES,
    KB,
    KG_KEYS,
    KIB,
    MAX_KG_BYTES,
    MAX_PASSWORD_BYTES,
    MAX_USERNAME_BYTES,
    MB,
    MIB,
    MILLISECONDS,
    MINUTES,
    PASSWORD_KEYS,
    PRIVILEGES,
    SECONDS,
    SERVER_KEYS,
    TB,
    TIB,
    WORKAROUNDS,
    Invalid,
    did_you_mean,
    is_loopback,
    kind,
    parse_duration,
    parse_size,
    split_listen,
    toml_repr,
    want_duration,
    want_header_name,
    want_int,
    want_networks,
    want_nonempty_str,
    want_origins,
    want_str,
)
from solgate.errors import ConfigError
from solgate.ipmi.codec import Privilege
from solgate.ipmi.target import DEFAULT_CIPHER_SUITES, BmcTarget

__all__ = [
    "BYTES", "CONFIG_ENV", "CONFIG_SEARCH_PATH", "DAYS", "DEFAULT_PANIC_PATTERNS", "GB", "GIB",
    "HOURS", "KB", "KIB", "MAX_KG_BYTES", "MAX_PASSWORD_BYTES", "MAX_USERNAME_BYTES", "MB",
    "MIB", "MILLISECONDS", "MINUTES", "PRIVILEGES", "SECONDS", "TB", "TIB", "WORKAROUNDS",
    "Config", "ConsoleConfig", "ServerConfig", "default_config_path", "load_config",
    "parse_config", "parse_duration", "parse_size",
]

CONFIG_ENV = "SOLGATE_CONFIG"
CONFIG_SEARCH_PATH = (Path("solgate.toml"), Path("/etc/solgate/solgate.toml"))
KNOWN_TOP_LEVEL = ("data_dir", "server", "defaults", "consoles", "users", "ssh", "cluster")
_CONSOLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The `[server]` table: where the web server listens and who may use it."""

    listen: str = "127.0.0.1:8080"
    host: str = "127.0.0.1"  # parsed from listen
    port: int = 8080  # parsed from listen
    auth: str = "login"  # "login", or "none" (loopback only)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    setup_concurrency: int = 64  # session handshakes in flight at once, all consoles
    # A reverse proxy that authenticates users names them in this header; believed only
    # on connections from `trusted_proxies`. Empty: no proxy is trusted.
    proxy_user_header: str = ""
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Seconds without keyboard input after which a web, terminal or ssh client is
    # detached (the BMC session and the log carry on); 0 = never.
    client_idle_timeout: float = 0.0
    # Origins (scheme://host[:port]) accepted for WebSockets and logins besides the
    # page's own Host, for a proxy that rewrites Host.
    allowed_origins: tuple[str, ...] = ()
    # Open web connections at once, in all and from one client address (trusted
    # proxies are counted in the total only).
    max_connections: int = 512
    max_connections_per_address: int = 64
    # Seconds a client has to send a request's head and body before it is cut off.
    request_timeout: float = 15.0
    # Fleet actions (one action on many consoles): actions in flight at once, action
    # starts per second, and the console count above which the user must confirm it.
    fleet_concurrency: int = 32
    fleet_rate: int = 20
    fleet_confirm_over: int = 10

    @property
    def tls(self) -> bool:
        """Whether the web server speaks HTTPS."""
        return self.tls_cert is not None


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


@dataclass(frozen=True, slots=True)
class Config:
    """The whole file. `consoles` keeps the file's order."""

    source: Path | str
    data_dir: Path
    server: ServerConfig
    consoles: dict[str, ConsoleConfig]
    base_dir: Path  # relative paths in the file are relative to this directory
    # `[users.NAME]` and `[ssh]` are kept raw until the web login and the ssh gateway
    # define their keys; their owners validate them. Left out of repr: they may hold secrets.
    users_raw: dict[str, Any] = field(default_factory=dict, repr=False)
    ssh_raw: dict[str, Any] = field(default_factory=dict, repr=False)
    cluster: ClusterConfig | None = None  # [cluster]: None runs every console here

    def with_server(self, **flags: object) -> Config:
        """Apply `[server]` command-line flags over the file (None = flag not given).

        The result is checked by the same rules as the file, so `--listen 0.0.0.0:80` on a
        config with auth = "none" is refused too. Relative paths are relative to the cwd.
        """
        server = self.server
        raw: dict[str, object] = {"listen": server.listen, "auth": server.auth,
                                  "setup_concurrency": server.setup_concurrency,
                                  "client_idle_timeout": server.client_idle_timeout,
                                  "fleet_concurrency": server.fleet_concurrency,
                                  "fleet_rate": server.fleet_rate,
                                  "fleet_confirm_over": server.fleet_confirm_over}
        if server.tls_cert is not None and server.tls_key is not None:
            raw.update(tls_cert=str(server.tls_cert), tls_key=str(server.tls_key))
        if server.proxy_user_header:
            raw.update(proxy_user_header=server.proxy_user_header)
        if server.trusted_proxies:
            raw.update(trusted_proxies=[str(n) for n in server.trusted_proxies])
        if server.allowed_origins:
            raw.update(allowed_origins=list(server.allowed_origins))
        raw.update(max_connections=server.max_connections,
                   max_connections_per_address=server.max_connections_per_address,
                   request_timeout=server.request_timeout)
        raw.update((k, v) for k, v in flags.items() if v is not None)
        parser = _Parser("", "command line", Path.cwd(), os.environ)
        return replace(self, server=parser.server(raw))


# --------------------------------------------------------------------------- locating keys


_KEY_PART = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*""")


def _dotted_key(text: str, pos: int, end: str) -> tuple[tuple[str, ...], int] | None:
    """Parse a TOML dotted key at `pos` that is followed by one of `end`'s characters."""
    parts: list[str] = []
    while True:
        m = _KEY_PART.match(text, pos)
        if not m:
            return None
        parts.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
        if pos < len(text) and text[pos] == ".":
            pos += 1
            continue
        if pos < len(text) and text[pos] in end:
            return tuple(parts), pos
        return None


class _Locator:
    """Finds the line of a table or key in the raw text (tomllib gives no positions)."""

    def __init__(self, text: str) -> None:
        # (line number, path) for every header and every `key =` line, as absolute paths.
        self._entries: list[tuple[int, tuple[str, ...]]] = []
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.lstrip()
            if stripped.startswith("[["):
                table = ("[[",)  # arrays of tables are not part of our schema
                continue
            if stripped.startswith("["):
                parsed = _dotted_key(stripped, 1, "]")
                if parsed:
                    table = parsed[0]
                    self._entries.append((number, table))
                continue
            parsed = _dotted_key(line, 0, "=")
            if parsed:
                self._entries.append((number, table + parsed[0]))

    def line(self, table: tuple[str, ...], key: str | None = None) -> int | None:
        """The line that best names `[table] key`: the key, else the table, else None."""
        want = table + ((key,) if key else ())
        best: tuple[float, int] | None = None  # (score, line)
        for number, path in self._entries:
            common = min(len(path), len(want))
            if path[:common] != want[:common]:
                continue
            # Exact beats a sub-table of the key ([x.y] for x), which beats an enclosing table.
            score = common + (0.5 if len(path) == len(want) else 0.25 if len(path) > common
                              else 0.0)
            if best is None or score > best[0]:
                best = (score, number)
        if best is None or best[0] < max(1, len(table)):
            return None
        return best[1]


# --------------------------------------------------------------------------- the parser


def _table_name(table: tuple[str, ...]) -> str:
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else toml_repr(p) for p in table)


_TOP_LEVEL_HELP = ("known top-level keys and tables: data_dir, [server], [defaults], "
                   "[consoles.NAME], [users.NAME], [ssh], [cluster]")


logger = logging.getLogger("solgate.config")


def warn_if_readable(path: Path, what: str) -> bool:
    """One warning line when a secret's file can be read by other users; True if so."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False  # whoever reads it says what is wrong
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s %s is readable by other users; chmod 600 %s", what, path, path)
        return True
    return False


class _Parser:
    """Turns tomllib's dicts into a `Config`; every error names a line when it can."""

    def __init__(self, text: str, source: str, base_dir: Path,
                 environ: Mapping[str, str]) -> None:
        self.source = source
        self.base_dir = base_dir
        self.environ = environ
        self.locator = _Locator(text)
        self._checked_files: set[Path] = set()  # secret files already checked for mode

    def check_private(self, path: Path, what: str) -> None:
        """Warn once per load about a secret file others can read (a shared password_file
        is checked once, not once per console)."""
        if path not in self._checked_files:
            self._checked_files.add(path)
            warn_if_readable(path, what)

    # -- errors

    def fail(self, table: tuple[str, ...], key: str | None, text: str) -> ConfigError:
        line = self.locator.line(table, key)
        where = f"{self.source} line {line}" if line else self.source
        prefix = f"[{_table_name(table)}] " if table else ""
        return ConfigError(f"{where}: {prefix}{text}")

    def invalid(self, table: tuple[str, ...], key: str, value: object,
                exc: Invalid) -> ConfigError:
        head = f"{key} = {toml_repr(value)} " if exc.show_value else f"{key}: "
        return self.fail(table, key, head + exc.text)

    def unknown(self, table: tuple[str, ...], key: str, known: tuple[str, ...] | list[str],
                elsewhere: str = "") -> ConfigError:
        hint = did_you_mean(key, known)
        fix = hint or elsewhere or ("known keys: " + ", ".join(known))
        if hint and elsewhere:
            fix = f"{hint} ({elsewhere})"
        return self.fail(table, key, f"{key}: unknown setting; {fix}")

    def table(self, where: tuple[str, ...], key: str | None, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            name = "[" + _table_name(where + ((key,) if key else ())) + "]"
            raise self.fail(where, key, f"{key or _table_name(where)}: expected a table "
                            f"{name}, got {kind(value)}; write it as a {name} section")
        return value

    # -- the file

    def parse(self, data: dict[str, Any]) -> Config:
        for key in data:
            if key not in KNOWN_TOP_LEVEL:
                elsewhere = ""
                if key in CONSOLE_KEYS:
                    elsewhere = "console settings go in [defaults] or [consoles.NAME]"
                elif key in SERVER_KEYS:
                    elsewhere = "web server settings go in [server]"
                hint = did_you_mean(key, KNOWN_TOP_LEVEL)
                fix = "; ".join(x for x in (hint, elsewhere, _TOP_LEVEL_HELP) if x)
                raise self.fail((), key, f"{key}: unknown top-level setting; {fix}")
        data_dir = self.base_dir / "data"
        if "data_dir" in data:
            try:
                data_dir = self.path(want_nonempty_str(data["data_dir"]))
            except Invalid as exc:
                raise self.invalid((), "data_dir", data["data_dir"], exc) from None
        server = self.server(self.table((), "server", data.get("server", {})))
        defaults = self.console_table(("defaults",), self.table((), "defaults",
                                                                data.get("defaults", {})))
        consoles: dict[str, ConsoleConfig] = {}
        for name, raw in self.table((), "consoles", data.get("consoles", {})).items():
            where = ("consoles", name)
            if not _CONSOLE_NAME.fullmatch(name):
                raise self.fail(where, None, f"console name {toml_repr(name)} cannot be used in "
                                "file names and URLs; use up to 64 letters, digits, '.', '_' "
                                "and '-', starting with a letter or digit")
            own = self.console_table(where, self.table(("consoles",), name, raw))
            consoles[name] = self.console(name, defaults, own)
        users = self.table((), "users", data.get("users", {}))
        ssh = self.table((), "ssh", data.get("ssh", {}))
        cluster = None
        if "cluster" in data:
            cluster = parse_cluster(
                self.table((), "cluster", data["cluster"]), path=self.path,
                environ=self.environ,
                fail=lambda key, text: self.fail(("cluster",), key or None, text))
        return Config(source=self.source, data_dir=data_dir, server=server, consoles=consoles,
                      base_dir=self.base_dir, users_raw=users, ssh_raw=ssh, cluster=cluster)

    def path(self, text: str) -> Path:
        return self.base_dir / Path(text).expanduser()

    # -- [server]

    def server(self, raw: dict[str, Any]) -> ServerConfig:
        where = ("server",)
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in SERVER_KEYS:
                elsewhere = ("console settings go in [defaults] or [consoles.NAME]"
                             if key in CONSOLE_KEYS else "")
                raise self.unknown(where, key, SERVER_KEYS, elsewhere)
            try:
                if key == "listen":
                    values["host"], values["port"] = split_listen(want_str(value))
                    values["listen"] = value.strip()
                elif key == "auth":
                    if value not in ("login", "none"):
                        raise Invalid(f'{toml_repr(value)} is not an auth mode; use "login" '
                                       '(the default) or "none" (loopback only)')
                    values["auth"] = value
                elif key in ("tls_cert", "tls_key"):
                    path = self.path(want_nonempty_str(value))
                    if not path.is_file():
                        raise Invalid(f"{path} does not exist or is not a file; fix the path")
                    if key == "tls_key":
                        self.check_private(path, "[server] tls_key")
                    values[key] = path
                elif key == "proxy_user_header":
                    values[key] = want_header_name(value)
                elif key == "trusted_proxies":
                    values[key] = want_networks(value)
                elif key == "client_idle_timeout":
                    values[key] = want_duration(positive=False)(value)
                elif key == "request_timeout":
                    values[key] = want_duration()(value)
                elif key == "allowed_origins":
                    values[key] = want_origins(value)
                elif key in ("max_connections", "max_connections_per_address"):
                    values[key] = want_int(1, 1_000_000)(value)
                else:
                    values[key] = want_int(1, 100_000)(value)
            except Invalid as exc:
                raise self.invalid(where, key, value, exc) from None
        if ("tls_cert" in values) != ("tls_key" in values):
            have, lack = ("tls_cert", "tls_key") if "tls_cert" in values else (
                "tls_key", "tls_cert")
            raise self.fail(where, have, f"{have}: set without {lack}; set both for HTTPS, "
                            "or neither for plain HTTP")
        if "proxy_user_header" in values and "trusted_proxies" not in values:
            raise self.fail(where, "proxy_user_header", "proxy_user_header: set without "
                            "trusted_proxies; a proxy's user header is believed only from "
                            "the proxy's addresses, so set both")
        server = ServerConfig(**values)
        if server.proxy_user_header and server.auth != "login":
            raise self.fail(where, "proxy_user_header",
                            'proxy_user_header needs auth = "login": with auth = "none" '
                            "everyone is already the local admin")
        if server.auth == "none" and not is_loopback(server.host):
            raise self.fail(where, "auth" if "auth" in raw else None,
                            f'auth = "none" is refused: listen = {toml_repr(server.listen)} is '
                            'reachable from other machines; set auth = "login", or listen on '
                            '"127.0.0.1:PORT"')
        return server

    # -- [defaults] and [consoles.NAME]

    def console_table(self, where: tuple[str, ...],
                      raw: dict[str, Any]) -> dict[str, tuple[Any, tuple[str, ...]]]:
        """Check one table's keys on their own; values remember the table they came from."""
        out: dict[str, tuple[Any, tuple[str, ...]]] = {}
        for key, value in raw.items():
            if key not in CONSOLE_KEYS:
                elsewhere = ("web server settings go in [server]" if key in SERVER_KEYS
                             else "")
                raise self.unknown(where, key, list(CONSOLE_KEYS), elsewhere)
            for group in (PASSWORD_KEYS, KG_KEYS):
                other = next((k for k in group if k in out and k != key), None)
                if key in group and other:
                    raise self.fail(where, key, f"{key}: conflicts with {other} in the same "
                                    f"table; keep exactly one of {', '.join(group)}")
            try:
                out[key] = (CONSOLE_KEYS[key](value), where)
            except Invalid as exc:
                raise self.invalid(where, key, value, exc) from None
        return out

    def console(self, name: str, defaults: dict[str, tuple[Any, tuple[str, ...]]],
                own: dict[str, tuple[Any, tuple[str, ...]]]) -> ConsoleConfig:
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
            suffix = f" (inherited by [{_table_name(here)}])" if origin != here else ""
            return self.fail(origin, key, text + suffix)

        if "host" not in merged:
            raise self.fail(here, None, 'host: missing; every console needs the address of '
                            'its BMC, like host = "10.0.0.5"')
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
        password, password_source = self.password(name, merged, fail_at)
        kg = merged["kg"][0] if "kg" in merged else merged.get("kg_hex", (None,))[0]
        values = {k: v for k, (v, _) in merged.items() if k not in PASSWORD_KEYS + KG_KEYS}
        return ConsoleConfig(name=name, password=password, password_source=password_source,
                             kg=kg or None, **values)

    def password(self, name: str, merged: dict[str, tuple[Any, tuple[str, ...]]],
                 fail_at: Callable[[str, str], ConfigError]) -> tuple[bytes, str]:
        """Resolve the console's one password source to bytes, now, so errors surface early."""
        if "password" in merged:
            return merged["password"][0].encode(), "inline"
        if "password_env" in merged:
            var = merged["password_env"][0]
            secret = self.environ.get(var)
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
            path = self.path(merged["password_file"][0])
            try:
                data = path.read_bytes().rstrip(b"\r\n")
            except OSError as exc:
                raise fail_at("password_file", f"password_file: cannot read {path} "
                              f"({exc.strerror or exc}); create it with the password on one "
                              "line, readable by solgate only, or fix the path") from None
            if not data:
                raise fail_at("password_file", f"password_file: {path} is empty; put the "
                              "BMC password on its first line")
            self.check_private(path, "password_file")
            source = f"file {path}"
            key = "password_file"
        else:
            raise self.fail(("consoles", name), None, "password: missing; set one of "
                            'password_env = "VAR", password_file = "PATH" or password = "..." '
                            "here or in [defaults]")
        if len(data) > MAX_PASSWORD_BYTES:
            raise fail_at(key, f"{key}: the password is {len(data)} bytes; IPMI v2.0 passwords "
                          f"are at most {MAX_PASSWORD_BYTES} bytes")
        return data, source


# --------------------------------------------------------------------------- entry points


def parse_config(text: str, source: str = "<string>", *, base_dir: str | Path | None = None,
                 environ: Mapping[str, str] | None = None) -> Config:
    """Parse configuration text; `source` names it in errors. Paths are relative to
    `base_dir`, else to `source`'s directory when it is a file path, else to the cwd."""
    if base_dir is None:
        base_dir = Path(source).parent if not source.startswith("<") else Path()
    base = Path(base_dir).absolute()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        where = f"{source} line {m.group(1)}" if m else source
        raise ConfigError(f"{where}: not valid TOML: {exc}; fix the syntax") from None
    parser = _Parser(text, source, base, os.environ if environ is None else environ)
    return parser.parse(data)


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and check a configuration file; raise `ConfigError` (one line) if anything is off."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file; pass -c FILE, set "
                          f"${CONFIG_ENV}, or create ./solgate.toml or "
                          "/etc/solgate/solgate.toml (see the example solgate.toml)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file "
                          f"({exc.strerror or exc}); check the path and its permissions"
                          ) from None
    return parse_config(text, str(path), environ=environ)


def default_config_path(explicit: str | None,
                        environ: Mapping[str, str] | None = None) -> Path:
    """Which file to load: -c/--config, then $SOLGATE_CONFIG, then ./solgate.toml, then
    /etc/solgate/solgate.toml (returned even when missing, so the error names it)."""
    if explicit:
        return Path(explicit)
    env = (os.environ if environ is None else environ).get(CONFIG_ENV)
    if env:
        return Path(env)
    for candidate in CONFIG_SEARCH_PATH:
        if candidate.is_file():
            return candidate
    return CONFIG_SEARCH_PATH[-1]
