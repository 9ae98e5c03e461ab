"""A `solgate sim` look-alike with a tunable SOL character accumulate interval.

    python bench/_sim_runner.py --count N --base-port P --baud B --accumulate 0.001

The simulated BMC polls its host's UART once per accumulate interval (20 ms by default,
like real BMCs' "character accumulate interval"); an echo benchmark with that interval
measures mostly where in the 20 ms a key landed. This runner builds the same fleet as
`solgate sim` with a shorter interval, prints the same solgate.toml fragment on stdout and
the same "started" line on stderr, and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from solgate.cli.sim import _wait_for_signal, toml_fragment  # noqa: E402
from solgate.ipmi.codec import Privilege  # noqa: E402
from solgate.sim.bmc import SimBmcConfig  # noqa: E402
from solgate.sim.faults import FaultConfig  # noqa: E402
from solgate.sim.fleet import SimFleet, make_host  # noqa: E402


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--base-port", type=int, default=0)
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--accumulate", type=float, default=0.02)
    p.add_argument("--cipher-suites", default="1,2,3,17")
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    password = os.environ.get("SOLGATE_SIM_PASSWORD", "password").encode()
    users = {"admin": (password, Privilege.ADMINISTRATOR)}
    suites = tuple(int(s) for s in args.cipher_suites.split(","))

    def config_factory(index: int, name: str) -> SimBmcConfig:
        host = make_host(name, seed=args.seed + index, baud=args.baud, boot_speed=1000.0)
        return SimBmcConfig(name=name, users=users, cipher_suites=suites, host=host,
                            accumulate_interval=args.accumulate)

    def faults(index: int) -> FaultConfig:
        return FaultConfig.symmetric(drop=args.loss, seed=args.seed + index)

    fleet = SimFleet(args.count, args.base_port, config_factory=config_factory,
                     faults=faults if args.loss else None)
    await fleet.start()
    try:
        print(toml_fragment(fleet, user="admin", password_env="SOLGATE_SIM_PASSWORD",
                            default_password=False), flush=True)
        print(f"solgate sim: started {args.count} BMCs", file=sys.stderr, flush=True)
        await _wait_for_signal()
    finally:
        await fleet.stop()


if __name__ == "__main__":
    asyncio.run(main())
