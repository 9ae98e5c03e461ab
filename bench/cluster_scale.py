"""10,000 consoles on one member vs shared by two cluster members: setup, memory, idle CPU.

    python bench/cluster_scale.py [--consoles 10000] [--window 20]

Phase 1: one `solgate serve` without `[cluster]` holds every console. Phase 2: two
members (`[cluster]`, default lease) share them through a local etcd. For each: the time
until every console is active, RSS per console (above nothing: the whole process over
the consoles it holds), and idle CPU over `--window` seconds after start-up settled,
for the members and for etcd (the members poll it once a second). Results go to
bench/results/cluster_scale.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Fleet, Server, print_table, sample, stop_process, workdir, write_result  # noqa: E402
from cluster_failover import Member, start_etcd  # noqa: E402


def idle_cpu(pids: list[int], window: float) -> list[float]:
    """Percent of one core each process used over `window` seconds."""
    before = [sample(p) for p in pids]
    time.sleep(window)
    after = [sample(p) for p in pids]
    return [100 * (a.cpu - b.cpu) / (a.t - b.t) for a, b in zip(after, before, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consoles", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    n = args.consoles
    with workdir() as root:
        fleet = Fleet(n, root)
        etcd = None
        try:
            fleet.start()
            single_dir = root / "single"
            single_dir.mkdir()
            single = Server(fleet.consoles, single_dir)
            single.start()
            took = single.wait_active(n, 600)
            time.sleep(5)  # the start-up burst drains
            (cpu_single,) = idle_cpu([single.pid], args.window)
            rss_single = sample(single.pid).rss_kb
            single.stop()
            print(f"one member: {n} active in {took:.1f} s; RSS {rss_single / 1024:.0f} MB; "
                  f"idle CPU {cpu_single:.1f} %")

            etcd, url = start_etcd(root)
            t0 = time.monotonic()
            members = [Member(root, name, fleet.consoles, url, "15s", 1.0) for name in "ab"]
            deadline = time.monotonic() + 600
            while sum(m.active() for m in members) < n and time.monotonic() < deadline:
                time.sleep(0.5)
            took2 = time.monotonic() - t0
            counts = [m.active() for m in members]
            time.sleep(5)
            cpus = idle_cpu([m.proc.pid for m in members] + [etcd.pid], args.window)
            rss = [sample(m.proc.pid).rss_kb for m in members]
            for m in members:
                stop_process(m.proc)
            rows = [["one member", n, f"{took:.1f}", f"{rss_single / 1024:.0f}",
                     f"{rss_single / n:.1f}", f"{cpu_single:.1f}", "-"],
                    ["two members", "+".join(map(str, counts)), f"{took2:.1f}",
                     "+".join(f"{r / 1024:.0f}" for r in rss), f"{sum(rss) / n:.1f}",
                     "+".join(f"{c:.1f}" for c in cpus[:2]), f"{cpus[2]:.1f}"]]
            print_table(["setup", "consoles", "all active (s)", "RSS (MB)", "KB/console",
                         "idle CPU %", "etcd CPU %"], rows)
            write_result("cluster_scale", {
                "consoles": n, "window_s": args.window,
                "single": {"active_s": took, "rss_kb": rss_single, "idle_cpu_pct": cpu_single},
                "cluster": {"active_s": took2, "per_member": counts, "rss_kb": rss,
                            "idle_cpu_pct": cpus[:2], "etcd_idle_cpu_pct": cpus[2]},
                "command": f"python bench/cluster_scale.py --consoles {n} "
                           f"--window {args.window:g}"})
        finally:
            fleet.stop()
            if etcd is not None:
                stop_process(etcd)


if __name__ == "__main__":
    main()
