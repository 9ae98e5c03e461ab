"""The soak's simulated fleet: `solgate sim` plus churn made on the BMC side.

    python bench/_soak_sim.py --count N --base-port P --record churn.json [rates]

Builds the same fleet as `solgate sim` (same toml fragment on stdout, same "started" line
on stderr) and, on its own seeded schedule, does to random BMCs what happens in a data
centre:

* restart: the BMC forgets every session and its SOL owner (a BMC reboot);
* session timeout: the BMC drops the session that holds SOL, as it does when it decides
  the session idled out;
* flood: `flood SIZE` is typed on an idle host's serial console while SOL is active, so
  the host prints SIZE checkable bytes (solgate/sim/flood.py) at the UART's speed.

Every action is recorded with the fleet's clock; a flood also records the SOL owner when
it started and a little after it should have ended, and whether a restart or timeout
hit the same BMC meanwhile ("disturbed": a real BMC drops what it buffered, so lines
may be missing there, and only there). SIGUSR1 prints the fleet status (SOL active,
sessions open), the first SIGUSR2 starts the run and the second stops the churn (nothing
new starts), SIGTERM writes the record to --record and exits. The run opens with a
warm-up: every host floods 64,000 bytes once, spread over --warmup seconds, so each
console's 64 KiB ring of recent output is full before the churn starts (its one-time
growth is then not mistaken for a leak); these floods are checked like the others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from solgate.cli.sim import fleet_status, toml_fragment  # noqa: E402
from solgate.ipmi.codec import Privilege  # noqa: E402
from solgate.sim.bmc import SimBmcConfig  # noqa: E402
from solgate.sim.fleet import SimBmcHandle, SimFleet, make_host  # noqa: E402
from solgate.sim.host import HostState  # noqa: E402

FLOOD_SIZES = (6400, 32000, 64000)  # whole 64-byte lines: 100, 500, 1,000
SETTLE = 5.0  # seconds after a flood's expected end in which churn still counts against it


class Churn:
    def __init__(self, fleet: SimFleet, args: argparse.Namespace) -> None:
        self.fleet = fleet
        self.args = args
        self.rng = random.Random(args.seed)
        self.floods: list[dict[str, object]] = []
        self.churn: list[dict[str, object]] = []  # restarts and timeouts
        self.running = False
        self.running_floods: list[tuple[SimBmcHandle, dict[str, object]]] = []
        self.started = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def _pick(self, want) -> SimBmcHandle | None:  # noqa: ANN001
        for _ in range(20):
            h = self.rng.choice(self.fleet.bmcs)
            if want(h):
                return h
        return None

    def restart(self) -> None:
        h = self.rng.choice(self.fleet.bmcs)
        self.churn.append({"bmc": h.name, "kind": "restart", "t": self.loop.time()})
        h.restart()
        self.fleet.poke(h)

    def timeout(self) -> None:
        h = self._pick(lambda h: h.core.sol.owner is not None and not h.core.sol.phantom)
        if h is None:
            return
        now = self.loop.time()
        self.churn.append({"bmc": h.name, "kind": "timeout", "t": now})
        h.core.close_session(h.core.sol.owner, now)
        self.fleet.poke(h)

    def idle(self, h: SimBmcHandle) -> bool:
        host = h.host
        return (h.core.sol.active and host is not None and host.state is HostState.SHELL
                and getattr(host, "_job", None) is None
                and self.loop.time() >= getattr(h, "busy_until", 0.0))

    def flood(self, h: SimBmcHandle | None = None, size: int | None = None) -> None:
        h = h or self._pick(self.idle)
        if h is None or not self.idle(h):
            return
        assert h.host is not None
        size = size or self.rng.choice(FLOOD_SIZES)
        now = self.loop.time()
        h.busy_until = now + 3600  # type: ignore[attr-defined]  # until `watch` sees it end
        rec: dict[str, object] = {"bmc": h.name, "size": size, "t": now,
                                  "owner": h.core.sol.owner}
        self.floods.append(rec)
        self.running_floods.append((h, rec))
        h.host.write(b"flood %d\r" % size, now)
        self.fleet.poke(h)

    async def watch(self) -> None:
        """A flood has ended when the host printed all of it and the BMC took it from the
        UART (under load the BMC's SOL flow is slower than the UART); SETTLE seconds later
        its last packets are acknowledged, and the SOL owner is compared."""
        while True:
            now = self.loop.time()
            still = []
            for h, rec in self.running_floods:
                host = h.host
                assert host is not None
                if "end" not in rec:
                    if getattr(host, "_job", None) is None and host.available(now) == 0:
                        rec["end"] = now
                    elif not h.core.sol.active:
                        rec["end"] = now  # lost with the session: its window ends here
                if "end" in rec and now >= float(rec["end"]) + SETTLE:  # type: ignore[arg-type]
                    rec["owner_after"] = h.core.sol.owner
                    h.busy_until = now  # type: ignore[attr-defined]
                else:
                    still.append((h, rec))
            self.running_floods = still
            await asyncio.sleep(0.1)

    async def run(self) -> None:
        await self.started.wait()
        a = self.args
        order = list(self.fleet.bmcs)
        self.rng.shuffle(order)
        for h in order:  # the warm-up
            if not self.running:
                return
            self.flood(h, max(FLOOD_SIZES))
            await asyncio.sleep(a.warmup / len(order))
        print("soak sim: warm-up done, churn starts", file=sys.stderr, flush=True)
        rates = [(a.restart_every, self.restart), (a.timeout_every, self.timeout),
                 (a.flood_every, self.flood)]
        due = [self.loop.time() + self.rng.expovariate(1 / every) for every, _ in rates]
        while self.running:
            now = self.loop.time()
            for i, (every, action) in enumerate(rates):
                while due[i] <= now and self.running:
                    action()
                    due[i] += self.rng.expovariate(1 / every)
            await asyncio.sleep(0.05)

    def record(self) -> dict[str, object]:
        by_bmc: dict[str, list[float]] = {}
        for c in self.churn:
            by_bmc.setdefault(str(c["bmc"]), []).append(float(c["t"]))  # type: ignore[arg-type]
        now = self.loop.time()
        for f in self.floods:
            start = float(f["t"])  # type: ignore[arg-type]
            end = float(f.get("end", now)) + SETTLE  # type: ignore[arg-type]
            f["disturbed"] = any(start <= t <= end for t in by_bmc.get(str(f["bmc"]), ()))
        return {"floods": self.floods, "churn": self.churn,
                "stats": {"sessions_timed_out": sum(h.core.stats.sessions_timed_out
                                                    for h in self.fleet.bmcs),
                          "logins_failed": sum(h.core.stats.logins_failed
                                               for h in self.fleet.bmcs),
                          "discarded": sum(h.core.sol.discarded for h in self.fleet.bmcs),
                          "errors": self.fleet.errors}}


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--base-port", type=int, default=0)
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart-every", type=float, default=4.0, help="mean seconds")
    p.add_argument("--timeout-every", type=float, default=4.0, help="mean seconds")
    p.add_argument("--flood-every", type=float, default=0.5, help="mean seconds")
    p.add_argument("--warmup", type=float, default=60.0,
                   help="seconds over which every host floods once before the churn")
    p.add_argument("--record", required=True)
    args = p.parse_args()
    password = os.environ.get("SOLGATE_SIM_PASSWORD", "password").encode()
    users = {"admin": (password, Privilege.ADMINISTRATOR)}

    def config_factory(index: int, name: str) -> SimBmcConfig:
        host = make_host(name, seed=args.seed + index, baud=args.baud, boot_speed=1000.0)
        return SimBmcConfig(name=name, users=users, cipher_suites=(3, 17), host=host)

    fleet = SimFleet(args.count, args.base_port, config_factory=config_factory)
    await fleet.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    churn = Churn(fleet, args)

    def toggle_churn() -> None:
        if not churn.started.is_set():
            churn.running = True
            churn.started.set()
            print("soak sim: churn started", file=sys.stderr, flush=True)
        else:
            churn.running = False
            print("soak sim: churn stopped", file=sys.stderr, flush=True)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(
        f"{fleet_status(fleet)}, {len(churn.running_floods)} floods running",
        file=sys.stderr, flush=True))
    loop.add_signal_handler(signal.SIGUSR2, toggle_churn)
    try:
        print(toml_fragment(fleet, user="admin", password_env="SOLGATE_SIM_PASSWORD",
                            default_password=False), flush=True)
        print(f"solgate sim: started {args.count} BMCs", file=sys.stderr, flush=True)
        task = loop.create_task(churn.run())
        watcher = loop.create_task(churn.watch())
        await stop.wait()
        watcher.cancel()
        churn.running = False
        churn.started.set()
        await task
    finally:
        Path(args.record).write_text(json.dumps(churn.record()))
        await fleet.stop()


if __name__ == "__main__":
    asyncio.run(main())
