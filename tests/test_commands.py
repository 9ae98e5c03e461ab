"""IPMI command builders and parsers against the bytes real BMCs sent (ipmi_sim, digest)."""

from __future__ import annotations

import pytest

from solgate.errors import (
    CommandError,
    PayloadActiveElsewhere,
    PayloadDisabled,
    PayloadError,
    PrivilegeError,
    ProtocolError,
)
from solgate.ipmi import commands as c
from solgate.ipmi.codec import IpmiMessage, Privilege, encode_ipmi_message
from solgate.ipmi.crypto import CIPHER_SUITES

H = bytes.fromhex
LABEL = "BMC 10.0.0.5:623"


def rsp(req: c.Request, data: str) -> IpmiMessage:
    return IpmiMessage(req.netfn | 1, req.cmd, 1, H(data))


def test_activate_request_bytes_match_the_digest():
    req = c.activate_payload(1, c.sol_activate_aux(CIPHER_SUITES[3]))
    wire = encode_ipmi_message(IpmiMessage(req.netfn, req.cmd, 5, req.data))
    assert wire == H("2018c881144801 01c6000000 5b".replace(" ", ""))


@pytest.mark.parametrize(("suite", "aux"), [(17, 0xC6), (3, 0xC6), (2, 0x46), (1, 0x06)])
def test_aux_byte_follows_the_negotiated_suite(suite, aux):
    assert c.sol_activate_aux(CIPHER_SUITES[suite]) == aux
    assert c.sol_activate_aux(CIPHER_SUITES[suite], override=0x08) == 0x08


def test_activate_response_from_ipmi_sim():
    act = c.parse_activate_payload(rsp(c.activate_payload(), "00 00000000 2000 0040 2923 ffff"
                                       .replace(" ", "")), LABEL, session_port=9001)
    assert act == c.SolActivation(inbound_size=32, outbound_size=16384, port=9001, vlan=None,
                                  max_characters=28, aux=bytes(4))


def test_activate_byte_swapped_port_means_the_session_port():
    msg = rsp(c.activate_payload(), "00" "00000000" "000f" "ff00" "026f" "0700")
    act = c.parse_activate_payload(msg, LABEL, session_port=623)
    assert act.port == 623
    assert act.vlan == 7
    assert act.max_characters == c.DEFAULT_SOL_CHARACTERS  # inbound 0x0f00 is out of range


def test_activate_other_port_is_refused_unless_solport():
    msg = rsp(c.activate_payload(), "00" "00000000" "2000" "ff00" "e525" "ffff")
    with pytest.raises(PayloadError, match="port 9701"):
        c.parse_activate_payload(msg, LABEL, session_port=623)
    ok = c.parse_activate_payload(msg, LABEL, session_port=623,
                                  workarounds=frozenset({"solport"}))
    assert ok.port == 623


@pytest.mark.parametrize(("inbound", "chars"), [(5, 1), (32, 28), (259, 255), (4, 32),
                                                (260, 32), (16384, 32), (0, 32)])
def test_characters_per_packet_policy(inbound, chars):
    assert c.sol_characters_per_packet(inbound) == chars


def test_solpayloadsize_workaround_forces_32():
    assert c.sol_characters_per_packet(100, frozenset({"solpayloadsize"})) == 32


@pytest.mark.parametrize(("cc", "exc", "words"), [
    ("80", PayloadActiveElsewhere, "already active in another session"),
    ("81", PayloadDisabled, "disabled"),
    ("82", PayloadError, "activation limit"),
    ("84", PayloadError, "with encryption"),
    ("d4", PrivilegeError, "privilege is too low"),
    ("cc", CommandError, r"INVALID_DATA_FIELD\(0xcc\)"),
])
def test_activate_completion_codes(cc, exc, words):
    with pytest.raises(exc, match=words) as info:
        c.parse_activate_payload(rsp(c.activate_payload(), cc), LABEL, session_port=623)
    assert LABEL in str(info.value)
    assert info.value.code == int(cc, 16)


def test_activate_response_of_wrong_length_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        c.parse_activate_payload(rsp(c.activate_payload(), "00" + "00" * 11), LABEL,
                                 session_port=623)


def test_deactivate():
    req = c.deactivate_payload()
    assert req.data == H("010100000000")
    assert c.parse_deactivate_payload(rsp(req, "00"), LABEL) is True
    assert c.parse_deactivate_payload(rsp(req, "80"), LABEL) is False
    with pytest.raises(PayloadDisabled):
        c.parse_deactivate_payload(rsp(req, "81"), LABEL)
    with pytest.raises(CommandError, match="Deactivate Payload"):
        c.parse_deactivate_payload(rsp(req, "c1"), LABEL)


