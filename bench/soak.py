"""Soak: 1,000 consoles held for 30 minutes under churn; does anything grow or get lost?

    python bench/soak.py [--consoles 1000] [--minutes 30] [--viewers 50] \\
        [--plot docs/bench-soak.png]

Runs one simulated fleet (bench/_soak_sim.py: `solgate sim` plus BMC-side churn) and one
`solgate serve` with its web server, waits until every console is active, warms up
(every host floods 64,000 bytes once over `--warmup` seconds, which fills each
console's 64 KiB ring of recent output: a one-time growth of up to 64 MB for 1,000
consoles that is not a leak), then for `--minutes`:

* the fleet restarts random BMCs (every ~4 s), drops the session holding SOL as a BMC
  whose session timed out (every ~4 s) and types `flood SIZE` on random idle hosts
  (every ~0.5 s; 6,400 to 64,000 checkable bytes at 115200 baud);
* this script keeps `--viewers` WebSocket viewers attached to random consoles, each
  staying 5-60 s before it leaves and another comes;
* every `--sample` seconds it records the serve process's RSS, open files and CPU (and
  the simulator's), and the active console count from /metrics.

Then the churn stops, the floods finish, every console must be active again, the server
gets SIGTERM (timed: the graceful stop), the simulator says how many BMCs still hold SOL
or sessions (must be 0), and every console log is checked against the floods the fleet
started: a flood that no restart or timeout touched, and during which solgate kept its
session, must be in its log exactly (every line, once, in order, byte for byte); one
hit by churn, or by a reconnect of solgate's own (counted apart: that is solgate giving
up a session), may miss lines (a real BMC drops what it buffered when it reboots or the
session ends) but nothing may be doubled, corrupted or reordered. Growth is judged on
the second half of the run after the warm-up: the RSS slope and the open-files range.
Writes bench/results/soak.json and, with --plot, the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ROOT,
    RawWsViewer,
    Server,
    _wait_for,
    env,
    sample,
    stop_process,
    workdir,
    write_result,
)

from solgate.sim.flood import FLOOD_LINE_LEN, flood_line  # noqa: E402

NOTE = re.compile(rb"\[-- solgate [^\r\n]*?--\]\r\n")
# A note that waited NOTE_HOLD for an open line to end breaks it visibly with this.
BREAK_MARK = b" [-- solgate: line continues below --]\r\n"
SOL_DOWN = re.compile(rb"\[-- solgate [^\r\n]*?: SOL down: [^\r\n]*?--\]\r\n")
ENDED = b"\x00sol-down"  # stands for a SOL down note while the notes are taken out
LINE_RE = re.compile(rb"flood (\d{8}) ")
ACTIVE_RE = re.compile(rb'^solgate_consoles\{state="active"\} (\S+)$', re.M)


# --------------------------------------------------------------------------- the log check


def flood_instances(data: bytes, split_lines: list[int]) -> list[dict[str, object]]:
    """The flood outputs in one console's log, in order: which line numbers each holds.

    solgate's own notes are taken out first; a line a note had to break (the log marks
    the break, or, before notes waited for line ends, just ended the line with CR LF) is
    joined back, so the check is about the host's bytes (`split_lines[0]` counts those).
    A new instance starts at line 1, or when numbering goes backwards. An instance during
    which a SOL session ended (a "SOL down" note) says so in "ended": lines lost there
    went with the session (a BMC drops what it buffered when its session ends).
    """
    # A broken line ends at the mark; the walk below joins it to what follows if that
    # completes it (the line went on after the note), and leaves it cut otherwise (output
    # was lost there, e.g. with the session).
    data = SOL_DOWN.sub(ENDED + b"\r\n", data.replace(BREAK_MARK, b"\r\n"))
    pieces = NOTE.sub(b"", data).split(b"\r\n")
    instances: list[dict[str, object]] = []
    cur: dict[str, object] | None = None
    i = 0
    while i < len(pieces):
        piece = pieces[i]
        i += 1
        if piece == ENDED:
            if cur is not None:
                cur["ended"] = True
            continue
        if piece.startswith(b"\n"):  # the LF of a CR LF that a note came between
            piece = piece[1:]
        if piece.endswith(b"\r"):  # a note came between CR and LF, or output ended there
            piece = piece[:-1]
        ended = False
        if len(piece) < FLOOD_LINE_LEN - 2:
            nxt = i
            while nxt < len(pieces) and pieces[nxt] == ENDED:
                nxt += 1
            if nxt < len(pieces):
                joined = piece + pieces[nxt].removeprefix(b"\n")
                m = LINE_RE.match(joined)
                if m is not None and joined == flood_line(int(m.group(1)))[:-2]:
                    piece = joined  # a note had cut this line in two
                    ended = nxt > i
                    i = nxt + 1
                    split_lines[0] += 1
        m = LINE_RE.match(piece)
        if m is None:
            continue
        k = int(m.group(1))
        full = flood_line(k)[:-2]
        if cur is None or k == 1 or k <= int(cur["last"]):  # type: ignore[arg-type]
            cur = {"first": k, "last": k, "lines": 0, "bad": 0, "cut": 0, "gaps": 0,
                   "ended": False}
            instances.append(cur)
        elif k != int(cur["last"]) + 1:  # type: ignore[arg-type]
            cur["gaps"] = int(cur["gaps"]) + 1  # type: ignore[arg-type]
        cur["last"] = k
        cur["lines"] = int(cur["lines"]) + 1  # type: ignore[arg-type]
        cur["ended"] = bool(cur["ended"]) or ended
        if piece != full:  # cut short where output was lost, or wrong bytes
            key = "cut" if full.startswith(piece) else "bad"
            cur[key] = int(cur[key]) + 1  # type: ignore[arg-type]
    return instances


def read_console_log(logs: Path, name: str) -> bytes:
    """The console's whole log: rotated files (oldest first), then the live one."""
    rotated = sorted((p for p in logs.glob(f"{name}.log.*") if p.suffix[1:].isdigit()),
                     key=lambda p: -int(p.suffix[1:]))  # not the time index (.log.idx)
    return b"".join(p.read_bytes() for p in [*rotated, logs / f"{name}.log"] if p.exists())


