"""The `[server]` table: where the web server listens and who may use it."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solgate.addresses import is_loopback, split_listen
from solgate.config.checks import (
    Invalid,
    want_duration,
    want_file,
    want_header_name,
    want_int,
    want_networks,
    want_origins,
    want_str,
)
from solgate.config.source import Source
from solgate.units import toml_repr

SERVER_KEYS = ("listen", "auth", "tls_cert", "tls_key", "setup_concurrency",
               "proxy_user_header", "trusted_proxies", "client_idle_timeout",
               "allowed_origins", "max_connections", "max_connections_per_address",
               "request_timeout",
               "fleet_concurrency", "fleet_rate", "fleet_confirm_over")


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


def parse_server(src: Source, raw: Mapping[str, Any],
                 elsewhere: Mapping[str, str] | None = None) -> ServerConfig:
    """Check `[server]`; `elsewhere` maps keys of other tables to where they belong."""
    where = ("server",)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in SERVER_KEYS:
            raise src.unknown(where, key, SERVER_KEYS, (elsewhere or {}).get(key, ""))
        try:
            values.update(_value(src, key, value))
        except Invalid as exc:
            raise src.invalid(where, key, value, exc) from None
    if ("tls_cert" in values) != ("tls_key" in values):
        have, lack = ("tls_cert", "tls_key") if "tls_cert" in values else (
            "tls_key", "tls_cert")
        raise src.fail(where, have, f"{have}: set without {lack}; set both for HTTPS, "
                       "or neither for plain HTTP")
    if "proxy_user_header" in values and "trusted_proxies" not in values:
        raise src.fail(where, "proxy_user_header", "proxy_user_header: set without "
                       "trusted_proxies; a proxy's user header is believed only from "
                       "the proxy's addresses, so set both")
    server = ServerConfig(**values)
    if server.proxy_user_header and server.auth != "login":
        raise src.fail(where, "proxy_user_header",
                       'proxy_user_header needs auth = "login": with auth = "none" '
                       "everyone is already the local admin")
    if server.auth == "none" and not is_loopback(server.host):
        raise src.fail(where, "auth" if "auth" in raw else None,
                       f'auth = "none" is refused: listen = {toml_repr(server.listen)} is '
                       'reachable from other machines; set auth = "login", or listen on '
                       '"127.0.0.1:PORT"')
    return server


def _value(src: Source, key: str, value: object) -> dict[str, Any]:
    """The field(s) one `[server]` key sets."""
    if key == "listen":
        try:
            host, port = split_listen(want_str(value))
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        return {"host": host, "port": port, "listen": want_str(value).strip()}
    if key == "auth":
        if value not in ("login", "none"):
            raise Invalid(f'{toml_repr(value)} is not an auth mode; use "login" '
                          '(the default) or "none" (loopback only)')
        return {"auth": value}
    if key in ("tls_cert", "tls_key"):
        path = want_file(value, src.path)
        if key == "tls_key":
            src.check_private(path, "[server] tls_key")
        return {key: path}
    if key == "proxy_user_header":
        return {key: want_header_name(value)}
    if key == "trusted_proxies":
        return {key: want_networks(value)}
    if key == "client_idle_timeout":
        return {key: want_duration(positive=False)(value)}
    if key == "request_timeout":
        return {key: want_duration()(value)}
    if key == "allowed_origins":
        return {key: want_origins(value)}
    if key in ("max_connections", "max_connections_per_address"):
        return {key: want_int(1, 1_000_000)(value)}
    return {key: want_int(1, 100_000)(value)}


def with_flags(server: ServerConfig, flags: Mapping[str, object], src: Source) -> ServerConfig:
    """`server` with command-line flags over it (None = flag not given), checked by the
    same rules as the file."""
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
    return parse_server(src, raw)
