"""Fan-out: one console flooding at 115200 baud to N WebSocket viewers.

    python bench/fanout.py [--viewers 1000] [--bytes 120K] [--baud 115200]

N lean WebSocket viewers (`RawWsViewer`, in this process) attach to one console of
`solgate serve`; one more client takes the write lock and types `flood BYTES`. Every
viewer records, per socket read, when it arrived and how far into the flood it reaches.
A read's *lateness* is its arrival time minus the time the host's UART finished sending
the last byte it completed (flood offset / line rate, plus an unknown constant); the
smallest lateness seen by any viewer is the pipeline's fixed cost, and *delay* is
lateness above it: time spent in solgate's queues, the kernel and this client. Every
viewer's bytes and the log are checked with the flood verifier. The viewers share the
machine's two cores with the server and the simulator, so at 1,000 viewers part of the
delay is the client's own.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    FLOOD_START,
    Fleet,
    RawWsViewer,
    Server,
    WsConsole,
    check_flood,
    cpu_of,
    flood_done,
    parse_size,
    print_table,
    wait_log_flood,
    workdir,
    write_result,
)


def lateness(v: RawWsViewer, rate: float) -> list[float]:
    """Per read: arrival time minus the UART time of the last flood byte it completed."""
    start = bytes(v.data).find(FLOOD_START)
    if start < 0:
        return []
    return [t - (n - start) / rate for t, n in v.arrivals if n > start]


async def amain(args: argparse.Namespace) -> int:
    import aiohttp

    size = parse_size(args.bytes)
    rate = args.baud / 10.0
    with workdir() as wd:
        fleet = Fleet(1, wd, baud=args.baud)
        fleet.start()
        server = Server(
            fleet.consoles,
            wd,
            web=True,
            uvloop=args.uvloop,
            extra_env={"SOLGATE_EVENT_LOOP": args.event_loop},
        )
        name = fleet.consoles[0][0]
        try:
            server.start()
            if server.wait_active(1, 60) is None:
                raise RuntimeError("console did not come up")
            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn) as session:
                writer = WsConsole(session, server.url, name)
                await writer.open()
                await writer.take_write()
                await writer.settle(0.3)
                await writer.send(b"\r")
                await writer.settle(0.3)
                viewers: list[RawWsViewer] = []
                t_attach = time.perf_counter()
                for i in range(0, args.viewers, 50):
                    viewers += await asyncio.gather(
                        *(
                            RawWsViewer.open(server.port, name)
                            for _ in range(min(50, args.viewers - i))
                        )
                    )
                t_attach = time.perf_counter() - t_attach
                await asyncio.sleep(1.0)  # greetings and snapshots
                for v in viewers:
                    v.data.clear()
                    v.arrivals.clear()
                since = len(server.log_bytes(name))
                cpu0 = cpu_of(server.pid)
                t0 = time.perf_counter()
                await writer.send(b"flood %d\r" % size)
                deadline = time.monotonic() + size / rate * 3 + 30

                def done(v: RawWsViewer) -> bool:
                    return flood_done(v.data, size) is not None

                await asyncio.gather(*(v.wait(done, deadline) for v in viewers))
                elapsed = time.perf_counter() - t0
                cpu = cpu_of(server.pid) - cpu0
                lagged = sum(1 for v in viewers if v.lagged)
                closed = sum(1 for v in viewers if v.closed)
                ok = [check_flood(v.data, size)[0] for v in viewers]
                for v in viewers:
                    v.close()
                await writer.close()
            log_ok, log_detail = await wait_log_flood(server, name, size, since, 15.0)
            ran_on = re.search(r"event loop: (\w+(?: [\d.]+)?)", (wd / "serve.err").read_text())
        finally:
            server.stop()
            fleet.stop()
    late = [x for v in viewers for x in lateness(v, rate)]
    base = min(late) if late else 0.0
    delays = sorted(1000 * (x - base) for x in late)

    def q(p: float) -> float:
        return round(delays[min(len(delays) - 1, int(p * len(delays)))], 1) if delays else -1

    result = {
        "viewers": args.viewers,
        "bytes": size,
        "baud": args.baud,
        "uvloop": args.uvloop,
        "event_loop": ran_on.group(1).strip() if ran_on else "unknown",
        "attach_s": round(t_attach, 2),
        "flood_s": round(elapsed, 2),
        "line_time_s": round(size / rate, 2),
        "serve_cpu_s": round(cpu, 2),
        "serve_cpu_pct": round(100 * cpu / elapsed, 1),
        "delay_p50_ms": q(0.5),
        "delay_p99_ms": q(0.99),
        "delay_max_ms": q(1.0),
        "frames": len(delays),
        "viewers_complete": sum(ok),
        "viewers_lagged": lagged,
        "viewers_closed": closed,
        "log_ok": log_ok,
        "log_detail": log_detail,
        "mean_reads_per_viewer": round(statistics.mean(len(v.arrivals) for v in viewers), 1),
    }
    print(
        f"fan-out: one console at {args.baud} baud, flood of {size} bytes, "
        f"serve on {result['event_loop']}"
    )
    print_table(
        [
            "viewers",
            "complete",
            "lagged",
            "delay p50 ms",
            "delay p99 ms",
            "max ms",
            "serve CPU %",
            "log ok",
        ],
        [
            [
                args.viewers,
                result["viewers_complete"],
                lagged,
                result["delay_p50_ms"],
                result["delay_p99_ms"],
                result["delay_max_ms"],
                result["serve_cpu_pct"],
                log_ok,
            ]
        ],
    )
    path = write_result(args.name, result)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--bytes", default="120K")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--uvloop", action="store_true", help="run serve on uvloop")
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="serve's --event-loop (auto: uvloop when installed, as serve does)",
    )
    parser.add_argument("--name", default="fanout")
    return asyncio.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