def _complete(inst: dict[str, object] | None, n: int) -> bool:
    return (inst is not None and inst["first"] == 1 and inst["last"] == n
            and inst["lines"] == n and inst["gaps"] == 0 and inst["cut"] == 0
            and inst["bad"] == 0)


def check_logs(logs: Path, floods: list[dict[str, object]]) -> dict[str, object]:
    """Match each console's flood outputs to the floods its host printed, in order.

    Each flood falls in one class: "churn" (a BMC restart or session timeout hit its BMC
    while it ran: a real BMC drops what it buffered, lines may be missing), "reconnect"
    (no churn, but the SOL owner changed while it ran, or its output in the log stops at
    a "SOL down" note: solgate itself gave up the session and reconnected, so the BMC
    dropped its buffer) or "steady" (neither: it must be in the log exactly). A churn or
    reconnect flood may be missing entirely: when fewer outputs than floods are left and a
    complete output fits the next flood, it is taken as that flood's.
    """
    by_bmc: dict[str, list[dict[str, object]]] = {}
    for f in floods:
        by_bmc.setdefault(str(f["bmc"]), []).append(f)
    classes = ("steady", "reconnect", "churn")
    count = dict.fromkeys(classes, 0)
    exact = dict.fromkeys(classes, 0)
    lines_lost = dict.fromkeys(classes, 0)
    bad_lines = unmatched = bytes_checked = 0
    problems: list[str] = []
    split_lines = [0]
    for bmc, fl in sorted(by_bmc.items()):
        instances = flood_instances(read_console_log(logs, bmc), split_lines)
        ordered = sorted(fl, key=lambda f: float(f["t"]))  # type: ignore[arg-type]
        j = 0
        for k, f in enumerate(ordered):
            n = int(f["size"]) // FLOOD_LINE_LEN  # type: ignore[call-overload]
            cls = ("churn" if f["disturbed"] else
                   "reconnect" if f.get("owner_after") != f.get("owner") else "steady")
            inst = instances[j] if j < len(instances) else None
            nxt = ordered[k + 1] if k + 1 < len(ordered) else None
            missing = len(instances) - j < len(ordered) - k  # some flood left nothing
            n_next = int(nxt["size"]) // FLOOD_LINE_LEN if nxt else 0  # type: ignore[call-overload]
            if (cls != "steady" and nxt is not None and (missing or not _complete(inst, n))
                    and _complete(inst, n_next)):
                inst = None  # this flood left nothing; the output is the next one's
            elif inst is not None and (int(inst["last"]) > n  # type: ignore[call-overload]
                                       or (inst["first"] != 1 and cls == "steady")):
                inst = None
            if inst is not None:
                j += 1
                if cls == "steady" and inst["ended"] and not _complete(inst, n):
                    cls = "reconnect"  # the lines went with a session that ended meanwhile
            got = int(inst["lines"]) if inst is not None else 0  # type: ignore[call-overload]
            bad = int(inst["bad"]) if inst is not None else 0  # type: ignore[call-overload]
            ok = _complete(inst, n)
            bad_lines += bad
            bytes_checked += got * FLOOD_LINE_LEN
            count[cls] += 1
            exact[cls] += ok
            lines_lost[cls] += n - got
            if cls == "steady" and not ok and len(problems) < 20:
                problems.append(f"{bmc}: flood of {n} lines at t={float(f['t']):.1f} "  # type: ignore[arg-type]
                                f"(no churn, no reconnect): {got} lines, {bad} corrupted")
        if j < len(instances):
            unmatched += len(instances) - j
            if len(problems) < 20:
                problems.append(f"{bmc}: {len(instances) - j} flood output(s) in the log match "
                                "no flood the fleet started (doubled or reordered)")
    return {
        "floods": len(floods),
        **{f"{c}_floods": count[c] for c in classes},
        **{f"{c}_exact": exact[c] for c in classes},
        **{f"{c}_lines_lost": lines_lost[c] for c in classes},
        "corrupted_lines": bad_lines, "unmatched_outputs": unmatched,
        "bytes_checked": bytes_checked, "lines_split_by_notes": split_lines[0],
        "problems": problems,
        "exact": exact["steady"] == count["steady"] and bad_lines == 0 and unmatched == 0,
    }


