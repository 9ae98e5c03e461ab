"""Boot storm: every host of a fleet powers on at once and prints its boot log at 115200 baud.

    python bench/boot_storm.py [--hosts 2000] [--servers solgate,conman] [--log-size 64K]
                               [--sol-retries 7] [--sol-retry-interval 100ms] [--timeout 600]
                               [--spread SECONDS]

A power loss and restore is when console logs matter most and when a console server is
busiest: N hosts each print a large boot log (`--log-size`, a server's 50-150 KB; 64 KiB
by default) at the full speed of their serial line, all at once. For each server in turn
(`solgate serve`, then ConMan's `conmand` with a generated conman.conf as in
`vs_conman.py`), a fresh `solgate sim` fleet is started with every host powered off and
BMC SOL retries like a real BMC's (OpenBMC's 7 retries 100 ms apart by default: a packet
not acknowledged within ~0.8 s is given up and its bytes are lost); once the server has
every console connected, SIGUSR2 powers every host on at the same moment, or with
`--spread S` in sequence over S seconds (`solgate sim --power-on-spread`: host i of a
simulator process's N at i*S/N; with several processes, one host of each at each step),
as outlet power-on delays and BMC power-restore delays stagger a real restore. Measured:

* **bytes lost**: what each host put on its serial line (the simulator's count) against
  the host's bytes in the server's log file (the server's own lines, solgate's
  `[-- solgate ... --]` notes and ConMan's `<ConMan>` lines, removed), summed; split into
  what the BMCs abandoned (unacknowledged after every retry), threw away while no SOL
  session was up, still in the host's UART or the BMC's SOL send buffer when the time
  ran out (late, not lost), and the rest;
* **time to complete**: from (the first) power-on until every log ends with the host's
  shell prompt (or `--timeout`); the line time of one boot log alone is the floor, plus
  the last host's power-on delay with `--spread`. Per host, from its own power-on to its
  log complete: the median and the slowest (the power-on delays from the simulators'
  `--stats`);
* **UDP drops**: datagrams the kernel dropped because a receive buffer was full, the
  server's sockets and the simulators' (a BMC whose ACK was dropped resends, and gives up
  after its last retry);
* **CPU**: the server's and the simulator processes' user + system time, peak (per
  `--sample` interval) and mean over the storm, in % of one core: on a small machine the
  simulator competes with the server for the same cores.

Everything is on 127.0.0.1; every process is stopped by PID. Writes
bench/results/boot_storm.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    SIM_PER_PROCESS,
    Fleet,
    Server,
    parse_size,
    print_table,
    sample,
    workdir,
    write_result,
)
from vs_conman import CONMAND, SUITE, ConMan  # noqa: E402

BAUD = 115200
# solgate's notes are lines of their own; one that comes mid-line first ends the line
# with a mark. ConMan's lines start with a line break of their own.
SOLGATE_NOTE = re.compile(rb"(?: \[-- solgate: line continues below --\]|"
                          rb"\[-- solgate [^\r\n]*? --\])\r\n")
CONMAN_LINE = re.compile(rb"\r\n<ConMan> [^\r\n]*\r\n")


def host_bytes(data: bytes, server: str) -> int:
    """Bytes of `data` (a log file) that came from the host, not from the server."""
    pattern = SOLGATE_NOTE if server == "solgate" else CONMAN_LINE
    return len(data) - sum(len(m.group()) for m in pattern.finditer(data))


def line_floor(log_size: int, hosts: int, speed: float) -> float:
    """Seconds from power-on until the slowest of (up to 20 of) the hosts has sent its last
    boot byte, with nobody else on the machine: the fastest any console server can be."""
    from solgate.sim.host import SimHost

    worst = 0.0
    for seed in range(min(hosts, 20)):
        host = SimHost(f"sim{seed + 1:03d}", seed=seed, baud=BAUD, boot_log_size=log_size,
                       boot_speed=speed)
        host.power_on(0.0)
        t = 0.0
        for _ in range(100_000):
            due = host.next_deadline()
            if due is None:
                break
            t = max(t, due)
            host.read(t, 1 << 20)
        worst = max(worst, t)
    return worst


def tail(path: Path, size: int = 512) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - size))
            return f.read()
    except OSError:
        return b""


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def udp_state(groups: dict[str, set[str]]) -> tuple[dict[str, int], dict[str, int]]:
    """Per group of socket inodes: datagrams the kernel dropped because a receive buffer
    was full (since each socket was opened), and the bytes waiting in the receive buffers
    now (datagrams that arrived and that the process has not read yet: how far behind it
    is). From /proc/net/udp."""
    drops = dict.fromkeys(groups, 0)
    queued = dict.fromkeys(groups, 0)
    with contextlib.suppress(OSError), open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            inode = fields[9]
            for name, inodes in groups.items():
                if inode in inodes:
                    drops[name] += int(fields[-1])
                    queued[name] += int(fields[4].split(":")[1], 16)
    return drops, queued


class Cpu:
    """Per-interval CPU of a set of processes: peak and mean in % of one core."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.t0, self.c0 = time.monotonic(), self._cpu()
        self.last_t, self.last_c = self.t0, self.c0
        self.peak = 0.0

    def _cpu(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                total += sample(pid).cpu
            except OSError:
                pass
        return total

    def tick(self) -> None:
        t, c = time.monotonic(), self._cpu()
        if t - self.last_t > 0.2:
            self.peak = max(self.peak, 100 * (c - self.last_c) / (t - self.last_t))
            self.last_t, self.last_c = t, c

    def result(self) -> dict[str, float]:
        self.tick()
        span = max(1e-9, self.last_t - self.t0)
        return {"peak_pct": round(self.peak, 1),
                "mean_pct": round(100 * (self.last_c - self.c0) / span, 1),
                "cpu_s": round(self.last_c - self.c0, 2)}


def run_one(server: str, count: int, wd: Path, args: argparse.Namespace) -> dict[str, object]:
    """Fresh powered-off fleet, one server holding all of it, then power on every host."""
    spread = ("--power-on-spread", f"{args.spread}s") if args.spread else ()
    fleet = Fleet(count, wd, baud=BAUD, suites=str(SUITE), boot_speed=args.boot_speed,
                  stats=True,
                  sim_args=("--powered-off", "--boot-log-size", str(args.log_size),
                            "--sol-retries", str(args.sol_retries),
                            "--sol-retry-interval", args.sol_retry_interval, *spread))
    out: dict[str, object] = {"server": server, "hosts": count, "spread_s": args.spread}
    fleet.start(timeout=300)
    srv: Server | ConMan
    if server == "solgate":
        srv = Server(fleet.consoles, wd / "solgate", web=False, suites=(SUITE,))
        logdir = srv.data_dir / "logs"
    else:
        srv = ConMan(fleet.consoles, wd / "conman")
        logdir = srv.logdir
    srv.workdir.mkdir()
    names = [name for name, _ in fleet.consoles]
    prompts = {name: f"root@{name.split('-', 1)[1]}:~# ".encode() for name in names}
    try:
        srv.start()
        if isinstance(srv, Server):
            connect = srv.wait_active(count, args.connect_timeout)
            connected = srv.active_count()
        else:
            connect = srv.wait_connected(count, args.connect_timeout)
            connected = srv.connected_count()
        out["connect_s"] = None if connect is None else round(connect, 2)
        out["connected"] = connected
        print(f"... {server}: {connected}/{count} connected in {connect} s", file=sys.stderr,
              flush=True)
        time.sleep(args.settle)  # let the connect burst drain
        server_cpu, sim_cpu = Cpu([srv.pid]), Cpu(fleet.pids)
        sockets = {"server": socket_inodes(srv.pid),
                   "sim": set().union(*(socket_inodes(pid) for pid in fleet.pids))}
        drops0, _ = udp_state(sockets)
        rx_peak = dict.fromkeys(sockets, 0)
        rx_sum = dict.fromkeys(sockets, 0)
        samples = 0
        t0, wall0 = time.monotonic(), time.time()
        for pid in fleet.pids:
            os.kill(pid, signal.SIGUSR2)
        pending = set(names)
        paths = {name: str(logdir / f"{name}.log") for name in names}
        sizes = dict.fromkeys(names, -1)
        done_at = 0.0
        done: dict[str, float] = {}  # each log's completion, seconds after the signal
        deadline = t0 + args.timeout
        progress = t0
        # /proc/net/udp lists every socket: at 10,000 hosts reading it each second cost
        # the benchmark itself a fifth of a core (mostly kernel time) beside the storm.
        udp_every = args.udp_every or max(1, count // 2000)
        ticks = 0
        while pending and time.monotonic() < deadline:
            time.sleep(args.sample)
            ticks += 1
            server_cpu.tick()
            sim_cpu.tick()
            if ticks % udp_every == 0:
                _, queued = udp_state(sockets)
                samples += 1
                for k, v in queued.items():
                    rx_peak[k] = max(rx_peak[k], v)
                    rx_sum[k] += v
            for name in list(pending):
                # A log whose size did not change since the last look is not read again.
                try:
                    st = os.stat(paths[name])
                except OSError:
                    continue
                if st.st_size == sizes[name]:
                    continue
                sizes[name] = st.st_size
                if prompts[name] in tail(Path(paths[name])):
                    pending.discard(name)
                    # The file's last write, not this poll, is when the log completed.
                    done[name] = st.st_mtime - wall0
                    done_at = max(done_at, done[name])
            if time.monotonic() - progress > 10:
                progress = time.monotonic()
                print(f"... {server}: {count - len(pending)}/{count} complete after "
                      f"{progress - t0:.0f} s", file=sys.stderr, flush=True)
        elapsed = time.monotonic() - t0
        out["complete"] = count - len(pending)
        out["complete_s"] = round(done_at, 2) if not pending else None
        out["elapsed_s"] = round(elapsed, 1)
        out["server_cpu"] = server_cpu.result()
        out["sim_cpu"] = sim_cpu.result()
        out["reconnects"] = reconnects(server, srv)
        drops1, _ = udp_state(sockets)
        out["udp_rcvbuf_drops"] = {k: drops1[k] - drops0[k] for k in drops1}
        out["udp_rx_queued_kb"] = {k: {"peak": rx_peak[k] // 1024,
                                       "mean": rx_sum[k] // max(1, samples) // 1024}
                                   for k in sockets}
        time.sleep(1.0)  # the last writes reach the log files
    finally:
        fleet.stop()  # first: the BMCs' counters as they are, SOL still up
        if isinstance(srv, ConMan):
            # conmand, its BMCs gone, retries its IPMI sessions for 30 s before it exits;
            # its logs are complete (the second above), so it is killed after 3.
            srv.stop(timeout=3.0)
        else:
            srv.stop()
    stats = fleet.read_stats()
    totals = {"expected": 0, "logged": 0, "missing": 0, "abandoned": 0, "discarded": 0,
              "unsent": 0, "bmc_queued": 0, "surplus": 0}
    worst: list[tuple[int, str]] = []
    for name in names:
        st = stats.get(name)
        if st is None:
            continue
        path = logdir / f"{name}.log"
        logged = host_bytes(path.read_bytes(), server) if path.exists() else 0
        expected = st["host_bytes"]
        totals["expected"] += expected
        totals["logged"] += logged
        totals["missing"] += max(0, expected - logged)
        totals["surplus"] += max(0, logged - expected)
        totals["abandoned"] += st["abandoned"]
        totals["discarded"] += st["discarded"]
        totals["unsent"] += max(0, expected - st["sol_sent"] - st["discarded"])
        totals["bmc_queued"] += st.get("sol_queued", 0)
        for key in ("sol_retransmits", "datagrams_in", "datagrams_out"):  # newer simulators
            if key in st:
                totals[key] = totals.get(key, 0) + st[key]
        if expected != logged:
            worst.append((expected - logged, name))
    totals["missing_unexplained"] = max(0, totals["missing"] - totals["abandoned"]
                                        - totals["discarded"] - totals["unsent"]
                                        - totals["bmc_queued"])
    out["bytes"] = totals
    # Per host, from its own power-on (the simulator's delay after the signal) to its log
    # complete: what each console's operator waited, whatever the spread.
    own = sorted(done[name] - (stats[name].get("power_on_s") or 0.0)
                 for name in done if name in stats)
    if own:
        out["per_host_s"] = {"median": round(own[len(own) // 2], 2),
                             "p99": round(own[min(len(own) - 1, len(own) * 99 // 100)], 2),
                             "max": round(own[-1], 2)}
    delays = [st["power_on_s"] for st in stats.values() if st.get("power_on_s") is not None]
    out["powered_on"] = len(delays)
    out["last_power_on_s"] = round(max(delays), 2) if delays else None
    out["logs_short"] = len([w for w in worst if w[0] > 0])
    out["worst"] = [f"{name}: {diff}" for diff, name in sorted(worst, reverse=True)[:5]]
    print(f"... {json.dumps(out)}", file=sys.stderr, flush=True)
    return out


def reconnects(server: str, srv: Server | ConMan) -> int:
    """SOL sessions lost and set up again after the first connect, fleet-wide."""
    if server == "solgate":
        path = srv.workdir / "data" / "events.jsonl"
        text = path.read_text() if path.exists() else ""
        return text.count('"sol-down"')
    path = srv.workdir / "conmand.err"
    text = path.read_text(errors="replace") if path.exists() else ""
    return len(re.findall(r"Console \[[^\]]+\] disconnected", text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--servers", default="solgate,conman",
                        help="comma-separated, run in this order: solgate, conman")
    parser.add_argument("--log-size", type=parse_size, default=65536,
                        help="boot log bytes per host (64K)")
    parser.add_argument("--boot-speed", type=float, default=1.0,
                        help="the simulator's boot script speed (1: real time; the serial "
                             "line still paces the bytes)")
    parser.add_argument("--sol-retries", type=int, default=7,
                        help="BMC SOL retries per packet (7, OpenBMC's)")
    parser.add_argument("--sol-retry-interval", default="100ms",
                        help="BMC SOL retry interval (100ms, OpenBMC's)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds from (the first) power-on to give up waiting for "
                             "complete logs")
    parser.add_argument("--spread", type=float, default=0.0, metavar="SECONDS",
                        help="power the hosts on in sequence over this many seconds "
                             "(solgate sim --power-on-spread) instead of all at once (0)")
    parser.add_argument("--connect-timeout", type=float, default=300.0)
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds between every console connected and power-on")
    parser.add_argument("--sample", type=float, default=1.0, help="CPU sampling interval")
    parser.add_argument("--udp-every", type=int, default=0, metavar="N",
                        help="read the UDP queues every N samples (0: one per 2,000 hosts)")
    parser.add_argument("--name", default="boot_storm")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the simulators and the server are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if "conman" in servers and not Path(CONMAND).exists():
        parser.error("conmand not found: apt-get install conman (or --servers solgate)")
    floor = round(line_floor(args.log_size, args.hosts, args.boot_speed), 2)
    print(f"... one boot log takes {floor} s on its serial line", file=sys.stderr, flush=True)
    # The last host powers on at spread*(N-1)/N of its simulator's N (`Fleet` processes).
    last = args.spread * (min(args.hosts, SIM_PER_PROCESS) - 1) / min(args.hosts,
                                                                      SIM_PER_PROCESS)
    fleet_floor = round(floor + last, 2)
    results = []
    for server in servers:
        with workdir() as wd:
            results.append(run_one(server, args.hosts, wd, args))
    rows = []
    for r in results:
        b = r["bytes"]
        rows.append([r["server"], r["hosts"], f"{r['connected']}", r["connect_s"],
                     b["expected"], b["missing"], b["abandoned"], b["discarded"],
                     b["unsent"] + b.get("bmc_queued", 0), r["logs_short"], r["reconnects"],
                     f"{r['complete']}/{r['hosts']}",
                     r["complete_s"] if r["complete_s"] is not None
                     else f">{r['elapsed_s']}",
                     "{median}/{max}".format(**r.get("per_host_s", {"median": "-",
                                                                    "max": "-"})),
                     f"{r['server_cpu']['peak_pct']}/{r['server_cpu']['mean_pct']}",
                     f"{r['sim_cpu']['peak_pct']}/{r['sim_cpu']['mean_pct']}",
                     "{server}/{sim}".format(**r.get("udp_rcvbuf_drops",
                                                     {"server": "-", "sim": "-"})),
                     "{}/{}".format(*(r.get("udp_rx_queued_kb", {}).get(k, {}).get("peak", "-")
                                      for k in ("server", "sim")))])
    how = (f"powered on in sequence over {args.spread:g} s (the last at {last:.2f} s)"
           if args.spread else "powered on at once")
    print(f"boot storm: {args.hosts} hosts {how}, {args.log_size}-byte boot logs at {BAUD} "
          f"baud, BMC SOL retries {args.sol_retries} x {args.sol_retry_interval}, suite "
          f"{SUITE}; one log's line time {floor} s, the fleet's {fleet_floor} s")
    print_table(["server", "hosts", "connected", "connect s", "expected B", "missing B",
                 "abandoned B", "discarded B", "still queued B", "short logs", "reconnects",
                 "complete", "complete s", "per host s median/max",
                 "server CPU % peak/mean",
                 "sim CPU % peak/mean", "UDP drops server/sim",
                 "rx queue KB peak server/sim"], rows)
    path = write_result(args.name, {"hosts": args.hosts, "log_size": args.log_size,
                                    "baud": BAUD, "suite": SUITE, "line_floor_s": floor,
                                    "spread_s": args.spread, "fleet_floor_s": fleet_floor,
                                    "sol_retries": args.sol_retries,
                                    "sol_retry_interval": args.sol_retry_interval,
                                    "runs": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
