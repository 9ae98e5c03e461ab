"""`ClientSession` driven by a scripted BMC under a fake clock: handshakes, failures,
retransmits and hostile datagrams, all without sockets or sleeps.

`ScriptedBmc` answers the handshake and a few IPMI commands the way the digest says a BMC
does, with knobs for the failures the client must handle; it is built from codec and
crypto and is deliberately small (the full simulated BMC lives in `solgate/sim/`).
"""

from __future__ import annotations

import logging

import pytest

from solgate.errors import (
    AuthenticationError,
    CipherSuiteError,
    InsecureCipherSuiteError,
    LocalProtocolError,
    PrivilegeError,
    SolgateTimeoutError,
)
from solgate.ipmi import codec
from solgate.ipmi.codec import Command, NetFn, PayloadType, Privilege, RakpStatus
from solgate.ipmi.crypto import (
    CIPHER_SUITES,
    PacketProtector,
)
from solgate.ipmi.session import (
    _TRANSITIONS,
    ClientSession,
    RequestTimedOut,
    ResponseReceived,
    SessionEstablished,
    SessionInput,
    SessionState,
    SessionTerminated,
    SolPayloadReceived,
)
from tests.sim_helpers import (
    AUTH_CAPS_BODY,
    DEVICE_ID_RESPONSE,
    ScriptedBmc,
    counting_random,
    establish,
    events,
    pump,
    target,
)

# --------------------------------------------------------------------------- helpers

H = bytes.fromhex


# --------------------------------------------------------------------------- known answers


def test_section_10_1_open_session_rakp1_and_rakp3_bytes():
    """The digest's CS3 run, byte for byte: SIDm a0a2a3a4, Rm 00..0f, privilege byte 00."""
    # The first draw is the message tag's random start: 00, so the digest's tags 1, 2, 3.
    draws = iter([b"\x00", H("a4a3a2a0"), H("000102030405060708090a0b0c0d0e0f")])
    session = ClientSession(
        target(cipher_suites=(3,), workarounds=frozenset({"open_session_priv_highest"})),
        random=lambda n: next(draws, bytes(n)),  # then zero IVs
    )
    session.start(0.0)
    assert session.datagrams_to_send() == [
        H("0600ff07 00 00000000 00000000 09 2018c8 81 00 38 8e04 b5".replace(" ", ""))]
    session.receive_datagram(H("0600ff0700000000000000000000" "10" "811c632000380001970603"
                               "000000000a")[:-1] + bytes([0]), 0.0)
    # (the auth caps answer above has a deliberately wrong checksum: dropped, not fatal)
    assert session.dropped["malformed"] == 1
    reply = ScriptedBmc.response(
        codec.IpmiMessage(6, 0x38, 0, b""), b"\x00" + AUTH_CAPS_BODY)
    session.receive_datagram(codec.encode_ipmi15(codec.Ipmi15Packet(reply)), 0.0)
    assert session.datagrams_to_send() == [H(
        "0600ff07 06 10 00000000 00000000 2000 01 00 0000 a4a3a2a0 0000000801000000"
        " 0100000801000000 0200000801000000".replace(" ", ""))]
    session.receive_datagram(codec.encode_unauthenticated(0x11, H(
        "01 00 00 00 a4a3a2a0 02020000 0000000801000000 0100000801000000 0200000801000000"
        .replace(" ", ""))), 0.0)
    assert session.datagrams_to_send() == [H(
        "0600ff07 06 12 00000000 00000000 2100 02 000000 02020000"
        " 000102030405060708090a0b0c0d0e0f 14 0000 05 61646d696e".replace(" ", ""))]
    rc, guid = H("dfc27b9d31a678968b428a1b62e5cfab"), H("a123456789abcdefa123456789abcdef")
    rakp2 = codec.Rakp2(2, 0, 0xA0A2A3A4, rc, guid, H("48452c279251dc08b5bb1b40a366b7203559d13e"))
    session.receive_datagram(codec.encode_unauthenticated(0x13, codec.encode_rakp2(rakp2)), 0.0)
    (rakp3,) = session.datagrams_to_send()
    assert codec.decode_unauthenticated(rakp3)[1] == H(
        "03000000 02020000 44dba17e0cb028b583999a7f2854afea84ccd46d".replace(" ", ""))
    rakp4 = codec.Rakp4(3, 0, 0xA0A2A3A4, H("eee0d79664745dd4e41803ea"))
    session.receive_datagram(codec.encode_unauthenticated(0x15, codec.encode_rakp4(rakp4)), 0.0)
    (setpriv,) = session.datagrams_to_send()
    bmc_side = PacketProtector(CIPHER_SUITES[3], H("d996bd6dc35bf77f1c039621d7e7172cdd4b41a7"),
                               H("74cf5b2c72d14e8f339fe2f89410d5488e91f65b"))
    opened = bmc_side.open(setpriv)
    assert (opened.header.session_id, opened.header.seq) == (0x202, 1)
    assert opened.payload == H("2018c881043b043c")  # digest 10.3, rqSeq 1
    assert session.state is SessionState.PRIVILEGE


