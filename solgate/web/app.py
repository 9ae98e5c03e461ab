"""The web app factory: `create_app(config, manager)` returns a ready `web.Application`.

The app owns no console state: it is handed the engine (`manager`, see
`solgate.web.model.ConsoleManager`) and only shows and forwards.  Starting and
stopping the engine belongs to whoever runs the app (`solgate serve` adds it to
`cleanup_ctx`); the app itself only closes its WebSockets on shutdown.
"""

from __future__ import annotations

import ssl
import time
import weakref
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from solgate.config import Config
from solgate.config.server import ServerConfig
from solgate.web.auth import Authenticator, ProxyTrust, check_auth_mode
from solgate.web.keys import (
    allowed_origins_key,
    auth_key,
    config_key,
    data_dir_key,
    log_executor_key,
    log_slots_key,
    login_executor_key,
    manager_key,
    trusted_proxies_key,
    websockets_key,
)
from solgate.web.limits import UserSlots, body_timeout_middleware, executors
from solgate.web.middleware import auth_middleware, security_headers_middleware
from solgate.web.model import ConsoleManager
from solgate.web.revoke import watch
from solgate.web.routes import STATIC_DIR, setup_routes
from solgate.web.ws import close_all

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates"
CLIENT_MAX_SIZE = 64 * 1024  # forms and JSON bodies are tiny


def create_app(
    config: Config,
    manager: ConsoleManager,
    *,
    authenticator: Authenticator | None = None,
    static_dir: Path = STATIC_DIR,
    template_dir: Path = TEMPLATE_DIR,
) -> web.Application:
    """Build the app; `authenticator` lets tests inject clocks and cheap password hashes."""
    server = config.server
    check_auth_mode(server.auth, server.host)  # config checks too; never trust one gate
    if authenticator is None:
        authenticator = Authenticator(config.users, mode=server.auth,
                                      proxy=ProxyTrust.from_server(server))

    app = web.Application(
        middlewares=[security_headers_middleware,
                     body_timeout_middleware(server.request_timeout),
                     auth_middleware],
        client_max_size=CLIENT_MAX_SIZE,
    )
    app[config_key] = config
    app[manager_key] = manager
    app[auth_key] = authenticator
    app[data_dir_key] = Path(config.data_dir)
    app[allowed_origins_key] = frozenset(o.lower() for o in server.allowed_origins)
    app[trusted_proxies_key] = server.trusted_proxies
    app[websockets_key] = weakref.WeakSet()
    app[login_executor_key], app[log_executor_key] = executors()
    app[log_slots_key] = UserSlots()
    app.on_cleanup.append(_stop_executors)

    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(template_dir)),
        autoescape=jinja2.select_autoescape(["html"], default=True),
    )
    env.globals["now"] = time.time

    setup_routes(app, static_dir)
    app.on_shutdown.append(close_all)
    watch(app)  # a logout or a reload re-checks the live WebSockets at once
    return app


async def _stop_executors(app: web.Application) -> None:
    app[login_executor_key].shutdown(wait=False, cancel_futures=True)
    app[log_executor_key].shutdown(wait=False, cancel_futures=True)


def ssl_context(server: ServerConfig) -> ssl.SSLContext | None:
    """The TLS context for `[server] tls_cert`/`tls_key`, or None for plain HTTP."""
    cert = server.tls_cert
    if cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(server.tls_key) if server.tls_key else None)
    return context
