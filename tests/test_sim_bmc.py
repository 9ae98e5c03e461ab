"""The simulated BMC core, driven in memory with a fake clock.

The client side is solgate's own `ClientSession` + `SolStream(role="console")`, so these
are client<->simulator pair tests (STYLE item 9b); a known-answer test replays a real
ipmitool transcript against the core with the fixture's random numbers.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from conftest import load_fixture
from sim_helpers import (
    CLIENT_ADDR,
    Pair,
    drop,
    duplicate,
    make_bmc,
    make_target,
    reorder,
    running_fleet,
    seeded_random,
)

from solgate.cli.sim import DEFAULT_PASSWORD_ENV, check_bind, toml_fragment
from solgate.config import load_config
from solgate.errors import AuthenticationError, ConfigError
from solgate.ipmi.codec import (
    ChassisCommand,
    Command,
    Ipmi15Packet,
    IpmiMessage,
    NetFn,
    OpenSessionRequest,
    PayloadType,
    Privilege,
    TransportCommand,
    decode_ipmi15,
    decode_ipmi_message,
    decode_open_session_response,
    decode_unauthenticated,
    encode_ipmi15,
    encode_ipmi_message,
    encode_open_session_request,
    encode_unauthenticated,
)
from solgate.ipmi.session import (
    ClientSession,
    ResponseReceived,
    SessionTerminated,
    SolPayloadReceived,
)
from solgate.ipmi.sol import DataReceived, SolStream
from solgate.ipmi.sol_codec import SolStatus, decode_sol
from solgate.ipmi.transport import IpmiClient
from solgate.sim.bmc import SimBmc, SimBmcConfig
from solgate.sim.faults import FaultConfig, FaultyBmc, LinkFaults
from solgate.sim.host import SimHost

ACTIVATE_SOL = bytes((0x01, 0x01, 0xC6, 0, 0, 0))
DEACTIVATE_SOL = bytes((0x01, 0x01, 0, 0, 0, 0))


class FakeHost:
    """A host whose output appears when the test says so (`emit`)."""

    baud = 115200

    def __init__(self) -> None:
        self.powered = True
        self.out = bytearray()
        self.written = bytearray()
        self.breaks = 0
        self.actions: list[str] = []

    def emit(self, data: bytes) -> None:
        self.out += data

    def read(self, now: float, max_bytes: int = 4096) -> bytes:
        data = bytes(self.out[:max_bytes])
        del self.out[:max_bytes]
        return data

    def next_deadline(self) -> float | None:
        return 0.0 if self.out else None

    def write(self, data: bytes, now: float) -> None:
        self.written += data

    def send_break(self, now: float) -> None:
        self.breaks += 1

    def power_on(self, now: float) -> None:
        self.powered = True
        self.actions.append("on")

    def power_off(self, now: float) -> None:
        self.powered = False
        self.actions.append("off")

    def power_cycle(self, now: float) -> None:
        self.actions.append("cycle")

    def reset(self, now: float) -> None:
        self.actions.append("reset")


class SolClient:
    """ClientSession + console SolStream, with the I/O methods `Pair` drives."""

    def __init__(self, target_suites: tuple[int, ...] = (17,), seed: int = 3, **target) -> None:
        self.session = ClientSession(make_target(cipher_suites=target_suites, **target),
                                     random=seeded_random(seed))
        self.stream: SolStream | None = None
        self.received = bytearray()
        self.sol_payloads: list[bytes] = []

    def open_sol_stream(self) -> None:
        self.stream = SolStream(role="console", max_chars=32, retry_interval=0.5,
                                max_retries=10)

    def datagrams_to_send(self) -> list[bytes]:
        self._pump_stream()
        return self.session.datagrams_to_send()

    def _pump_stream(self) -> None:
        if self.stream is None or not self.session.established:
            return
        for payload in self.stream.payloads_to_send():
            self.session.send_sol(payload, 0.0)
        while (event := self.stream.next_event()) is not None:
            if isinstance(event, DataReceived):
                self.received += event.data

    def receive_datagram(self, data: bytes, now: float) -> None:
        self.session.receive_datagram(data, now)

    def next_event(self) -> object | None:
        event = self.session.next_event()
        if isinstance(event, SolPayloadReceived):
            self.sol_payloads.append(event.payload)
            if self.stream is not None:
                self.stream.receive_payload(event.payload, 0.0)
                self._pump_stream()
        return event

    def next_deadline(self) -> float | None:
        ds = [self.session.next_deadline()]
        if self.stream is not None:
            ds.append(self.stream.next_deadline())
        ds = [d for d in ds if d is not None]
        return min(ds) if ds else None

    def handle_timeout(self, now: float) -> None:
        if (d := self.session.next_deadline()) is not None and d <= now:
            self.session.handle_timeout(now)
        if self.stream is not None and (d := self.stream.next_deadline()) is not None \
                and d <= now:
            self.stream.handle_timeout(now)


def connect(bmc: SimBmc, suites: tuple[int, ...] = (17,), seed: int = 3,
            now: float = 0.0) -> Pair:
    client = SolClient(suites, seed=seed)
    pair = Pair(client, bmc, now, addr=("127.0.0.1", 40000 + seed))
    client.session.start(now)
    pair.pump(until=lambda: client.session.established or bool(pair.events_of(
        SessionTerminated)))
    pair.pump(timers=False)  # deliver what the last step queued (a RAKP3 with 0x0F)
    return pair


def request(pair: Pair, netfn: int, cmd: int, data: bytes = b"") -> IpmiMessage:
    rid = pair.client.session.send_request(netfn, cmd, data, pair.now)

    def answered() -> bool:
        return any(e.request_id == rid for e in pair.events_of(ResponseReceived))

    pair.pump(until=answered)
    return next(e.message for e in pair.events_of(ResponseReceived) if e.request_id == rid)


def activate(pair: Pair) -> int:
    cc = request(pair, NetFn.APP, Command.ACTIVATE_PAYLOAD, ACTIVATE_SOL).completion_code
    if cc == 0:
        pair.client.open_sol_stream()
    return cc


# ------------------------------------------------------------------------ handshake


@pytest.mark.parametrize("suite", [3, 17])
def test_handshake_establishes_admin_session(suite):
    bmc = make_bmc()
    pair = connect(bmc, (suite,))
    assert pair.client.session.established
    assert pair.client.session.suite.id == suite
    [s] = bmc.active_sessions()
    assert s.privilege == Privilege.ADMINISTRATOR  # raised from USER by Set Session Privilege
    assert s.suite.id == suite
    msg = request(pair, NetFn.APP, Command.GET_DEVICE_ID)
    assert msg.completion_code == 0
    assert msg.body[4] == 0x02  # IPMI 2.0


def test_wrong_password_is_refused_by_the_client_and_forgotten_by_the_bmc():
    bmc = make_bmc(users={"admin": (b"secret", Privilege.ADMINISTRATOR)})
    pair = connect(bmc)
    [ended] = pair.events_of(SessionTerminated)
    assert isinstance(ended.error, AuthenticationError)
    assert not bmc.sessions
    assert bmc.stats.logins_failed == 1


def test_unknown_user_gets_rakp2_status_0d():
    bmc = make_bmc(users={"root": (b"password", Privilege.ADMINISTRATOR)})
    pair = connect(bmc)
    [ended] = pair.events_of(SessionTerminated)
    assert isinstance(ended.error, AuthenticationError)
    assert ended.error.code == 0x0D
    assert not bmc.sessions


def test_bad_rakp3_gets_status_0f_and_drops_the_session():
    bmc = make_bmc()
    client = SolClient((3,))
    pair = Pair(client, bmc)
    client.session.start(0.0)

    def corrupt_rakp3(batch: list[bytes]) -> list[bytes]:
        out = []
        for d in batch:
            if len(d) > 5 and d[4] == 0x06 and d[5] == PayloadType.RAKP_3:
                d = d[:-1] + bytes((d[-1] ^ 1,))
            out.append(d)
        return out

    pair.c2b = corrupt_rakp3
    pair.pump(until=lambda: bool(pair.events_of(SessionTerminated)), max_steps=50)
    assert bmc.stats.logins_failed >= 1
    assert not bmc.active_sessions()


def raw_open_session(bmc: SimBmc, auth: int, integrity: int, conf: int,
                     sidm: int = 0x11223344):
    req = OpenSessionRequest(1, 4, sidm, auth, integrity, conf)
    bmc.receive_datagram(encode_unauthenticated(PayloadType.OPEN_SESSION_REQUEST,
                                                encode_open_session_request(req)),
                         CLIENT_ADDR, 0.0)
    [(dgram, addr)] = bmc.datagrams_to_send()
    assert addr == CLIENT_ADDR
    return decode_open_session_response(decode_unauthenticated(dgram)[1])


def test_open_session_status_for_unsupported_suites():
    bmc = make_bmc(cipher_suites=(3,))
    assert raw_open_session(bmc, 3, 4, 1).status == 0x04  # no SHA-256, like ipmi_sim
    assert raw_open_session(bmc, 1, 1, 0).status == 0x11  # known algorithms, no such suite
    ok = raw_open_session(bmc, 1, 1, 1)
    assert ok.status == 0
    assert ok.privilege == 4
    assert ok.bmc_session_id != 0
    assert ok.console_session_id == 0x11223344


def test_cipher_suite_0_needs_insecure():
    with pytest.raises(ValueError, match="insecure"):
        SimBmcConfig(cipher_suites=(0, 17))
    assert SimBmcConfig(cipher_suites=(0, 17), insecure=True).cipher_suites == (0, 17)


def test_full_table_refuses_new_sessions():
    bmc = make_bmc(max_sessions=1)
    assert raw_open_session(bmc, 1, 1, 1, sidm=1).status == 0
    assert raw_open_session(bmc, 1, 1, 1, sidm=1).status == 0  # a retransmission: same answer
    assert len(bmc.sessions) == 1
    assert raw_open_session(bmc, 1, 1, 1, sidm=2).status == 0x01  # insufficient resources


def test_auth_caps_bytes_and_asf_pong():
    bmc = make_bmc()
    msg = IpmiMessage(NetFn.APP, Command.GET_CHANNEL_AUTH_CAPABILITIES, 0, b"\x8e\x04")
    bmc.receive_datagram(encode_ipmi15(Ipmi15Packet(encode_ipmi_message(msg))), CLIENT_ADDR, 0)
    [(dgram, _)] = bmc.datagrams_to_send()
    rsp = decode_ipmi_message(decode_ipmi15(dgram).message)
    assert rsp.data == bytes.fromhex("00 01 80 04 02 000000 00")
    ping = bytes.fromhex("0600ff06 000011be 80 42 00 00")
    bmc.receive_datagram(ping, CLIENT_ADDR, 0)
    [(pong, _)] = bmc.datagrams_to_send()
    assert pong == bytes.fromhex("0600ff06 000011be 4042 0010 000011be 00000000 81 00 000000000000")


def test_garbage_is_dropped_and_counted():
    bmc = make_bmc()
    for junk in (b"", b"\x06", b"\x06\x00\xff\x07\x06\x00" + bytes(4), bytes(range(40))):
        bmc.receive_datagram(junk, CLIENT_ADDR, 0.0)
    assert bmc.datagrams_to_send() == []
    assert bmc.stats.dropped_malformed == 4


# ------------------------------------------------------------------------ commands


def test_unknown_command_is_c1_and_sol_config_is_plausible():
    pair = connect(make_bmc())
    assert request(pair, 0x2C, 0x00, b"\x00").completion_code == 0xC1
    retry = request(pair, NetFn.TRANSPORT, TransportCommand.GET_SOL_CONFIGURATION,
                    bytes((0x0E, 4, 0, 0)))
    assert retry.body == bytes((0x11, 4, 100))  # 4 retries, 1000 ms
    rate = request(pair, NetFn.TRANSPORT, TransportCommand.GET_SOL_CONFIGURATION,
                   bytes((0x0E, 6, 0, 0)))
    assert rate.body == bytes((0x11, 0x0A))  # 115200


def test_chassis_control_acts_on_the_host():
    host = FakeHost()
    host.powered = False
    pair = connect(make_bmc(host=host))
    status = request(pair, NetFn.CHASSIS, ChassisCommand.GET_CHASSIS_STATUS)
    assert status.body[0] & 1 == 0
    assert request(pair, NetFn.CHASSIS, ChassisCommand.CHASSIS_CONTROL, b"\x01").data == b"\0"
    assert host.actions == ["on"]
    status = request(pair, NetFn.CHASSIS, ChassisCommand.GET_CHASSIS_STATUS)
    assert status.body[0] & 1 == 1


def test_user_privilege_cannot_control_power():
    bmc = make_bmc(host=FakeHost(), users={"admin": (b"password", Privilege.USER)})
    client = SolClient((17,), privilege=Privilege.USER)
    pair = Pair(client, bmc)
    client.session.start(0.0)
    pair.pump(until=lambda: client.session.established)
    msg = request(pair, NetFn.CHASSIS, ChassisCommand.CHASSIS_CONTROL, b"\x00")
    assert msg.completion_code == 0xD4


# ------------------------------------------------------------------------ SOL ownership


def test_activate_twice_gets_0x80():
    bmc = make_bmc(host=FakeHost())
    a = connect(bmc, seed=1)
    b = connect(bmc, seed=2)
    assert activate(a) == 0
    assert activate(b) == 0x80
    assert activate(a) == 0x80  # active already, in this very session
    info = request(b, NetFn.APP, Command.GET_PAYLOAD_INSTANCE_INFO, b"\x01\x01")
    assert struct.unpack_from("<I", info.body)[0] == a.client.session.bmc_session_id
    status = request(b, NetFn.APP, Command.GET_PAYLOAD_ACTIVATION_STATUS, b"\x01")
    assert status.body == b"\x01\x01\x00"


def test_admin_deactivates_another_sessions_sol_and_the_owner_is_told():
    bmc = make_bmc(host=FakeHost())
    a = connect(bmc, seed=1)
    b = connect(bmc, seed=2)
    assert activate(a) == 0
    assert request(b, NetFn.APP, Command.DEACTIVATE_PAYLOAD, DEACTIVATE_SOL).completion_code == 0
    a.pump(timers=False)  # deliver what the BMC queued for the old owner
    notices = [decode_sol(p) for p in a.client.sol_payloads]
    assert any(p.flags & SolStatus.DEACTIVATING for p in notices)
    assert activate(b) == 0
    assert request(a, NetFn.APP, Command.DEACTIVATE_PAYLOAD, DEACTIVATE_SOL).completion_code == 0
    assert request(b, NetFn.APP, Command.DEACTIVATE_PAYLOAD, DEACTIVATE_SOL).completion_code \
        == 0x80  # already deactivated


def test_phantom_owner_blocks_until_deactivated():
    bmc = make_bmc(host=FakeHost())
    bmc.set_phantom_sol_owner(True)
    pair = connect(bmc)
    assert activate(pair) == 0x80
    assert request(pair, NetFn.APP, Command.DEACTIVATE_PAYLOAD, DEACTIVATE_SOL).completion_code \
        == 0
    assert activate(pair) == 0


def test_session_timeout_ends_sol():
    bmc = make_bmc(host=FakeHost(), session_timeout=60.0)
    a = connect(bmc, seed=1)
    assert activate(a) == 0
    sidc = a.client.session.bmc_session_id
    assert bmc.next_deadline() == pytest.approx(bmc.sessions[sidc].expires)
    now = bmc.next_deadline()
    bmc.handle_timeout(now)
    assert sidc not in bmc.sessions
    assert not bmc.sol.active
    assert bmc.stats.sessions_timed_out == 1
    assert bmc.next_deadline() is None  # nothing left: an idle BMC costs no timer
    b = connect(bmc, seed=2, now=now)
    assert activate(b) == 0


def test_close_session_ends_sol():
    bmc = make_bmc(host=FakeHost())
    a = connect(bmc, seed=1)
    assert activate(a) == 0
    a.client.session.close(a.now)
    a.pump(timers=False)
    assert not bmc.sessions
    assert not bmc.sol.active


# ------------------------------------------------------------------------ SOL data


def test_sol_data_both_ways_and_break():
    host = FakeHost()
    bmc = make_bmc(host=host)
    pair = connect(bmc)
    assert activate(pair) == 0
    host.emit(b"login: ")
    pair.pump(until=lambda: bytes(pair.client.received) == b"login: ")
    pair.client.stream.send(b"root\r", pair.now)
    pair.client.stream.send_break(pair.now)
    pair.pump(until=lambda: host.breaks == 1)
    assert bytes(host.written) == b"root\r"
    big = bytes(range(32, 127)) * 20
    host.emit(big)
    pair.pump(until=lambda: len(pair.client.received) >= 7 + len(big), max_steps=2000)
    assert bytes(pair.client.received) == b"login: " + big


def test_host_output_is_discarded_while_sol_is_inactive():
    host = FakeHost()
    bmc = make_bmc(host=host)
    pair = connect(bmc)
    host.emit(b"nobody saw this\r\n")
    assert bmc.next_deadline() == pytest.approx(60.0, abs=1)  # no polling while inactive
    assert activate(pair) == 0
    host.emit(b"fresh")
    pair.pump(until=lambda: bytes(pair.client.received) == b"fresh")
    assert bmc.sol.discarded == len(b"nobody saw this\r\n")


@pytest.mark.parametrize(("c2b", "b2c"), [
    (drop([3, 6]), None),
    (None, drop([2, 5, 7])),
    (duplicate(), duplicate()),
    (reorder(), reorder()),
])
def test_lossy_wire_loses_and_doubles_nothing(c2b, b2c):
    host = FakeHost()
    bmc = make_bmc(host=host)
    pair = connect(bmc)
    assert activate(pair) == 0
    pair.c2b, pair.b2c = c2b, b2c
    typed = b"echo hello world, this is more than one packet\r"
    pair.client.stream.send(typed, pair.now)
    output = b"".join(b"line %d of the boot log\r\n" % i for i in range(40))
    host.emit(output)
    pair.pump(until=lambda: bytes(host.written) == typed
              and bytes(pair.client.received) == output, max_steps=3000)


def test_stop_acking_sol_withholds_acks():
    host = FakeHost()
    bmc = make_bmc(host=host)
    pair = connect(bmc)
    assert activate(pair) == 0
    bmc.stop_acking_sol = True
    pair.client.stream.send(b"x", pair.now)
    pair.pump(timers=False)
    assert host.written == b""
    assert pair.client.stream.send_buffered == 1


# ------------------------------------------------------------------------ faults


def run_with_faults(seed: int) -> list[bytes]:
    bmc = make_bmc()
    faulty = FaultyBmc(bmc, FaultConfig.symmetric(drop=0.3, duplicate=0.3, reorder=0.3,
                                                  delay=0.3, corrupt=0.1, seed=seed))
    out: list[bytes] = []
    now = 0.0
    for i in range(40):
        req = OpenSessionRequest(i, 4, 0x1000 + i, 1, 1, 1)
        faulty.receive_datagram(encode_unauthenticated(PayloadType.OPEN_SESSION_REQUEST,
                                                       encode_open_session_request(req)),
                                CLIENT_ADDR, now)
        out += [d for d, _ in faulty.datagrams_to_send()]
        now += 0.01
        if (d := faulty.next_deadline()) is not None and d <= now:
            faulty.handle_timeout(now)
    return out


def test_faults_repeat_exactly_with_the_same_seed():
    first = run_with_faults(seed=5)
    assert first == run_with_faults(seed=5)
    assert first != run_with_faults(seed=6)
    assert 0 < len(first) != 40  # some were lost or doubled


def test_link_faults_validate_rates():
    with pytest.raises(ValueError, match="between 0 and 1"):
        LinkFaults(drop=1.5)


def test_refuse_logins_and_restart():
    bmc = make_bmc(host=FakeHost())
    faults = FaultConfig()
    faulty = FaultyBmc(bmc, faults)
    pair = connect(faulty)  # type: ignore[arg-type]
    assert pair.client.session.established
    assert activate(pair) == 0
    faulty.restart()
    assert not bmc.sessions
    assert not bmc.sol.active
    faults.refuse_logins = True
    again = connect(faulty, seed=9)  # type: ignore[arg-type]
    [ended] = again.events_of(SessionTerminated)
    assert ended.error.code == 0x0D


# ------------------------------------------------------------------------ known answer


def test_ipmitool_transcript_is_accepted():
    """Replay ipmitool's packets from a real capture; with the capture's SIDc and Rc our
    RAKP2 and RAKP4 are byte-identical to ipmi_sim's."""
    fx = load_fixture("ipmi_sim-ipmitool/cs3-sol-session.json")
    sess = fx["session"]
    sidc = int(sess["bmc_session_id"], 16)
    randoms = [sidc.to_bytes(4, "little"), bytes.fromhex(sess["rc"])]
    iv_source = seeded_random(1)

    def fixture_random(n: int) -> bytes:
        return randoms.pop(0) if randoms else iv_source(n)

    host = FakeHost()
    config = SimBmcConfig(name="kat", guid=bytes.fromhex(sess["bmc_guid"]), host=host,
                          cipher_suites=(3,))
    bmc = SimBmc(config, random=fixture_random)
    expected = {p["decoded"].get("summary", "").split()[0]: bytes.fromhex(p["hex"])
                for p in fx["packets"] if p["dir"] == "bmc->client"}
    answers: dict[str, bytes] = {}
    for p in fx["packets"]:
        if p["dir"] != "client->bmc":
            continue
        bmc.receive_datagram(bytes.fromhex(p["hex"]), CLIENT_ADDR, p["t"])
        for dgram, _ in bmc.datagrams_to_send():
            if dgram[4] == 0x06 and dgram[5] in (PayloadType.RAKP_2, PayloadType.RAKP_4):
                answers[PayloadType(dgram[5]).name] = dgram
    assert answers["RAKP_2"] == expected["RAKP2"]
    assert answers["RAKP_4"] == expected["RAKP4"]
    assert bmc.stats.dropped_auth == bmc.stats.dropped_replay == 0
    assert bytes(host.written) == b"abc\r"
    assert host.breaks == 1
    assert not bmc.sessions  # ipmitool closed it