# --------------------------------------------------------------------------- handshakes


@pytest.mark.parametrize("suite", [3, 17, 2])
def test_full_handshake_then_request_and_sol(suite):
    session, bmc, evs = establish(cipher_suites=(suite,))
    assert evs == [SessionEstablished(suite, 0x0202, Privilege.ADMINISTRATOR)]
    assert session.established
    assert bmc.open_session_requests[0].privilege == 4
    assert bmc.last_rakp3 is not None
    assert bmc.last_rakp3.status == 0
    rid = session.send_request(NetFn.APP, Command.GET_DEVICE_ID, b"", 1.0)
    (ev,) = pump(session, bmc, 1.0)
    assert isinstance(ev, ResponseReceived)
    assert ev.request_id == rid
    assert ev.message.data == DEVICE_ID_RESPONSE
    # SOL both ways, sealed with the session keys
    session.send_sol(b"\x01\x00\x00\x00abc", 1.0)
    pump(session, bmc, 1.0)
    assert bmc.received_sol == [b"\x01\x00\x00\x00abc"]
    session.receive_datagram(bmc.seal_sol(b"\x01\x00\x00\x00hello"), 2.0)
    assert events(session) == [SolPayloadReceived(b"\x01\x00\x00\x00hello")]
    assert session.last_received == 2.0
    assert bmc.seen_seqs == [1, 2, 3]  # our outbound session sequence numbers
    assert sum(session.dropped.values()) == 0


def test_wrong_password_sends_rakp3_0f_and_fails_clearly():
    bmc = ScriptedBmc(rakp2_password=b"other")  # ipmi_sim answers RAKP2 even then
    session, bmc, evs = establish(bmc)
    (ev,) = evs
    assert isinstance(ev, SessionTerminated)
    assert isinstance(ev.error, AuthenticationError)
    assert str(ev.error).startswith("BMC 10.0.0.5:623 rejected the password for user 'admin'")
    assert "check the password" in str(ev.error)
    assert "password'" not in str(ev.error)
    assert bmc.last_rakp3 == codec.Rakp3(session._tag, 0x0F, 0x0202, b"")  # our third tag
    assert session.state is SessionState.TERMINATED
    assert session.next_deadline() is None


def test_unknown_user():
    session, _, evs = establish(ScriptedBmc(rakp2_status=0x0D), username=b"bob")
    (ev,) = evs
    assert isinstance(ev.error, AuthenticationError)
    assert "does not know user 'bob'" in str(ev.error)
    assert "0x0d" in str(ev.error)


def test_suite_fallback_17_to_3_with_new_session_id():
    session, bmc, evs = establish(ScriptedBmc(suites=frozenset({3})))
    assert evs == [SessionEstablished(3, 0x0202, Privilege.ADMINISTRATOR)]
    first, second = bmc.open_session_requests
    assert (first.auth_alg, second.auth_alg) == (3, 1)
    assert first.console_session_id != second.console_session_id
    assert first.tag != second.tag


def test_no_suite_accepted():
    _, _, evs = establish(ScriptedBmc(suites=frozenset({2})))
    (ev,) = evs
    assert isinstance(ev.error, CipherSuiteError)
    assert "accepted none of cipher suites 17, 3" in str(ev.error)


