"""The RMCP+ client and the CLI against a real, independent BMC: OpenIPMI's ipmi_sim.

Each test gets a fresh ipmi_sim (fresh state directory, free UDP port on 127.0.0.1). It
is never sent Get Channel Payload Support (0x4E): that crashes it.
"""

from __future__ import annotations

import asyncio

import pytest

from solgate import cli
from solgate.errors import (
    AuthenticationError,
    CipherSuiteError,
    PayloadActiveElsewhere,
    SessionClosedError,
)
from solgate.ipmi.codec import NetFn, Privilege
from solgate.ipmi.sol_codec import SolPacket, decode_sol, encode_sol
from solgate.ipmi.transport import IpmiClient
from tests.ipmi_sim import IpmiSim, ipmi_sim_fixture  # noqa: F401 - provides `ipmi_sim`

pytestmark = pytest.mark.interop


class SolPayloads(list[bytes]):
    """A `SolReceiver` that keeps every SOL payload."""

    def sol_received(self, payload: bytes) -> None:
        self.append(payload)


async def connect(sim: IpmiSim, sol: SolPayloads | None = None,
                  **overrides: object) -> IpmiClient:
    return await asyncio.wait_for(IpmiClient.connect(sim.target(**overrides), sol=sol), 10)


# --------------------------------------------------------------------------- login


@pytest.mark.parametrize("suite", [1, 2, 3])
async def test_login_and_device_id(ipmi_sim, suite):
    async with await connect(ipmi_sim, cipher_suites=(suite,), allow_insecure=suite == 1) as c:
        assert c.session.suite is not None
        assert c.session.suite.id == suite
        assert c.session.privilege is Privilege.ADMINISTRATOR
        dev = await c.device_id()
        assert (dev.firmware, dev.ipmi_version, dev.manufacturer_id) == ("9.08", "2.0", 0x1291)
        assert sum(c.dropped.values()) == 0


async def test_wrong_password_is_a_clear_error(ipmi_sim):
    with pytest.raises(AuthenticationError) as info:
        await connect(ipmi_sim, password=b"Sekr1t-xyz")
    assert str(info.value) == (
        f"BMC sim (127.0.0.1:{ipmi_sim.port}) rejected the password for user 'admin' "
        "(RAKP2 auth code does not match: wrong password, or the BMC failed to prove it "
        "knows it): check the password for this console")
    assert "Sekr1t" not in str(info.value)


async def test_unknown_user(ipmi_sim):
    with pytest.raises(AuthenticationError, match="does not know user 'nobody'"):
        await connect(ipmi_sim, username=b"nobody")


async def test_cs17_falls_back_to_cs3(ipmi_sim):
    async with await connect(ipmi_sim, cipher_suites=(17, 3)) as c:
        assert c.session.suite is not None
        assert c.session.suite.id == 3


async def test_cs17_alone_is_a_clear_error(ipmi_sim):
    with pytest.raises(CipherSuiteError, match=r"accepted none of cipher suites 17 .*0x04"):
        await connect(ipmi_sim, cipher_suites=(17,))


async def test_operator_user_gets_operator_privilege(ipmi_sim):
    async with await connect(ipmi_sim, username=b"operator", password=b"operator",
                             privilege=Privilege.OPERATOR) as c:
        assert c.session.privilege is Privilege.OPERATOR
        assert (await c.chassis_status()).power_on


# --------------------------------------------------------------------------- chassis


async def test_power_status_and_cycle(ipmi_sim):
    async with await connect(ipmi_sim) as c:
        assert (await c.chassis_status()).power_on
        ipmi_sim.set_power(False)
        assert not (await c.chassis_status()).power_on
        ipmi_sim.set_power(True)
        await c.chassis_control("cycle")
        assert any(call.startswith("0x20 set power") for call in ipmi_sim.power_calls())


# --------------------------------------------------------------------------- SOL payload


async def test_activate_steal_and_deactivate(ipmi_sim):
    first = await connect(ipmi_sim)
    second = await connect(ipmi_sim)
    try:
        act = await first.activate_sol()
        assert (act.inbound_size, act.port, act.vlan) == (32, ipmi_sim.port, None)
        assert act.max_characters == 28
        assert (await second.payload_activation_status()).is_active()
        owner = await second.payload_instance_info()
        assert owner.owner_session_id == first.session.bmc_session_id
        with pytest.raises(PayloadActiveElsewhere, match="already active in another session"):
            await second.activate_sol()
        assert await second.deactivate_sol() is True  # forced, from the other session
        await second.activate_sol()
        assert await second.deactivate_sol() is True
        assert await second.deactivate_sol() is False  # already inactive: not an error
    finally:
        await first.close()
        await second.close()


