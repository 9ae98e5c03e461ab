"""The daemon: consoles, the web server and the ssh gateway, until a signal stops them.

Signals only set events or start tasks (STYLE item 13): SIGTERM/SIGINT stop, SIGHUP
reloads the configuration (consoles added, removed or changed are started, stopped or
restarted; the others keep their sessions) and reopens the logs for an external
logrotate. Each reload is a task the daemon holds: one at a time, a failure logged and
reported to `solgate reload`, and awaited before shutdown stops what it touches.
`run_server` takes an injectable `shutdown` event so tests can drive the whole daemon.
Under systemd (`Type=notify`, contrib/systemd/solgate.service) it tells systemd when it is
ready, reloading and stopping, and pings the watchdog (solgate/sdnotify.py). The commands
that start it are `solgate.cli.serve` and `solgate.cli.demo`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from solgate.addresses import join_host_port
from solgate.config import Config
from solgate.console.manager import ConsoleManager
from solgate.errors import ConfigError, SolgateError
from solgate.sdnotify import Notifier
from solgate.web.app import create_app, ssl_context
from solgate.web.keys import auth_key
from solgate.web.limits import GuardedSite, connection_guard, install_accept_error_filter

logger = logging.getLogger("solgate.serve")
PID_FILE = "solgate.pid"
RELOAD_STATUS_FILE = "solgate.reload"  # the verdict of the last reload, for `solgate reload`
SHUTDOWN_TIMEOUT = 5.0


# --- the daemon ----------------------------------------------------------------------------


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    try:
        return ssl_context(config.server)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{config.source}: [server] tls_cert/tls_key cannot be loaded "
                          f"({exc}); check the files") from None


async def run_server(
    config: Config,
    *,
    shutdown: asyncio.Event | None = None,
    web_enabled: bool = True,
    reload_config: Callable[[], Config] | None = None,
    on_ready: Callable[[ConsoleManager, str | None, str | None], None] | None = None,
    notifier: Notifier | None = None,
) -> int:
    """Run until `shutdown` is set (or SIGTERM/SIGINT); SIGHUP calls `reload_config`.

    `on_ready(manager, web_url, ssh_address)` is called once everything listens.
    `notifier` (default: from $NOTIFY_SOCKET) hears READY, RELOADING, STOPPING and the
    watchdog pings.
    """
    loop = asyncio.get_running_loop()
    shutdown = shutdown or asyncio.Event()
    notifier = notifier or Notifier.from_environment()
    watchdog = loop.create_task(notifier.watchdog(), name="sd-watchdog")
    manager = ConsoleManager(config, clustered=config.cluster is not None)
    member: Any = None
    pid_path = Path(config.data_dir) / PID_FILE
    runner: web.AppRunner | None = None
    ssh_gateway: Any = None
    url: str | None = None
    ssh_address: str | None = None
    installed: list[signal.Signals] = []
    reloads = _Reloads(manager)

    def hangup() -> None:
        reloads.start(_reload(manager, reload_config, runner.app if runner else None,
                              ssh_gateway, member, notifier))

    for sig, action in ((signal.SIGTERM, shutdown.set), (signal.SIGINT, shutdown.set),
                        (signal.SIGHUP, hangup)):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, action)
            installed.append(sig)
    try:
        await manager.start()
        if config.cluster is not None:
            from solgate.cluster.shell import ClusterMember

            member = ClusterMember(config, manager)
            await member.start()  # etcd unreachable: one clear line, exit non-zero
        if web_enabled:
            app = create_app(config, manager)
            if member is not None:
                from solgate.cluster.web import setup_cluster_routes

                setup_cluster_routes(app, member)
            server = config.server
            # keepalive_timeout also bounds the wait for a request's head, lingering_time
            # the reading of a body nobody wanted (see web.limits).
            runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT,
                                   keepalive_timeout=server.request_timeout,
                                   lingering_time=min(server.request_timeout, 5.0))
            await runner.setup()
            install_accept_error_filter(loop)
            site = GuardedSite(runner, server.host, server.port, guard=connection_guard(config),
                               ssl_context=_ssl_context(config))
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(f"cannot listen on {server.listen}: {exc.strerror or exc}; "
                                  "choose another [server] listen or --listen") from None
            scheme = "https" if server.tls else "http"
            port = runner.addresses[0][1] if runner.addresses else server.port  # port 0: bound
            url = f"{scheme}://{join_host_port(server.host, port)}/"
            if member is not None and not member.advertise:
                member.set_advertise(_advertised(url, server.host))
        if config.ssh is not None:
            from solgate.ssh import start_ssh_gateway

            ssh_gateway = await start_ssh_gateway(config, manager)
            ssh_gateway.cluster = member  # consoles other members run: sshproxy
            ssh_host = ssh_gateway.settings.host
            ssh_address = f"{ssh_host}:{ssh_gateway.port}"
        with contextlib.suppress(OSError):
            pid_path.write_text(f"{os.getpid()}\n")
        if on_ready is not None:
            on_ready(manager, url, ssh_address)
        notifier.ready(_status(manager, url))
        await shutdown.wait()
    finally:
        notifier.stopping("stopping: deactivating SOL and flushing logs")
        for sig in installed:
            loop.remove_signal_handler(sig)
        await reloads.finish()  # before what a reload touches (gateway, app, engine) stops
        if ssh_gateway is not None:
            await ssh_gateway.stop()
        if runner is not None:
            await runner.cleanup()
        if member is not None:
            await member.stop()  # logs flushed, releases recorded, lease revoked
        await manager.stop()
        with contextlib.suppress(OSError):
            pid_path.unlink()
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        notifier.close()
    return 0


class _Reloads:
    """The SIGHUP reloads in flight: one at a time, each failure logged, all awaited.

    A signal handler cannot await, so each reload is a task; holding it here keeps it
    from being collected mid-way, runs a second SIGHUP's reload after the first instead
    of interleaving two, and lets shutdown wait for it rather than stop the engine under
    it or leave it pending when the loop closes.
    """

    def __init__(self, manager: ConsoleManager) -> None:
        self._manager = manager
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, reload: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(self._one(reload), name="sighup-reload")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _one(self, reload: Coroutine[Any, Any, None]) -> None:
        async with self._lock:
            await reload

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # Not a refused configuration (that is logged by _reload): a bug or an I/O
            # failure half-way. Say so, and give `solgate reload` its verdict now.
            logger.error("reload failed: %s", exc, exc_info=exc)
            _write_reload_status(getattr(self._manager, "data_dir", None), False,
                                 f"reload failed ({exc}); see the server's log, the "
                                 "running configuration may be partly changed")

    async def finish(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Wait for the reloads in flight (cancelling any still running after `timeout`)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning("stopping: a configuration reload did not finish in %.0f s; "
                           "cancelled", timeout)
            await asyncio.wait(pending)


def _advertised(url: str, host: str) -> str:
    """The URL other machines reach a wildcard listen address by: the host's own name."""
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - naming, not binding
        import socket

        return url.replace(f"//{host}:", f"//{socket.getfqdn()}:", 1).replace(
            "//[::]:", f"//{socket.getfqdn()}:", 1)
    return url


