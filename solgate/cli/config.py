"""`solgate check-config`, and the `-c/--config` option every subcommand shares.

check-config loads the file exactly as `solgate serve` would (secrets included, so a
missing password file or environment variable shows up now) and prints a summary that
never contains a secret.

Every `solgate` command builds its parser through this module, so it imports the
configuration modules (and, through them, the IPMI crypto) only inside the functions
that load a file: `solgate console` starts without them.
"""

from __future__ import annotations

import argparse
import tomllib
from typing import TYPE_CHECKING, Any

from solgate.addresses import join_host_port
from solgate.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from solgate.config import Config
    from solgate.config.consoles import ConsoleConfig

# solgate.config.CONFIG_ENV, spelled out so that building the parser needs no config
# module (tests/test_cli_startup.py checks that the two agree).
CONFIG_ENV = "SOLGATE_CONFIG"


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Add -c/--config FILE; resolve it with `config_from_args` (or `default_config_path`)."""
    parser.add_argument(
        "-c", "--config", metavar="FILE", default=None,
        help=f"configuration file (default: ${CONFIG_ENV}, else ./solgate.toml, "
             "else /etc/solgate/solgate.toml)",
    )


def config_from_args(args: argparse.Namespace,
                     environ: Mapping[str, str] | None = None) -> Config:
    """Load the configuration named by -c/--config, $SOLGATE_CONFIG or the search path."""
    from solgate.config import default_config_path, load_config

    path = default_config_path(getattr(args, "config", None), environ)
    return load_config(path, environ=environ)


def listen_from_config(args: argparse.Namespace) -> tuple[str, int, bool] | None:
    """`[server] listen` (and whether TLS is on) from the configuration, if there is one.

    Only that table is read, with tomllib: a client machine need not have the BMC
    passwords the full configuration refers to.
    """
    from solgate.addresses import split_listen
    from solgate.config import default_config_path

    path = default_config_path(getattr(args, "config", None))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if getattr(args, "config", None):
            raise ConfigError(f"{path}: no such configuration file") from None
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read [server] listen ({exc}); pass --server "
                          "URL") from None
    table = data.get("server")
    server: dict[str, Any] = table if isinstance(table, dict) else {}
    listen = server.get("listen", "127.0.0.1:8080")
    if not isinstance(listen, str):
        raise ConfigError(f"{path}: [server] listen is not one HOST:PORT; pass --server URL")
    try:
        host, port = split_listen(listen)
    except ValueError as exc:
        raise ConfigError(f"{path}: [server] listen: {exc}") from None
    return host, port, bool(server.get("tls_cert"))


def duration_arg(text: str) -> float:
    """argparse `type=` for durations ("500ms", "20s", "5m"), so a typo is a usage error."""
    from solgate.units import parse_duration

    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def size_arg(text: str) -> int:
    """argparse `type=` for sizes ("64KiB", "50MB")."""
    from solgate.units import parse_size

    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: Any) -> None:
    """Add `check-config` to the `solgate` command."""
    parser = subparsers.add_parser(
        "check-config",
        help="validate the configuration file and print a summary",
        description="Load the configuration as `solgate serve` would (resolving every "
                    "password source) and print a summary without secrets. Exit status 0 "
                    "when it is valid, 1 with a one-line error naming the line otherwise.",
    )
    add_config_argument(parser)
    parser.set_defaults(handler=check_config)


def check_config(args: argparse.Namespace) -> int:
    """Handler: print the summary, or let the `ConfigError` become cli.main's one line.

    Loading checks every table, `[users]` and `[ssh]` too; the users' ssh keys are read
    here as the gateway would read them, so `check-config` catches what `serve` would.
    """
    config = config_from_args(args)
    from solgate.ssh import parse_user_keys

    users, ssh = config.users, config.ssh
    keys = parse_user_keys(config)
    print(summarize(config))
    if users:
        listed = ", ".join(f"{u.name} ({u.role.name.lower()})" for u in users.values())
        print(f"  web users: {listed}")
    if ssh is not None:
        print(f"  ssh gateway: {ssh.listen}, {len(keys)} public keys")
    if config.cluster is not None:
        from solgate.config.cluster import digest

        c = config.cluster
        print(f"  cluster: member {c.name}, etcd {', '.join(c.etcd)}, prefix {c.prefix}, "
              f"lease {c.lease_ttl:g}s renewed every {c.renew_interval:g}s, weight "
              f"{c.weight:g}, configuration digest {digest(c, config.consoles)} (the same "
              "on every member)")
    return 0


def _console_line(console: ConsoleConfig) -> str:
    where = join_host_port(console.host, console.port)
    user = console.username or "(null user)"
    suites = ",".join(str(s) for s in console.cipher_suites)
    extra = " insecure-allowed" if console.allow_insecure else ""
    tags = f"  tags {','.join(console.tags)}" if console.tags else ""
    return (f"  {console.name}  {where}  user {user}  suites {suites}  "
            f"password from {console.password_source}{extra}{tags}")


def summarize(config: Config) -> str:
    """A short, secret-free description of a loaded configuration."""
    server = config.server
    count = len(config.consoles)
    lines = [
        f"{config.source}: OK, {count} console{'' if count == 1 else 's'}",
        f"data_dir: {config.data_dir}",
        f"server: listen {server.listen}, auth {server.auth}, "
        f"{'https' if server.tls else 'http'}, setup_concurrency {server.setup_concurrency}",
    ]
    if config.consoles:
        lines.append("consoles:")
        lines.extend(_console_line(c) for c in config.consoles.values())
    return "\n".join(lines)
