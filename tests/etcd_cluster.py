"""A real 3-node etcd cluster on loopback, for tests of leader changes and quorum loss.

docs/cluster.md recommends three etcd nodes; this starts them (Debian's `etcd` 3.4, each
with a temporary data dir and two free ports), finds the leader, moves leadership, kills
and restarts nodes by PID. Module-scoped: tests that kill nodes call `heal()` first.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cluster_helpers import Etcd, free_port, stop, wait_until

START_TIMEOUT = 20.0  # seconds for a node (or the whole cluster) to be healthy


@dataclass
class EtcdNode:
    name: str
    client_port: int
    peer_port: int
    data: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    paused: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def call(self, path: str, body: dict, timeout: float = 3.0) -> dict:
        req = urllib.request.Request(f"{self.url}/v3/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())

    def status(self) -> dict:
        """etcd's maintenance status: this node's `member_id` and the `leader` it knows."""
        return self.call("maintenance/status", {})

    def healthy(self) -> bool:
        """Up, and has a leader that answers a read (etcd's own `/health`)."""
        if not self.up:
            return False
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:  # noqa: S310
                return bool(json.loads(r.read()).get("health") == "true")
        except (OSError, ValueError):
            return False


class EtcdCluster:
    """Three etcd nodes that form one cluster; `client()` reads it like `Etcd`."""

    def __init__(self, root: Path) -> None:
        self.nodes = [EtcdNode(f"n{i}", free_port(), free_port(), root / f"n{i}")
                      for i in range(1, 4)]
        self._initial = ",".join(f"{n.name}=http://127.0.0.1:{n.peer_port}" for n in self.nodes)
        self._binary = shutil.which("etcd") or "etcd"

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self, node: EtcdNode) -> None:
        """Start (or restart, on its data dir) one node; does not wait for it."""
        node.data.mkdir(parents=True, exist_ok=True)
        with (node.data.parent / f"{node.name}.log").open("a") as log:
            node.proc = subprocess.Popen(
                [self._binary, "--name", node.name, "--data-dir", str(node.data),
                 "--listen-client-urls", node.url, "--advertise-client-urls", node.url,
                 "--listen-peer-urls", f"http://127.0.0.1:{node.peer_port}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{node.peer_port}",
                 "--initial-cluster", self._initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", f"solgate-test-{self.nodes[0].peer_port}"],
                stdout=log, stderr=subprocess.STDOUT)

    def kill(self, node: EtcdNode) -> None:
        """`kill -9`: no goodbye to the peers, as a power loss."""
        if node.proc is not None:
            stop(node.proc, signal.SIGKILL)

    def pause(self, node: EtcdNode) -> None:
        """SIGSTOP: the node keeps its sockets but answers nothing, as a machine that lost
        power (no reset) or a stalled disk looks to a client."""
        assert node.proc is not None
        node.proc.send_signal(signal.SIGSTOP)
        node.paused = True

    def resume(self, node: EtcdNode) -> None:
        if node.proc is not None and node.paused:
            node.proc.send_signal(signal.SIGCONT)
        node.paused = False

    def heal(self) -> None:
        """Every node running and the cluster healthy with one leader all agree on."""
        for node in self.nodes:
            self.resume(node)
            if not node.up:
                self.start(node)

        def agreed() -> bool:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    log = (node.data.parent / f"{node.name}.log").read_text()[-2000:]
                    raise AssertionError(f"etcd {node.name} exited: {log}")
            if not all(n.healthy() for n in self.nodes):
                return False
            return len({n.status().get("leader") for n in self.nodes}) == 1
        wait_until(agreed, START_TIMEOUT, "3 etcd nodes healthy with one leader", step=0.2)

    def leader(self) -> EtcdNode:
        """The node the running nodes agree leads (waits out an election in progress)."""
        def find() -> EtcdNode | None:
            ids: dict[str, EtcdNode] = {}
            leaders = set()
            for node in self.nodes:
                if node.up and not node.paused:
                    with contextlib.suppress(OSError, ValueError):
                        status = node.status()
                        ids[status["header"]["member_id"]] = node
                        leaders.add(status.get("leader", "0"))  # absent: no leader
            if len(leaders) == 1:
                return ids.get(leaders.pop())
            return None
        found = wait_until(find, START_TIMEOUT, "an etcd leader", step=0.1)
        assert isinstance(found, EtcdNode)
        return found

    def move_leader(self, to: EtcdNode) -> None:
        """etcd's graceful leadership transfer (`etcdctl move-leader`), asked of the leader."""
        target = to.status()["header"]["member_id"]
        self.leader().call("maintenance/transfer-leadership", {"targetID": target}, timeout=10)
        wait_until(lambda: self.leader() is to, 10, f"{to.name} to lead")

    def client(self) -> Etcd:
        """An `Etcd` reader on a running node."""
        node = next(n for n in self.nodes if n.up and not n.paused)
        assert node.proc is not None
        return Etcd(node.url, node.proc)

    def stop_all(self) -> None:
        for node in self.nodes:
            self.resume(node)
            if node.proc is not None:
                stop(node.proc)


@pytest.fixture(scope="module", name="etcd3")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (apt-get install etcd-server)")
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd3"))
    try:
        cluster.heal()
        yield cluster
    finally:
        cluster.stop_all()
