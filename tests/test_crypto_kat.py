"""Known-answer tests: the digest's section 10 values and real ipmitool transcripts."""

from __future__ import annotations

import pytest

from solgate.errors import ProtocolError
from solgate.ipmi import codec
from solgate.ipmi.crypto import (
    CIPHER_SUITES,
    AuthAlgorithm,
    PacketProtector,
    derive_k1_k2,
    rakp2_auth_code,
    rakp3_auth_code,
    rakp4_icv,
    session_integrity_key,
)
from tests.conftest import load_fixture
from tests.sim_helpers import PATHS, use_path

H = bytes.fromhex


@pytest.fixture(autouse=True, params=PATHS)
def packet_path(request, monkeypatch):
    """Every known answer holds for the pure-Python reference and the compiled twin."""
    use_path(request.param, monkeypatch)
    return request.param
ADMIN, PASSWORD, ROLE = b"admin", b"password", 0x14

CS3 = dict(
    sidm=0xA0A2A3A4, sidc=0x00000202, rm=H("000102030405060708090a0b0c0d0e0f"),
    rc=H("dfc27b9d31a678968b428a1b62e5cfab"), guid=H("a123456789abcdefa123456789abcdef"),
    rakp2="48452c279251dc08b5bb1b40a366b7203559d13e",
    rakp3="44dba17e0cb028b583999a7f2854afea84ccd46d",
    sik="94275dac1c44f5ec949b35efa26e03a25d8d072f",
    k1="d996bd6dc35bf77f1c039621d7e7172cdd4b41a7",
    k2="74cf5b2c72d14e8f339fe2f89410d5488e91f65b",
    icv="eee0d79664745dd4e41803ea", alg=AuthAlgorithm.HMAC_SHA1,
)
CS17 = dict(
    sidm=0xA0A2A3A4, sidc=0x714DB653, rm=H("b157479a2887931b28c95124c96ca418"),
    rc=H("a34f03f2b4b93d53353fa8eee332e49e"), guid=H("00112233445566778899aabbccddeeff"),
    rakp2="a03ddb3ade1d17311779ab79018465ce4f495ee6411906fe5578972f1fcd9ff8",
    rakp3="4e4909c34f0546b55b4ae38c70c48766122ce78ecc407f678504a71ea70c0142",
    sik="71acfe73a69d8343b9f46652b1f4b3a0fd0dbd9fec683c0e0644cc64910c752a",
    k1="95016d92c7ebd0d913ec7c39914e82da73025c9d9f7bf2908ce382771b551403",
    k2="64491f1e46af7c925885ed22e2ee2d2e0f4286a5c7da7ab5379c8474a836c19d",
    icv="ebc37b7f5ab9e381e3a280775c12d883", alg=AuthAlgorithm.HMAC_SHA256,
)


@pytest.mark.parametrize("v", [CS3, CS17], ids=["cs3", "cs17"])
def test_rakp_key_exchange_known_answers(v):
    alg = v["alg"]
    assert rakp2_auth_code(alg, PASSWORD, v["sidm"], v["sidc"], v["rm"], v["rc"], v["guid"],
                           ROLE, ADMIN).hex() == v["rakp2"]
    assert rakp3_auth_code(alg, PASSWORD, v["sidm"], v["rc"], ROLE, ADMIN).hex() == v["rakp3"]
    sik = session_integrity_key(alg, PASSWORD, None, v["rm"], v["rc"], ROLE, ADMIN)
    assert sik.hex() == v["sik"]
    k1, k2 = derive_k1_k2(alg, sik)
    assert (k1.hex(), k2.hex()) == (v["k1"], v["k2"])
    assert rakp4_icv(alg, sik, v["rm"], v["sidc"], v["guid"]).hex() == v["icv"]


def test_password_padding_to_20_bytes_gives_the_same_hmac():
    padded = PASSWORD + bytes(12)
    v = CS3
    assert rakp3_auth_code(v["alg"], padded, v["sidm"], v["rc"], ROLE, ADMIN).hex() == v["rakp3"]


def test_kg_keys_the_sik_but_not_rakp2():
    v = CS3
    kg = b"0123456789abcdefghij"
    with_kg = session_integrity_key(v["alg"], PASSWORD, kg, v["rm"], v["rc"], ROLE, ADMIN)
    assert with_kg.hex() != v["sik"]
    all_zero = session_integrity_key(v["alg"], PASSWORD, bytes(20), v["rm"], v["rc"], ROLE, ADMIN)
    assert all_zero.hex() == v["sik"]


def _fixed_iv(iv: bytes):
    return lambda n: iv


def test_cs3_encrypted_sol_packet_byte_for_byte():
    expected = H(
        "0600ff0706c1020200000f0000003000"
        "8e42adc4191533b016e0084eb3be87b5"
        "837fa4a5d7702fc25d43781ba1d7067b2ebdf93b4c01d64faa486e8b4f614389"
        "ffff0207" "56e71383576660b9286702f8"
    )
    prot = PacketProtector(CIPHER_SUITES[3], H(CS3["k1"]), H(CS3["k2"]),
                           random=_fixed_iv(H("8e42adc4191533b016e0084eb3be87b5")))
    payload = b"\x01\x00\x00\x00hello from client\r"
    assert prot.seal(codec.PayloadType.SOL, 0x202, 15, payload) == expected
    opened = prot.open(expected)
    assert opened.payload == payload
    assert (opened.header.seq, opened.header.session_id) == (15, 0x202)


