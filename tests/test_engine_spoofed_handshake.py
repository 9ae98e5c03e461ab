"""Forged handshake errors over real UDP (issue 11 finding 3).

A `SpoofingProxy` sits between solgate and a simulated BMC on loopback and forwards
every datagram both ways. When it sees RAKP 1 go to the BMC it first sends solgate a
forged RAKP 2 with the same message tag and status 0x0d ("unauthorized name"), from the
BMC's address, so it always arrives before the BMC's genuine answer: what an attacker
who guessed the 8-bit tag would send. Before the fix one such datagram put the console
in `auth-failed` for 300 s.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from solgate.ipmi import codec
from solgate.ipmi.codec import PayloadType, RakpStatus
from solgate.sim.fleet import SimFleet
from tests.engine_helpers import engine_config, running_manager, sim_factory, wait_active

pytestmark = pytest.mark.timeout(60)


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, proxy: SpoofingProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.proxy.to_client(data)


class SpoofingProxy(asyncio.DatagramProtocol):
    """Forwards datagrams between one client and a BMC, forging RAKP 2 errors.

    `with_sidm` copies the console's session ID from its Open Session request into the
    forgery (an attacker on the path); without it the forgery carries tag and status and
    a zero SIDm (an attacker off the path, who can only guess the tag). `forgeries` is
    how many RAKP 1 messages get a forged answer (None: every one).
    """

    def __init__(self, bmc_port: int, *, with_sidm: bool, forgeries: int | None) -> None:
        self.bmc_port = bmc_port
        self.with_sidm = with_sidm
        self.remaining = forgeries
        self.sent = 0
        self.client: Any = None
        self.sidm = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.upstream: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0))
        self.upstream, _ = await loop.create_datagram_endpoint(
            lambda: _Upstream(self), remote_addr=("127.0.0.1", self.bmc_port))
        return int(self.transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        for transport in (self.transport, self.upstream):
            if transport is not None:
                transport.close()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client = addr
        self._maybe_forge(data)
        assert self.upstream is not None
        self.upstream.sendto(data)

    def to_client(self, data: bytes) -> None:
        if self.transport is not None and self.client is not None:
            self.transport.sendto(data, self.client)

    def _maybe_forge(self, data: bytes) -> None:
        if codec.is_ipmi15(data) or data[4] != codec.AUTH_TYPE_RMCPPLUS or data[5] & 0xC0:
            return  # IPMI 1.5, or inside the session (authenticated / encrypted)
        header, payload = codec.decode_unauthenticated(data)
        if header.payload_type == PayloadType.OPEN_SESSION_REQUEST:
            self.sidm = codec.decode_open_session_request(payload).console_session_id
        if header.payload_type != PayloadType.RAKP_1 or self.remaining == 0:
            return
        if self.remaining is not None:
            self.remaining -= 1
        tag = payload[0]
        forged = codec.Rakp2(tag, RakpStatus.UNAUTHORIZED_NAME,
                             self.sidm if self.with_sidm else 0)
        self.to_client(codec.encode_unauthenticated(PayloadType.RAKP_2,
                                                    codec.encode_rakp2(forged)))
        self.sent += 1


async def _console_through(tmp_path: Path, proxy: SpoofingProxy, bmc_port: int,
                           timeout: float) -> list[str]:
    """Run one console through `proxy`; return the states it went through to active."""
    port = await proxy.start()
    try:
        # solport: the BMC names its own port in Activate Payload, not the proxy's.
        config = engine_config(tmp_path, {"node": port}, reconnect_max="1s",
                               workarounds=["solport"])
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            states: list[str] = []

            async def watch() -> None:  # auth-failed would last minutes: a poll sees it
                while True:
                    if not states or states[-1] != worker.state:
                        states.append(str(worker.state))
                    await asyncio.sleep(0.005)

            watcher = asyncio.get_running_loop().create_task(watch())
            try:
                await wait_active(worker, timeout=timeout)
            finally:
                watcher.cancel()
            return states
    finally:
        proxy.close()


async def test_a_forged_rakp2_error_with_a_guessed_tag_does_not_stop_the_console(
        tmp_path: Path) -> None:
    """Every RAKP 1 gets a forged "unauthorized name" first: the console is active within
    seconds all the same, and never shows `auth-failed`."""
    async with SimFleet(1, base_port=0, config_factory=sim_factory()) as fleet:
        bmc = fleet.bmcs[0]
        proxy = SpoofingProxy(bmc.port, with_sidm=False, forgeries=None)
        states = await _console_through(tmp_path, proxy, bmc.port, timeout=5)
        assert proxy.sent >= 1
        assert "auth-failed" not in states
        assert bmc.core.stats.sessions_opened == 1  # the first handshake went through


async def test_one_forged_rakp2_error_even_with_our_sidm_only_costs_a_short_backoff(
        tmp_path: Path) -> None:
    """A forgery that copies the console's session ID (seen on the path) ends that one
    handshake; as a lone authentication failure it gets the normal short backoff, not
    `auth-failed` and minutes, and the next attempt brings the console up."""
    async with SimFleet(1, base_port=0, config_factory=sim_factory()) as fleet:
        bmc = fleet.bmcs[0]
        proxy = SpoofingProxy(bmc.port, with_sidm=True, forgeries=1)
        states = await _console_through(tmp_path, proxy, bmc.port, timeout=6)
        assert proxy.sent == 1
        assert "auth-failed" not in states
        assert "backoff" in states
