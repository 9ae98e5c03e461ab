"""Failover: kill -9 a cluster member holding N consoles; time until all N run on the survivor.

    python bench/cluster_failover.py [--consoles 5000] [--lease-ttl 15s] [--code DIR]
                                     [--py-spy FILE]

Starts a local etcd (free loopback ports, temporary data dir), `solgate sim` processes
for N BMCs, member A (weight 1) and, once A runs every console, member B as a standby
(weight 1e-9, so rendezvous placement gives it nothing while A lives). Then `kill -9` A
and measure, from the kill, until B's first console and until all N are active on B
(from B's events.jsonl). The floor is the lease TTL: etcd deletes A's keys only then.
`--code DIR` runs both members from another checkout (e.g. main), the simulators
from this one, for a side-by-side comparison in one window; `--py-spy FILE` records B
from the kill until all N are active (collapsed stacks). Results go to
bench/results/cluster_failover.json.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT_DIR = Path(__file__).resolve().parents[1]

from _common import (  # noqa: E402
    Fleet,
    _wait_for,
    config_text,
    env,
    free_port,
    print_table,
    sample,
    solgate_cmd,
    stop_process,
    workdir,
    write_result,
)


def start_etcd(path: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("etcd")
    if binary is None:
        raise SystemExit("etcd is not installed (apt-get install etcd-server)")
    client, peer = free_port(), free_port()
    with (path / "etcd.log").open("w") as log:
        proc = subprocess.Popen(
            [binary, "--data-dir", str(path / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{client}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                if json.loads(r.read()).get("health") == "true":
                    return proc, url
        except OSError:
            time.sleep(0.2)
    raise SystemExit("etcd did not become healthy")


def member_key_present(url: str, name: str) -> bool:
    """Is `<prefix>members/<name>` in etcd (gone: the member's lease expired)?"""
    key = base64.b64encode(f"/solgate/members/{name}".encode()).decode()
    request = urllib.request.Request(f"{url}/v3/kv/range", data=json.dumps(
        {"key": key, "count_only": True}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=2) as r:  # noqa: S310 - loopback etcd
        return int(json.loads(r.read()).get("count", 0)) > 0


def event_time(text: str) -> float:
    """`2026-12-06T07:26:06.123Z` (events.jsonl) as a Unix time."""
    base, _, millis = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + int(millis or 0) / 1000


class Member:
    def __init__(self, root: Path, name: str, consoles: list[tuple[str, int]], etcd: str,
                 lease_ttl: str, weight: float, setup_concurrency: int = 64,
                 code: Path | None = None) -> None:
        self.dir = root / name
        self.dir.mkdir()
        text = config_text(consoles, self.dir / "data", listen=None,
                           setup_concurrency=setup_concurrency)
        text = text.replace("[defaults]", "[cluster]\n"
                            f'etcd = ["{etcd}"]\nname = "{name}"\n'
                            f'lease_ttl = "{lease_ttl}"\nweight = {weight!r}\n\n[defaults]', 1)
        (self.dir / "solgate.toml").write_text(text)
        environ = env()
        if code is not None:  # that checkout's solgate, not this one's
            environ["PYTHONPATH"] = str(code)
        with (self.dir / "serve.err").open("w") as err:
            self.proc = subprocess.Popen(
                [*solgate_cmd(), "serve", "--no-web", "-c", str(self.dir / "solgate.toml")],
                stdout=subprocess.DEVNULL, stderr=err, env=environ, cwd=self.dir)
        _wait_for(self.dir / "serve.err", r"solgate: member \S+ of the cluster", self.proc, 120)

    def active(self) -> int:
        up: dict[str, int] = {}
        path = self.dir / "data" / "events.jsonl"
        if not path.exists():
            return 0
        with path.open() as f:
            for line in f:
                if '"sol-up"' in line or '"sol-down"' in line:
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    name = ev.get("console", "")
                    up[name] = up.get(name, 0) + (1 if ev.get("kind") == "sol-up" else -1)
        return sum(1 for v in up.values() if v > 0)

    def phases(self) -> tuple[float | None, float | None]:
        """Wall times of this member's first ownership note and of its last `sol-up`."""
        first = last = None
        path = self.dir / "data" / "events.jsonl"
        with path.open() as f:
            for line in f:
                if '"cluster"' not in line and '"sol-up"' not in line:
                    continue
                ev = json.loads(line)
                t = event_time(ev["time"])
                if ev["kind"] == "cluster" and first is None:
                    first = t
                elif ev["kind"] == "sol-up":
                    last = t
        return first, last

    def wait(self, want: int, timeout: float) -> float | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.active() >= want:
                return time.monotonic() - t0
            if self.proc.poll() is not None:
                raise SystemExit("member exited: " + (self.dir / "serve.err").read_text()[-2000:])
            time.sleep(0.25)
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consoles", type=int, default=5000)
    parser.add_argument("--lease-ttl", default="15s")
    parser.add_argument("--setup-concurrency", type=int, default=64)
    parser.add_argument("--code", type=Path, default=None,
                        help="run the members from this checkout (default: this one)")
    parser.add_argument("--py-spy", type=Path, default=None,
                        help="record member b with py-spy from the kill (collapsed stacks)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    code = args.code.resolve() if args.code is not None else None
    with workdir(args.keep) as root:
        etcd, url = start_etcd(root)
        fleet = Fleet(args.consoles, root)
        members: list[Member] = []
        try:
            fleet.start()
            t0 = time.monotonic()
            a = Member(root, "a", fleet.consoles, url, args.lease_ttl, 1.0,
                       args.setup_concurrency, code)
            members.append(a)
            started = a.wait(args.consoles, 600)
            cold_start = time.monotonic() - t0
            print(f"member a: {args.consoles} consoles active {cold_start:.1f} s after start "
                  f"(load average {os.getloadavg()[0]:.1f})")
            if started is None:
                raise SystemExit(f"only {a.active()} of {args.consoles} came up on a")
            rss_a = sample(a.proc.pid).rss_kb
            b = Member(root, "b", fleet.consoles, url, args.lease_ttl, 1e-9,
                       args.setup_concurrency, code)
            members.append(b)
            time.sleep(3)  # b's lease, member key and first polls
            assert b.active() == 0, "the standby took consoles while a lives"
            spy = None
            if args.py_spy is not None:
                spy = subprocess.Popen(["py-spy", "record", "--format", "raw", "--rate", "50",
                                        "-o", str(args.py_spy), "--pid", str(b.proc.pid)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            busy0 = {"b": sample(b.proc.pid).cpu, "b_sys": sample(b.proc.pid).sys_cpu,
                     "etcd": sample(etcd.pid).cpu,
                     "sims": sum(sample(p).cpu for p in fleet.pids)}
            killed, killed_wall = time.monotonic(), time.time()
            os.kill(a.proc.pid, signal.SIGKILL)
            a.proc.wait(10)
            while time.monotonic() - killed < 60 and member_key_present(url, "a"):
                time.sleep(0.05)
            expired = time.time() - killed_wall
            first = b.wait(1, 120)
            first_s = None if first is None else time.monotonic() - killed
            done = b.wait(args.consoles, 300)
            total = None if done is None else time.monotonic() - killed
            busy = {"b": sample(b.proc.pid).cpu - busy0["b"],
                    "b_sys": sample(b.proc.pid).sys_cpu - busy0["b_sys"],
                    "etcd": sample(etcd.pid).cpu - busy0["etcd"],
                    "sims": sum(sample(p).cpu for p in fleet.pids) - busy0["sims"]}
            first_note, last_up = b.phases()
            phases = {"lease_expired_s": round(expired, 2),
                      "first_owner_note_s": round(first_note - killed_wall, 2)
                      if first_note else None,
                      "last_sol_up_s": round(last_up - killed_wall, 2) if last_up else None,
                      "cpu_s": {k: round(v, 1) for k, v in busy.items()}}
            print(f"after the kill: a's lease gone {phases['lease_expired_s']} s, b's first "
                  f"ownership note {phases['first_owner_note_s']} s, b's last sol-up "
                  f"{phases['last_sol_up_s']} s; CPU seconds meanwhile {phases['cpu_s']}")
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                spy.wait(30)
            print_table(["consoles", "lease_ttl", "first on b (s)", "all on b (s)",
                         "a RSS (MB)"],
                        [[args.consoles, args.lease_ttl,
                          f"{first_s:.1f}" if first_s is not None else "-",
                          f"{total:.1f}" if total is not None else f"> 300 ({b.active()})",
                          f"{rss_a / 1024:.0f}"]])
            write_result("cluster_failover", {
                "consoles": args.consoles, "lease_ttl": args.lease_ttl,
                "setup_concurrency": args.setup_concurrency,
                "first_active_after_kill_s": first_s, "all_active_after_kill_s": total,
                "code": str(code or ROOT_DIR), "phases": phases,
                "member_a_rss_kb": rss_a, "member_a_cold_start_s": cold_start,
                "load_average_1m_after": os.getloadavg()[0],
                "command": f"python bench/cluster_failover.py --consoles {args.consoles} "
                           f"--lease-ttl {args.lease_ttl} "
                           f"--setup-concurrency {args.setup_concurrency}"
                           + (f" --code {code}" if code is not None else "")})
        finally:
            for m in members:
                stop_process(m.proc)
            fleet.stop()
            stop_process(etcd)


if __name__ == "__main__":
    main()
