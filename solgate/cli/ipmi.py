"""`solgate power`, `solgate info` and `solgate deactivate`: one-shot IPMI commands.

Each opens its own RMCP+ session to one BMC, does its job, and closes the session. The
BMC is a console from the configuration file (NAME), or given ad hoc with --host and
friends. Passwords are never taken on the command line (they would show in `ps` and in
shell history): --password-env names an environment variable, --password-file a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from solgate.addresses import join_host_port
from solgate.cli.config import add_config_argument, config_from_args
from solgate.cli.fleet import add_selection_arguments, has_selection, request_from_args, run_fleet
from solgate.console.power import POWER_ACTIONS, POWER_CHANGES
from solgate.errors import CommandError, ConfigError, ProtocolError

if TYPE_CHECKING:
    from solgate.ipmi.commands import ChassisStatus
    from solgate.ipmi.target import BmcTarget
    from solgate.ipmi.transport import IpmiClient

PASSWORD_ENV_DEFAULT = "SOLGATE_BMC_PASSWORD"  # noqa: S105 - a variable name, not a secret


def register(subparsers: Any) -> None:
    """Add `power`, `info` and `deactivate` to the `solgate` command."""
    power = subparsers.add_parser(
        "power", allow_abbrev=False, help="show or change a console's chassis power",
        description="Chassis power of one console's host, over IPMI. With a selection "
                    "(--console GLOB, --tag, --state, --filter) it acts on many consoles "
                    "through the server instead: `solgate do power ACTION ...`.")
    _add_target_arguments(power)
    power.add_argument("action", choices=POWER_ACTIONS,
                       help="status, or on/off/cycle/reset/soft (soft = ACPI shutdown)")
    add_selection_arguments(power, with_config=False)
    power.set_defaults(handler=power_command)

    info = subparsers.add_parser(
        "info", allow_abbrev=False,
        help="show a BMC's identity, power, SOL settings and SOL owner",
        description="Device ID, chassis power, SOL configuration and which session (if "
                    "any) has the SOL payload.")
    _add_target_arguments(info)
    info.set_defaults(handler=info_command)

    deactivate = subparsers.add_parser(
        "deactivate", allow_abbrev=False,
        help="force the SOL payload inactive (frees a stuck console)",
        description="Deactivate Payload for SOL from a new session: frees SOL held by a "
                    "crashed or forgotten client. 'already inactive' is a success.")
    _add_target_arguments(deactivate)
    deactivate.set_defaults(handler=deactivate_command)


class _RefusePassword(argparse.Action):
    """A password in argv shows up in `ps` and shell history: refuse it and say why."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser.error("passwords are never taken on the command line (they show in ps and "
                     "shell history): use --password-env VAR or --password-file PATH")


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help="console name from the configuration (optional with --host)")
    add_config_argument(parser)
    adhoc = parser.add_argument_group("a BMC without a configuration file")
    adhoc.add_argument("--host", help="BMC address (name, IPv4 or IPv6)")
    adhoc.add_argument("--port", type=int, default=623, help="UDP port (default 623)")
    adhoc.add_argument("--user", default="", help="IPMI user name")
    adhoc.add_argument("--password-env", metavar="VAR",
                       help=f"environment variable holding the password (default "
                            f"${PASSWORD_ENV_DEFAULT})")
    adhoc.add_argument("--password-file", metavar="PATH",
                       help="file whose first line is the password")
    adhoc.add_argument("--password", action=_RefusePassword, help=argparse.SUPPRESS)
    parser.add_argument("--cipher-suite", type=int, action="append", dest="cipher_suites",
                        metavar="N", help="cipher suite to try, repeatable, in order "
                                          "(default 17 then 3)")
    parser.add_argument("--allow-insecure", action="store_true", default=None,
                        help="allow cipher suites without authentication or integrity")


# --------------------------------------------------------------------------- targets


def target_from_args(args: argparse.Namespace) -> BmcTarget:
    """The BMC named by NAME (configuration) or by --host (ad hoc), with flag overrides."""
    # The IPMI client side is imported in the handlers only: every `solgate` command
    # builds this parser, and `solgate console` should not load the session crypto.
    from solgate.ipmi.target import BmcTarget

    if args.host:
        target = BmcTarget(host=args.host, port=args.port, username=args.user.encode(),
                           password=_read_password(args), name=args.name or "")
    elif args.name:
        target = _console_target(args)
    else:
        raise ConfigError("name a console from the configuration, or give --host for a BMC "
                          "without one")
    overrides: dict[str, Any] = {}
    if args.cipher_suites:
        overrides["cipher_suites"] = tuple(args.cipher_suites)
    if args.allow_insecure:
        overrides["allow_insecure"] = True
    return dataclasses.replace(target, **overrides) if overrides else target


def _console_target(args: argparse.Namespace) -> BmcTarget:
    config = config_from_args(args)
    console = config.consoles.get(args.name)
    if console is None:
        known = ", ".join(config.consoles) or "none"
        raise ConfigError(f"{config.source}: no console named {args.name!r} (consoles: "
                          f"{known})")
    return console.target()