@pytest.mark.parametrize("suite", [0, 1, 6, 15])
def test_insecure_suites_refused_by_default(suite):
    session = ClientSession(target(cipher_suites=(suite,)))
    session.start(0.0)
    (ev,) = events(session)
    assert isinstance(ev.error, InsecureCipherSuiteError)
    assert session.datagrams_to_send() == []


def test_insecure_suite_allowed_logs_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        session, _, evs = establish(ScriptedBmc(suites=frozenset({1})), cipher_suites=(1,),
                                    allow_insecure=True)
    assert evs == [SessionEstablished(1, 0x0202, Privilege.ADMINISTRATOR)]
    assert "insecure cipher suite 1" in caplog.text


def test_privilege_falls_back_to_operator():
    _, bmc, evs = establish(ScriptedBmc(refuse_privileges=frozenset({4})))
    assert evs == [SessionEstablished(17, 0x0202, Privilege.OPERATOR)]
    assert [m.data for m in bmc.received] == [b"\x04", b"\x03"]


def test_privilege_refused():
    _, _, evs = establish(ScriptedBmc(refuse_privileges=frozenset({3, 4})))
    (ev,) = evs
    assert isinstance(ev.error, PrivilegeError)
    assert "Set Session Privilege Level" in str(ev.error)


def test_user_privilege_skips_set_session_privilege():
    _, bmc, evs = establish(privilege=Privilege.USER)
    assert evs == [SessionEstablished(17, 0x0202, Privilege.USER)]
    assert bmc.received == []


def test_auth_caps_retried_without_v2_bit_when_refused():
    session = ClientSession(target(), random=counting_random())
    session.start(0.0)
    (first,) = session.datagrams_to_send()
    req = codec.decode_ipmi_message(codec.decode_ipmi15(first).message)
    assert req.data == b"\x8e\x04"
    session.receive_datagram(codec.encode_ipmi15(codec.Ipmi15Packet(
        ScriptedBmc.response(req, b"\xcc"))), 0.1)
    (second,) = session.datagrams_to_send()
    assert codec.decode_ipmi_message(codec.decode_ipmi15(second).message).data == b"\x0e\x04"


# --------------------------------------------------------------------------- timing


def test_handshake_timeout_restarts_open_session_then_gives_up():
    session = ClientSession(target(), random=counting_random())
    session.start(0.0)
    bmc = ScriptedBmc()
    session.receive_datagram(bmc.handle(session.datagrams_to_send()[0])[0], 0.0)
    sids = []
    now = 0.0
    for expected_deadline in (1.0, 2.0, 3.0, 4.0):
        (osr,) = session.datagrams_to_send()  # the BMC never answers
        sids.append(codec.decode_open_session_request(
            codec.decode_unauthenticated(osr)[1]).console_session_id)
        assert session.next_deadline() == expected_deadline
        session.handle_timeout(expected_deadline - 0.01)  # early: nothing happens
        assert session.datagrams_to_send() == []
        now = expected_deadline
        session.handle_timeout(now)
    assert len(set(sids)) == 4
    (ev,) = events(session)
    assert isinstance(ev.error, SolgateTimeoutError)
    assert isinstance(ev.error, TimeoutError)
    assert str(ev.error) == (
        "no answer from BMC 10.0.0.5:623 after 4 tries (Open Session): check host/port and "
        "that IPMI over LAN is enabled")


def test_unreachable_bmc_times_out_at_auth_caps():
    session = ClientSession(target(max_tries=2, retransmit_timeout=0.5))
    session.start(10.0)
    assert len(session.datagrams_to_send()) == 1
    session.handle_timeout(10.5)
    assert len(session.datagrams_to_send()) == 1
    session.handle_timeout(11.0)
    (ev,) = events(session)
    assert "after 2 tries" in str(ev.error)