# ------------------------------------------------------------------------ fleet on UDP


async def test_fleet_of_200_starts_serves_and_stops():
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with running_fleet(200) as fleet:
        assert loop.time() - started < 20  # generous: a smoke test, not a benchmark
        assert len(set(fleet.ports)) == 200
        assert all(h.core.port == h.port for h in fleet.bmcs)
        assert fleet._heap == []  # idle BMCs schedule nothing
        last = fleet.bmcs[-1]
        target = make_target(port=last.port, cipher_suites=(17,))
        client = await asyncio.wait_for(IpmiClient.connect(target), 10)
        async with client:
            assert (await client.device_id()).ipmi_version == "2.0"
            await client.activate_sol()
            assert last.core.sol.owner == client.session.bmc_session_id
        assert not last.core.sessions  # closed on the way out; SOL with it
        assert not last.core.sol.active
        assert fleet.errors == 0


async def test_fleet_applies_faults_and_the_client_survives_them():
    faults = FaultConfig.symmetric(drop=0.15, duplicate=0.15, reorder=0.15, seed=11)
    async with running_fleet(1, faults=faults) as fleet:
        bmc = fleet.bmcs[0]
        assert bmc.faults is faults
        target = make_target(port=bmc.port, retransmit_timeout=0.2, max_tries=10)
        client = await asyncio.wait_for(IpmiClient.connect(target), 20)
        async with client:
            for _ in range(10):
                assert (await client.chassis_status()).power_on
        faults.phantom_sol_owner = True
        client = await asyncio.wait_for(IpmiClient.connect(target), 20)
        async with client:
            assert (await client.payload_activation_status()).is_active()
            assert await client.deactivate_sol()  # frees what the phantom held
            assert not (await client.payload_activation_status()).is_active()