def _read_password(args: argparse.Namespace) -> bytes:
    if args.password_file:
        try:
            lines = Path(args.password_file).read_bytes().splitlines()
        except OSError as exc:
            raise ConfigError(f"--password-file: cannot read {args.password_file} "
                              f"({exc.strerror or exc})") from None
        password = lines[0] if lines else b""
        source = f"--password-file {args.password_file}"
    else:
        var = args.password_env or PASSWORD_ENV_DEFAULT
        value = os.environ.get(var)
        if value is None:
            raise ConfigError(
                f"no password: set the environment variable {var}, or pass --password-env "
                "VAR or --password-file PATH (passwords are never taken on the command line)")
        password = value.encode()
        source = f"environment variable {var}"
    if len(password) > 20:
        raise ConfigError(f"the password from {source} is {len(password)} bytes; IPMI v2.0 "
                          "passwords are at most 20 bytes")
    return password


def _name(target: BmcTarget) -> str:
    return target.name or target.label


async def _with_client(args: argparse.Namespace,
                       job: Callable[[IpmiClient, BmcTarget], Awaitable[int]]) -> int:
    from solgate.ipmi.transport import IpmiClient  # as in target_from_args

    target = target_from_args(args)
    async with await IpmiClient.connect(target) as client:
        return await job(client, target)


# --------------------------------------------------------------------------- handlers


def power_command(args: argparse.Namespace) -> Awaitable[int]:
    if has_selection(args):
        if args.name or args.host:
            raise ConfigError("give either NAME/--host (one BMC, directly) or a selection "
                              "(--console, --tag, --state, --filter: many, via the server)")
        args.arg, args.action = args.action, "power"
        return run_fleet(args, request_from_args(args))
    return _with_client(args, lambda client, target: _power(client, target, args.action))


async def _power(client: IpmiClient, target: BmcTarget, action: str) -> int:
    if action == "status":
        status = await client.chassis_status()
        print(f"{_name(target)}: chassis power is {_power_text(status)}")
        return 0
    await client.chassis_control(POWER_CHANGES[action])
    print(f"{_name(target)}: power {action} sent")
    return 0


def _power_text(status: ChassisStatus) -> str:
    text = "on" if status.power_on else "off"
    if status.faults:
        text += f" (faults: {', '.join(status.faults)})"
    return text


def info_command(args: argparse.Namespace) -> Awaitable[int]:
    return _with_client(args, _info)


async def _optional(what: Awaitable[Any]) -> tuple[Any, str]:
    """Run one optional query: (result, "") or (None, why it is unknown)."""
    try:
        return await what, ""
    except (CommandError, ProtocolError) as exc:
        return None, str(exc)


async def _info(client: IpmiClient, target: BmcTarget) -> int:
    session = client.session
    suite = session.suite.id if session.suite else "?"
    where = join_host_port(target.host, target.port)
    rows = [("console", f"{target.name} ({where})" if target.name else where),
            ("session", f"cipher suite {suite}, privilege {session.privilege.name.lower()}")]
    dev, why = await _optional(client.device_id())
    rows.append(("device", why or (
        f"id 0x{dev.device_id:02x} rev {dev.device_revision}, firmware {dev.firmware}, "
        f"IPMI {dev.ipmi_version}, manufacturer {dev.manufacturer_id} "
        f"(0x{dev.manufacturer_id:06x}), product 0x{dev.product_id:04x}")))
    chassis, why = await _optional(client.chassis_status())
    rows.append(("power", why or (
        f"{_power_text(chassis)}, restore policy {chassis.restore_policy}")))
    cfg, why = await _optional(client.sol_config())
    rows.append(("SOL config", why or _sol_config_text(cfg)))
    status, why = await _optional(client.payload_activation_status())
    owner, owner_why = await _optional(client.payload_instance_info())
    if status is None:
        sol = f"unknown ({why})"
    elif not status.is_active():
        sol = "inactive (free)"
    else:
        sol = "active"
        if owner is not None and owner.active:
            sol += f", owned by BMC session 0x{owner.owner_session_id:08x}"
    rows.append(("SOL payload", sol))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _sol_config_text(cfg: Any) -> str:
    def show(value: object, unit: str = "") -> str:
        if value is None:
            return "unsupported"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return f"{value}{unit}"

    parts = [f"enabled {show(cfg.enabled)}", f"bit rate {show(cfg.bit_rate)}"]
    if cfg.privilege is not None:
        parts.append(f"min privilege {cfg.privilege}")
    if cfg.retry_count is not None:
        parts.append(f"retries {cfg.retry_count} x {cfg.retry_interval_ms} ms")
    if cfg.port is not None:
        parts.append(f"port {cfg.port}")
    return ", ".join(parts)


def deactivate_command(args: argparse.Namespace) -> Awaitable[int]:
    return _with_client(args, _deactivate)


async def _deactivate(client: IpmiClient, target: BmcTarget) -> int:
    if await client.deactivate_sol():
        print(f"{_name(target)}: SOL deactivated")
    else:
        print(f"{_name(target)}: SOL was already inactive")
    return 0

