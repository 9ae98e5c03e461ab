"""Shared plumbing for the benchmarks: simulated fleets, a `solgate serve`, /proc sampling.

Every benchmark runs three kinds of process, all on loopback:

* one or more `solgate sim` processes (at most `SIM_PER_PROCESS` BMCs each, so the
  simulator's own CPU never limits what is measured),
* one `solgate serve` (the process under test), with or without its web server,
* the benchmark itself (this process), which reads /proc/PID/stat and /proc/PID/status
  of the serve process and, where needed, drives WebSocket clients or `ipmitool`.

Processes are started with `subprocess.Popen` and ended by PID (SIGTERM, then SIGKILL after
a timeout); nothing is killed by name. Results go to `bench/results/<name>.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("SOLGATE_BENCH_RESULTS") or ROOT / "bench" / "results")
SIM_PER_PROCESS = 2000
PASSWORD = "password"  # noqa: S105 - the simulator's well-known default, loopback only
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def solgate_cmd(uvloop: bool = False) -> list[str]:
    """Run solgate from this checkout with the current interpreter (optionally on uvloop)."""
    pre = "import uvloop; uvloop.install(); " if uvloop else ""
    return [sys.executable, "-c",
            pre + "import sys; from solgate.cli import main; sys.exit(main())"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["SOLGATE_SIM_PASSWORD"] = PASSWORD
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for automatically chosen ports (Linux default 32768-60999)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_udp_base(count: int, start: int | None = None) -> int:
    """A base port with `count` consecutive free UDP ports on 127.0.0.1 (checked by binding).

    The search starts at a place that depends on our PID, so benchmarks started together
    (the smoke test) do not all pick the same ports between checking and binding.
    """
    if start is None:
        # Below the kernel's ephemeral range, so the ports other programs (a test suite,
        # a browser) are handed by bind(0) and connect() cannot take ours mid-start.
        low, high = 10000, _ephemeral_range()[0]
        if high - low - count < 1000:
            low, high = 20000, 64000
        span = max(1000, high - low - count)
        start = low + (os.getpid() * 7919) % span
    base = start
    while base + count < 65000:
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            base = p + 1
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free UDP ports on 127.0.0.1")


# --------------------------------------------------------------------------- /proc


@dataclass
class ProcSample:
    t: float
    cpu: float  # user + system seconds
    rss_kb: int
    fds: int = 0
    sys_cpu: float = 0.0  # system seconds alone


def sample(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = 0
    return ProcSample(time.monotonic(), cpu, rss, fds, int(fields[12]) / CLK_TCK)


def cpu_of(pid: int) -> float:
    return sample(pid).cpu


@dataclass(frozen=True)
class CpuReading:
    """CPU of a process for a difference of two readings (`CpuReading.since`)."""

    ticks: float  # /proc/PID/stat user + system, in clock ticks (10 ms), dead threads too
    exact: float | None  # the live threads' /proc/PID/task/*/schedstat sum, ns resolution
    tasks: frozenset[str]

    def since(self, before: CpuReading) -> float:
        """Seconds of CPU between `before` and this reading.

        A 115200-baud flood of 400 KB costs about 0.2 CPU-s, so a 10 ms tick either side
        is 5 %: the scheduler's exact count is used when the same threads were there at
        both readings (a thread that ended takes its time out of the sum), else ticks."""
        if self.exact is not None and before.exact is not None and self.tasks == before.tasks:
            return self.exact - before.exact
        return self.ticks - before.ticks


def cpu_reading(pid: int) -> CpuReading:
    ticks = sample(pid).cpu
    try:
        tasks = frozenset(os.listdir(f"/proc/{pid}/task"))
        total = 0
        for task in tasks:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return CpuReading(ticks, None, frozenset())
    return CpuReading(ticks, total / 1e9, tasks)


def sys_cpu_of(pid: int) -> float:
    return sample(pid).sys_cpu


def machine() -> dict[str, object]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_mb": mem,
            "python": platform.python_version(), "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


# --------------------------------------------------------------------------- processes


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM by PID, wait, then SIGKILL by PID."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _wait_for(path: Path, pattern: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if re.search(pattern, text):
            return text
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[-1] if proc.args else 'process'} exited "
                               f"({proc.returncode}): {text[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {pattern!r} in {path}")


@dataclass
class SimProc:
    proc: subprocess.Popen
    consoles: list[tuple[str, int]]  # (name, port)


@dataclass
class Fleet:
    """`count` simulated BMCs in processes of at most `SIM_PER_PROCESS`."""

    count: int
    workdir: Path
    loss: float = 0.0
    baud: int = 115200
    suites: str = "1,2,3,17"
    accumulate: float | None = None  # SOL accumulate interval; None = solgate sim's 20 ms
    kernel_ports: bool = False  # each BMC on a port the kernel picks (no range to race for)
    boot_speed: float = 1000.0  # `solgate sim --boot-speed` (1000: boot logs in a blink)
    sim_args: tuple[str, ...] = ()  # more `solgate sim` options, the same for every process
    stats: bool = False  # each process writes simN.stats.json when it stops (`--stats`)
    sims: list[SimProc] = field(default_factory=list)

    def start(self, timeout: float = 120.0) -> None:
        """Start the simulators; a port block taken by another program between the check
        and the bind (benchmarks started together) is given up for another, twice."""
        for attempt in range(3):
            base = 0 if self.kernel_ports else free_udp_base(self.count)
            try:
                self._start_at(base, timeout)
                return
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
                self.stop()
                self.sims = []

    def _start_at(self, base: int, timeout: float) -> None:
        per = SIM_PER_PROCESS
        chunks = [min(per, self.count - i) for i in range(0, self.count, per)]
        offset = 0
        for n, size in enumerate(chunks):
            out = self.workdir / f"sim{n}.toml"
            err = self.workdir / f"sim{n}.err"
            if self.accumulate is None:
                cmd = [*solgate_cmd(), "sim", "--password-env", "SOLGATE_SIM_PASSWORD",
                       "--boot-speed", str(self.boot_speed)]
            else:
                cmd = [sys.executable, str(ROOT / "bench" / "_sim_runner.py"),
                       "--accumulate", str(self.accumulate)]
            cmd += ["--count", str(size), "--base-port", str(base + offset if base else 0),
                    "--baud", str(self.baud), "--cipher-suites", self.suites,
                    "--seed", str(n)]
            if self.loss:
                cmd += ["--loss", str(self.loss)]
            if self.stats:
                cmd += ["--stats", str(self.workdir / f"sim{n}.stats.json")]
            cmd += self.sim_args
            proc = subprocess.Popen(cmd, stdout=out.open("w"), stderr=err.open("w"),
                                    env=env(), cwd=self.workdir)
            self.sims.append(SimProc(proc, []))
            offset += size
        for n, sim in enumerate(self.sims):
            _wait_for(self.workdir / f"sim{n}.err", r"started \d+ BMC", sim.proc, timeout)
            text = (self.workdir / f"sim{n}.toml").read_text()
            names = re.findall(r"\[consoles\.([^\]]+)\]\s*\nhost = \"[^\"]+\"\s*\nport = (\d+)",
                               text)
            sim.consoles = [(f"p{n}-{name}", int(port)) for name, port in names]

    @property
    def consoles(self) -> list[tuple[str, int]]:
        return [c for s in self.sims for c in s.consoles]

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.sims]

    def stop(self) -> None:
        for s in self.sims:
            stop_process(s.proc)

    def read_stats(self) -> dict[str, dict[str, int]]:
        """Console name -> the simulator's counters (after `stop`, with `stats=True`)."""
        out: dict[str, dict[str, int]] = {}
        for n in range(len(self.sims)):
            path = self.workdir / f"sim{n}.stats.json"
            if path.exists():
                for row in json.loads(path.read_text())["bmcs"]:
                    out[f"p{n}-{row['name']}"] = row
        return out


