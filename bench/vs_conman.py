"""solgate vs LLNL ConMan, side by side on the same simulated fleet, in one command.

    python bench/vs_conman.py [--consoles 1000] [--small 10] [--window 30] [--flood 4M]
                              [--rounds 1] [--settle 5]

ConMan (`apt-get install conman`, Debian 0.2.7: IPMI SOL through FreeIPMI's
libipmiconsole) is the console server run at HPC scale. For each fleet size (`--small`,
then `--consoles`) and each server in turn (the order alternates between rounds), a fresh
`solgate sim` fleet is started and one server holds every console of it:

* **connect**: seconds from starting the server until every console is connected
  (solgate: every `sol-up` event in events.jsonl; ConMan: every "Console [x] connected"
  line conmand prints in the foreground);
* **RSS per console**: the server's VmRSS divided by the console count (total / N, as
  ConMan's figure cannot separate a baseline);
* **idle CPU**: the server's user + system CPU over `--window` seconds with nothing
  attached, after a `--settle` of 5 s;
* **CPU s per MB**: one console types `flood SIZE` with one client attached (solgate: a
  WebSocket viewer; ConMan: `conman -j` on a pty), charged from the keystroke until the
  flood and the next prompt have arrived; the console log is checked byte for byte
  afterwards with the host's flood verifier.

ConMan is driven with a generated conman.conf (`SERVER loopback=on`, one `CONSOLE` per
BMC, `ipmiopts` with the simulator's user and cipher suite 3); solgate uses suite 3 too.
Everything is on 127.0.0.1; both servers and the simulators are stopped by PID. The
machine may be shared: compare the two columns of one run, not runs of different days.
Writes bench/results/vs_conman.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PASSWORD,
    PROMPT_RE,
    Fleet,
    PtyClient,
    Server,
    check_flood,
    cpu_of,
    flood_done,
    free_port,
    parse_size,
    print_table,
    sample,
    stop_process,
    workdir,
    write_result,
    ws_flood,
)

CONMAND = shutil.which("conmand") or "/usr/sbin/conmand"
CONMAN = shutil.which("conman") or "/usr/bin/conman"
SUITE = 3


class ConMan:
    """One `conmand -F` over `consoles`, with a generated conman.conf."""

    def __init__(self, consoles: list[tuple[str, int]], wd: Path) -> None:
        self.consoles = consoles
        self.workdir = wd
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def logdir(self) -> Path:
        return self.workdir / "logs"

    def start(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        lines = ["SERVER loopback=on", f"SERVER port={self.port}",
                 'GLOBAL logopts="lock,nosanitize,notimestamp"',
                 f'GLOBAL ipmiopts="U:admin,P:{PASSWORD},C:{SUITE},L:admin"']
        lines += [f'CONSOLE name="{name}" dev="ipmi:127.0.0.1:{port}" '
                  f'log="{self.logdir}/%N.log"' for name, port in self.consoles]
        conf = self.workdir / "conman.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([CONMAND, "-F", "-c", str(conf)],
                                     stdout=(self.workdir / "conmand.out").open("w"),
                                     stderr=(self.workdir / "conmand.err").open("w"),
                                     cwd=self.workdir)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def connected_count(self) -> int:
        path = self.workdir / "conmand.err"
        text = path.read_text(errors="replace") if path.exists() else ""
        return len(set(re.findall(r"Console \[([^\]]+)\] connected to", text)))

    def wait_connected(self, want: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected_count() >= want:
                return time.monotonic() - self.started_at
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("conmand exited: "
                                   + (self.workdir / "conmand.err").read_text()[-2000:])
            time.sleep(0.05)
        return None

    def log_bytes(self, name: str) -> bytes:
        return (self.logdir / f"{name}.log").read_bytes()

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=timeout)


async def conman_flood(cm: ConMan, name: str, size: int, timeout: float = 180.0
                       ) -> dict[str, object]:
    """`conman -j NAME` on a pty types `flood SIZE`; conmand's CPU is charged."""
    cli = PtyClient([CONMAN, "-d", f"127.0.0.1:{cm.port}", "-j", name])
    try:
        await cli.expect(rb"Connection to console \[", timeout=20)
        cli.type(b"\r")
        await cli.expect(PROMPT_RE.pattern, timeout=20)
        await asyncio.sleep(0.3)
        since_log = len(cm.log_bytes(name))
        since = len(cli.output)
        cpu0, t0 = cpu_of(cm.pid), time.perf_counter()
        cli.type(b"flood %d\r" % size)
        with contextlib.suppress(TimeoutError):
            await cli.wait_for(lambda b: flood_done(b, size, since) is not None, timeout)
        t1, cpu1 = time.perf_counter(), cpu_of(cm.pid)
        viewer_ok, viewer_detail = check_flood(cli.output, size, since)
        log_ok, log_detail = False, "log incomplete"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = cm.log_bytes(name)[since_log:]
            if flood_done(data, size) is not None:
                log_ok, log_detail = check_flood(data, size)
                break
            await asyncio.sleep(0.25)
    finally:
        with contextlib.suppress(OSError):
            cli.type(b"&.")  # conman's escape: leave the console
        await asyncio.sleep(0.2)
        await cli.close()
    return {"bytes": size, "seconds": round(t1 - t0, 3), "cpu_s": round(cpu1 - cpu0, 3),
            "cpu_s_per_mb": round((cpu1 - cpu0) / (size / 1e6), 3),
            "viewer_ok": viewer_ok, "viewer_detail": viewer_detail,
            "log_ok": log_ok, "log_detail": log_detail}