def test_timeout_in_rakp_restarts_from_open_session():
    session, bmc = ClientSession(target(), random=counting_random()), ScriptedBmc()
    session.start(0.0)
    for _ in range(2):  # auth caps, open session
        for d in session.datagrams_to_send():
            for r in bmc.handle(d):
                session.receive_datagram(r, 0.0)
    assert session.state is SessionState.RAKP2
    session.datagrams_to_send()  # RAKP1 lost
    session.handle_timeout(1.0)
    assert session.state is SessionState.OPEN_SESSION
    assert pump(session, bmc, 1.0) == [SessionEstablished(17, 0x0202, Privilege.ADMINISTRATOR)]
    assert len(bmc.open_session_requests) == 2


def test_request_retransmit_timing_and_timeout():
    session, bmc, _ = establish(retransmit_timeout=1.0, max_tries=3)
    rid = session.send_request(NetFn.APP, Command.GET_DEVICE_ID, b"", 10.0)
    assert session.next_deadline() == 11.0
    sent = [session.datagrams_to_send()[0]]
    session.handle_timeout(10.999)
    assert session.datagrams_to_send() == []
    session.handle_timeout(11.0)
    sent += session.datagrams_to_send()
    assert session.next_deadline() == 12.0
    session.handle_timeout(12.0)
    sent += session.datagrams_to_send()
    assert bmc.protector is not None
    opened = [bmc.protector.open(d) for d in sent]
    seqs = [o.header.seq for o in opened]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]  # a new session seq every time
    msgs = [codec.decode_ipmi_message(o.payload) for o in opened]
    assert len({m.rq_seq for m in msgs}) == 1
    assert msgs[0].cmd == Command.GET_DEVICE_ID
    assert session.next_deadline() == 13.0
    session.handle_timeout(13.0)
    (ev,) = events(session)
    assert isinstance(ev, RequestTimedOut)
    assert ev.request_id == rid
    assert "Get Device ID after 3 tries" in str(ev.error)
    assert session.established
    assert session.next_deadline() is None


def test_late_answer_to_a_retransmitted_request_is_delivered_once():
    session, bmc, _ = establish()
    session.send_request(NetFn.APP, Command.GET_DEVICE_ID, b"", 0.0)
    first = session.datagrams_to_send()[0]
    session.handle_timeout(1.0)
    second = session.datagrams_to_send()[0]
    for d in (first, second):
        for r in bmc.handle(d):
            session.receive_datagram(r, 1.5)
    assert [type(e) for e in events(session)] == [ResponseReceived]
    assert session.dropped["unexpected"] == 1


# --------------------------------------------------------------------------- hostile input


def test_replayed_corrupted_truncated_datagrams_are_dropped_and_counted():
    session, bmc, _ = establish()
    rid = session.send_request(NetFn.APP, Command.GET_DEVICE_ID, b"", 0.0)
    (reply,) = bmc.handle(session.datagrams_to_send()[0])
    tampered = bytearray(reply)
    tampered[20] ^= 0x01
    session.receive_datagram(bytes(tampered), 0.1)
    session.receive_datagram(reply[:10], 0.1)
    session.receive_datagram(reply[:-1], 0.1)
    session.receive_datagram(b"", 0.1)
    assert events(session) == []
    session.receive_datagram(reply, 0.2)
    session.receive_datagram(reply, 0.3)  # replay
    (ev,) = events(session)
    assert isinstance(ev, ResponseReceived)
    assert ev.request_id == rid
    assert session.dropped == {"malformed": 2, "unauthenticated": 2, "replayed": 1,
                               "unexpected": 0, "unsolicited": 0, "duplicate": 0}
    assert session.established
    assert session.last_received == 0.2


def test_foreign_session_id_and_setup_payloads_after_login_are_dropped():
    session, bmc, _ = establish()
    session.receive_datagram(codec.encode_unauthenticated(0x13, b"\x00" * 40), 0.0)
    session.receive_datagram(codec.encode_ipmi15(codec.Ipmi15Packet(b"\x00" * 7)), 0.0)
    assert session.dropped["unexpected"] == 2
    assert session.established


