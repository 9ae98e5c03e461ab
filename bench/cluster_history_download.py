"""The whole-history download's merge: time and memory for members' logs of a given size.

    python bench/cluster_history_download.py [--megabytes 60] [--members 3] [--repeat 3]

`?whole=1` merges every member's whole log of a console as the bytes stream in
(`solgate.cluster.download.merge_streams`), holding one line per member. This times that
merge over log files on disk (the asking member's own part is read the same way; the
other members' arrive over HTTP, not timed here) side by side with merging the same logs
whole in memory (`merge_logs`, what a history page does with its parts), alternating the
two, and reports each one's peak Python memory (tracemalloc, in a separate run) next to
the size of the history. Results go to bench/results/cluster_history_download.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import print_table, write_result  # noqa: E402

from solgate.cluster.download import file_chunks, merge_streams  # noqa: E402
from solgate.console.epochs import merge_logs  # noqa: E402

LINE = b"[    12.345678] systemd[1]: Started Journal Service for the console benchmark.\r\n"


def write_logs(folder: Path, total: int, members: int) -> dict[str, Path]:
    """Member logs whose pieces interleave: the console moved every 1 MB of output."""
    piece = LINE * (1_000_000 // len(LINE))
    paths = {f"gw{m + 1}": folder / f"gw{m + 1}.log" for m in range(members)}
    files = {m: p.open("wb") for m, p in paths.items()}
    epoch = 0
    written = 0
    names = list(paths)
    while written < total:
        epoch += 7
        member = names[epoch % members]
        note = (f"[-- solgate 2026-12-06T05:00:00Z: cluster: {member} owns the console "
                f"(epoch {epoch}) --]\r\n").encode()
        files[member].write(note + piece)
        written += len(note) + len(piece)
    for f in files.values():
        f.close()
    return paths


async def streamed(paths: dict[str, Path]) -> int:
    size = 0
    async for data in merge_streams({m: file_chunks(p) for m, p in paths.items()}, []):
        size += len(data)
    return size


def whole(paths: dict[str, Path]) -> int:
    return len(merge_logs({m: p.read_bytes() for m, p in paths.items()}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=60)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_logs(Path(tmp), args.megabytes * 1_000_000, args.members)
        total = sum(p.stat().st_size for p in paths.values())
        times: dict[str, list[float]] = {"streamed": [], "whole": []}
        for _ in range(args.repeat):  # alternating, on one noisy machine
            t0 = time.perf_counter()
            assert asyncio.run(streamed(paths)) == total
            times["streamed"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert whole(paths) == total
            times["whole"].append(time.perf_counter() - t0)
        peaks = {}
        for name, run in (("streamed", lambda: asyncio.run(streamed(paths))),
                          ("whole", lambda: whole(paths))):
            tracemalloc.start()
            run()
            peaks[name] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    rows = [[name, f"{total / 1e6:.0f}", f"{statistics.median(t):.2f}",
             f"{total / 1e6 / statistics.median(t):.0f}", f"{peaks[name] / 1e6:.1f}"]
            for name, t in times.items()]
    print_table(["merge", "history (MB)", "median (s)", "MB/s", "peak memory (MB)"], rows)
    write_result("cluster_history_download", {
        "history_bytes": total, "members": args.members,
        "median_seconds": {n: statistics.median(t) for n, t in times.items()},
        "peak_bytes": peaks,
        "command": f"python bench/cluster_history_download.py --megabytes {args.megabytes} "
                   f"--members {args.members} --repeat {args.repeat}"})


if __name__ == "__main__":
    main()
