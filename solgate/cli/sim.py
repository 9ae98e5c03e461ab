"""`solgate sim`: run simulated BMCs (with simulated hosts) on loopback for demos and tests.

It prints a ready `solgate.toml` fragment for the fleet on stdout (progress and warnings
go to stderr, so ``solgate sim > sim.toml`` works), then serves until SIGINT/SIGTERM.
Binding anything but loopback needs ``--allow-remote``: a simulator has a well-known
password and must not be reachable from a network by accident. SIGUSR1 prints a status
line (BMCs with SOL active, sessions open) to stderr, and the "stopped" line repeats it:
after a client shut down, both should be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from solgate.cli.config import duration_arg, size_arg
from solgate.errors import ConfigError

if TYPE_CHECKING:
    from solgate.sim.faults import FaultConfig
    from solgate.sim.fleet import SimBmcHandle, SimFleet

DEFAULT_PASSWORD = b"password"
DEFAULT_PASSWORD_ENV = "SOLGATE_SIM_PASSWORD"  # noqa: S105 - a variable name


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (0.1 = 10%)")
    return value


def register(subparsers: Any) -> None:
    """Add `sim` to the `solgate` command."""
    p = subparsers.add_parser(
        "sim",
        help="run simulated BMCs with simulated hosts (for demos and tests)",
        description="Run N simulated IPMI v2.0 BMCs, each with a simulated host on its "
                    "serial port, on consecutive UDP ports. Prints a solgate.toml fragment "
                    "for them, then runs until Ctrl-C.",
    )
    p.add_argument("--count", type=int, default=1, metavar="N", help="how many BMCs (1)")
    p.add_argument("--base-port", type=int, default=9001, metavar="P",
                   help="UDP port of the first BMC; the others follow (9001)")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (127.0.0.1)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --bind (the simulator's password is known)")
    p.add_argument("--user", default="admin", help="BMC username (admin)")
    p.add_argument("--password-env", metavar="VAR",
                   help="read the BMC password from this environment variable "
                        "(default: the password 'password')")
    p.add_argument("--cipher-suites", default="1,2,3,17", metavar="LIST",
                   help="cipher suites the BMCs accept (1,2,3,17)")
    faults = p.add_argument_group("fault injection (rates 0..1, both directions)")
    faults.add_argument("--loss", type=_rate, default=0.0, help="drop datagrams")
    faults.add_argument("--dup", type=_rate, default=0.0, help="duplicate datagrams")
    faults.add_argument("--reorder", type=_rate, default=0.0, help="swap datagrams")
    faults.add_argument("--delay", type=_rate, default=0.0,
                        help="delay datagrams by up to --max-delay")
    faults.add_argument("--max-delay", type=duration_arg, default=0.3, metavar="T",
                        help="longest added delay (300ms)")
    faults.add_argument("--corrupt", type=_rate, default=0.0, help="flip one bit")
    faults.add_argument("--seed", type=int, default=0, help="seed for faults and hosts (0)")
    host = p.add_argument_group("simulated hosts")
    host.add_argument("--baud", type=int, default=115200, help="serial speed (115200)")
    host.add_argument("--boot-speed", type=float, default=1.0, metavar="X",
                      help="boot log speed factor (1.0; 10 = ten times faster)")
    host.add_argument("--boot-log-size", type=size_arg, default=0, metavar="BYTES",
                      help="make each boot log about this long, e.g. 64KiB (a large "
                           "server's); 0 keeps the plain one of ~4 KB")
    host.add_argument("--powered-off", action="store_true",
                      help="start with every host powered off; SIGUSR2 powers on every "
                           "host that is off, all at the same moment (a power restore)")
    host.add_argument("--power-on-spread", type=duration_arg, default=0.0, metavar="T",
                      help="on SIGUSR2, power the hosts on in sequence over T instead of at "
                           "once: host i of N (in port order) at i*T/N after the signal, as "
                           "PDU outlet delays and BMC power-restore delays stagger a real "
                           "restore (0: all at once); --stats gives each host's delay")
    host.add_argument("--query-cursor", action="store_true",
                      help="end each shell prompt with a cursor position query (ESC [ 6 n), "
                      "as busybox ash and systemd's serial getty do")
    p.add_argument("--session-timeout", type=duration_arg, default=60.0, metavar="T",
                   help="BMC session idle timeout (60s)")
    p.add_argument("--sol-retries", type=int, default=4, metavar="N",
                   help="times a BMC resends an unacknowledged SOL packet before giving up "
                        "on it (4, as ipmi_sim; real BMCs use a handful, often 7)")
    p.add_argument("--sol-retry-interval", type=duration_arg, default=1.0, metavar="T",
                   help="wait before resending a SOL packet (1s, as ipmi_sim; real BMCs "
                        "use 100ms to 1s)")
    p.add_argument("--stats", metavar="FILE",
                   help="on exit, write per-BMC counters as JSON: bytes each host put on "
                        "its serial line, SOL bytes sent, abandoned, thrown away while no "
                        "SOL session was active, and still queued for sending; datagrams "
                        "received and sent, and SOL packets resent")
    p.set_defaults(handler=run)


def check_bind(bind: str, allow_remote: bool) -> None:
    if bind == "localhost" or allow_remote:
        return
    try:
        loopback = ipaddress.ip_address(bind).is_loopback
    except ValueError:
        raise ConfigError(f"--bind {bind!r} is not an IP address; use 127.0.0.1") from None
    if not loopback:
        raise ConfigError(
            f"--bind {bind} is not a loopback address and the simulator's password is "
            "public; add --allow-remote if you really want it on a network"
        )


def parse_suites(text: str) -> tuple[int, ...]:
    try:
        suites = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--cipher-suites {text!r}: give numbers such as 17,3") from None
    if 0 in suites:
        raise ConfigError("--cipher-suites: suite 0 lets any password in; the simulator "
                          "refuses it")
    return suites


def toml_fragment(fleet: SimFleet, *, user: str, password_env: str,
                  default_password: bool) -> str:
    """A `solgate.toml` fragment naming every BMC of the fleet."""
    host = fleet.bind_host if fleet.bind_host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    lines = ["# solgate.toml fragment for `solgate sim`"]
    if default_password:
        lines.append(f"# export {password_env}={DEFAULT_PASSWORD.decode()}")
    lines += [
        "[defaults]",
        f'username = "{user}"',
        f'password_env = "{password_env}"',
        "cipher_suites = [17, 3]",
        "",
    ]
    for handle in fleet.bmcs:
        lines += [f"[consoles.{handle.name}]", f'host = "{host}"', f"port = {handle.port}", ""]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    """`solgate sim`: start the fleet, print its fragment, serve until a signal."""
    # The simulator is imported only here: every `solgate` command builds this parser.
    from solgate.ipmi.codec import Privilege
    from solgate.sim.bmc import SimBmcConfig
    from solgate.sim.faults import FaultConfig
    from solgate.sim.fleet import SimFleet, make_host

    check_bind(args.bind, args.allow_remote)
    suites = parse_suites(args.cipher_suites)
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise ConfigError(f"--password-env {args.password_env}: that environment variable "
                              "is not set; export it or leave the option out")
        password, password_env, default_password = value.encode(), args.password_env, False
    else:
        password, password_env, default_password = DEFAULT_PASSWORD, DEFAULT_PASSWORD_ENV, True
        print(f"solgate sim: warning: every simulated BMC accepts user {args.user!r} with the "
              "password 'password' (this is a simulator; use --password-env VAR to change it)",
              file=sys.stderr)
    users = {args.user: (password, Privilege.ADMINISTRATOR)}

    def config_factory(index: int, name: str) -> SimBmcConfig:
        host = make_host(name, seed=args.seed + index, baud=args.baud,
                         boot_speed=args.boot_speed, query_cursor=args.query_cursor,
                         boot_log_size=args.boot_log_size)
        return SimBmcConfig(name=name, users=users, cipher_suites=suites,
                            session_timeout=args.session_timeout, host=host,
                            sol_retry_count=args.sol_retries,
                            sol_retry_interval=args.sol_retry_interval)

    faults = FaultConfig.symmetric(
        drop=args.loss, duplicate=args.dup, reorder=args.reorder, delay=args.delay,
        corrupt=args.corrupt, max_delay=args.max_delay, seed=args.seed,
    )
    fleet = SimFleet(args.count, args.base_port, args.bind, config_factory=config_factory,
                     faults=lambda index: _copy_faults(faults), power_on=not args.powered_off)
    restore = PowerRestore(fleet, args.power_on_spread)
    started = time.monotonic()
    await fleet.start()
    try:
        elapsed = time.monotonic() - started
        print(toml_fragment(fleet, user=args.user, password_env=password_env,
                            default_password=default_password), flush=True)
        ports = fleet.ports
        span = f"{ports[0]}" if len(ports) == 1 else f"{ports[0]}-{ports[-1]}"
        print(f"solgate sim: started {len(ports)} BMC{'s' if len(ports) > 1 else ''} on "
              f"{args.bind}:{span} in {elapsed:.1f} s; Ctrl-C stops", file=sys.stderr,
              flush=True)
        await _wait_for_signal(status=lambda: print(fleet_status(fleet), file=sys.stderr,
                                                    flush=True),
                               power_on=lambda: restore.start(asyncio.get_running_loop()))
    finally:
        restore.cancel()
        status = fleet_status(fleet)
        await fleet.stop()
    if args.stats:
        _write_stats(fleet, args.stats, restore.delays)
    for handle in fleet.bmcs:
        sol = handle.core.sol
        if sol.abandoned_bytes:
            print(f"solgate sim: {handle.name} abandoned {sol.abandoned_bytes} of "
                  f"{sol.sent_bytes} SOL bytes (unacknowledged after {args.sol_retries} "
                  "retries, or pending when SOL was deactivated)", file=sys.stderr)
    print(f"solgate sim: stopped; {status.removeprefix('solgate sim: ')}", file=sys.stderr)
    return 0


def fleet_status(fleet: SimFleet) -> str:
    """What the BMCs hold right now: after a client stopped, any SOL still active or
    session still open is one it left behind (a real BMC would refuse the next client)."""
    sol = sum(1 for h in fleet.bmcs if h.core.sol.active)
    sessions = sum(len(h.core.sessions) for h in fleet.bmcs)
    return (f"solgate sim: status: {len(fleet.bmcs)} BMCs, {sol} with SOL active, "
            f"{sessions} sessions open")


def _copy_faults(faults: FaultConfig) -> FaultConfig:
    """Each BMC gets its own mutable FaultConfig (same rates and seed)."""
    from solgate.sim.faults import FaultConfig

    return FaultConfig.symmetric(
        drop=faults.inbound.drop, duplicate=faults.inbound.duplicate,
        reorder=faults.inbound.reorder, delay=faults.inbound.delay,
        corrupt=faults.inbound.corrupt, max_delay=faults.inbound.max_delay, seed=faults.seed,
    )


def power_on_offsets(count: int, spread: float) -> list[float]:
    """Seconds after the signal at which each of `count` hosts powers on: evenly over
    `spread`, in order, the first at once (0 for every host when `spread` is 0)."""
    return [spread * i / count for i in range(count)]


class PowerRestore:
    """SIGUSR2: every host that is off powers on, at one `now` (a power restore) or, with a
    spread, one after another over it (a sequenced restore, as outlet power-on delays
    stagger a real one). `delays` keeps each BMC's seconds from the signal to its host's
    power-on, for `--stats`."""

    def __init__(self, fleet: SimFleet, spread: float) -> None:
        self.fleet = fleet
        self.spread = spread
        self.delays: dict[int, float] = {}
        self._scheduled: set[int] = set()
        self._timers: list[asyncio.TimerHandle] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Power on now, or schedule the sequence; a host already scheduled is skipped."""
        now = loop.time()
        off = [h for h in self.fleet.bmcs
               if h.host is not None and not h.host.powered and h.index not in self._scheduled]
        if not self.spread:
            for handle in off:
                self._power_on(handle, now, 0.0)
        else:
            for handle, offset in zip(off, power_on_offsets(len(off), self.spread),
                                      strict=True):
                self._scheduled.add(handle.index)  # a second signal skips it
                self._timers.append(loop.call_at(now + offset, self._power_on_later,
                                                 handle, now))
        how = "now" if not self.spread else f"over {self.spread:g} s"
        print(f"solgate sim: powering on {len(off)} host{'' if len(off) == 1 else 's'} {how}",
              file=sys.stderr, flush=True)

    def _power_on_later(self, handle: SimBmcHandle, signalled: float) -> None:
        self._scheduled.discard(handle.index)
        now = asyncio.get_running_loop().time()
        self._power_on(handle, now, now - signalled)

    def _power_on(self, handle: SimBmcHandle, now: float, delay: float) -> None:
        host = handle.host
        if host is not None and not host.powered:
            host.power_on(now)
            self.fleet.poke(handle)
        self.delays[handle.index] = round(delay, 4)

    def cancel(self) -> None:
        """Stopping: hosts not yet powered on stay off."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()


def _write_stats(fleet: SimFleet, path: str, delays: dict[int, float]) -> None:
    """Per-BMC byte counters, so a benchmark can tell what a console should have logged,
    and when its host was powered on (seconds after SIGUSR2; null if it was not)."""
    rows = []
    for handle in fleet.bmcs:
        sol = handle.core.sol
        host = handle.host
        rows.append({"name": handle.name, "port": handle.port,
                     "power_on_s": delays.get(handle.index),
                     "host_bytes": host.output_bytes if host is not None else 0,
                     "sol_sent": sol.sent_bytes, "abandoned": sol.abandoned_bytes,
                     "discarded": sol.discarded, "stalls": sol.stalls,
                     "sol_queued": sol.stream.send_buffered if sol.stream is not None else 0,
                     "datagrams_in": handle.core.stats.received,
                     "datagrams_out": handle.core.stats.sent,
                     "sol_retransmits": handle.core.sol.retransmits})
    with open(path, "w") as f:
        json.dump({"bmcs": rows}, f)


async def _wait_for_signal(status: Callable[[], None] | None = None,
                           power_on: Callable[[], None] | None = None) -> None:
    """Signals only set an event; the caller then stops cleanly. SIGUSR1 calls `status`
    (`solgate sim` prints how many BMCs still hold SOL and sessions), SIGUSR2 `power_on`."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if status is not None:
        loop.add_signal_handler(signal.SIGUSR1, status)
    if power_on is not None:
        loop.add_signal_handler(signal.SIGUSR2, power_on)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if status is not None:
            loop.remove_signal_handler(signal.SIGUSR1)
        if power_on is not None:
            loop.remove_signal_handler(signal.SIGUSR2)