def config_text(consoles: list[tuple[str, int]], data_dir: Path, *, listen: str | None,
                suites: tuple[int, ...] = (17, 3), setup_concurrency: int = 64,
                keepalive: str = "20s", log_index: bool = True) -> str:
    lines = [f'data_dir = "{data_dir}"', "", "[server]",
             f'listen = "{listen or "127.0.0.1:1"}"', 'auth = "none"',
             f"setup_concurrency = {setup_concurrency}",
             # Every benchmark client connects from 127.0.0.1 (fanout: 1,000 viewers).
             "max_connections = 100000", "max_connections_per_address = 100000", "",
             "[defaults]",
             'username = "admin"', 'password_env = "SOLGATE_SIM_PASSWORD"',
             f"cipher_suites = [{', '.join(map(str, suites))}]",
             f'keepalive_interval = "{keepalive}"', 'reconnect_max = "10s"',
             f"log_index = {'true' if log_index else 'false'}", ""]
    for name, port in consoles:
        lines += [f"[consoles.{name}]", 'host = "127.0.0.1"', f"port = {port}", ""]
    return "\n".join(lines)


@dataclass
class Server:
    """One `solgate serve` over `consoles`."""

    consoles: list[tuple[str, int]]
    workdir: Path
    web: bool = False
    suites: tuple[int, ...] = (17, 3)
    setup_concurrency: int = 64
    extra_env: dict[str, str] = field(default_factory=dict)
    uvloop: bool = False
    log_index: bool = True
    proc: subprocess.Popen | None = None
    port: int = 0
    started_at: float = 0.0

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port() if self.web else 0
        cfg = self.workdir / "solgate.toml"
        cfg.write_text(config_text(self.consoles, self.data_dir,
                                   listen=f"127.0.0.1:{self.port}" if self.web else None,
                                   suites=self.suites,
                                   setup_concurrency=self.setup_concurrency,
                                   log_index=self.log_index))
        cmd = [*solgate_cmd(self.uvloop), "serve", "-c", str(cfg)]
        if not self.web:
            cmd.append("--no-web")
        e = env()
        e.update(self.extra_env)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=(self.workdir / "serve.out").open("w"),
                                     stderr=(self.workdir / "serve.err").open("w"), env=e,
                                     cwd=self.workdir)
        _wait_for(self.workdir / "serve.err", r"solgate: serving", self.proc, 120)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def active_count(self) -> int:
        """Consoles whose SOL came up and has not gone down, from events.jsonl."""
        up: dict[str, int] = {}
        path = self.data_dir / "events.jsonl"
        if not path.exists():
            return 0
        with path.open() as f:
            for line in f:
                if '"sol-up"' in line or '"sol-down"' in line:
                    with contextlib.suppress(ValueError):
                        ev = json.loads(line)
                        name = ev.get("console", "")
                        up[name] = up.get(name, 0) + (1 if ev.get("kind") == "sol-up" else -1)
        return sum(1 for v in up.values() if v > 0)

    def wait_active(self, want: int, timeout: float) -> float | None:
        """Seconds from serve start until `want` consoles are active (None: timed out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.active_count() >= want:
                return time.monotonic() - self.started_at
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("solgate serve exited: "
                                   + (self.workdir / "serve.err").read_text()[-2000:])
            time.sleep(0.25)
        return None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=60)

    def log_bytes(self, name: str) -> bytes:
        return (self.data_dir / "logs" / f"{name}.log").read_bytes()


@contextlib.contextmanager
def workdir(keep: bool = False):  # noqa: ANN201
    path = Path(tempfile.mkdtemp(prefix="solgate-bench-"))
    try:
        yield path
    finally:
        if not keep:
            import shutil

            shutil.rmtree(path, ignore_errors=True)


def write_result(name: str, data: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


# --------------------------------------------------------------------------- WebSocket


class WsConsole:
    """A WebSocket attachment to one console; collects binary output after the snapshot."""

    def __init__(self, session: object, url: str, name: str) -> None:
        self.session = session
        self.url = f"{url}/ws/consoles/{name}"
        self.ws: object | None = None
        self.data = bytearray()
        self.snapshot_pending = False
        self.lagged = 0
        self.closed = False

    async def open(self) -> None:
        self.ws = await self.session.ws_connect(self.url, max_msg_size=0)  # type: ignore[attr-defined]

    async def take_write(self) -> None:
        await self.ws.send_str(json.dumps({"type": "take-write"}))  # type: ignore[union-attr]

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)  # type: ignore[union-attr]

    async def receive(self, timeout: float | None = None) -> tuple[str, object] | None:
        """('data', bytes) or ('ctl', dict); None on close or timeout."""
        import aiohttp

        try:
            msg = await asyncio.wait_for(self.ws.receive(), timeout)  # type: ignore[union-attr]
        except TimeoutError:
            return None
        if msg.type == aiohttp.WSMsgType.BINARY:
            if self.snapshot_pending:
                self.snapshot_pending = False
                return ("snapshot", msg.data)
            return ("data", msg.data)
        if msg.type == aiohttp.WSMsgType.TEXT:
            ctl = json.loads(msg.data)
            if ctl.get("type") == "snapshot":
                self.snapshot_pending = True
            if ctl.get("type") == "lagged":
                self.lagged += int(ctl.get("dropped", 0))
            return ("ctl", ctl)
        self.closed = True
        return None

    async def settle(self, quiet: float = 0.3) -> None:
        """Read the greeting (hello, snapshot, write-lock, state) until the line is quiet."""
        while await self.receive(quiet) is not None:
            pass

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()  # type: ignore[union-attr]


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- reference clients


IPMITOOL = "/usr/bin/ipmitool"


def ipmitool_sol_argv(port: int, suite: int) -> list[str]:
    """`ipmitool sol activate` against a simulated BMC; the password comes from the env (-E)."""
    return [IPMITOOL, "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port), "-U", "admin", "-E",
            "-C", str(suite), "sol", "activate"]


class PtyClient:
    """A terminal client (ipmitool) on a pseudo-terminal; its output is read by the loop."""

    def __init__(self, argv: list[str]) -> None:
        import pty  # noqa: F401 - documents that this is Unix-only

        self.master, slave = os.openpty()
        e = env()
        e["IPMI_PASSWORD"] = PASSWORD
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     close_fds=True, start_new_session=True, env=e)
        os.close(slave)
        os.set_blocking(self.master, False)
        self.output = bytearray()
        self.arrivals: list[tuple[float, int]] = []  # (time, len(output) after the read)
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._readable)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._loop.remove_reader(self.master)
        self.output += data
        self.arrivals.append((time.perf_counter(), len(self.output)))
        self._changed.set()

    async def wait_for(self, predicate, timeout: float) -> None:  # noqa: ANN001
        async def loop() -> None:
            while not predicate(self.output):
                self._changed.clear()
                if self.proc.poll() is not None and not predicate(self.output):
                    raise RuntimeError(f"ipmitool exited: {bytes(self.output[-500:])!r}")
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def expect(self, pattern: bytes, since: int = 0, timeout: float = 20.0) -> int:
        regex = re.compile(pattern)
        found: list[int] = []

        def pred(buf: bytearray) -> bool:
            m = regex.search(bytes(buf), since)
            if m:
                found.append(m.end())
            return m is not None

        await self.wait_for(pred, timeout)
        return found[0]

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    async def close(self) -> None:
        """Leave with the escape `~.` (so ipmitool deactivates SOL), kill it if it lingers."""
        with contextlib.suppress(OSError):
            self.type(b"\r~.")
        for _ in range(40):
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.master)
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)  # our own child, by pid
            self.proc.wait(5)
        os.close(self.master)


PROMPT = rb"root@[^\r\n]*# $"


def parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1024, "M": 1024 * 1024}.get(text[-1:], 1)
    return int(float(text.rstrip("KM")) * mult)


# --------------------------------------------------------------------------- floods

FLOOD_START = b"flood 00000001 "
PROMPT_RE = re.compile(rb"root@[^\r\n]*:~# ")


def flood_done(buf: bytes | bytearray, size: int, since: int = 0) -> int | None:
    """Offset of the flood's first byte once all `size` bytes and the next prompt arrived."""
    start = bytes(buf).find(FLOOD_START, since)
    if start < 0 or len(buf) < start + size:
        return None
    if PROMPT_RE.search(bytes(buf), start + size) is None:
        return None
    return start


