"""Keystroke echo round trip: solgate (WebSocket in, SOL, host echo, SOL, WebSocket out) vs
`ipmitool sol activate` (pty in, SOL, host echo, SOL, pty out), against the same BMC model.

    python bench/echo_latency.py [--keys 300] [--rounds 3] [--suite 17] [--baud 8000000]

Two BMCs in one `solgate sim` process; solgate holds the first, ipmitool the second.
Rounds alternate (solgate, ipmitool, solgate, ...), each typing `--keys` single letters one
at a time and timing each until its echo comes back; Ctrl-U clears the line every 40
keys. The host's serial speed is set high (`--baud`) so that the simulated BMC's character
accumulation (it sends what arrived within 96 character times) adds ~0.1 ms, not 8 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PROMPT_RE,
    Fleet,
    PtyClient,
    Server,
    WsConsole,
    ipmitool_sol_argv,
    print_table,
    workdir,
    write_result,
)

KEYS = b"abcdefghijklmnopqrstuvwxyz"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def ws_round(ws: WsConsole, keys: int) -> list[float]:
    out = []
    for i in range(keys):
        if i % 40 == 39:
            await ws.send(b"\x15")
            await ws.settle(0.05)
            continue
        key = KEYS[i % len(KEYS) : i % len(KEYS) + 1]
        t0 = time.perf_counter()
        await ws.send(key)
        while True:
            r = await ws.receive(5.0)
            if r is None:
                raise RuntimeError("no echo within 5 s through solgate")
            if r[0] == "data" and key in r[1]:
                break
        out.append(1000 * (time.perf_counter() - t0))
    await ws.send(b"\x15")
    await ws.settle(0.05)
    return out


async def pty_round(cli: PtyClient, keys: int) -> list[float]:
    out = []
    for i in range(keys):
        if i % 40 == 39:
            cli.type(b"\x15")
            await asyncio.sleep(0.05)
            continue
        key = KEYS[i % len(KEYS) : i % len(KEYS) + 1]
        since = len(cli.output)
        t0 = time.perf_counter()
        cli.type(key)
        await cli.wait_for(lambda b, s=since, k=key: k in b[s:], 5.0)
        # the time the reader saw it, not when this coroutine woke up
        seen = next(t for t, n in cli.arrivals if n > since)
        out.append(1000 * (seen - t0))
    cli.type(b"\x15")
    await asyncio.sleep(0.05)
    return out


async def amain(args: argparse.Namespace) -> int:
    import aiohttp

    ours: list[float] = []
    theirs: list[float] = []
    with workdir() as wd:
        fleet = Fleet(2, wd, baud=args.baud, accumulate=args.accumulate)
        fleet.start()
        server = Server(fleet.consoles[:1], wd, web=True, suites=(args.suite,),
                        uvloop=args.uvloop)
        try:
            server.start()
            if server.wait_active(1, 60) is None:
                raise RuntimeError("console did not come up")
            cli = PtyClient(ipmitool_sol_argv(fleet.consoles[1][1], args.suite))
            try:
                await cli.expect(rb"SOL Session operational", timeout=20)
                cli.type(b"\r")
                await cli.expect(PROMPT_RE.pattern, timeout=10)
                async with aiohttp.ClientSession() as session:
                    ws = WsConsole(session, server.url, fleet.consoles[0][0])
                    await ws.open()
                    await ws.take_write()
                    await ws.settle(0.3)
                    await ws.send(b"\r")
                    await ws.settle(0.3)
                    for _ in range(args.rounds):
                        ours += await ws_round(ws, args.keys)
                        theirs += await pty_round(cli, args.keys)
                    await ws.close()
            finally:
                await cli.close()
        finally:
            server.stop()
            fleet.stop()
    rows = []
    summary = {}
    for name, xs in (("solgate (WebSocket)", ours), ("ipmitool (pty)", theirs)):
        s = {"n": len(xs), "median_ms": round(statistics.median(xs), 3),
             "p99_ms": round(pct(xs, 0.99), 3), "min_ms": round(min(xs), 3),
             "max_ms": round(max(xs), 3)}
        summary[name] = s
        rows.append([name, s["n"], s["median_ms"], s["p99_ms"], s["min_ms"], s["max_ms"]])
    d_med = summary["solgate (WebSocket)"]["median_ms"] - summary["ipmitool (pty)"]["median_ms"]
    d_p99 = summary["solgate (WebSocket)"]["p99_ms"] - summary["ipmitool (pty)"]["p99_ms"]
    print(f"echo round trip, cipher suite {args.suite}, host at {args.baud} baud, "
          f"BMC accumulate interval {1000 * args.accumulate:g} ms, "
          f"{args.rounds} interleaved rounds")
    print_table(["client", "keys", "median ms", "p99 ms", "min ms", "max ms"], rows)
    print(f"solgate - ipmitool: median {d_med:+.3f} ms, p99 {d_p99:+.3f} ms "
          "(target: within 0.5 ms)")
    path = write_result(args.name, {"suite": args.suite, "baud": args.baud,
                                    "accumulate_s": args.accumulate,
                                    "uvloop": args.uvloop, "summary": summary,
                                    "delta_median_ms": round(d_med, 3),
                                    "delta_p99_ms": round(d_p99, 3),
                                    "solgate_ms": ours, "ipmitool_ms": theirs})
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--suite", type=int, default=17)
    parser.add_argument("--baud", type=int, default=8_000_000)
    parser.add_argument("--accumulate", type=float, default=0.001,
                        help="the BMC's SOL character accumulate interval, s (0.001)")
    parser.add_argument("--uvloop", action="store_true", help="run serve on uvloop")
    parser.add_argument("--name", default="echo_latency")
    return asyncio.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
