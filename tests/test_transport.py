"""`IpmiClient` over real loopback UDP against the scripted BMC: futures, timers, close."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from solgate.errors import (
    AuthenticationError,
    BmcError,
    SessionClosedError,
    SolgateTimeoutError,
)
from solgate.ipmi.codec import Command, NetFn
from solgate.ipmi.target import BmcTarget
from solgate.ipmi.transport import DeadlineTimer, IpmiClient
from tests.sim_helpers import DEVICE_ID_RESPONSE, ScriptedBmc


class UdpBmc(asyncio.DatagramProtocol):
    """ScriptedBmc on a UDP socket, with knobs to drop datagrams or stay silent."""

    def __init__(self, bmc: ScriptedBmc) -> None:
        self.bmc = bmc
        self.transport: asyncio.DatagramTransport | None = None
        self.drop_next_requests = 0
        self.silent = False
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        if self.silent:
            return
        if self.bmc.protector is not None and self.drop_next_requests:
            self.drop_next_requests -= 1
            return
        assert self.transport is not None
        for reply in self.bmc.handle(data):
            self.transport.sendto(reply, addr)


async def serve(bmc: ScriptedBmc | None = None, host: str = "127.0.0.1"
                ) -> tuple[UdpBmc, asyncio.DatagramTransport, int]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: UdpBmc(bmc or ScriptedBmc()), local_addr=(host, 0))
    return proto, transport, transport.get_extra_info("sockname")[1]


def target(port: int, **kw: object) -> BmcTarget:
    base: dict[str, object] = dict(host="127.0.0.1", port=port, username=b"admin",
                                   password=b"password", retransmit_timeout=0.05, max_tries=3)
    base.update(kw)
    return BmcTarget(**base)  # type: ignore[arg-type]


async def test_connect_request_sol_and_close():
    bmc, server, port = await serve()
    try:
        async with await IpmiClient.connect(target(port)) as client:
            assert client.established
            assert (await client.device_id()).firmware == "9.08"
            client.send_sol(b"\x01\x00\x00\x00hi")
            assert server is not None
            for _ in range(50):
                if bmc.bmc.received_sol:
                    break
                await asyncio.sleep(0.01)
            assert bmc.bmc.received_sol == [b"\x01\x00\x00\x00hi"]
        assert client.terminated.done()
        assert bmc.bmc.received[-1].cmd == Command.CLOSE_SESSION
    finally:
        server.close()


async def test_lost_request_is_retransmitted_on_the_loop_timer():
    bmc, server, port = await serve()
    try:
        async with await IpmiClient.connect(target(port)) as client:
            bmc.drop_next_requests = 2
            msg = await asyncio.wait_for(client.request(NetFn.APP, Command.GET_DEVICE_ID), 2)
            assert msg.data == DEVICE_ID_RESPONSE
            assert bmc.drop_next_requests == 0
    finally:
        server.close()


class TimerOwner:
    """What a console worker does with its one timer, for the session alone: on each wake
    the client's timeouts run if due. `running = False` stands for an owner that never
    gets to run them."""

    def __init__(self) -> None:
        self.timer = DeadlineTimer(self.wake)
        self.client: IpmiClient | None = None
        self.running = True
        self.wakes = 0

    def wake(self, now: float) -> None:
        self.wakes += 1
        client = self.client
        if client is None or not self.running:
            return
        at = client.next_deadline()
        if at is not None and at <= now:
            client.handle_timeout(now)
        self.timer.arm(client.next_deadline())


async def test_a_client_on_its_owners_timer_retransmits_when_the_owner_wakes():
    """A console's session has no timer of its own: its handshake and retransmits run
    on the worker's, and only there."""
    bmc, server, port = await serve()
    owner = TimerOwner()
    try:
        client = owner.client = IpmiClient(target(port), timer=owner.timer)
        await asyncio.wait_for(client.establish(), 2)
        async with client:
            bmc.drop_next_requests = 2
            msg = await asyncio.wait_for(client.request(NetFn.APP, Command.GET_DEVICE_ID), 2)
            assert msg.data == DEVICE_ID_RESPONSE
            assert owner.wakes >= 2
            owner.running = False  # nobody runs the session's timeouts now
            bmc.drop_next_requests = 1
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.device_id(), 0.3)  # not even one resend
            assert bmc.drop_next_requests == 0
    finally:
        server.close()


