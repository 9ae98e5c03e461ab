"""`solgate serve`, `solgate demo` and `solgate reload`: the daemon and its lifecycle.

Signals only set events (STYLE item 13): SIGTERM/SIGINT stop, SIGHUP reloads the
configuration (consoles added, removed or changed are started, stopped or restarted;
the others keep their sessions) and reopens the logs for an external logrotate.
`run_server` takes an injectable `shutdown` event so tests can drive the whole daemon.
Under systemd (`Type=notify`, contrib/systemd/solgate.service) it tells systemd when it is
ready, reloading and stopping, and pings the watchdog (solgate/sdnotify.py).

`serve` and `demo` run on uvloop when it is installed (`pip install 'solgate[fast]'`):
the event loop and its UDP and TCP transports in C take about a third off the CPU each
console byte costs. `--event-loop asyncio` (or `SOLGATE_EVENT_LOOP=asyncio`) keeps the
standard loop; the ready line says which one runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import ssl
import sys
import time
import tomllib
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from solgate.config import Config, default_config_path, load_config, parse_config
from solgate.config_cli import add_config_argument
from solgate.config_values import is_loopback
from solgate.console.manager import ConsoleManager
from solgate.errors import ConfigError, SolgateError
from solgate.ipmi.crypto import packet_path
from solgate.sdnotify import Notifier
from solgate.users import parse_users
from solgate.web.app import create_app, ssl_context
from solgate.web.keys import auth_key
from solgate.web.limits import GuardedSite, connection_guard, install_accept_error_filter

logger = logging.getLogger("solgate.serve")
PID_FILE = "solgate.pid"
RELOAD_STATUS_FILE = "solgate.reload"  # the verdict of the last reload, for `solgate reload`
RELOAD_WAIT = 30.0  # how long `solgate reload` waits for that verdict
SHUTDOWN_TIMEOUT = 5.0
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
EVENT_LOOP_ENV = "SOLGATE_EVENT_LOOP"
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _add_event_loop_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default=None,
                        help="uvloop when installed (auto, the default, or $"
                             f"{EVENT_LOOP_ENV}), or the standard asyncio loop")


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the console server: SOL sessions, logs and the web console",
        description="Keep a SOL session open to every console in the configuration, log "
                    "all output under data_dir, and serve the web console. SIGHUP (or "
                    "`solgate reload`) re-reads the configuration; SIGTERM stops cleanly, "
                    "deactivating every SOL payload.",
    )
    add_config_argument(serve)
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="web server address (overrides [server] listen)")
    serve.add_argument("--no-web", action="store_true",
                       help="run consoles and logs only, without the web server")
    _add_event_loop_argument(serve)
    serve.set_defaults(handler=_serve_command)

    demo = subparsers.add_parser(
        "demo",
        help="try solgate with no hardware: simulated BMCs plus the web console",
        description="Start a fleet of simulated BMCs (each with a simulated Linux host on "
                    "its serial port) on free loopback ports, and serve the web console for "
                    "them on http://127.0.0.1:8080 without login (loopback only). Try "
                    "`uname`, `panic` or `flood 100000` in a console.",
    )
    demo.add_argument("--count", type=int, default=4, metavar="N",
                      help="how many simulated consoles (4)")
    demo.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                      help="web server address, loopback only (127.0.0.1:8080)")
    demo.add_argument("--data-dir", default="solgate-demo-data", metavar="DIR",
                      help="where console logs and events go (./solgate-demo-data)")
    demo.add_argument("--boot-speed", type=float, default=1.0, metavar="X",
                      help="simulated boot log speed (1.0)")
    demo.add_argument("--ssh", default="127.0.0.1:2222", metavar="HOST:PORT",
                      help="ssh gateway address, for the public keys in your ~/.ssh "
                           "(127.0.0.1:2222)")
    demo.add_argument("--no-ssh", action="store_true", help="do not start the ssh gateway")
    _add_event_loop_argument(demo)
    demo.set_defaults(handler=_demo_command)

    reload_ = subparsers.add_parser(
        "reload",
        help="tell a running `solgate serve` to re-read its configuration (SIGHUP)",
        description="Signal the `solgate serve` whose pid file is in data_dir (read from "
                    "the configuration file; nothing else in it is loaded here, so the BMC "
                    "secrets need not be in this shell) and print its verdict: what the "
                    "reload changed, or why it was refused.",
    )
    add_config_argument(reload_)
    reload_.set_defaults(handler=_reload_command)


# --- the event loop ----------------------------------------------------------------------------


def event_loop_choice(flag: str | None) -> tuple[LoopFactory | None, str]:
    """The loop factory for `flag` (or $SOLGATE_EVENT_LOOP, or "auto") and its name.

    A None factory is asyncio's own loop. "auto" takes uvloop when it imports; asking for
    "uvloop" without it installed is a configuration error that says how to install it.
    """
    choice = flag or os.environ.get(EVENT_LOOP_ENV, "").strip().lower() or "auto"
    if choice not in EVENT_LOOPS:
        raise ConfigError(f"{EVENT_LOOP_ENV}={choice!r}: use one of {', '.join(EVENT_LOOPS)}")
    if choice == "asyncio":
        return None, "asyncio"
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("the uvloop event loop was asked for but is not installed; "
                              "pip install 'solgate[fast]', or use --event-loop asyncio"
                              ) from None
        logger.info("uvloop is not installed (pip install 'solgate[fast]'): "
                    "running on asyncio's own event loop")
        return None, "asyncio"
    factory: LoopFactory = uvloop.new_event_loop
    return factory, f"uvloop {getattr(uvloop, '__version__', '')}".strip()


def run_on_event_loop(flag: str | None,
                      main: Callable[[str], Coroutine[Any, Any, int]]) -> int:
    """Run `main(loop_name)` to completion on the chosen event loop."""
    factory, name = event_loop_choice(flag)
    logger.info("event loop: %s", name)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main(name))


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

    def hangup() -> None:
        loop.create_task(_reload(manager, reload_config, runner.app if runner else None,
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
            host = f"[{server.host}]" if ":" in server.host else server.host
            port = runner.addresses[0][1] if runner.addresses else server.port  # port 0: bound
            url = f"{scheme}://{host}:{port}/"
            if member is not None and not member.advertise:
                member.set_advertise(_advertised(url, server.host))
        if config.ssh_raw.get("listen"):
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
            users = parse_users(config.users_raw)
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


def _serve_command(args: argparse.Namespace) -> int:
    return run_on_event_loop(args.event_loop, lambda loop: _serve(args, loop))


async def _serve(args: argparse.Namespace, loop_name: str) -> int:
    path = default_config_path(args.config)
    config = load_config(path)
    if args.listen:
        config = config.with_server(listen=args.listen)

    def reload_config() -> Config:
        fresh = load_config(path)
        return fresh.with_server(listen=args.listen) if args.listen else fresh

    def ready(manager: ConsoleManager, url: str | None, ssh: str | None) -> None:
        where = f"; web console on {url}" if url else ""
        where += f"; ssh gateway on {ssh}" if ssh else ""
        serving = f"serving {len(config.consoles)} consoles"
        if config.cluster is not None:  # placement goes on after this line: M grows
            serving = (f"member {config.cluster.name} of the cluster, owns "
                       f"{len(manager.consoles())} of {len(config.consoles)} consoles")
        print(f"solgate: {serving} from {path}{where} "
              f"(event loop: {loop_name}; packet path: {packet_path()})", file=sys.stderr,
              flush=True)

    return await run_server(config, web_enabled=not args.no_web,
                            reload_config=reload_config, on_ready=ready)


def data_dir_of(path: Path) -> Path:
    """`data_dir` of a configuration file, reading nothing else: a shell that signals the
    server need not hold the BMC secrets the rest of the file refers to."""
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file; pass the -c that solgate "
                          "serve runs with") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); fix it, or send solgate serve "
                          "SIGHUP yourself") from None
    base = path.parent.absolute()
    value = data.get("data_dir")
    if isinstance(value, str) and value.strip():
        return base / Path(value).expanduser()
    return base / "data"


def _reload_command(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(default_config_path(args.config))
    pid_path = data_dir / PID_FILE
    try:
        pid = int(pid_path.read_text().strip())
    except FileNotFoundError:
        raise ConfigError(f"no running solgate serve found ({pid_path} is missing); start it "
                          "with `solgate serve`, or pass the -c it runs with") from None
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "no pid in it"
        raise ConfigError(f"cannot read {pid_path} ({why}); is solgate serve running with "
                          "this data_dir? Send it SIGHUP yourself to reload") from None
    sent = time.time()
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ConfigError(f"solgate serve (pid {pid} in {pid_path}) is not running; start it "
                          "with `solgate serve` (the pid file is left from an earlier run)"
                          ) from None
    except PermissionError:
        raise ConfigError(f"pid {pid} in {pid_path} belongs to another user; run "
                          "`solgate reload` as the user solgate serve runs as") from None
    return _await_verdict(data_dir / RELOAD_STATUS_FILE, pid, sent)


def _await_verdict(path: Path, pid: int, sent: float, wait: float = RELOAD_WAIT) -> int:
    """Wait for the server's verdict on the reload asked for at `sent`; print it."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = None
        if (isinstance(record, dict) and record.get("pid") == pid
                and isinstance(record.get("at"), int | float) and record["at"] >= sent):
            message = str(record.get("message", ""))
            if record.get("ok"):
                print(f"solgate: pid {pid}: {message}")
                return 0
            raise ConfigError(f"solgate serve (pid {pid}): {message}")
        time.sleep(0.1)
    raise ConfigError(f"sent SIGHUP to pid {pid} but it gave no verdict in {path} within "
                      f"{wait:.0f} s; see its log for how the reload went")


