"""A lease renewal during an etcd election: waiting on one request vs asking again.

    python bench/etcd_election_renewal.py [--trials 8] [--hedge 0.5]

Starts a 3-node etcd on loopback (tests/etcd_cluster.py), grants a lease, `kill -9`s the
leader, and 0.3 s later renews the lease through a follower twice at once: one request
that waits (`keepalive(lease)`), and one asked again every `--hedge` seconds while
unanswered (`keepalive(lease, hedge_after=...)`, what a member does). etcd 3.4 holds a
request that reaches a node without a leader for a whole election timeout (1 s), so the
waiting one is answered up to a second after the new leader exists. Prints the seconds
from the kill to each answer; results go to bench/results/etcd_election_renewal.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _common import print_table, write_result  # noqa: E402

from solgate.cluster.etcd import EtcdClient  # noqa: E402
from tests.etcd_cluster import EtcdCluster  # noqa: E402


async def trial(cluster: EtcdCluster, hedge: float) -> tuple[float, float]:
    cluster.heal()
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    async with EtcdClient([follower.url], timeout=6.0) as waits, \
            EtcdClient([follower.url], timeout=6.0) as asks_again:
        lease = (await waits.grant(10)).id
        cluster.kill(leader)
        killed = time.monotonic()
        await asyncio.sleep(0.3)

        async def since_kill(call: Awaitable[int]) -> float:
            await call
            return time.monotonic() - killed

        plain, hedged = await asyncio.gather(
            since_kill(waits.keepalive(lease)),
            since_kill(asks_again.keepalive(lease, hedge_after=hedge)))
        await waits.revoke(lease)
        return plain, hedged


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--hedge", type=float, default=0.5)
    args = parser.parse_args()
    cluster = EtcdCluster(Path(tempfile.mkdtemp(prefix="solgate-election-")))
    rows: list[tuple[float, float]] = []
    try:
        for _ in range(args.trials):
            rows.append(await trial(cluster, args.hedge))
    finally:
        cluster.stop_all()
    print_table(["trial", "waiting (s)", f"asked again every {args.hedge:g}s (s)"],
                [[i + 1, f"{p:.2f}", f"{h:.2f}"] for i, (p, h) in enumerate(rows)])
    medians = [statistics.median(r[i] for r in rows) for i in (0, 1)]
    print(f"median from the kill: waiting {medians[0]:.2f}s, asked again {medians[1]:.2f}s")
    path = write_result("etcd_election_renewal", {
        "hedge_after": args.hedge, "trials": [{"waiting": p, "asked_again": h}
                                              for p, h in rows],
        "median_waiting": medians[0], "median_asked_again": medians[1]})
    print(f"results: {path}")


if __name__ == "__main__":
    asyncio.run(main())
