"""Many consoles flooding at once: is every byte in every log, once, in order?

    python bench/flood_many.py [--consoles 500] [--bytes 100K] [--baud 115200] [--loss 0]

Starts N simulated BMCs and `solgate serve`; through one short WebSocket per console it
types `flood BYTES` on all of them at (nearly) the same moment, closes the sockets (nobody
watches), waits until every console's log holds the whole flood and the next prompt, and
checks each log with the flood verifier (which names the first lost, doubled or moved
line). With `--loss`, the simulated network drops that fraction of datagrams both ways
(used by `faults.py`). Writes bench/results/flood_many.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Fleet,
    Server,
    WsConsole,
    check_flood,
    cpu_of,
    flood_done,
    parse_size,
    print_table,
    workdir,
    write_result,
)


async def start_flood(session: object, server: Server, name: str, size: int) -> int:
    ws = WsConsole(session, server.url, name)
    await ws.open()
    await ws.take_write()
    await ws.settle(0.3)
    since = len(server.log_bytes(name))
    await ws.send(b"flood %d\r" % size)
    await ws.close()
    return since


async def flood_many(count: int, size: int, baud: int, loss: float, *, uvloop: bool = False,
                     timeout: float | None = None) -> dict[str, object]:
    import aiohttp

    rate = baud / 10.0
    with workdir() as wd:
        fleet = Fleet(count, wd, baud=baud, loss=loss)
        fleet.start()
        server = Server(fleet.consoles, wd, web=True, uvloop=uvloop)
        names = [c[0] for c in fleet.consoles]
        try:
            server.start()
            if server.wait_active(count, 120) is None:
                raise RuntimeError(f"only {server.active_count()}/{count} consoles came up")
            await asyncio.sleep(1.0)
            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn) as session:
                cpu0, t0 = cpu_of(server.pid), time.perf_counter()
                offsets = await asyncio.gather(*(start_flood(session, server, n, size)
                                                 for n in names))
            limit = timeout if timeout is not None else size / rate * 4 + 60
            deadline = time.monotonic() + limit
            pending = dict(zip(names, offsets, strict=True))
            finished: dict[str, float] = {}
            while pending and time.monotonic() < deadline:
                for name, since in list(pending.items()):
                    data = server.log_bytes(name)[since:]
                    if flood_done(data, size) is not None:
                        finished[name] = time.perf_counter() - t0
                        del pending[name]
                await asyncio.sleep(0.5)
            elapsed = time.perf_counter() - t0
            cpu = cpu_of(server.pid) - cpu0
            bad = []
            for name, since in zip(names, offsets, strict=True):
                ok, detail = check_flood(server.log_bytes(name)[since:], size)
                if not ok:
                    bad.append(f"{name}: {detail}")
            reconnects = sum(
                1 for line in (server.data_dir / "events.jsonl").read_text().splitlines()
                if '"sol-down"' in line)
        finally:
            server.stop()
            fleet.stop()
    return {
        "consoles": count, "bytes_each": size, "baud": baud, "loss": loss,
        "line_time_s": round(size / rate, 1),
        "last_done_s": round(max(finished.values()), 1) if finished else None,
        "elapsed_s": round(elapsed, 1), "serve_cpu_pct": round(100 * cpu / elapsed, 1),
        "aggregate_kb_per_s": round(count * size / 1000 / max(finished.values()), 1)
        if finished else None,
        "logs_ok": count - len(bad), "logs_bad": len(bad), "incomplete": len(pending),
        "sol_down_events": reconnects, "problems": bad[:20],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consoles", type=int, default=500)
    parser.add_argument("--bytes", default="100K")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--name", default="flood_many")
    args = parser.parse_args(argv)
    r = asyncio.run(flood_many(args.consoles, parse_size(args.bytes), args.baud, args.loss,
                               uvloop=args.uvloop))
    print(f"{args.consoles} consoles flooding {r['bytes_each']} bytes each at {args.baud} "
          f"baud (line time {r['line_time_s']} s), loss {args.loss:.0%}")
    print_table(["consoles", "logs ok", "bad", "incomplete", "last done s", "serve CPU %",
                 "agg KB/s", "SOL drops"],
                [[r["consoles"], r["logs_ok"], r["logs_bad"], r["incomplete"],
                  r["last_done_s"], r["serve_cpu_pct"], r["aggregate_kb_per_s"],
                  r["sol_down_events"]]])
    for p in r["problems"]:
        print(f"  {p}")
    path = write_result(args.name, r)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