# ------------------------------------------------------------------------ CLI


async def test_printed_fragment_is_a_valid_solgate_toml(tmp_path):
    async with running_fleet(3) as fleet:
        text = toml_fragment(fleet, user="admin", password_env=DEFAULT_PASSWORD_ENV,
                             default_password=True)
        path = tmp_path / "solgate.toml"
        path.write_text(text)
        config = load_config(path, environ={DEFAULT_PASSWORD_ENV: "password"})
        assert [(name, c.host, c.port) for name, c in config.consoles.items()] == [
            (h.name, "127.0.0.1", h.port) for h in fleet.bmcs]
        assert all(c.username == "admin" and c.password == b"password"
                   for c in config.consoles.values())


@pytest.mark.parametrize("bind", ["10.1.2.3", "0.0.0.0", "example.org"])
def test_sim_refuses_non_loopback_bind(bind):
    with pytest.raises(ConfigError, match="bind"):
        check_bind(bind, allow_remote=False)
    check_bind("127.0.0.1", allow_remote=False)
    check_bind("::1", allow_remote=False)


# ------------------------------------------------------------------------ with SimHost


def test_boot_log_streams_through_sol_in_full_packets_then_idles():
    host = SimHost("h1", seed=1, boot_speed=20.0)
    bmc = make_bmc(host=host)
    pair = connect(bmc)
    assert activate(pair) == 0
    sidc = pair.client.session.bmc_session_id
    host.power_on(pair.now)
    pair.pump(until=lambda: pair.client.received.endswith(b"# "), max_steps=20000)
    text = bytes(pair.client.received)
    assert b"Linux version" in text
    data_packets = [p for p in (decode_sol(x) for x in pair.client.sol_payloads) if p.seq]
    # Output is batched per accumulate interval: most packets are full.
    assert len(data_packets) < 2 * len(text) / 255 + 20
    # At the prompt the host is idle and SOL costs no timer: only the session's expiry.
    pair.pump(timers=False)  # the last ACK
    assert bmc.next_deadline() == bmc.sessions[sidc].expires
    pair.client.stream.send(b"echo hi\r", pair.now)
    pair.pump(until=lambda: pair.client.received.endswith(b"hi\r\nroot@h1:~# "))