def test_duplicate_cc_cf_is_ignored_and_unsolicited_requests_dropped():
    session, bmc, _ = establish()
    rid = session.send_request(NetFn.APP, Command.GET_DEVICE_ID, b"", 0.0)
    req = codec.decode_ipmi_message(bmc.protector.open(session.datagrams_to_send()[0]).payload)
    session.receive_datagram(bmc.seal_ipmi(ScriptedBmc.response(req, b"\xcf")), 0.1)
    # OpenBMC's "SOL activating" request to a former owner: netfn 0x0C cmd 0x20
    unsolicited = codec.encode_ipmi_message(codec.IpmiMessage(0x0C, 0x20, 5, b"\x00\x01\x01\x00"))
    session.receive_datagram(bmc.seal_ipmi(unsolicited), 0.1)
    assert events(session) == []
    session.receive_datagram(bmc.seal_ipmi(ScriptedBmc.response(req, DEVICE_ID_RESPONSE)), 0.2)
    assert [e.request_id for e in events(session)] == [rid]
    assert (session.dropped["duplicate"], session.dropped["unsolicited"]) == (1, 1)


def test_stale_handshake_answers_are_dropped():
    session = ClientSession(target(), random=counting_random())
    session.start(0.0)
    bmc = ScriptedBmc()
    session.receive_datagram(bmc.handle(session.datagrams_to_send()[0])[0], 0.0)
    (osr1,) = session.datagrams_to_send()
    session.handle_timeout(1.0)  # restart: new tag, new SIDm
    (osr2,) = session.datagrams_to_send()
    session.receive_datagram(bmc.handle(osr1)[0], 1.1)  # answer to the first attempt
    assert session.dropped["unexpected"] == 1
    assert session.state is SessionState.OPEN_SESSION
    session.receive_datagram(bmc.handle(osr2)[0], 1.2)
    assert session.state is SessionState.RAKP2


# --------------------------------------------------------------------------- forged errors


def _to_rakp1(seed: bytes = b"\x00") -> tuple[ClientSession, ScriptedBmc, bytes]:
    """A session that has sent RAKP1 (returned, not yet given to the BMC)."""
    draws = iter([seed])
    fallback = counting_random()
    session = ClientSession(target(), random=lambda n: next(draws, None) or fallback(n))
    bmc = ScriptedBmc()
    session.start(0.0)
    session.receive_datagram(bmc.handle(session.datagrams_to_send()[0])[0], 0.0)  # caps
    (osr,) = session.datagrams_to_send()
    session.receive_datagram(bmc.handle(osr)[0], 0.0)
    (rakp1,) = session.datagrams_to_send()
    assert session.state is SessionState.RAKP2
    return session, bmc, rakp1


def _forged_rakp2(tag: int, status: int = RakpStatus.UNAUTHORIZED_NAME, sidm: int | None = 0
                  ) -> bytes:
    body = bytes((tag, status)) if sidm is None else codec.encode_rakp2(
        codec.Rakp2(tag, status, sidm))
    return codec.encode_unauthenticated(PayloadType.RAKP_2, body)


def test_message_tags_start_at_random_from_the_random_source():
    """The first Open Session tag follows the first random byte, not a constant."""
    tags = set()
    for first in (b"\x00", b"\x7f", b"\xff"):
        session, _, rakp1 = _to_rakp1(first)
        tags.add(codec.decode_rakp1(codec.decode_unauthenticated(rakp1)[1]).tag)
    assert tags == {2, 0x81, 1}  # (first + 1) for Open Session, + 1 again for RAKP1


@pytest.mark.parametrize("sidm", [0, None], ids=["zero-sidm", "tag-and-status-only"])
def test_forged_rakp2_error_without_sidm_loses_to_the_genuine_answer(sidm):
    """Issue 11 finding 3: a datagram with our tag and an error status, sent before the
    BMC's answer, used to end the handshake (and lock the console out for minutes). It
    is held; the genuine RAKP2 that follows wins and the session comes up."""
    session, bmc, rakp1 = _to_rakp1()
    session.receive_datagram(_forged_rakp2(session._tag, sidm=sidm), 0.01)
    assert events(session) == []
    assert session.state is SessionState.RAKP2
    assert session.datagrams_to_send() == []
    session.receive_datagram(bmc.handle(rakp1)[0], 0.02)  # the real answer
    evs = pump(session, bmc, now=0.02)
    assert any(isinstance(e, SessionEstablished) for e in evs), evs
    session.handle_timeout(5.0)  # the held error never resurfaces
    assert session.established


