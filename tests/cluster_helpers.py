"""Helpers for cluster tests: a real etcd, `solgate sim`, `solgate serve` members, a TCP proxy.

Everything runs on loopback with free ports; processes are stopped by PID. etcd is
Debian's `etcd` (3.4) with a temporary data dir; tests skip when it is not installed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIM_PASSWORD = "password"  # noqa: S105 - the simulator's, loopback only
MEMBER_SECRET = "member-secret-for-tests-" + "0123456789abcdef"  # noqa: S105 - loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["SOLGATE_SIM_PASSWORD"] = SIM_PASSWORD
    e["SOLGATE_CLUSTER_SECRET"] = MEMBER_SECRET
    return e


def solgate(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from solgate.cli import main; sys.exit(main())",
            *args]


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def wait_until(cond: Callable[[], object], timeout: float, what: str,
               step: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(step)


def _wait_text(path: Path, pattern: str, proc: subprocess.Popen, timeout: float) -> str:
    def seen() -> str | None:
        text = path.read_text(errors="replace") if path.exists() else ""
        if proc.poll() is not None:
            raise AssertionError(f"{path.name}: exited {proc.returncode}: {text[-2000:]}")
        m = re.search(pattern, text)
        return m.group(0) if m else None
    return str(wait_until(seen, timeout, f"{pattern!r} in {path}"))


# --------------------------------------------------------------------------- etcd


@dataclass
class Etcd:
    url: str
    proc: subprocess.Popen

    def call(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(f"{self.url}/v3/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())

    def prefix(self, prefix: str) -> dict[str, tuple[dict, int, int]]:
        """Keys under `prefix`: value JSON, create_revision, lease."""
        end = bytearray(prefix.encode())
        end[-1] += 1
        reply = self.call("kv/range", {"key": base64.b64encode(prefix.encode()).decode(),
                                       "range_end": base64.b64encode(bytes(end)).decode()})
        out = {}
        for kv in reply.get("kvs", []):
            key = base64.b64decode(kv["key"]).decode()
            out[key[len(prefix):]] = (json.loads(base64.b64decode(kv.get("value", ""))),
                                      int(kv["create_revision"]), int(kv.get("lease", 0)))
        return out

    def owners(self, prefix: str) -> dict[str, str]:
        return {k.split("/", 1)[1]: v[0]["member"] for k, v in self.prefix(prefix).items()
                if k.startswith("owners/")}


@pytest.fixture(scope="module", name="etcd")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    binary = shutil.which("etcd")
    if binary is None:
        pytest.skip("etcd is not installed (apt-get install etcd-server)")
    data = tmp_path_factory.mktemp("etcd")
    client, peer = free_port(), free_port()
    with (data / "etcd.log").open("w") as log:
        proc = subprocess.Popen(
            [binary, "--data-dir", str(data / "data"), "--name", "default",
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{client}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"etcd exited: {(data / 'etcd.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:  # noqa: S310
                return bool(json.loads(r.read()).get("health") == "true")
        except OSError:
            return False
    try:
        wait_until(healthy, 15, "etcd to be healthy")
        yield Etcd(url, proc)
    finally:
        stop(proc)


# --------------------------------------------------------------------------- the fleet


@dataclass
class Sim:
    proc: subprocess.Popen
    consoles: list[tuple[str, int]]


@contextlib.contextmanager
def sim_fleet(workdir: Path, count: int) -> Iterator[Sim]:
    out, err = workdir / "sim.toml", workdir / "sim.err"
    with out.open("w") as stdout, err.open("w") as stderr:  # the child keeps its copies
        proc = subprocess.Popen(solgate("sim", "--count", str(count), "--base-port", "0",
                                        "--password-env", "SOLGATE_SIM_PASSWORD",
                                        "--boot-speed", "1000"),
                                stdout=stdout, stderr=stderr, env=env(), cwd=workdir)
    try:
        _wait_text(err, r"started \d+ BMC", proc, 30)
        names = re.findall(r"\[consoles\.([^\]]+)\]\s*\nhost = \"[^\"]+\"\s*\nport = (\d+)",
                           out.read_text())
        yield Sim(proc, [(n, int(p)) for n, p in names])
    finally:
        stop(proc)


@dataclass
class MemberProc:
    name: str
    proc: subprocess.Popen
    url: str
    workdir: Path
    stderr: Path = field(repr=False)

    def api(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=5) as r:  # noqa: S310
            return json.loads(r.read())

    def active(self) -> set[str]:
        return {n for n, c in self.consoles().items() if c["state"] == "active"}

    def consoles(self) -> dict[str, dict]:
        """The consoles this member runs (`?local=1`: not the fleet view)."""
        return {c["name"]: c for c in self.api("api/consoles?local=1")["consoles"]}


def member_config(workdir: Path, name: str, etcd_url: str | list[str],
                  consoles: list[tuple[str, int]], *, prefix: str, lease_ttl: str = "3s",
                  extra: str = "") -> Path:
    urls = [etcd_url] if isinstance(etcd_url, str) else etcd_url
    lines = [f'data_dir = "{workdir / "data"}"', "", "[server]", 'listen = "127.0.0.1:0"',
             'auth = "none"', "", "[cluster]", f"etcd = {json.dumps(urls)}", f'name = "{name}"',
             f'lease_ttl = "{lease_ttl}"', f'prefix = "{prefix}"',
             'member_secret_env = "SOLGATE_CLUSTER_SECRET"', "", "[defaults]",
             'username = "admin"', 'password_env = "SOLGATE_SIM_PASSWORD"',
             "cipher_suites = [17, 3]", 'keepalive_interval = "2s"', 'reconnect_max = "2s"', ""]
    for console, port in consoles:
        lines += [f"[consoles.{console}]", 'host = "127.0.0.1"', f"port = {port}", ""]
    path = workdir / "solgate.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def start_member(tmp: Path, name: str, etcd_url: str, consoles: list[tuple[str, int]],
                 *, prefix: str, extra: str = "") -> subprocess.Popen:
    workdir = tmp / name
    workdir.mkdir(exist_ok=True)
    config = member_config(workdir, name, etcd_url, consoles, prefix=prefix, extra=extra)
    with (workdir / "stderr").open("w") as stderr:
        return subprocess.Popen(solgate("-v", "serve", "-c", str(config), "--event-loop",
                                        "asyncio"),
                                stdout=subprocess.DEVNULL, stderr=stderr, env=env(), cwd=workdir)


def member_ready(tmp: Path, name: str, proc: subprocess.Popen) -> MemberProc:
    stderr = tmp / name / "stderr"
    line = _wait_text(stderr, r"web console on (http://[^ ;]+)", proc, 30)
    url = line.split("web console on ", 1)[1]
    return MemberProc(name, proc, url, tmp / name, stderr)


# --------------------------------------------------------------------------- TCP proxy


class TcpProxy:
    """A loopback TCP forwarder in a thread; `cut()` closes the listener and every
    connection (a member cut off from etcd), `restore()` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._up = False

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._up = True
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        self._up = False
        with self._lock:
            conns, self._conns = self._conns, []
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._up:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                if not self._up:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