def check_flood(buf: bytes | bytearray, size: int, since: int = 0) -> tuple[bool, str]:
    from solgate.sim.flood import verify_flood

    start = bytes(buf).find(FLOOD_START, since)
    if start < 0:
        return False, "no flood output found"
    return verify_flood(bytes(buf[start : start + size]), size)


async def wait_log_flood(server: Server, name: str, size: int, since: int,
                         timeout: float) -> tuple[bool, str]:
    """Wait until the console's log holds the whole flood and a prompt; verify every byte."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        data = server.log_bytes(name)[since:]
        if flood_done(data, size) is not None:
            return check_flood(data, size)
        await asyncio.sleep(0.25)
    ok, detail = check_flood(data, size)
    return False, f"log incomplete after {timeout:.0f} s ({len(data)} bytes): {detail}"


async def ws_flood(session: object, server: Server, name: str, size: int,
                   timeout: float = 120.0) -> dict[str, object]:
    """Type `flood SIZE` through a WebSocket; time it and charge serve's CPU to it."""
    ws = WsConsole(session, server.url, name)
    await ws.open()
    await ws.take_write()
    await ws.settle(0.3)
    await ws.send(b"\r")
    await ws.settle(0.3)
    since = len(server.log_bytes(name))
    buf = bytearray()
    c0, t0, sys0 = cpu_reading(server.pid), time.perf_counter(), sys_cpu_of(server.pid)
    await ws.send(b"flood %d\r" % size)
    deadline = time.monotonic() + timeout
    while flood_done(buf, size) is None and time.monotonic() < deadline:
        r = await ws.receive(5.0)
        if r is None and ws.closed:
            break
        if r is not None and r[0] == "data":
            buf += r[1]
    t1, c1, sys1 = time.perf_counter(), cpu_reading(server.pid), sys_cpu_of(server.pid)
    cpu = c1.since(c0)
    await ws.close()
    ws_ok, ws_detail = check_flood(buf, size) if not ws.lagged else (False, "viewer lagged")
    log_ok, log_detail = await wait_log_flood(server, name, size, since, 10.0)
    return {"client": "solgate", "bytes": size, "seconds": round(t1 - t0, 3),
            "cpu_s": round(cpu, 4), "sys_cpu_s": round(sys1 - sys0, 3),
            "cpu_s_per_mb": round(cpu / (size / 1e6), 3),
            "kb_per_s": round(size / 1000 / (t1 - t0), 1),
            "viewer_ok": ws_ok, "viewer_detail": ws_detail,
            "log_ok": log_ok, "log_detail": log_detail}