# --- the demo --------------------------------------------------------------------------------

DEMO_PASSWORD = "demo-password"  # noqa: S105 - the simulator's, on loopback only
DEMO_NAMES = ("web01", "web02", "db01", "db02")
SSH_KEY_FILES = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub", "authorized_keys")


def demo_names(count: int) -> list[str]:
    """web01, web02, db01, db02, then node05, node06, ..."""
    return [DEMO_NAMES[i] if i < len(DEMO_NAMES) else f"node{i + 1:02d}" for i in range(count)]


def own_ssh_keys(ssh_dir: Path) -> list[str]:
    """This user's public keys, so `ssh -p 2222 web01@localhost` just works in the demo."""
    keys: list[str] = []
    for name in SSH_KEY_FILES:
        try:
            text = (ssh_dir / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith(("ssh-", "ecdsa-")) and line not in keys:
                keys.append(line)
    return keys


def demo_config_text(ports: list[int], names: list[str], *, listen: str, data_dir: str,
                     ssh_listen: str | None = None, ssh_keys: Sequence[str] = ()) -> str:
    lines = [
        f"data_dir = {json.dumps(data_dir)}",
        "",
        "[server]",
        f'listen = "{listen}"',
        'auth = "none"',
        "",
        "[defaults]",
        'username = "admin"',
        f'password = "{DEMO_PASSWORD}"',
        "cipher_suites = [17, 3]",
        'keepalive_interval = "20s"',
        'reconnect_max = "10s"',
        "",
    ]
    if ssh_listen and ssh_keys:
        lines += ["[ssh]", f'listen = "{ssh_listen}"', "", "[users.demo]", 'role = "admin"',
                  f"ssh_keys = {json.dumps(list(ssh_keys))}", ""]
    for name, port in zip(names, ports, strict=True):
        tag = name.rstrip("0123456789")
        lines += [f"[consoles.{name}]", 'host = "127.0.0.1"', f"port = {port}",
                  f'tags = ["demo", "{tag}"]', ""]
    return "\n".join(lines)


def _demo_command(args: argparse.Namespace) -> int:
    return run_on_event_loop(args.event_loop, lambda loop: _demo(args, loop))


async def _demo(args: argparse.Namespace, loop_name: str) -> int:
    from solgate.ipmi.codec import Privilege
    from solgate.sim.bmc import SimBmcConfig
    from solgate.sim.fleet import SimFleet
    from solgate.sim.host import SimHost

    if not 1 <= args.count <= 1000:
        raise ConfigError("--count: give 1 to 1000 simulated consoles")
    if not args.no_ssh and not is_loopback(args.ssh.rsplit(":", 1)[0]):
        raise ConfigError(f"--ssh {args.ssh}: the demo listens on loopback only; use "
                          "127.0.0.1:PORT")
    users = {"admin": (DEMO_PASSWORD.encode(), Privilege.ADMINISTRATOR)}
    names = demo_names(args.count)

    def config_factory(index: int, _default_name: str) -> SimBmcConfig:
        name = names[index]
        host = SimHost(name, seed=index, boot_speed=args.boot_speed)
        return SimBmcConfig(name=name, users=users, host=host)

    ssh_keys = [] if args.no_ssh else own_ssh_keys(Path.home() / ".ssh")
    # Hosts start powered off and are switched on once solgate's consoles are up, so the
    # whole boot log shows in the browser (a BMC discards output nobody is connected to).
    fleet = SimFleet(args.count, base_port=0, config_factory=config_factory, power_on=False)
    await fleet.start()
    try:
        text = demo_config_text(fleet.ports, names, listen=args.listen,
                                data_dir=str(Path(args.data_dir).absolute()),
                                ssh_listen=None if args.no_ssh else args.ssh, ssh_keys=ssh_keys)
        config = parse_config(text, "<demo>")

        def ready(manager: ConsoleManager, url: str | None, ssh: str | None) -> None:
            print(f"solgate demo: {args.count} simulated consoles ({', '.join(names[:4])}"
                  f"{', ...' if len(names) > 4 else ''}); open {url} in a browser",
                  file=sys.stderr)
            if ssh:
                port = ssh.rsplit(":", 1)[1]
                print(f"solgate demo: or ssh -p {port} {names[0]}@localhost (your own ssh "
                      "keys log in; ~. leaves)", file=sys.stderr)
            elif not args.no_ssh:
                print("solgate demo: no ssh gateway: no public key in ~/.ssh (make one with "
                      "ssh-keygen -t ed25519, then restart the demo)", file=sys.stderr)
            print(f"solgate demo: logs in {config.data_dir}; Ctrl-C stops (event loop: "
                  f"{loop_name})", file=sys.stderr, flush=True)
            asyncio.get_running_loop().create_task(_power_on_when_active(manager, fleet))

        return await run_server(config, on_ready=ready)
    finally:
        await fleet.stop()


async def _power_on_when_active(manager: ConsoleManager, fleet: Any, limit: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        if all(c.state == "active" for c in manager.consoles()):
            break
        await asyncio.sleep(0.2)
    now = loop.time()
    for handle in fleet.bmcs:
        if handle.host is not None and not handle.host.powered:
            handle.host.power_on(now)
            fleet.poke(handle)