def _status(manager: ConsoleManager, url: str | None) -> str:
    """The one-line STATUS= systemd shows in `systemctl status`."""
    where = f"; web console on {url}" if url else ""
    return f"serving {len(manager.consoles())} consoles{where}"


async def _reload(manager: ConsoleManager, reload_config: Callable[[], Config] | None,
                  app: web.Application | None = None, ssh_gateway: Any = None,
                  member: Any = None, notifier: Notifier | None = None) -> None:
    """Re-read the configuration: consoles through the manager (and the cluster member),
    web users in the app, ssh users and keys in the gateway; live attachments that lost
    rights lose them now.

    The verdict goes to the log and to `<data_dir>/solgate.reload` for `solgate reload`.
    systemd hears RELOADING=1 first and READY=1 when it is over, whether the new
    configuration was taken or refused (the old one keeps running then; STATUS says so).
    """
    notifier = notifier or Notifier(None)
    notifier.reloading()
    status = "reload refused (see the log); running the previous configuration"
    try:
        data_dir = getattr(manager, "data_dir", None)
        if reload_config is None:
            status = "reload: no configuration file to re-read"
            _write_reload_status(data_dir, False, "this server does not reload its "
                                 "configuration (solgate demo)")
            return
        try:
            config = reload_config()
            users = config.users
            if ssh_gateway is not None:
                from solgate.ssh import parse_user_keys

                parse_user_keys(config)  # a bad key refuses the whole reload, as check-config does
        except SolgateError as exc:
            logger.error("reload refused, keeping the running configuration: %s", exc)  # noqa: TRY400
            _write_reload_status(data_dir, False,
                                 f"reload refused, keeping the running configuration: {exc}")
            return
        summary = await manager.reload(config)
        if member is not None:
            member.reload(config)
        if app is not None:
            app[auth_key].replace_users(users)  # re-checks the live WebSockets
        if ssh_gateway is not None:
            ssh_gateway.recheck()
        message = (f"configuration reloaded: {len(summary['added'])} added, "
                   f"{len(summary['removed'])} removed, {len(summary['changed'])} changed")
        logger.warning("%s", message)
        _write_reload_status(data_dir, True, message)
        status = message
    finally:
        notifier.ready(status)


def _write_reload_status(data_dir: Path | None, ok: bool, message: str) -> None:
    """Leave the verdict where `solgate reload` looks for it (replaced whole, never torn)."""
    if data_dir is None:
        return
    path = data_dir / RELOAD_STATUS_FILE
    record = {"pid": os.getpid(), "at": time.time(), "ok": ok, "message": message}
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("cannot write %s (%s); `solgate reload` will not see the verdict",
                       path, exc.strerror or exc)