async def ipmitool_flood(port: int, suite: int, size: int,
                         timeout: float = 120.0) -> dict[str, object]:
    """The same flood through `ipmitool sol activate` on a pty; charge ipmitool's CPU."""
    cli = PtyClient(ipmitool_sol_argv(port, suite))
    try:
        await cli.expect(rb"SOL Session operational", timeout=20)
        cli.type(b"\r")
        await cli.expect(PROMPT_RE.pattern, timeout=10)
        await asyncio.sleep(0.3)
        since = len(cli.output)
        c0, t0, sys0 = cpu_reading(cli.pid), time.perf_counter(), sys_cpu_of(cli.pid)
        cli.type(b"flood %d\r" % size)
        try:
            await cli.wait_for(lambda b: flood_done(b, size, since) is not None, timeout)
        except TimeoutError:
            pass
        t1, c1, sys1 = time.perf_counter(), cpu_reading(cli.pid), sys_cpu_of(cli.pid)
        cpu = c1.since(c0)
        ok, detail = check_flood(cli.output, size, since)
    finally:
        await cli.close()
    return {"client": "ipmitool", "bytes": size, "seconds": round(t1 - t0, 3),
            "cpu_s": round(cpu, 4), "sys_cpu_s": round(sys1 - sys0, 3),
            "cpu_s_per_mb": round(cpu / (size / 1e6), 3),
            "kb_per_s": round(size / 1000 / (t1 - t0), 1),
            "viewer_ok": ok, "viewer_detail": detail, "log_ok": None, "log_detail": ""}