def test_error_reply_with_another_sidm_is_dropped_as_stale():
    session, bmc, rakp1 = _to_rakp1()
    session.receive_datagram(_forged_rakp2(session._tag, sidm=session.console_session_id ^ 1),
                             0.01)
    assert session.dropped["unexpected"] == 1
    session.handle_timeout(1.0)  # a plain timeout: restart from Open Session
    assert session.state is SessionState.OPEN_SESSION
    assert events(session) == []


def test_error_reply_with_another_tag_is_dropped():
    session, _, _ = _to_rakp1()
    session.receive_datagram(_forged_rakp2((session._tag + 1) & 0xFF), 0.01)
    assert session.dropped["unexpected"] == 1
    assert session.state is SessionState.RAKP2


def test_held_error_without_sidm_is_acted_on_at_the_retransmit_deadline():
    """A BMC that sends only tag and status on error is still understood, one
    retransmit interval later, when no genuine answer came."""
    session, _, _ = _to_rakp1()
    session.receive_datagram(_forged_rakp2(session._tag, sidm=None), 0.01)
    assert session.next_deadline() == 1.0
    session.handle_timeout(1.0)
    (ev,) = events(session)
    assert isinstance(ev, SessionTerminated)
    assert isinstance(ev.error, AuthenticationError)
    assert "does not know user 'admin'" in str(ev.error)


def test_error_reply_carrying_our_sidm_fails_at_once():
    """An error that echoes our random SIDm answers this attempt: believed at once."""
    session, _, _ = _to_rakp1()
    session.receive_datagram(_forged_rakp2(session._tag, sidm=session.console_session_id), 0.01)
    (ev,) = events(session)
    assert isinstance(ev, SessionTerminated)
    assert isinstance(ev.error, AuthenticationError)


def test_forged_suite_rejection_without_sidm_cannot_downgrade_the_cipher_suite():
    """A held "no such suite" Open Session error loses to the genuine answer too."""
    session = ClientSession(target(cipher_suites=(17, 3)), random=counting_random())
    bmc = ScriptedBmc()
    session.start(0.0)
    session.receive_datagram(bmc.handle(session.datagrams_to_send()[0])[0], 0.0)
    (osr,) = session.datagrams_to_send()
    forged = codec.encode_unauthenticated(PayloadType.OPEN_SESSION_RESPONSE, bytes(
        (session._tag, RakpStatus.NO_CIPHER_SUITE_MATCH)))
    session.receive_datagram(forged, 0.0)
    session.receive_datagram(bmc.handle(osr)[0], 0.0)
    evs = pump(session, bmc)
    (est,) = [e for e in evs if isinstance(e, SessionEstablished)]
    assert est.cipher_suite == 17


# --------------------------------------------------------------------------- close, misuse


def test_close_sends_close_session_once_and_terminates():
    session, bmc, _ = establish()
    session.send_request(NetFn.APP, Command.GET_DEVICE_ID, b"", 0.0)
    session.datagrams_to_send()
    session.close(0.5)
    (dgram,) = session.datagrams_to_send()
    msg = codec.decode_ipmi_message(bmc.protector.open(dgram).payload)
    assert (msg.cmd, msg.data) == (Command.CLOSE_SESSION, (0x0202).to_bytes(4, "little"))
    assert events(session) == [SessionTerminated("closed", None)]
    assert session.next_deadline() is None
    session.handle_timeout(10.0)
    assert session.datagrams_to_send() == []
    session.close(11.0)  # idempotent
    assert events(session) == []


def test_misuse_raises_local_protocol_error():
    session = ClientSession(target())
    with pytest.raises(LocalProtocolError):
        session.send_request(6, 1, b"", 0.0)
    with pytest.raises(LocalProtocolError):
        session.send_sol(b"\x01\x00\x00\x00", 0.0)
    session.start(0.0)
    with pytest.raises(LocalProtocolError):
        session.start(0.0)


