"""Random and mutated bytes into every decoder and into the client session.

A decoder either parses or raises `ProtocolError` (never IndexError, struct.error,
ValueError); the session drops and counts what it cannot use and never raises from its
receive path (STYLE.md item 6). Command parsers raise only `SolgateError`s.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solgate.errors import ProtocolError, SolgateError
from solgate.ipmi import codec, commands, sol_codec
from solgate.ipmi.codec import Command, IpmiMessage, NetFn
from solgate.ipmi.crypto import CIPHER_SUITES, PacketProtector
from solgate.ipmi.session import ClientSession, SessionState
from tests.sim_helpers import ScriptedBmc, counting_random, establish, target

FAST = settings(max_examples=3000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

DECODERS: list[Callable[[bytes], object]] = [
    codec.decode_ipmi_message,
    lambda b: codec.decode_ipmi_message(b, check_checksums=False),
    codec.decode_ipmi15,
    codec.decode_rmcpplus_header,
    codec.decode_unauthenticated,
    codec.decode_open_session_request,
    codec.decode_open_session_response,
    codec.decode_rakp1,
    codec.decode_rakp2,
    codec.decode_rakp3,
    codec.decode_rakp4,
    codec.decode_channel_auth_capabilities,
    sol_codec.decode_sol,
]


def _valid_samples() -> list[bytes]:
    """Real datagrams and payloads to mutate: a whole CS3 handshake and some traffic."""
    bmc = ScriptedBmc()
    session = ClientSession(target(cipher_suites=(3,)), random=counting_random())
    session.start(0.0)
    samples: list[bytes] = []
    for _ in range(8):
        out = session.datagrams_to_send()
        if not out:
            break
        for d in out:
            samples.append(d)
            for reply in bmc.handle(d):
                samples.append(reply)
                session.receive_datagram(reply, 0.0)
    samples.append(codec.encode_ipmi_message(IpmiMessage(7, 1, 3, b"\x00\x01")))
    samples.append(sol_codec.encode_sol(sol_codec.SolPacket(1, 2, 3, 0x40, b"abc")))
    return samples


SAMPLES = _valid_samples()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "extend", "set"]))
        if kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate" and data:
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=20))
        elif kind == "set" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


DATAGRAMS = st.one_of(st.binary(max_size=200), mutated())


@FAST
@given(data=DATAGRAMS)
def test_decoders_parse_or_raise_protocol_error(data):
    for decode in DECODERS:  # every decoder sees every input; generation is the slow part
        for chunk in (data, data[16:], data[14:]):  # also past the RMCP+/IPMI 1.5 headers
            try:
                decode(chunk)
            except ProtocolError:
                pass


PROTECTORS = [PacketProtector(CIPHER_SUITES[s], b"k1" * 10, b"k2" * 10) for s in (1, 2, 3, 17)]


@settings(max_examples=1500, deadline=None)
@given(data=DATAGRAMS)
def test_packet_protector_open(data):
    for prot in PROTECTORS:
        try:
            prot.open(data)
        except ProtocolError:
            pass


def _session_in(state: SessionState) -> ClientSession:
    """A session stopped at `state`, with the BMC's answers withheld from there on."""
    bmc = ScriptedBmc()
    session = ClientSession(target(cipher_suites=(3,)), random=counting_random())
    session.start(0.0)
    for _ in range(8):
        if session.state is state:
            return session
        for d in session.datagrams_to_send():
            for reply in bmc.handle(d):
                session.receive_datagram(reply, 0.0)
    assert session.state is state
    return session


HANDSHAKE_STATES = [SessionState.AUTH_CAPS, SessionState.OPEN_SESSION, SessionState.RAKP2,
                    SessionState.RAKP4, SessionState.PRIVILEGE, SessionState.ESTABLISHED]


@pytest.mark.parametrize("state", HANDSHAKE_STATES, ids=lambda s: s.name)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datagrams=st.lists(DATAGRAMS, min_size=1, max_size=5))
def test_session_receive_never_raises(state, datagrams):
    session = _session_in(state)
    for d in datagrams:
        session.receive_datagram(d, 0.5)
    session.handle_timeout(0.6)
    if state is SessionState.ESTABLISHED:
        assert session.established  # nothing unauthenticated can end a session


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flip=st.integers(0, 10_000), bit=st.integers(0, 7), cut=st.integers(0, 200))
def test_established_session_survives_mutated_traffic_and_still_works(flip, bit, cut):
    session, bmc, _ = establish(cipher_suites=(3,))
    rid = session.send_request(NetFn.APP, Command.GET_DEVICE_ID, b"", 0.0)
    (reply,) = bmc.handle(session.datagrams_to_send()[0])
    broken = bytearray(reply)
    broken[flip % len(broken)] ^= 1 << bit
    session.receive_datagram(bytes(broken), 0.1)
    session.receive_datagram(reply[: cut % len(reply)], 0.1)
    assert session.next_event() is None
    assert sum(session.dropped.values()) == 2
    session.receive_datagram(reply, 0.2)
    event = session.next_event()
    assert event is not None
    assert event.request_id == rid  # type: ignore[union-attr]


PARSERS = [
    commands.parse_device_id,
    commands.parse_chassis_status,
    commands.parse_chassis_control,
    commands.parse_session_privilege,
    lambda m, label: commands.parse_activate_payload(m, label, session_port=623),
    commands.parse_deactivate_payload,
    commands.parse_payload_activation_status,
    commands.parse_payload_instance_info,
    commands.parse_sol_config,
    commands.parse_channel_cipher_suites_chunk,
]


@pytest.mark.parametrize("parse", PARSERS, ids=lambda f: getattr(f, "__name__", "lambda"))
@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=1, max_size=24))
def test_command_parsers_raise_only_solgate_errors(parse, data):
    try:
        parse(IpmiMessage(7, 1, 1, data), "BMC x:623")
    except SolgateError:
        pass


@settings(max_examples=300, deadline=None)
@given(records=st.binary(max_size=64))
def test_cipher_suite_records_never_raise(records):
    assert all(0 <= i <= 255 for i in commands.parse_cipher_suite_records(records))