# --------------------------------------------------------------------------- a lean viewer


class RawWsViewer(asyncio.Protocol):
    """A read-only WebSocket viewer with almost no per-frame cost, for fan-out runs.

    A thousand aiohttp clients in one Python process cost more CPU than the server they
    measure; this one does the upgrade by hand, then only splits frames, answers pings,
    and records `(arrival time, console bytes so far)` once per read.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.data = bytearray()
        self.arrivals: list[tuple[float, int]] = []
        self.upgraded = asyncio.get_running_loop().create_future()
        self.snapshot_next = False
        self.lagged = 0
        self.closed = False
        self.changed = asyncio.Event()
        self.bad_frames: list[bytes] = []  # text frames that were not JSON (header included)

    @classmethod
    async def open(cls, port: int, name: str) -> RawWsViewer:
        import base64

        loop = asyncio.get_running_loop()
        _, viewer = await loop.create_connection(cls, "127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        assert viewer.transport is not None
        viewer.transport.write(
            f"GET /ws/consoles/{name} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        try:
            await asyncio.wait_for(viewer.upgraded, 10)
        except BaseException:
            viewer.transport.close()  # never leave a half-open connection on the server
            raise
        return viewer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.changed.set()

    def data_received(self, chunk: bytes) -> None:
        buf = self.buf
        buf += chunk
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(bytes(buf[:200]).decode()))
                return
            del buf[: end + 4]
            self.upgraded.set_result(None)
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            op = buf[pos] & 0x0F
            ln = buf[pos + 1] & 0x7F
            hdr = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(buf[pos + 2 : pos + 4])
                hdr = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2 : pos + 10])
                hdr = 10
            if n - pos < hdr + ln:
                break
            payload = buf[pos + hdr : pos + hdr + ln]
            pos += hdr + ln
            if op == 2:
                if self.snapshot_next:
                    self.snapshot_next = False
                else:
                    self.data += payload
            elif op == 1:
                try:
                    ctl = json.loads(payload)
                except ValueError:  # counted, so a run can report a malformed control frame
                    self.bad_frames.append(bytes(buf[pos - hdr - ln : pos][:300]))
                    continue
                kind = ctl.get("type")
                if kind == "snapshot":
                    self.snapshot_next = True
                elif kind == "lagged":
                    self.lagged += int(ctl.get("dropped", 0))
            elif op == 9:
                self._send(0xA, bytes(payload))
            elif op == 8:
                self.closed = True
        del buf[:pos]
        self.arrivals.append((time.perf_counter(), len(self.data)))
        self.changed.set()

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None
        self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    async def wait(self, predicate, deadline: float) -> None:  # noqa: ANN001
        while not predicate(self) and not self.closed and time.monotonic() < deadline:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), max(0.05, deadline - time.monotonic()))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                self._send(0x8, b"\x03\xe8")
            self.transport.close()