async def test_sol_payloads_flow_both_ways(ipmi_sim):
    received = SolPayloads()
    async with await connect(ipmi_sim, received) as c:
        await c.activate_sol()
        await ipmi_sim.serial.write(b"login: ")
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.02)
        packet = decode_sol(received[0])
        assert packet.data == b"login: "
        c.send_sol(encode_sol(SolPacket(seq=0, ack_seq=packet.seq, accepted=len(packet.data))))
        c.send_sol(encode_sol(SolPacket(seq=1, data=b"root\r")))
        await ipmi_sim.serial.read_until(b"root\r")
        await c.deactivate_sol()


async def test_closing_the_session_frees_sol(ipmi_sim):
    first = await connect(ipmi_sim)
    await first.activate_sol()
    await first.close()
    assert first.terminated.done()
    with pytest.raises(SessionClosedError):
        await first.device_id()
    async with await connect(ipmi_sim) as second:
        await second.activate_sol()
        await second.deactivate_sol()


async def test_raw_request_and_unsupported_command(ipmi_sim):
    async with await connect(ipmi_sim) as c:
        msg = await c.request(0x2C, 0x00, b"\x00")  # PICMG probe, as ipmitool sends
        assert msg.completion_code == 0xC1
        assert (await c.request(NetFn.APP, 0x01)).completion_code == 0


# --------------------------------------------------------------------------- CLI


def _adhoc(sim: IpmiSim) -> list[str]:
    return ["--host", sim.host, "--port", str(sim.port), "--user", "admin",
            "--password-env", "SOLGATE_TEST_BMC_PASSWORD", "--cipher-suite", "3"]


async def run_cli(argv: list[str]) -> int:
    return await asyncio.wait_for(asyncio.to_thread(cli.main, argv), 20)


async def test_cli_ad_hoc(ipmi_sim, capsys, monkeypatch):
    monkeypatch.setenv("SOLGATE_TEST_BMC_PASSWORD", "password")
    assert await run_cli(["power", "status", *_adhoc(ipmi_sim)]) == 0
    assert capsys.readouterr().out == f"BMC {ipmi_sim.host}:{ipmi_sim.port}: chassis power is on\n"
    assert await run_cli(["deactivate", *_adhoc(ipmi_sim)]) == 0
    assert capsys.readouterr().out.endswith(": SOL was already inactive\n")


async def test_cli_wrong_password_is_one_line(ipmi_sim, capsys, monkeypatch):
    monkeypatch.setenv("SOLGATE_TEST_BMC_PASSWORD", "wrong")
    assert await run_cli(["power", "status", *_adhoc(ipmi_sim)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("solgate: BMC ")
    assert "rejected the password for user 'admin'" in err


async def test_cli_password_is_never_an_argument(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["power", "status", "--host", "127.0.0.1", "--password", "Sekr1t"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "passwords are never taken on the command line" in err
    assert "Sekr1t" not in err


async def test_cli_with_config(ipmi_sim, capsys, monkeypatch, tmp_path):
    pytest.importorskip("solgate.config")
    monkeypatch.setenv("SOLGATE_TEST_BMC_PASSWORD", "password")
    config = tmp_path / "solgate.toml"
    config.write_text(f"""
data_dir = "data"

[consoles.web01]
host = "{ipmi_sim.host}"
port = {ipmi_sim.port}
username = "admin"
password_env = "SOLGATE_TEST_BMC_PASSWORD"
cipher_suites = [17, 3]
""")
    first = await connect(ipmi_sim)
    await first.activate_sol()
    try:
        assert await run_cli(["info", "web01", "-c", str(config)]) == 0
        out = capsys.readouterr().out
        assert f"web01 ({ipmi_sim.host}:{ipmi_sim.port})" in out
        assert "cipher suite 3" in out
        assert f"owned by BMC session 0x{first.session.bmc_session_id:08x}" in out
        assert await run_cli(["deactivate", "web01", "-c", str(config)]) == 0
        assert capsys.readouterr().out == "web01: SOL deactivated\n"
        monkeypatch.setenv("SOLGATE_CONFIG", str(config))
        assert await run_cli(["power", "web01", "status"]) == 0
        assert capsys.readouterr().out == "web01: chassis power is on\n"
        assert await run_cli(["power", "nosuch", "status"]) == 1
        assert "no console named 'nosuch'" in capsys.readouterr().err
    finally:
        await first.close()
