"""How long `SimFleet` takes to start N simulated BMCs, and what they cost at rest.

    python bench/sim_startup.py [N] [--base-port P]

Prints the start time, the RSS, how long the loop sits idle for a second (an idle fleet
must schedule no timers), a presence-ping round trip to every BMC, and the stop time.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from solgate.sim.fleet import SimFleet  # noqa: E402

PING = bytes.fromhex("0600ff06000011be80420000")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("count", type=int, nargs="?", default=2000)
    parser.add_argument("--base-port", type=int, default=0)
    args = parser.parse_args()
    before = rss_mb()
    t0 = time.perf_counter()
    fleet = SimFleet(args.count, base_port=args.base_port)
    await fleet.start()
    started = time.perf_counter() - t0
    print(f"started {args.count} BMCs in {started:.2f} s; RSS {rss_mb():.0f} MB "
          f"(+{rss_mb() - before:.0f} MB, {(rss_mb() - before) * 1024 / args.count:.1f} KB each)")
    cpu0 = time.process_time()
    await asyncio.sleep(1.0)
    print(f"idle for 1 s: {1000 * (time.process_time() - cpu0):.1f} ms CPU, "
          f"timer heap {len(fleet._heap)} entries")
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    t1 = time.perf_counter()
    pongs = 0
    ports = fleet.ports
    for i in range(0, len(ports), 100):  # batches, so our receive buffer keeps up
        batch = ports[i : i + 100]
        for port in batch:
            sock.sendto(PING, ("127.0.0.1", port))
        for _ in batch:
            try:
                await asyncio.wait_for(loop.sock_recv(sock, 64), 2.0)
            except TimeoutError:
                break
            pongs += 1
    print(f"{pongs}/{args.count} presence pongs in {time.perf_counter() - t1:.2f} s")
    sock.close()
    t2 = time.perf_counter()
    await fleet.stop()
    print(f"stopped in {time.perf_counter() - t2:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
