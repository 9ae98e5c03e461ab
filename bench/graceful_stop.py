"""Graceful stop: how long SIGTERM takes with N active consoles, and what it leaves behind.

    python bench/graceful_stop.py [--sizes 100,1000] [--flooding 50] [--viewers 50] \\
        [--rounds 2] [--unreachable]

For each size: start the simulated BMCs (`solgate sim`, processes of <= 2,000), start
`solgate serve` with its web server, wait until every console is active, attach
`--viewers` read-only WebSocket viewers, start a 64,000-byte flood on `--flooding`
consoles through a writer (so output is in flight at the stop), then send SIGTERM and
time it until the process has exited. Then ask each simulator (SIGUSR1) how many BMCs
still hold SOL or a session (both must be 0: the graceful stop deactivates SOL and
closes every session), and check every console log: each ends with solgate's
"SOL down: solgate stopping" note (written after the last console byte, so nothing
was left unwritten), and each flood in it is an exact prefix of the flood stream.

`--unreachable` measures the worst case instead: the simulators are frozen (SIGSTOP)
just before the SIGTERM, so no BMC answers the Deactivate Payload and Close Session
requests and the stop runs into its time limits. Writes bench/results/graceful_stop.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Fleet,
    RawWsViewer,
    Server,
    WsConsole,
    print_table,
    workdir,
    write_result,
)
from soak import flood_instances, read_console_log  # noqa: E402

STOP_NOTE = re.compile(rb"\[-- solgate [^\r\n]*: SOL down: solgate stopping --\]\r\n$")


def sim_status(fleet: Fleet) -> tuple[int, int]:
    """(BMCs with SOL active, sessions open) over all simulator processes, via SIGUSR1."""
    sol = sessions = 0
    for n, sim in enumerate(fleet.sims):
        err = fleet.workdir / f"sim{n}.err"
        before = err.read_text().count("status:")
        os.kill(sim.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while err.read_text().count("status:") <= before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"simulator {n} did not answer SIGUSR1")
            time.sleep(0.05)
        line = [ln for ln in err.read_text().splitlines() if "status:" in ln][-1]
        m = re.search(r"(\d+) with SOL active, (\d+) sessions open", line)
        assert m is not None, line
        sol += int(m.group(1))
        sessions += int(m.group(2))
    return sol, sessions


async def _load(server: Server, names: list[str], flooding: int, viewers: int,
                ) -> tuple[list, list]:
    import aiohttp

    session = aiohttp.ClientSession()
    writers = []
    for name in names[:flooding]:
        ws = WsConsole(session, server.url, name)
        await ws.open()
        await ws.settle(0.1)
        await ws.take_write()
        await ws.send(b"flood 64000\r")
        writers.append(ws)
    watchers = [await RawWsViewer.open(server.port, names[-1 - i % len(names)])
                for i in range(viewers)]
    await asyncio.sleep(1.0)  # the floods are under way (64,000 bytes take 5.6 s)
    return [session, *writers], watchers


def measure(count: int, args: argparse.Namespace) -> dict[str, object]:
    with workdir(keep=args.keep) as wd:
        fleet = Fleet(count, wd, kernel_ports=True)
        fleet.start()
        server = Server(fleet.consoles, wd, web=True)
        try:
            server.start()
            setup = server.wait_active(count, 300)
            names = [n for n, _ in fleet.consoles]
            loop = asyncio.new_event_loop()
            clients, watchers = loop.run_until_complete(
                _load(server, names, min(args.flooding, count), args.viewers))
            if args.unreachable:
                for pid in fleet.pids:
                    os.kill(pid, signal.SIGSTOP)
            t = time.monotonic()
            os.kill(server.pid, signal.SIGTERM)
            assert server.proc is not None
            rc = server.proc.wait(300)
            stop_s = time.monotonic() - t
            if args.unreachable:
                for pid in fleet.pids:
                    os.kill(pid, signal.SIGCONT)
            sol, sessions = sim_status(fleet)
            for w in watchers:
                w.close()

            async def close_all() -> None:
                for c in clients:
                    with contextlib.suppress(Exception):
                        await c.close()

            loop.run_until_complete(close_all())
            loop.close()
            logs = server.data_dir / "logs"
            unterminated = [n for n in names
                            if not STOP_NOTE.search(read_console_log(logs, n))]
            bad_floods = 0
            for n in names[: args.flooding]:
                inst = flood_instances(read_console_log(logs, n), [0])
                if len(inst) != 1 or inst[0]["first"] != 1 or inst[0]["gaps"] or inst[0]["bad"]:
                    bad_floods += 1
                    print(f"... {n}: flood in the log: {inst}", file=sys.stderr)
        finally:
            server.stop()
            fleet.stop()
    return {"consoles": count, "setup_s": None if setup is None else round(setup, 1),
            "flooding": min(args.flooding, count), "viewers": args.viewers,
            "unreachable": args.unreachable, "exit_code": rc, "stop_s": round(stop_s, 2),
            "sol_active_after": sol, "sessions_after": sessions,
            "logs_without_stop_note": len(unterminated), "floods_not_exact": bad_floods}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100,1000")
    p.add_argument("--flooding", type=int, default=50, help="consoles flooding at the stop")
    p.add_argument("--viewers", type=int, default=50, help="WebSocket viewers attached")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--unreachable", action="store_true",
                   help="freeze the simulators first: no BMC answers during the stop")
    p.add_argument("--name", default="graceful_stop")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        for _ in range(args.rounds):
            r = measure(n, args)
            print(f"... {r}", file=sys.stderr, flush=True)
            results.append(r)
    print_table(["consoles", "flooding", "viewers", "BMCs answer", "stop s", "exit",
                 "SOL left", "sessions left", "logs unterminated", "floods not exact"],
                [[r["consoles"], r["flooding"], r["viewers"], "no" if r["unreachable"] else "yes",
                  r["stop_s"], r["exit_code"], r["sol_active_after"], r["sessions_after"],
                  r["logs_without_stop_note"], r["floods_not_exact"]] for r in results])
    path = write_result(args.name, {"results": results})
    print(f"wrote {path}")
    ok = all(r["exit_code"] == 0 and r["logs_without_stop_note"] == 0
             and r["floods_not_exact"] == 0
             and (args.unreachable or (r["sol_active_after"] == 0 and r["sessions_after"] == 0))
             for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
