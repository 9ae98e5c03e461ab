"""Faults: flood throughput and byte loss with 0%, 5% and 20% of datagrams dropped.

    python bench/faults.py [--losses 0,0.05,0.2] [--bytes 20K] [--baud 115200] [--runs 1]

For each loss rate, two simulated BMCs drop that fraction of datagrams in both directions
(`solgate sim --loss`). solgate holds the first (WebSocket viewer + log), ipmitool on a pty
the second; each types `flood BYTES`. Reported: time to deliver the flood, KB/s, whether
every byte arrived exactly once and in order (viewer, log, pty), and SOL reconnects.
A lost SOL packet costs one BMC retransmit interval (1 s on the simulator, as on
ipmi_sim), so throughput under loss is bounded by the BMC, for both clients alike.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Fleet,
    Server,
    ipmitool_flood,
    parse_size,
    print_table,
    workdir,
    write_result,
    ws_flood,
)


async def one_loss(loss: float, size: int, baud: int, runs: int, suite: int,
                   timeout: float) -> list[dict[str, object]]:
    import aiohttp

    out: list[dict[str, object]] = []
    with workdir() as wd:
        fleet = Fleet(2, wd, baud=baud, loss=loss)
        fleet.start()
        server = Server(fleet.consoles[:1], wd, web=True, suites=(suite,))
        try:
            server.start()
            if server.wait_active(1, 120) is None:
                raise RuntimeError(f"console did not come up at {loss:.0%} loss")
            async with aiohttp.ClientSession() as session:
                for run in range(runs):
                    try:
                        r = await ws_flood(session, server, fleet.consoles[0][0], size,
                                           timeout=timeout)
                    except (RuntimeError, TimeoutError, OSError) as exc:
                        r = {"client": "solgate", "error": str(exc), "viewer_ok": False,
                             "log_ok": False}
                    out.append({**r, "loss": loss, "run": run})
                    try:
                        r = await ipmitool_flood(fleet.consoles[1][1], suite, size,
                                                 timeout=timeout)
                    except (RuntimeError, TimeoutError, OSError) as exc:
                        r = {"client": "ipmitool", "error": str(exc), "viewer_ok": False,
                             "log_ok": None}
                    out.append({**r, "loss": loss, "run": run})
            downs = sum(1 for line in (server.data_dir / "events.jsonl").read_text()
                        .splitlines() if '"sol-down"' in line)
            for r in out:
                if r["client"] == "solgate":
                    r["sol_down_events"] = downs
        finally:
            server.stop()
            fleet.stop()
    return out


async def amain(args: argparse.Namespace) -> int:
    size = parse_size(args.bytes)
    results: list[dict[str, object]] = []
    for loss in (float(x) for x in args.losses.split(",")):
        results += await one_loss(loss, size, args.baud, args.runs, args.suite, args.timeout)
    rows = []
    for r in results:
        rows.append([f"{r['loss']:.0%}", r["client"], r.get("seconds", "-"),
                     r.get("kb_per_s", "-"), r.get("cpu_s_per_mb", "-"), r["viewer_ok"],
                     "-" if r.get("log_ok") is None else r["log_ok"],
                     r.get("sol_down_events", "-")])
    print(f"faults: flood of {size} bytes at {args.baud} baud, cipher suite {args.suite}")
    print_table(["loss", "client", "seconds", "KB/s", "CPU s/MB", "bytes ok", "log ok",
                 "SOL drops"], rows)
    for r in results:
        if not r["viewer_ok"] or r.get("log_ok") is False:
            print(f"  {r['loss']:.0%} {r['client']}: "
                  f"{r.get('error') or r.get('viewer_detail')} / {r.get('log_detail', '')}")
    path = write_result(args.name, {"bytes": size, "baud": args.baud, "suite": args.suite,
                                    "results": results})
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--losses", default="0,0.05,0.2")
    parser.add_argument("--bytes", default="20K")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--suite", type=int, default=17)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--name", default="faults")
    return asyncio.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