async def test_arm_moves_the_timer_only_earlier_set_puts_it_exactly():
    loop = asyncio.get_running_loop()
    woken: list[float] = []
    timer = DeadlineTimer(woken.append)
    start = loop.time()
    timer.arm(start + 0.2)
    timer.arm(start + 0.5)  # later: the armed time stays
    assert timer.armed_at == start + 0.2
    timer.arm(None)  # no deadline: nothing changes
    timer.arm(start + 0.05)  # earlier: moved
    assert timer.armed_at == start + 0.05
    await asyncio.sleep(0.3)
    assert len(woken) == 1  # one wake for the three arms
    assert woken[0] >= start + 0.05  # never before its time
    assert timer.armed_at is None
    timer.arm(loop.time() + 0.05)
    timer.cancel()
    await asyncio.sleep(0.1)
    assert len(woken) == 1
    timer.arm(loop.time() + 0.05)
    timer.set(loop.time() + 10)  # exactly there: later too
    timer.set(None)  # nothing due at all
    await asyncio.sleep(0.1)
    assert len(woken) == 1
    assert timer.armed_at is None


async def test_unanswered_request_times_out_but_session_lives():
    bmc, server, port = await serve()
    try:
        async with await IpmiClient.connect(target(port)) as client:
            bmc.drop_next_requests = 3
            with pytest.raises(SolgateTimeoutError, match="Get Device ID after 3 tries"):
                await asyncio.wait_for(client.device_id(), 2)
            assert (await client.device_id()).ipmi_version == "2.0"
    finally:
        server.close()


async def test_silent_bmc_gives_a_timeout_error():
    bmc, server, port = await serve()
    bmc.silent = True
    try:
        with pytest.raises(SolgateTimeoutError,
                           match=r"no answer from BMC 127\.0\.0\.1:\d+ after 3"):
            await asyncio.wait_for(IpmiClient.connect(target(port)), 2)
        assert bmc.received == 3
    finally:
        server.close()


async def test_wrong_password_fails_connect():
    _, server, port = await serve(ScriptedBmc(rakp2_password=b"other"))
    try:
        with pytest.raises(AuthenticationError, match="rejected the password"):
            await IpmiClient.connect(target(port))
    finally:
        server.close()


async def test_pending_request_fails_when_the_session_closes():
    bmc, server, port = await serve()
    try:
        client = await IpmiClient.connect(target(port, retransmit_timeout=5.0))
        bmc.silent = True
        pending = asyncio.ensure_future(client.device_id())
        await asyncio.sleep(0.01)
        await client.close()
        with pytest.raises(SessionClosedError):
            await pending
        with pytest.raises(SessionClosedError):
            client.send_sol(b"\x01\x00\x00\x00x")
    finally:
        server.close()


async def test_unresolvable_host():
    with pytest.raises(BmcError, match="cannot resolve"):
        await IpmiClient.connect(target(623, host="no-such-host.invalid"))


async def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        _, server, port = await serve(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        client = await IpmiClient.connect(target(port, host="::1"))
        assert client.target.label == f"BMC [::1]:{port}"
        await client.close()
    finally:
        server.close()


def test_ip_literals_skip_the_resolver_and_match_datagram_sources():
    """Sources are routed by the kernel's spelling of the address, so literals are normalized
    to it; names (and scoped IPv6) still go through getaddrinfo."""
    from solgate.ipmi.udp_pool import numeric_address

    assert numeric_address("127.0.0.1", 623) == (socket.AF_INET, ("127.0.0.1", 623))
    assert numeric_address("0:0::1", 623) == (socket.AF_INET6, ("::1", 623, 0, 0))
    assert numeric_address("bmc01.example", 623) is None
    assert numeric_address("fe80::1%eth0", 623) is None


async def test_a_shared_socket_takes_every_waiting_datagram_in_one_wakeup():
    """Datagrams for many sessions that arrived together reach all of them at once, not
    one per loop iteration (a failover's handshakes share few sockets)."""
    from solgate.ipmi.udp_pool import SocketPool

    class Collect:
        def __init__(self) -> None:
            self.got: list[bytes] = []

        def _datagram_received(self, data: bytes) -> None:
            self.got.append(data)

        def _connection_lost(self) -> None:
            pass

    loop = asyncio.get_running_loop()
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(5)]
    try:
        for s in senders:
            s.bind(("127.0.0.1", 0))
        clients = [Collect() for _ in senders]
        ports = [await SocketPool.of(loop).attach(socket.AF_INET, s.getsockname(), c)
                 for s, c in zip(senders, clients, strict=True)]
        shared = ports[0]._shared
        assert all(p._shared is shared for p in ports)
        assert shared.sock is not None
        target = shared.sock.getsockname()
        for i, s in enumerate(senders):
            s.sendto(b"hello %d" % i, target)
        time.sleep(0.05)  # all five wait in the socket; the loop has not looked yet
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the loop has run one read callback of the socket
        assert [c.got for c in clients] == [[b"hello %d" % i] for i in range(5)]
        for p in ports:
            p.close()
    finally:
        for s in senders:
            s.close()