def test_cs17_packet_sent_by_ipmitool_opens():
    wire = H(
        "0600ff0706c153b64d710a0000003000"
        "72cccbd470e6d61d47d7f1c55bef28fa"
        "f0e2bf130ba6ec5ead81cba50294a6b621d16512ae137050aeef6a57fcc4b17d"
        "ffff0207" "4def54528e32b6836bb5a677ab520dbc"
    )
    prot = PacketProtector(CIPHER_SUITES[17], H(CS17["k1"]), H(CS17["k2"]))
    assert prot.open(wire).payload == b"\x01\x00\x00\x00hello-from-ipmitool\r"
    # And sealing the same plaintext with the same IV reproduces ipmitool's bytes.
    prot_iv = PacketProtector(CIPHER_SUITES[17], H(CS17["k1"]), H(CS17["k2"]),
                              random=_fixed_iv(wire[16:32]))
    assert prot_iv.seal(1, 0x714DB653, 10, b"\x01\x00\x00\x00hello-from-ipmitool\r") == wire


def test_tampered_packet_is_refused():
    prot = PacketProtector(CIPHER_SUITES[3], H(CS3["k1"]), H(CS3["k2"]))
    wire = bytearray(prot.seal(1, 5, 1, b"\x01\x00\x00\x00x"))
    wire[20] ^= 1
    with pytest.raises(ProtocolError):
        prot.open(bytes(wire))


@pytest.mark.parametrize("name", [
    "ipmi_sim-ipmitool/cs3-sol-session.json",
    "ipmi_sim-ipmitool/cs3-sol-deactivate.json",
    "ipmi_sim-ipmitool/cs3-sol-activate-busy.json",
    "ipmi_sim-ipmiconsole/ipmiconsole-cs3-sol-session.json",
])
def test_real_transcripts_verify_and_decrypt(name):
    """Derive the keys from the handshake bytes, then open every session packet."""
    fx = load_fixture(name)
    pkts = [(p["dir"], H(p["hex"])) for p in fx["packets"]]
    setup = {}
    for _direction, raw in pkts:
        if codec.is_ipmi15(raw) or codec.is_asf(raw):
            continue
        hdr = codec.decode_rmcpplus_header(raw)
        if hdr.session_id == 0 and hdr.payload_type >= 0x10:
            setup.setdefault(hdr.payload_type, codec.decode_unauthenticated(raw)[1])
    osreq = codec.decode_open_session_request(setup[0x10])
    osrsp = codec.decode_open_session_response(setup[0x11])
    r1 = codec.decode_rakp1(setup[0x12])
    r2 = codec.decode_rakp2(setup[0x13])
    r3 = codec.decode_rakp3(setup[0x14])
    r4 = codec.decode_rakp4(setup[0x15])
    alg = AuthAlgorithm.HMAC_SHA1
    pw = fx["password"].encode()
    sidm, sidc = osreq.console_session_id, osrsp.bmc_session_id
    assert r2.key_exchange_code == rakp2_auth_code(
        alg, pw, sidm, sidc, r1.console_random, r2.bmc_random, r2.bmc_guid, r1.role,
        r1.username)
    assert r3.key_exchange_code == rakp3_auth_code(alg, pw, sidm, r2.bmc_random, r1.role,
                                                   r1.username)
    sik = session_integrity_key(alg, pw, None, r1.console_random, r2.bmc_random, r1.role,
                                r1.username)
    assert sik.hex() == fx["session"]["sik"]
    assert r4.integrity_check_value == rakp4_icv(alg, sik, r1.console_random, sidc,
                                                 r2.bmc_guid)
    k1, k2 = derive_k1_k2(alg, sik)
    prot = PacketProtector(CIPHER_SUITES[fx["cipher_suite"]], k1, k2)
    opened = 0
    for p in fx["packets"]:
        raw = H(p["hex"])
        if codec.is_ipmi15(raw):
            continue
        hdr = codec.decode_rmcpplus_header(raw)
        if hdr.session_id == 0:
            continue
        expected_sid = sidc if p["dir"] == "client->bmc" else sidm
        if hdr.session_id != expected_sid:
            continue  # another client's packets in the same capture
        pkt = prot.open(raw)
        assert pkt.payload.hex() == p["decoded"]["plaintext_hex"]
        opened += 1
    assert opened == fx["self_check"]["authenticated_packets"]


@pytest.mark.parametrize("suite", [2, 3, 7, 8, 16, 17])
def test_auth_code_is_the_standard_hmac_for_every_integrity_algorithm(suite):
    """The per-packet HMAC (pre-keyed hash copies) equals the library's, for each key."""
    import hashlib
    import hmac

    name, length = {2: ("sha1", 12), 3: ("sha1", 12), 7: ("md5", 16), 8: ("md5", 16),
                    16: ("sha256", 16), 17: ("sha256", 16)}[suite]
    for k1 in (bytes(range(hashlib.new(name).digest_size)), b"\xff" * 70, b"k"):
        prot = PacketProtector(CIPHER_SUITES[suite], k1, bytes(range(20)))
        for payload in (b"", b"\x00\x01\xff\x00", bytes(range(256)) * 2):
            wire = prot.seal(1, 0x1234, 9, payload)
            assert wire[-length:] == hmac.digest(k1, wire[4:-length], name)[:length]
            assert prot.open(wire).payload == payload


def test_ivs_from_the_system_random_never_repeat():
    """IVs come from os.urandom in batches; every sealed packet still gets a fresh one."""
    prot = PacketProtector(CIPHER_SUITES[17], H(CS17["k1"]), H(CS17["k2"]))
    ivs = [prot.seal(1, 5, n, b"\x00\x01\x02\x00")[16:32] for n in range(1, 1001)]
    assert len(set(ivs)) == len(ivs)
