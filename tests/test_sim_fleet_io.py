"""The simulated fleet's socket shell: one epoll set, reads before timers, the send backlog.

The BMC cores are covered by test_sim_bmc.py; these tests swap a BMC's core for a stub
that records what the fleet hands it and when, so what is checked is the shell alone.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from typing import Any

import pytest
from sim_helpers import make_target

from solgate.errors import SolgateError
from solgate.ipmi.transport import IpmiClient
from solgate.sim.bmc import SimBmcConfig
from solgate.sim.fleet import SimFleet, _bind_address


class StubLink:
    """Stands in for a BMC's `FaultyBmc`: records inputs, has one deadline, sends `out`."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.deadline: float | None = None
        self.out: list[tuple[bytes, Any]] = []

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        self.seen.append(("datagram", data))
        self.deadline = None  # an ACK: the retransmit is off
        if data.startswith(b"echo"):
            self.out += [(data + b"-%d" % i, addr) for i in range(3)]

    def handle_timeout(self, now: float) -> None:
        self.seen.append(("timeout", b""))
        self.deadline = None

    def datagrams_to_send(self) -> list[tuple[bytes, Any]]:
        out, self.out = self.out, []
        return out

    def next_deadline(self) -> float | None:
        return self.deadline


def client_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


async def test_an_ack_already_in_the_socket_is_read_before_the_retransmit_fires() -> None:
    """Both the console's ACK and the BMC's retransmit deadline are due in one loop turn
    (the simulator is late): the ACK that reached the socket first wins, as on a BMC with
    a CPU of its own; no retransmission."""
    loop = asyncio.get_running_loop()
    async with SimFleet(1, base_port=0, power_on=False) as fleet:
        handle = fleet.bmcs[0]
        stub = StubLink()
        handle.link = stub  # type: ignore[assignment]
        with client_socket() as console:
            due = loop.time() + 0.05
            stub.deadline = due
            fleet.poke(handle)
            # Runs in the same turn as the fleet's timer, just before it: the ACK lands
            # in the BMC's socket after the loop last looked at its sockets.
            loop.call_at(due - 0.001, console.sendto, b"ack", ("127.0.0.1", handle.port))
            time.sleep(0.1)  # the loop is late: both callbacks are due at once
            await asyncio.sleep(0.05)
        assert stub.seen == [("datagram", b"ack")]
        assert fleet.errors == 0


async def test_datagrams_the_kernel_refuses_wait_and_leave_in_order() -> None:
    """A full send buffer (EAGAIN) does not lose or reorder what the BMC sends."""

    class RefusingOnce:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock
            self.refused = 0

        def sendto(self, data: bytes, addr: Any) -> int:
            if not self.refused:
                self.refused += 1
                raise BlockingIOError
            return self.sock.sendto(data, addr)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.sock, name)

    async with SimFleet(1, base_port=0, power_on=False) as fleet:
        handle = fleet.bmcs[0]
        stub = StubLink()
        handle.link = stub  # type: ignore[assignment]
        assert handle.sock is not None
        wrapper = RefusingOnce(handle.sock)
        handle.sock = wrapper  # type: ignore[assignment]
        with client_socket() as console:
            console.sendto(b"echo", ("127.0.0.1", handle.port))
            got = []
            for _ in range(100):
                await asyncio.sleep(0.01)
                console.setblocking(False)
                try:
                    while True:
                        got.append(console.recv(100))
                except BlockingIOError:
                    pass
                if len(got) == 3:
                    break
        assert wrapper.refused == 1
        assert got == [b"echo-0", b"echo-1", b"echo-2"]
        assert handle.backlog is None  # drained, the writer removed
        handle.sock = wrapper.sock


@pytest.mark.parametrize("use_epoll", [True, False])
async def test_a_console_logs_in_and_activates_sol_with_either_reader(use_epoll: bool) -> None:
    fleet = SimFleet(3, base_port=0)
    fleet.use_epoll = use_epoll
    async with fleet:
        bmc = fleet.bmcs[1]
        client = await asyncio.wait_for(
            IpmiClient.connect(make_target(port=bmc.port, cipher_suites=(17,))), 10)
        async with client:
            assert (await client.device_id()).ipmi_version == "2.0"
            await client.activate_sol()
            assert bmc.core.sol.owner == client.session.bmc_session_id
        assert not bmc.core.sessions
        assert fleet.errors == 0


def test_sol_port_counts_retransmits_over_every_session() -> None:
    """`SolPort.retransmits` (in `solgate sim --stats`) survives the end of a session."""
    from solgate.sim.bmc_sol import SolPort

    class Host:
        baud = 115200

        def __init__(self) -> None:
            self.data = b""

        def next_deadline(self) -> float | None:
            return 0.0 if self.data else None

        def read(self, now: float, max_bytes: int = 4096) -> bytes:
            out, self.data = self.data[:max_bytes], self.data[max_bytes:]
            return out

    host = Host()
    port = SolPort(SimBmcConfig(sol_retry_count=2, sol_retry_interval=0.1), host)  # type: ignore[arg-type]
    for session in (1, 2):
        port.activate(session, 0.0)  # throws away what the host printed before
        host.data = b"0123456789"
        now = 0.0
        for _ in range(20):  # the console never ACKs
            port.pump(now)
            deadline = port.next_deadline()
            if port.stalls == session or deadline is None:
                break
            now = deadline
            port.handle_timeout(now)
        port.deactivate()
        assert port.retransmits == 2 * session


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_bind_addresses_keep_their_ipv6_scope() -> None:
    """`solgate sim --bind fe80::11%v1` failed with EINVAL: the scope ID was dropped and a
    link-local address cannot be bound without one. The whole sockaddr is kept now.
    (Tests cannot make interfaces; "lo" is a valid scope for the resolution.)"""
    lo = socket.if_nametoindex("lo")
    assert _bind_address("fe80::11%lo") == (socket.AF_INET6, ("fe80::11", 0, 0, lo))
    assert _bind_address("::1") == (socket.AF_INET6, ("::1", 0, 0, 0))
    assert _bind_address("127.0.0.1") == (socket.AF_INET, ("127.0.0.1", 0))


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_a_fleet_binds_ipv6_and_hands_the_scope_to_the_kernel() -> None:
    """On ::1 a fleet listens and answers; on fe80::1%lo the kernel gets the scope: with
    no link-local address on loopback it says EADDRNOTAVAIL, not the EINVAL of a
    link-local address given without its interface."""
    async with SimFleet(2, base_port=0, host="::1") as fleet:
        assert [h.sock.getsockname()[0] for h in fleet.bmcs] == ["::1", "::1"]
        client = await asyncio.wait_for(
            IpmiClient.connect(make_target(fleet.ports[1], host="::1")), 10)
        async with client:
            assert (await client.device_id()).ipmi_version == "2.0"
    refused: SolgateError | None = None
    try:
        async with SimFleet(1, base_port=0, host="fe80::1%lo"):
            pass  # a machine whose loopback has fe80::1: bound with its scope
    except SolgateError as failed:
        refused = failed
    if refused is not None:
        assert isinstance(refused.__cause__, OSError)
        assert refused.__cause__.errno == errno.EADDRNOTAVAIL, refused
        assert "cannot listen on [fe80::1%lo]:0:" in str(refused)  # the port set apart