def idle(pid: int, window: float, settle: float) -> dict[str, float]:
    time.sleep(settle)  # let the connect burst drain
    a = sample(pid)
    time.sleep(window)
    b = sample(pid)
    return {"cpu_pct": round(100 * (b.cpu - a.cpu) / (b.t - a.t), 3), "rss_kb": b.rss_kb}


async def run_one(server: str, count: int, wd: Path, *, window: float, size: int,
                  baud: int, do_idle: bool, settle: float = 5.0) -> dict[str, object]:
    """Fresh fleet, one server over all of it: connect time, idle CPU and RSS, one flood."""
    fleet = Fleet(count, wd, baud=baud, suites=str(SUITE))
    fleet.start()
    out: dict[str, object] = {"server": server, "consoles": count}
    try:
        if server == "solgate":
            srv = Server(fleet.consoles, wd / "solgate", web=True, suites=(SUITE,))
            srv.workdir.mkdir()
            try:
                srv.start()
                out["connect_s"] = srv.wait_active(count, 300)
                out["connected"] = srv.active_count()
                if do_idle:
                    out.update(idle(srv.pid, window, settle))
                if size:
                    import aiohttp

                    async with aiohttp.ClientSession() as session:
                        r = await ws_flood(session, srv, fleet.consoles[0][0], size,
                                           timeout=180)
                    out["flood"] = r
            finally:
                srv.stop()
        else:
            cm = ConMan(fleet.consoles, wd / "conman")
            cm.workdir.mkdir()
            try:
                cm.start()
                out["connect_s"] = cm.wait_connected(count, 300)
                out["connected"] = cm.connected_count()
                if do_idle:
                    out.update(idle(cm.pid, window, settle))
                if size:
                    name = fleet.consoles[0][0]
                    out["flood"] = await conman_flood(cm, name, size)
                    err = (cm.workdir / "conmand.err").read_text(errors="replace")
                    out["flood"]["disconnects"] = err.count(f"Console [{name}] disconnected")
            finally:
                cm.stop()
    finally:
        fleet.stop()
    if isinstance(out.get("connect_s"), float):
        out["connect_s"] = round(out["connect_s"], 2)  # type: ignore[arg-type]
    if "rss_kb" in out:
        out["rss_kb_per_console"] = round(out["rss_kb"] / count, 1)  # type: ignore[operator]
    print(f"... {out}", file=sys.stderr, flush=True)
    return out


def _median(rows: list[dict[str, object]], key: str) -> float | None:
    vals = [r[key] for r in rows if isinstance(r.get(key), int | float)]
    return round(statistics.median(vals), 3) if vals else None  # type: ignore[arg-type]


def _flood_median(rows: list[dict[str, object]]) -> float | None:
    vals = [r["flood"]["cpu_s_per_mb"] for r in rows if "flood" in r]  # type: ignore[index]
    return round(statistics.median(vals), 3) if vals else None


async def amain(args: argparse.Namespace) -> int:
    size = parse_size(args.flood) if args.flood else 0
    results: list[dict[str, object]] = []
    sizes = [n for n in (args.small, args.consoles) if n]
    for rnd in range(args.rounds):
        order = ["solgate", "conman"] if rnd % 2 == 0 else ["conman", "solgate"]
        for count in sizes:
            for server in order:
                with workdir() as wd:
                    r = await run_one(server, count, wd, window=args.window, size=size,
                                      baud=args.baud, do_idle=count == args.consoles,
                                      settle=args.settle)
                r["round"] = rnd
                results.append(r)
    rows = []
    summary: dict[str, object] = {}
    for count in sizes:
        for server in ("conman", "solgate"):
            rs = [r for r in results if r["server"] == server and r["consoles"] == count]
            s = {"connect_s": _median(rs, "connect_s"), "cpu_pct": _median(rs, "cpu_pct"),
                 "rss_kb_per_console": _median(rs, "rss_kb_per_console"),
                 "flood_cpu_s_per_mb": _flood_median(rs),
                 "all_connected": all(r["connected"] == count for r in rs),
                 "floods_exact": all(r["flood"]["log_ok"] and r["flood"]["viewer_ok"]  # type: ignore[index]
                                     for r in rs if "flood" in r)}
            summary[f"{server}@{count}"] = s
            rows.append([server, count, len(rs), s["connect_s"], s["rss_kb_per_console"],
                         s["cpu_pct"], s["flood_cpu_s_per_mb"], s["all_connected"],
                         s["floods_exact"]])
    print(f"solgate vs ConMan, cipher suite {SUITE}, flood {size} bytes at {args.baud} baud, "
          f"{args.rounds} round(s), medians")
    print_table(["server", "consoles", "runs", "connect s", "RSS KB/console", "idle CPU %",
                 "flood CPU s/MB", "all connected", "floods exact"], rows)
    path = write_result(args.name, {"consoles": args.consoles, "small": args.small,
                                    "window_s": args.window, "flood_bytes": size,
                                    "baud": args.baud, "suite": SUITE,
                                    "summary": summary, "runs": results})
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consoles", type=int, default=1000)
    parser.add_argument("--small", type=int, default=10,
                        help="the small fleet, for its flood figure (0: skip)")
    parser.add_argument("--window", type=float, default=30.0,
                        help="idle seconds measured at --consoles (30)")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds after connecting before the idle window (5)")
    parser.add_argument("--flood", default="4M", help="flood size per run ('' to skip)")
    parser.add_argument("--baud", type=int, default=8_000_000,
                        help="the hosts' serial speed (8 Mbaud: SOL, not the UART, limits)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat everything; the server order alternates")
    parser.add_argument("--name", default="vs_conman")
    if not Path(CONMAND).exists():
        parser.error("conmand not found: apt-get install conman")
    return asyncio.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
