"""Two-key (K_g) logins and the session limit, over real UDP on loopback.

A one-BMC `SimFleet` runs in this process; solgate's `IpmiClient` logs in to it as an
operator's console would. What a user relies on: the right K_g gets a working session,
a missing or wrong K_g fails with an `AuthenticationError` that names K_g (and says to
configure it when the BMC announced one), and a full session table is reported as such,
not as a cipher suite problem.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sim_helpers import make_target, running_fleet

from solgate.errors import AuthenticationError, BmcError
from solgate.ipmi.codec import RakpStatus
from solgate.ipmi.transport import IpmiClient
from solgate.sim.bmc import SimBmcConfig
from solgate.sim.faults import FaultConfig

KG = b"two-key-kg-20-bytes!"  # 20 bytes, the most K_g may be
CONNECT_TIMEOUT = 10.0


def kg_config(index: int, name: str) -> SimBmcConfig:
    return SimBmcConfig(name=name, kg=KG)


async def connect(port: int, **target: object) -> IpmiClient:
    # One try per step: a refusal is an answer, so nothing here waits on retransmissions.
    return await asyncio.wait_for(
        IpmiClient.connect(make_target(port=port, retransmit_timeout=0.5, **target)),
        CONNECT_TIMEOUT,
    )


@pytest.mark.parametrize("suite", [3, 17])
async def test_right_kg_logs_in(suite):
    async with running_fleet(1, config_factory=kg_config) as fleet:
        bmc = fleet.bmcs[0]
        async with await connect(bmc.port, kg=KG, cipher_suites=(suite,)) as client:
            assert (await client.device_id()).ipmi_version == "2.0"
        assert bmc.core.stats.sessions_opened == 1
        assert not bmc.core.sessions


async def test_missing_kg_says_the_bmc_requires_one():
    async with running_fleet(1, config_factory=kg_config) as fleet:
        bmc = fleet.bmcs[0]
        with pytest.raises(AuthenticationError) as info:
            await connect(bmc.port)
        message = str(info.value)
        assert "requires a K_g" in message
        assert "configure it for this console" in message
        assert info.value.step == "RAKP4"
        assert info.value.code == RakpStatus.INVALID_INTEGRITY_CHECK_VALUE
        assert KG.decode() not in message


@pytest.mark.parametrize("wrong", [b"not-the-right-kg", KG[:-1] + b"?"])
async def test_wrong_kg_says_check_the_kg(wrong):
    async with running_fleet(1, config_factory=kg_config) as fleet:
        with pytest.raises(AuthenticationError) as info:
            await connect(fleet.bmcs[0].port, kg=wrong)
        message = str(info.value)
        assert "check the K_g" in message
        assert "requires a K_g" not in message  # one was configured: it is wrong, not missing
        assert wrong.decode() not in message
        assert KG.decode() not in message


async def test_kg_given_to_a_bmc_without_one_is_refused_too():
    """A K_g the BMC does not use changes the session key all the same."""
    async with running_fleet(1) as fleet:
        with pytest.raises(AuthenticationError, match="K_g"):
            await connect(fleet.bmcs[0].port, kg=KG)
        async with await connect(fleet.bmcs[0].port) as client:  # and without it, it works
            assert (await client.device_id()).ipmi_version == "2.0"


# ------------------------------------------------------------------------ session limit


@pytest.mark.parametrize("limit", [1, 3])
async def test_session_limit_refuses_one_more_until_one_closes(limit):
    faults = FaultConfig(max_sessions=limit)
    async with running_fleet(1, faults=faults) as fleet:
        bmc = fleet.bmcs[0]
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(await connect(bmc.port)) for _ in range(limit)
            ]
            assert len(bmc.core.sessions) == limit
            with pytest.raises(BmcError) as info:
                await connect(bmc.port, cipher_suites=(17, 3))
            message = str(info.value)
            assert info.value.step == "Open Session"
            assert info.value.code == RakpStatus.INSUFFICIENT_RESOURCES
            assert "INSUFFICIENT_RESOURCES" in message
            assert "session table may be full" in message, message
            assert len(bmc.core.sessions) == limit  # the refused login left nothing behind
            await clients.pop().close()
            assert len(bmc.core.sessions) == limit - 1
            async with await connect(bmc.port) as again:
                assert (await again.device_id()).ipmi_version == "2.0"
            for client in clients:  # the others were never disturbed
                assert (await client.device_id()).ipmi_version == "2.0"


async def test_session_limit_can_be_raised_at_runtime():
    faults = FaultConfig(max_sessions=1)
    async with running_fleet(1, faults=faults) as fleet:
        bmc = fleet.bmcs[0]
        async with await connect(bmc.port):
            with pytest.raises(BmcError, match="INSUFFICIENT_RESOURCES"):
                await connect(bmc.port)
            faults.max_sessions = None  # back to the BMC's own limit (32)
            async with await connect(bmc.port) as second:
                assert (await second.device_id()).ipmi_version == "2.0"
