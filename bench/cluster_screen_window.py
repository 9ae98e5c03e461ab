"""The screen at a moment across members: its cost against the same screen on one box.

    python bench/cluster_screen_window.py [--megabytes 40] [--members 3] [--repeat 7]

In a cluster the screen page, `solgate screen` and `solgate export` ask every member for
its log between two times (`solgate.console.logwindow.read_window`: the bytes, their time
index, the epoch they start in), merge the windows in epoch order into one indexed log in
a temporary directory and replay that (`merge_windows`). This times that path, every
member's window read from disk (the HTTP hop not timed), side by side with the screen
from the owner's own log alone (`Timeline.around` + `screen_at`, what one box does),
alternating the two, at a moment deep inside a long piece that spans rotated files
(the epoch is looked up in older files). Results go to
bench/results/cluster_screen_window.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import print_table, write_result  # noqa: E402

from solgate.console.log import ConsoleLog  # noqa: E402
from solgate.console.logindex import Timeline  # noqa: E402
from solgate.console.logread import iter_log_files  # noqa: E402
from solgate.console.logwindow import merge_windows, read_window  # noqa: E402
from solgate.console.replay import screen_at  # noqa: E402

LINE = b"[    12.345678] systemd[1]: Started Journal Service for the console benchmark.\r\n"


def write_logs(folder: Path, total: int, members: int) -> tuple[dict[str, Path], float]:
    """Each member's log of one console (8 MB files, rotated), the console moving every
    tenth of the output, the last piece (the owner's) half of it; and a moment in it."""
    now = [1_800_000_000.0]
    names = [f"gw{m + 1}" for m in range(members)]
    for m in names:
        (folder / m).mkdir()
    logs = {m: ConsoleLog(folder / m / "web01.log", max_bytes=8_000_000, keep=20,
                          note_hold=0, clock=lambda: now[0]) for m in names}
    pieces = [total // 10] * 5 + [total // 2]
    for epoch, size in enumerate(pieces, start=1):
        log = logs[names[epoch % members]]
        log.event(f"cluster: {names[epoch % members]} owns the console (epoch {epoch * 7})")
        for _ in range(size // len(LINE)):
            log.write(LINE)
            now[0] += 0.002
    for log in logs.values():
        log.close()
    return {m: folder / m / "web01.log" for m in names}, now[0] - 1.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=40)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths, at = write_logs(folder, args.megabytes * 1_000_000, args.members)
        owner = paths[f"gw{6 % args.members + 1}"]
        files = iter_log_files(owner)
        times: dict[str, list[float]] = {"owner's log alone": [], "every member, merged": []}
        rows_seen = {}
        for _ in range(args.repeat):  # alternating, on one noisy machine
            t0 = time.perf_counter()
            alone = screen_at(Timeline.around(files, at, at), at)
            times["owner's log alone"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            windows = {m: read_window(p, at, at, 128 * 1024) for m, p in paths.items()}
            with tempfile.TemporaryDirectory(dir=folder) as merged_dir:
                merged = screen_at(merge_windows(windows, Path(merged_dir)).timeline, at)
            times["every member, merged"].append(time.perf_counter() - t0)
            rows_seen = {"alone": alone.screen.display, "merged": merged.screen.display}
        assert rows_seen["alone"] == rows_seen["merged"]
    medians = {n: statistics.median(t) for n, t in times.items()}
    base = medians["owner's log alone"]
    rows = [[name, f"{m * 1000:.0f}", f"{m / base:.2f}"] for name, m in medians.items()]
    print(f"{args.megabytes} MB of log over {args.members} members, owner's log in "
          f"{len(files)} files")
    print_table(["screen at a moment", "median (ms)", "ratio"], rows)
    write_result("cluster_screen_window", {
        "megabytes": args.megabytes, "members": args.members, "owner_files": len(files),
        "median_seconds": medians,
        "command": f"python bench/cluster_screen_window.py --megabytes {args.megabytes} "
                   f"--members {args.members} --repeat {args.repeat}"})


if __name__ == "__main__":
    main()
