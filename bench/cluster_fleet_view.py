"""The fleet view's per-request cost at N consoles: the JSON it reads from the other
members and writes to the browser.

    python bench/cluster_fleet_view.py [--consoles 10000]

A member answering `/api/consoles` in a cluster parses the other members' answers
(`/api/cluster/peer/consoles`, shared by every request within a second) and writes the
whole list for the asking user. This times that JSON work on rows of the exact shape
`console_json` gives (the dominant cost; the network read is bounded at 1.5 s), and the
size of the list. Results go to bench/results/cluster_fleet_view.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, write_result  # noqa: E402


def rows(n: int) -> list[dict[str, object]]:
    now = time.time()
    return [{"name": f"node{i:05d}", "tags": ["rack3", "prod"], "state": "active",
             "state_words": "connected", "state_detail": "BMC 10.0.12.34:623 as admin",
             "state_since": now - 3600, "state_age": 3600.0, "last_output": now - 3,
             "last_output_age": 3.0, "panic_count": 0, "viewers": 0, "writer": None,
             "healthy": True} for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consoles", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    peer = json.dumps({"member": "gw2", "consoles": rows(args.consoles)}).encode()
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        fetched = json.loads(peer)["consoles"]  # once a second at most
        out = [{**r, "member": "gw2", "can_write": True, "can_power": False} for r in fetched]
        body = json.dumps({"now": time.time(), "consoles": out}).encode()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    print_table(["consoles", "list size (MB)", "bytes/console", "JSON per request (ms)"],
                [[args.consoles, f"{len(body) / 1e6:.1f}", len(body) // args.consoles,
                  f"{median * 1000:.0f}"]])
    write_result("cluster_fleet_view", {
        "consoles": args.consoles, "list_bytes": len(body), "json_ms_median": median * 1000,
        "command": f"python bench/cluster_fleet_view.py --consoles {args.consoles}"})


if __name__ == "__main__":
    main()