@pytest.mark.parametrize("state", list(SessionState))
@pytest.mark.parametrize("inp", list(SessionInput))
def test_transition_table_is_total(state, inp):
    """Every (state, input) pair either has a row or raises and moves to TERMINATED."""
    session = ClientSession(target())
    session.state = state
    if (state, inp) in _TRANSITIONS:
        session._move(inp)
        assert session.state is _TRANSITIONS[(state, inp)]
    else:
        with pytest.raises(LocalProtocolError):
            session._move(inp)
        assert session.state is SessionState.TERMINATED


def test_sixty_four_outstanding_requests_is_the_limit():
    session, _, _ = establish()
    seqs = set()
    for _ in range(64):
        session.send_request(NetFn.APP, Command.GET_DEVICE_ID, b"", 0.0)
    for p in session._pending.values():
        seqs.add(p.rq_seq)
    assert seqs == set(range(64))
    with pytest.raises(LocalProtocolError):
        session.send_request(NetFn.APP, Command.GET_DEVICE_ID, b"", 0.0)


# --------------------------------------------------------------------------- transcript


def test_replays_the_ipmitool_conversation_with_real_ipmi_sim_datagrams():
    """Our core, given ipmitool's SIDm and Rm, accepts every datagram ipmi_sim sent in a
    recorded CS3 session, and what it sends decrypts to what ipmitool sent."""
    from tests.conftest import load_fixture

    fx = load_fixture("ipmi_sim-ipmitool/cs3-sol-session.json")
    sess = fx["session"]
    draws = iter([b"\x00", int(sess["console_session_id"], 16).to_bytes(4, "little"),
                  H(sess["rm"])])
    session = ClientSession(target(cipher_suites=(3,)), random=lambda n: next(draws, bytes(n)))
    bmc_side = PacketProtector(CIPHER_SUITES[3], H(sess["k1"]), H(sess["k2"]))
    session.start(0.0)
    client_packets = 0
    for p in fx["packets"]:
        raw = H(p["hex"])
        plain = H(p["decoded"]["plaintext_hex"])
        if p["dir"] == "bmc->client":
            if not codec.is_ipmi15(raw) and raw[5] & 0x3F >= 0x10:  # setup: our tag, not 0
                header, payload = codec.decode_unauthenticated(raw)
                raw = codec.encode_unauthenticated(header.payload_type,
                                                   bytes((session._tag,)) + payload[1:])
            session.receive_datagram(raw, 0.0)
            continue
        client_packets += 1
        if codec.is_ipmi15(raw) or raw[5] & 0x3F >= 0x10:
            (ours,) = session.datagrams_to_send()  # the core sent its own setup message
            if raw[5] & 0x3F in (0x12, 0x14):  # RAKP1/3: same bytes apart from the tag
                assert codec.decode_unauthenticated(ours)[1][1:] == plain[1:]
            continue
        if session.state is SessionState.PRIVILEGE:  # Set Session Privilege: ours
            (ours,) = session.datagrams_to_send()
        elif raw[5] & 0x3F == PayloadType.SOL:
            session.send_sol(plain, 0.0)
            (ours,) = session.datagrams_to_send()
        else:
            msg = codec.decode_ipmi_message(plain)
            if msg.cmd == Command.CLOSE_SESSION:
                session.close(0.0)
            else:
                session.send_request(msg.netfn, msg.cmd, msg.data, 0.0)
            (ours,) = session.datagrams_to_send()
        assert bmc_side.open(ours).payload == plain
    assert client_packets == 16
    evs = events(session)
    assert evs[0] == SessionEstablished(3, 0x82, Privilege.ADMINISTRATOR)
    sol = [e.payload for e in evs if isinstance(e, SolPayloadReceived)]
    assert sol[0] == b"\x01\x00\x00\x00hello from host\r\n"
    responses = [e.message for e in evs if isinstance(e, ResponseReceived)]
    assert [m.cmd for m in responses] == [0x3E, 0x01, 0x00, 0x00, 0x48, 0x49]
    assert evs[-1] == SessionTerminated("closed", None)
    # only the Close Session answer, which arrives after we stopped listening
    assert session.dropped == dict.fromkeys(session.dropped, 0) | {"unexpected": 1}