# --------------------------------------------------------------------------- the run


def sim_status(err: Path, proc: subprocess.Popen, timeout: float = 10.0) -> str:
    before = err.read_text().count("status:")
    os.kill(proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [ln for ln in err.read_text().splitlines() if "status:" in ln]
        if len(lines) > before:
            return lines[-1]
        time.sleep(0.1)
    return "no status"


async def scrape_active(session, url: str) -> int | None:  # noqa: ANN001
    """Active consoles from /metrics; None if the scrape failed or took over 10 s."""
    import aiohttp

    with contextlib.suppress(Exception):
        async with session.get(f"{url}/metrics",
                               timeout=aiohttp.ClientTimeout(total=10)) as r:
            m = ACTIVE_RE.search(await r.read())
            return int(float(m.group(1))) if m else None
    return None


async def hold(server: Server, sim: subprocess.Popen, names: list[str], args) -> dict:  # noqa: ANN001
    import aiohttp

    rng = random.Random(args.seed)
    samples: list[dict[str, float]] = []
    viewers: dict[str, object] = {"opened": 0, "failed": 0, "now": 0, "bytes": 0,
                                  "bad_frames": 0}
    bad_frames: list[str] = []
    viewers["bad_frame_samples"] = bad_frames
    t0 = time.monotonic()
    end = t0 + args.warmup + args.minutes * 60

    async def viewer() -> None:
        while time.monotonic() < end:
            name = rng.choice(names)
            try:
                v = await RawWsViewer.open(server.port, name)
            except Exception:
                viewers["failed"] += 1
                await asyncio.sleep(1)
                continue
            viewers["opened"] += 1
            viewers["now"] += 1
            try:
                await asyncio.sleep(min(rng.uniform(5, 60), max(0.0, end - time.monotonic())))
            finally:
                viewers["bytes"] += len(v.data)
                viewers["bad_frames"] += len(v.bad_frames)
                if v.bad_frames and not bad_frames:
                    bad_frames.extend(repr(f) for f in v.bad_frames[:3])
                v.close()
                viewers["now"] -= 1

    async with aiohttp.ClientSession() as session:
        prev_s = sample(server.pid)
        prev_m = sample(sim.pid)
        tasks = [asyncio.create_task(viewer()) for _ in range(args.viewers)]
        while True:
            now = time.monotonic()
            if now >= end:
                break
            await asyncio.sleep(min(args.sample, end - now))
            s, m = sample(server.pid), sample(sim.pid)
            dt = s.t - prev_s.t
            row = {"t": round(s.t - t0, 1), "rss_mb": round(s.rss_kb / 1024, 1), "fds": s.fds,
                   "cpu_pct": round(100 * (s.cpu - prev_s.cpu) / dt, 1),
                   "sim_rss_mb": round(m.rss_kb / 1024, 1),
                   "sim_cpu_pct": round(100 * (m.cpu - prev_m.cpu) / dt, 1),
                   "active": await scrape_active(session, server.url),
                   "viewers": viewers["now"], "load1": round(os.getloadavg()[0], 1)}
            samples.append(row)
            prev_s, prev_m = s, m
            print(f"... {row}", file=sys.stderr, flush=True)
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"samples": samples, "viewers": viewers}