def test_small_host_input_buffer_nacks_then_resumes_without_loss():
    host = FakeHost()
    bmc = make_bmc(host=host, host_input_buffer=8)
    pair = connect(bmc)
    assert activate(pair) == 0
    typed = b"a line much longer than eight characters\r"
    pair.client.stream.send(typed, pair.now)
    pair.pump(until=lambda: bytes(host.written) == typed, max_steps=1000)
    acks = [decode_sol(p) for p in pair.client.sol_payloads]
    assert any(p.nack and 0 < p.accepted < 32 for p in acks)  # partial accept + NACK
    assert any(p.ack_seq and not p.nack for p in acks)  # then "ready" again


def test_sol_port_counts_and_keeps_what_it_abandons():
    """A packet unacknowledged through every retry is given up on (as real BMCs do) and
    so is what is still unacknowledged at deactivation: both are counted and kept, so a
    test can tell loss by design from loss by the console."""
    from solgate.sim.bmc_sol import SolPort

    host = FakeHost()
    port = SolPort(SimBmcConfig(host=host, sol_retry_count=2, sol_retry_interval=0.1,
                                outbound_payload_size=14), host)  # 10 characters a packet
    port.activate(0x1234, 0.0)
    host.emit(b"0123456789abcdefghij")
    now = 0.0
    sent = []
    for _ in range(20):  # the console never ACKs
        sent += port.pump(now)
        deadline = port.next_deadline()
        if port.stalls or deadline is None:
            break
        now = deadline
        port.handle_timeout(now)
    assert port.stalls == 1
    # The packet, its 2 retries, then the next packet right after giving up.
    assert [p[4:] for p in sent] == [b"0123456789"] * 3 + [b"abcdefghij"]
    assert port.sent_bytes == 20
    assert port.abandoned_bytes == 10
    assert list(port.abandoned_chunks) == [b"0123456789"]
    port.pump(now)
    port.deactivate()
    assert port.abandoned_bytes == 20
    assert list(port.abandoned_chunks) == [b"0123456789", b"abcdefghij"]
