"""`solgate demo`: simulated BMCs (with simulated hosts) and the web console, no hardware.

The simulator and the daemon are imported when the demo starts, not when the parser is
built (every `solgate` command builds it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from solgate.cli.serve import add_event_loop_argument, run_on_event_loop
from solgate.errors import ConfigError

if TYPE_CHECKING:
    from solgate.console.manager import ConsoleManager


def register(subparsers: Any) -> None:
    """Add `demo` to the `solgate` command."""
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
    add_event_loop_argument(demo)
    demo.set_defaults(handler=_demo_command)


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
    from solgate.addresses import is_loopback
    from solgate.config import parse_config
    from solgate.daemon import run_server
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
