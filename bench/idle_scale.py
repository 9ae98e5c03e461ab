"""Idle scale: N active SOL consoles held by one `solgate serve`, nobody watching.

    python bench/idle_scale.py [--sizes 100,1000,5000,10000] [--window 30] [--uvloop]

For each size: start the simulated BMCs (processes of <= 2,000), start `solgate serve
--no-web`, time how long until every console is `active` (its "sol-up" event is in
events.jsonl), then sample the serve process's CPU and RSS over `--window` seconds of
idle (keepalives running, logs open). Memory per console is the RSS above a one-console
server measured in the same run. Writes bench/results/idle_scale.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Fleet, Server, print_table, sample, workdir, write_result  # noqa: E402


def measure(count: int, window: float, *, uvloop: bool, concurrency: int,
            setup_timeout: float, log_index: bool = True) -> dict[str, object]:
    with workdir() as wd:
        fleet = Fleet(count, wd)
        fleet.start()
        server = Server(fleet.consoles, wd, uvloop=uvloop, setup_concurrency=concurrency,
                        log_index=log_index)
        try:
            server.start()
            setup = server.wait_active(count, setup_timeout)
            active = server.active_count()
            time.sleep(min(5.0, window / 4))  # let the handshake burst drain
            a = sample(server.pid)
            sims0 = [sample(p) for p in fleet.pids]
            time.sleep(window)
            b = sample(server.pid)
            sims1 = [sample(p) for p in fleet.pids]
            active_end = server.active_count()
        finally:
            server.stop()
            fleet.stop()
    elapsed = b.t - a.t
    sim_cpu = sum(y.cpu - x.cpu for x, y in zip(sims0, sims1, strict=True)) / elapsed
    return {
        "consoles": count,
        "active": active,
        "active_after_window": active_end,
        "setup_s": None if setup is None else round(setup, 2),
        "cpu_pct": round(100 * (b.cpu - a.cpu) / elapsed, 2),
        "sys_cpu_pct": round(100 * (b.sys_cpu - a.sys_cpu) / elapsed, 2),
        "rss_mb": round(b.rss_kb / 1024, 1),
        "fds": b.fds,
        "sim_cpu_pct": round(100 * sim_cpu, 2),
        "window_s": round(elapsed, 1),
        "setup_concurrency": concurrency,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000,10000")
    parser.add_argument("--window", type=float, default=30.0,
                        help="idle seconds measured per size (30; keepalives are every ~20 s)")
    parser.add_argument("--uvloop", action="store_true", help="run serve on uvloop")
    parser.add_argument("--setup-concurrency", type=int, default=64)
    parser.add_argument("--setup-timeout", type=float, default=300.0)
    parser.add_argument("--name", default="idle_scale")
    parser.add_argument("--no-log-index", action="store_true",
                        help="serve with log_index = false (the time index's cost)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    base = measure(1, min(args.window, 5.0), uvloop=args.uvloop,
                   concurrency=args.setup_concurrency, setup_timeout=args.setup_timeout,
                   log_index=not args.no_log_index)
    rows = []
    results = []
    for n in sizes:
        r = measure(n, args.window, uvloop=args.uvloop, concurrency=args.setup_concurrency,
                    setup_timeout=args.setup_timeout, log_index=not args.no_log_index)
        r["kb_per_console"] = round((r["rss_mb"] - base["rss_mb"]) * 1024 / n, 1)
        results.append(r)
        rows.append([n, r["active"], r["setup_s"], r["cpu_pct"], r["sys_cpu_pct"], r["rss_mb"],
                     r["kb_per_console"], r["fds"], r["sim_cpu_pct"]])
        print(f"... {n}: {r}", file=sys.stderr, flush=True)
    loop = "uvloop" if args.uvloop else "serve's default loop (uvloop when installed)"
    print(f"idle scale ({loop}, "
          f"one-console baseline RSS {base['rss_mb']} MB)")
    print_table(["consoles", "active", "setup s", "CPU %", "sys %", "RSS MB", "KB/console", "fds",
                 "sim CPU %"], rows)
    path = write_result(args.name, {"uvloop": args.uvloop, "baseline": base,
                                    "log_index": not args.no_log_index,
                                    "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