def test_device_id_from_ipmi_sim():
    dev = c.parse_device_id(rsp(c.get_device_id(), "0000030908029f911200020f00000000"), LABEL)
    assert dev == c.DeviceId(device_id=0, device_revision=3, firmware="9.08", ipmi_version="2.0",
                             manufacturer_id=0x1291, product_id=0x0F02, available=True,
                             aux_firmware=bytes(4))


def test_chassis_status_and_control():
    st = c.parse_chassis_status(rsp(c.get_chassis_status(), "00 41 10 08".replace(" ", "")),
                                LABEL)
    assert st.power_on
    assert st.restore_policy == "always-on"
    assert st.faults == ("fan fault",)
    assert not c.parse_chassis_status(rsp(c.get_chassis_status(), "00000000"), LABEL).power_on
    assert [c.chassis_control(a).data for a in c.ChassisAction] == [bytes((i,)) for i in range(6)]
    c.parse_chassis_control(rsp(c.chassis_control(c.ChassisAction.CYCLE), "00"), LABEL)
    with pytest.raises(CommandError, match="Chassis Control"):
        c.parse_chassis_control(rsp(c.chassis_control(c.ChassisAction.CYCLE), "c1"), LABEL)
    with pytest.raises(ProtocolError):
        c.parse_chassis_status(rsp(c.get_chassis_status(), "0001"), LABEL)


def test_payload_status_and_instance_info_from_ipmi_sim():
    idle = c.parse_payload_activation_status(rsp(c.get_payload_activation_status(), "00010000"),
                                             LABEL)
    busy = c.parse_payload_activation_status(rsp(c.get_payload_activation_status(), "00010100"),
                                             LABEL)
    assert (idle.is_active(), busy.is_active(), busy.capacity) == (False, True, 1)
    zero = c.parse_payload_activation_status(rsp(c.get_payload_activation_status(), "00000080"),
                                             LABEL)
    assert zero.capacity == 1  # Dell reports 0
    assert zero.active_instances == frozenset({16})
    info = c.parse_payload_instance_info(
        rsp(c.get_payload_instance_info(), "00" "82010000" "01" "00000000000000"), LABEL)
    assert (info.owner_session_id, info.port_number, info.active) == (0x182, 1, True)
    assert c.get_payload_instance_info().data == H("0101")


def test_sol_config_parameters_optional():
    req = c.get_sol_config(c.SolParameter.RETRY)
    assert (req.netfn, req.cmd, req.data) == (0x0C, 0x22, H("0e040000"))
    assert c.parse_sol_config(rsp(req, "80"), LABEL) is None
    params = {
        1: c.parse_sol_config(rsp(req, "001101"), LABEL),
        2: H("c2"), 3: H("1401"), 4: H("070a"), 5: H("0a"), 6: H("00"), 7: H("01"),
        8: H("6f02"),
    }
    cfg = c.SolConfiguration.from_parameters(params)
    assert cfg == c.SolConfiguration(
        enabled=True, force_encryption=True, force_authentication=True, privilege=2,
        accumulate_interval_ms=100, send_threshold=1, retry_count=7, retry_interval_ms=100,
        bit_rate="115200", volatile_bit_rate="serial-setting", channel=1, port=623)
    assert c.SolConfiguration.from_parameters({1: H("01"), 2: None, 3: b""}) == \
        c.SolConfiguration(enabled=True)


def test_session_privilege():
    req = c.set_session_privilege(Privilege.ADMINISTRATOR)
    assert req.data == b"\x04"
    assert c.parse_session_privilege(rsp(req, "0004"), LABEL) is Privilege.ADMINISTRATOR
    with pytest.raises(PrivilegeError):
        c.parse_session_privilege(rsp(req, "81"), LABEL)


def test_cipher_suite_records():
    req = c.get_channel_cipher_suites(2)
    assert req.data == H("0e0082")
    chunk = c.parse_channel_cipher_suites_chunk(
        rsp(req, "00" "01" "c0 03 01 41 81 c0 11 03 44 81".replace(" ", "")), LABEL)
    assert c.parse_cipher_suite_records(chunk + H("c1 12 a2 02 00 03 44 81".replace(" ", ""))) \
        == (3, 17, 0x12)
