"""Throughput: CPU seconds per MB of console output, solgate vs `ipmitool sol activate`.

    python bench/throughput.py [--bytes 2M] [--baud 8000000] [--suites 3,17] [--runs 2]
                               [--idle 0]

Two simulated BMCs in one `solgate sim` process (same host model, same settings): solgate
holds the first (and logs it, and fans it out to one WebSocket viewer); ipmitool, on a
pty, holds the second. Each run types `flood BYTES` on both consoles in turn (interleaved),
waits for the whole flood and the next prompt, and charges the CPU the client process used
meanwhile. Every byte is checked with the host's flood verifier: what the viewer/pty saw,
and for solgate also what the log holds. With `--idle N`, solgate also holds N idle
consoles while it floods (the "one busy among many idle" figure).

The host's serial speed (`--baud`) is set high so the SOL protocol, not the simulated
UART, is the limit; CPU per MB does not depend on it much.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Fleet,
    Server,
    ipmitool_flood,
    parse_size,
    print_table,
    sample,
    workdir,
    write_result,
    ws_flood,
)


async def run_suite(fleet: Fleet, wd: Path, suite: int, size: int, runs: int,
                    idle: list[tuple[str, int]], reference: bool, uvloop: bool = False,
                    background: float = 0.0,
                    profile: Path | None = None,
                    log_index: bool = True) -> list[dict[str, object]]:
    import aiohttp

    ours, theirs = fleet.consoles[0], fleet.consoles[1]
    server = Server([ours, *idle], wd / f"s{suite}", web=True, suites=(suite,), uvloop=uvloop,
                    log_index=log_index)
    server.workdir.mkdir()
    out: list[dict[str, object]] = []
    server.start()
    try:
        if server.wait_active(1 + len(idle), 300) is None:
            raise RuntimeError("consoles did not come up")
        await asyncio.sleep(2.0 if not idle else 10.0)
        rate = 0.0
        if background > 0:  # what the idle consoles cost on their own, to subtract
            a = sample(server.pid)
            await asyncio.sleep(background)
            b = sample(server.pid)
            rate = (b.cpu - a.cpu) / (b.t - a.t)
        async with aiohttp.ClientSession() as session:
            for run in range(runs):
                spy = _start_profile(profile, server.pid, suite) if run == 0 else None
                r = await ws_flood(session, server, ours[0], size)
                _stop_profile(spy)
                net = r["cpu_s"] - rate * r["seconds"]
                out.append({**r, "suite": suite, "run": run, "idle": len(idle),
                            "background_cpu_pct": round(100 * rate, 2),
                            "net_cpu_s_per_mb": round(net / (size / 1e6), 3)})
                if reference:
                    r = await ipmitool_flood(theirs[1], suite, size)
                    out.append({**r, "suite": suite, "run": run, "idle": 0})
    finally:
        server.stop()
    return out


def _start_profile(profile: Path | None, pid: int, suite: int) -> subprocess.Popen[bytes] | None:
    """py-spy on serve during the first flood: where the CPU per MB goes (GIL samples)."""
    if profile is None:
        return None
    out = profile.with_name(f"{profile.stem}-cs{suite}{profile.suffix or '.txt'}")
    return subprocess.Popen(["py-spy", "record", "-p", str(pid), "-f", "raw", "--gil",
                             "-r", "500", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_profile(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is None:
        return
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def summarize(results: list[dict[str, object]]) -> list[dict[str, object]]:
    rows = []
    keys = sorted({(r["suite"], r["client"], r["idle"]) for r in results})
    for suite, client, idle in keys:
        rs = [r for r in results if (r["suite"], r["client"], r["idle"]) == (suite, client, idle)]
        rows.append({
            "suite": suite, "client": client, "idle": idle, "runs": len(rs),
            "cpu_s_per_mb": round(statistics.median(r["cpu_s_per_mb"] for r in rs), 3),
            "net_cpu_s_per_mb": round(statistics.median(
                r.get("net_cpu_s_per_mb", r["cpu_s_per_mb"]) for r in rs), 3),
            "kb_per_s": round(statistics.median(r["kb_per_s"] for r in rs), 1),
            "all_bytes_ok": all(r["viewer_ok"] and r["log_ok"] is not False for r in rs),
        })
    return rows


async def amain(args: argparse.Namespace) -> int:
    size = parse_size(args.bytes)
    suites = [int(s) for s in args.suites.split(",")]
    results: list[dict[str, object]] = []
    with workdir() as wd:
        fleet = Fleet(2 + args.idle, wd, baud=args.baud)
        fleet.start()
        try:
            idle = fleet.consoles[2:]
            for suite in suites:
                results += await run_suite(fleet, wd, suite, size, args.runs, idle,
                                           reference=not args.no_reference,
                                           uvloop=args.uvloop, background=args.background,
                                           profile=args.profile,
                                           log_index=not args.no_log_index)
        finally:
            fleet.stop()
    summary = summarize(results)
    for s in summary:
        ref = next((x for x in summary if x["suite"] == s["suite"]
                    and x["client"] == "ipmitool"), None)
        s["ratio_vs_ipmitool"] = (round(s["cpu_s_per_mb"] / ref["cpu_s_per_mb"], 2)
                                  if ref and ref["cpu_s_per_mb"] else None)
    print(f"throughput: flood of {size} bytes, host at {args.baud} baud, {args.runs} runs")
    print_table(["suite", "client", "idle consoles", "CPU s/MB", "net CPU s/MB", "KB/s",
                 "x ipmitool", "bytes ok"],
                [[s["suite"], s["client"], s["idle"], s["cpu_s_per_mb"], s["net_cpu_s_per_mb"],
                  s["kb_per_s"], s["ratio_vs_ipmitool"], s["all_bytes_ok"]] for s in summary])
    for r in results:
        if not r["viewer_ok"] or r["log_ok"] is False:
            print(f"  problem: {r}")
    path = write_result(args.name, {"bytes": size, "baud": args.baud, "idle": args.idle,
                                    "log_index": not args.no_log_index,
                                    "uvloop": args.uvloop,
                                    "summary": summary, "runs": results})
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", default="2M")
    parser.add_argument("--baud", type=int, default=8_000_000)
    parser.add_argument("--suites", default="3,17")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--idle", type=int, default=0,
                        help="idle consoles solgate also holds while flooding (0)")
    parser.add_argument("--background", type=float, default=0.0, metavar="S",
                        help="first measure serve's CPU for S seconds with no flood; "
                             "'net CPU s/MB' subtracts it (use with --idle)")
    parser.add_argument("--uvloop", action="store_true", help="run serve on uvloop")
    parser.add_argument("--no-reference", action="store_true", help="skip ipmitool")
    parser.add_argument("--no-log-index", action="store_true",
                        help="serve with log_index = false (the time index's cost)")
    parser.add_argument("--name", default="throughput")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="py-spy raw profile of serve during the first flood of each "
                             "suite, written to FILE-csN.txt (needs py-spy)")
    return asyncio.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