def growth(samples: list[dict[str, float]]) -> dict[str, object]:
    """RSS slope (least squares) and open-files range over the second half of the run."""
    half = samples[len(samples) // 2 :]  # of the samples after the warm-up
    if len(half) < 2:
        return {}
    ts = [s["t"] / 3600 for s in half]
    rs = [s["rss_mb"] for s in half]
    mt, mr = sum(ts) / len(ts), sum(rs) / len(rs)
    var = sum((t - mt) ** 2 for t in ts) or 1e-9
    slope = sum((t - mt) * (r - mr) for t, r in zip(ts, rs, strict=True)) / var
    fds = [s["fds"] - s["viewers"] for s in half]
    return {"rss_slope_mb_per_h": round(slope, 1), "rss_second_half_mb": [min(rs), max(rs)],
            "fds_minus_viewers_second_half": [min(fds), max(fds)],
            "rss_at": {f"{int(s['t'] // 60)} min": s["rss_mb"]
                       for s in samples[:: max(1, len(samples) // 6)]}}


def plot(samples: list[dict[str, float]], path: Path, title: str, warmup: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, [s["rss_mb"] for s in samples], label="solgate serve")
    axes[0].plot(t, [s["sim_rss_mb"] for s in samples], label="simulated fleet", alpha=0.6)
    axes[0].set_ylabel("RSS (MB)")
    axes[0].set_ylim(bottom=0)
    axes[0].legend(loc="lower right")
    axes[1].plot(t, [s["fds"] for s in samples], label="open files")
    axes[1].plot(t, [s["active"] if s["active"] is not None else float("nan")
                     for s in samples], label="active consoles", alpha=0.7)
    axes[1].plot(t, [s["viewers"] for s in samples], label="viewers", alpha=0.7)
    axes[1].set_ylim(bottom=0)
    axes[1].legend(loc="lower right")
    axes[2].plot(t, [s["cpu_pct"] for s in samples], label="solgate serve")
    axes[2].plot(t, [s["sim_cpu_pct"] for s in samples], label="simulated fleet", alpha=0.6)
    for ax in axes:
        ax.axvline(warmup / 60, color="grey", linestyle=":", linewidth=1)
    axes[0].annotate(" warm-up ends", (warmup / 60, 0), color="grey", fontsize=8,
                     va="bottom")
    axes[2].set_ylabel("CPU (% of a core)")
    axes[2].set_xlabel("minutes")
    axes[2].set_ylim(bottom=0)
    axes[2].legend(loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def run(args: argparse.Namespace) -> dict[str, object]:
    with workdir(keep=args.keep) as wd:
        if args.keep:
            print(f"workdir {wd}", file=sys.stderr)
        record = wd / "churn.json"
        base = 0  # the kernel picks each BMC's port: no range to race other scripts for
        sim_err = wd / "sim.err"
        cmd = [sys.executable, str(ROOT / "bench" / "_soak_sim.py"), "--count",
               str(args.consoles), "--base-port", str(base), "--record", str(record),
               "--seed", str(args.seed), "--restart-every", str(args.restart_every),
               "--timeout-every", str(args.timeout_every), "--flood-every",
               str(args.flood_every), "--warmup", str(args.warmup)]
        sim = subprocess.Popen(cmd, stdout=(wd / "sim.toml").open("w"),
                               stderr=sim_err.open("w"), env=env(), cwd=wd)
        server: Server | None = None
        try:
            _wait_for(sim_err, r"started \d+ BMC", sim, 120)
            text = (wd / "sim.toml").read_text()
            consoles = [(n, int(p)) for n, p in re.findall(
                r"\[consoles\.([^\]]+)\]\s*\nhost = \"[^\"]+\"\s*\nport = (\d+)", text)]
            server = Server(consoles, wd, web=True)
            server.start()
            setup = server.wait_active(len(consoles), 300)
            print(f"... {len(consoles)} active after {setup} s", file=sys.stderr, flush=True)
            os.kill(sim.pid, signal.SIGUSR2)  # churn on
            held = asyncio.run(hold(server, sim, [n for n, _ in consoles], args))
            os.kill(sim.pid, signal.SIGUSR2)  # churn off
            t = time.monotonic()
            while time.monotonic() - t < 300 and " 0 floods running" not in sim_status(
                    sim_err, sim):
                time.sleep(1)  # the last floods end and settle
            t = time.monotonic()
            active = 0
            while time.monotonic() - t < 120:
                active = asyncio.run(_active(server))
                if active == len(consoles):
                    break
                time.sleep(1)
            recovered_s = time.monotonic() - t
            final = sample(server.pid)
            t = time.monotonic()
            os.kill(server.pid, signal.SIGTERM)
            assert server.proc is not None
            server.proc.wait(120)
            stop_s = time.monotonic() - t
            status = sim_status(sim_err, sim)
            stop_process(sim, timeout=60)
            churn = json.loads(record.read_text())
            logs = check_logs(server.data_dir / "logs", churn["floods"])
            events_mb = (server.data_dir / "events.jsonl").stat().st_size / 2**20
        finally:
            if server is not None:
                server.stop()
            stop_process(sim)
    kinds = [c["kind"] for c in churn["churn"]]
    return {
        "consoles": len(consoles), "minutes": args.minutes, "viewers_target": args.viewers,
        "setup_s": setup, "samples": held["samples"], "viewers": held["viewers"],
        "churn": {"restarts": kinds.count("restart"), "timeouts": kinds.count("timeout"),
                  "floods": len(churn["floods"]),
                  "flood_bytes": sum(f["size"] for f in churn["floods"]),
                  "sim": churn["stats"]},
        "all_active_again": active == len(consoles), "active_at_end": active,
        "recovered_s": round(recovered_s, 1),
        "rss_at_end_mb": round(final.rss_kb / 1024, 1), "fds_at_end": final.fds,
        "graceful_stop_s": round(stop_s, 2), "sim_after_stop": status,
        "events_jsonl_mb": round(events_mb, 2),
        "warmup_s": args.warmup,
        "growth": growth([s for s in held["samples"] if s["t"] >= args.warmup]),
        "logs": logs,
    }


async def _active(server: Server) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        return await scrape_active(session, server.url) or 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--consoles", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=30.0, help="after the warm-up")
    p.add_argument("--warmup", type=float, default=180.0,
                   help="seconds over which every host floods 64,000 bytes once first")
    p.add_argument("--viewers", type=int, default=50, help="viewers attached at any time")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--restart-every", type=float, default=4.0, help="mean s between BMC restarts")
    p.add_argument("--timeout-every", type=float, default=4.0,
                   help="mean s between BMC-side session timeouts")
    p.add_argument("--flood-every", type=float, default=0.5, help="mean s between floods")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--plot", type=Path, help="write the figure here (PNG)")
    p.add_argument("--name", default="soak")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    # SIGTERM ends the run through the `finally`s, which stop the fleet and the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(args)
    path = write_result(args.name, result)
    if args.plot:
        c = result["churn"]
        plot(result["samples"], args.plot,  # type: ignore[arg-type]
             f"soak: {result['consoles']} consoles, {args.minutes:g} min, {c['restarts']} BMC "
             f"restarts, {c['timeouts']} session timeouts, {c['floods']} floods",
             args.warmup)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")
    logs = result["logs"]
    ok = bool(logs["exact"]) and result["all_active_again"]  # type: ignore[index]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
