"""RMCP, IPMI 1.5/2.0 session framing and IPMI messages: bytes <-> frozen dataclasses.

Theory of operation
-------------------
This module has no state and no cryptography. It knows the *layout* of every datagram a
console server exchanges with a BMC (see ipmi-sol-protocol.md sections 1, 2 and 5) and
nothing about whether a datagram is allowed now; that is `session.py`'s job.

Contract:
- Every ``decode_*`` function takes exactly the bytes of one structure, consumes all of
  them and raises `ProtocolError` (never `IndexError`, `struct.error` or `ValueError`)
  for anything malformed or with trailing bytes.
- Every ``encode_*`` function is the exact inverse of its decoder.
- All multi-byte fields are little-endian, as on the wire.

The session trailer and encryption live in `crypto.py` (`PacketProtector`), because their
lengths depend on the negotiated algorithms.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from solgate.errors import ProtocolError

RMCP_IPMI_HEADER = b"\x06\x00\xff\x07"
RMCP_ASF_CLASS = 0x06
AUTH_TYPE_NONE = 0x00
AUTH_TYPE_RMCPPLUS = 0x06
BMC_SLAVE_ADDRESS = 0x20
REMOTE_CONSOLE_SWID = 0x81
CURRENT_CHANNEL = 0x0E
NEXT_HEADER = 0x07

_U32 = struct.Struct("<I")
_RMCPPLUS_HEADER = struct.Struct("<4sBBIIH")  # rmcp, auth type, payload type, sid, seq, len
RMCPPLUS_HEADER_LEN = _RMCPPLUS_HEADER.size  # 16


class _HexEnum(IntEnum):
    """Wire codes print as NAME(0xNN) so error messages show both."""

    def __str__(self) -> str:
        return f"{self.name}(0x{int(self):02x})"

    @classmethod
    def describe(cls, value: int) -> str:
        """Name a code even when it is not one we know."""
        try:
            return str(cls(value))
        except ValueError:
            return f"0x{value:02x}"


class PayloadType(_HexEnum):
    IPMI = 0x00
    SOL = 0x01
    OEM_EXPLICIT = 0x02
    OPEN_SESSION_REQUEST = 0x10
    OPEN_SESSION_RESPONSE = 0x11
    RAKP_1 = 0x12
    RAKP_2 = 0x13
    RAKP_3 = 0x14
    RAKP_4 = 0x15


PAYLOAD_ENCRYPTED = 0x80
PAYLOAD_AUTHENTICATED = 0x40
PAYLOAD_TYPE_MASK = 0x3F


class Privilege(_HexEnum):
    HIGHEST = 0x00
    CALLBACK = 0x01
    USER = 0x02
    OPERATOR = 0x03
    ADMINISTRATOR = 0x04
    OEM = 0x05


NAME_ONLY_LOOKUP = 0x10


class NetFn(_HexEnum):
    CHASSIS = 0x00
    APP = 0x06
    TRANSPORT = 0x0C


class Command(_HexEnum):
    """(netfn, cmd) pairs are given by the callers; these are the App/Chassis/Transport cmds."""

    GET_DEVICE_ID = 0x01
    GET_CHANNEL_AUTH_CAPABILITIES = 0x38
    SET_SESSION_PRIVILEGE_LEVEL = 0x3B
    CLOSE_SESSION = 0x3C
    ACTIVATE_PAYLOAD = 0x48
    DEACTIVATE_PAYLOAD = 0x49
    GET_PAYLOAD_ACTIVATION_STATUS = 0x4A
    GET_PAYLOAD_INSTANCE_INFO = 0x4B
    GET_CHANNEL_PAYLOAD_SUPPORT = 0x4E
    GET_CHANNEL_PAYLOAD_VERSION = 0x4F
    GET_CHANNEL_CIPHER_SUITES = 0x54


class ChassisCommand(_HexEnum):
    GET_CHASSIS_STATUS = 0x01
    CHASSIS_CONTROL = 0x02


class TransportCommand(_HexEnum):
    SET_SOL_CONFIGURATION = 0x21
    GET_SOL_CONFIGURATION = 0x22


class CompletionCode(_HexEnum):
    OK = 0x00
    # 0x80-0x8F are command specific; the names here are the SOL/session meanings.
    COMMAND_SPECIFIC_80 = 0x80
    COMMAND_SPECIFIC_81 = 0x81
    COMMAND_SPECIFIC_82 = 0x82
    COMMAND_SPECIFIC_83 = 0x83
    COMMAND_SPECIFIC_84 = 0x84
    INVALID_SESSION_ID = 0x87
    NODE_BUSY = 0xC0
    INVALID_COMMAND = 0xC1
    INVALID_FOR_LUN = 0xC2
    TIMEOUT = 0xC3
    OUT_OF_SPACE = 0xC4
    RESERVATION_CANCELLED = 0xC5
    REQUEST_TRUNCATED = 0xC6
    REQUEST_LENGTH_INVALID = 0xC7
    REQUEST_LENGTH_EXCEEDED = 0xC8
    PARAMETER_OUT_OF_RANGE = 0xC9
    CANNOT_RETURN_BYTES = 0xCA
    NOT_PRESENT = 0xCB
    INVALID_DATA_FIELD = 0xCC
    ILLEGAL_FOR_SENSOR = 0xCD
    RESPONSE_NOT_PROVIDED = 0xCE
    DUPLICATE_REQUEST = 0xCF
    SDR_UPDATE_MODE = 0xD0
    FIRMWARE_UPDATE_MODE = 0xD1
    INITIALIZATION_IN_PROGRESS = 0xD2
    DESTINATION_UNAVAILABLE = 0xD3
    INSUFFICIENT_PRIVILEGE = 0xD4
    NOT_SUPPORTED_IN_STATE = 0xD5
    DISABLED = 0xD6
    UNSPECIFIED = 0xFF


class RakpStatus(_HexEnum):
    """RMCP+ status codes of Open Session Response and RAKP 2/3/4 (digest section 2.5)."""

    NO_ERRORS = 0x00
    INSUFFICIENT_RESOURCES = 0x01
    INVALID_SESSION_ID = 0x02
    INVALID_PAYLOAD_TYPE = 0x03
    INVALID_AUTHENTICATION_ALGORITHM = 0x04
    INVALID_INTEGRITY_ALGORITHM = 0x05
    NO_MATCHING_AUTHENTICATION_PAYLOAD = 0x06
    NO_MATCHING_INTEGRITY_PAYLOAD = 0x07
    INACTIVE_SESSION_ID = 0x08
    INVALID_ROLE = 0x09
    UNAUTHORIZED_ROLE_OR_PRIVILEGE = 0x0A
    INSUFFICIENT_RESOURCES_FOR_ROLE = 0x0B
    INVALID_NAME_LENGTH = 0x0C
    UNAUTHORIZED_NAME = 0x0D
    UNAUTHORIZED_GUID = 0x0E
    INVALID_INTEGRITY_CHECK_VALUE = 0x0F
    INVALID_CONFIDENTIALITY_ALGORITHM = 0x10
    NO_CIPHER_SUITE_MATCH = 0x11
    ILLEGAL_PARAMETER = 0x12


def checksum(data: bytes) -> int:
    """Two's-complement checksum: data plus checksum sums to zero mod 256."""
    return -sum(data) & 0xFF


def _need(data: bytes, n: int, what: str) -> None:
    if len(data) != n:
        raise ProtocolError(f"{what}: expected {n} bytes, got {len(data)}")


def _at_least(data: bytes, n: int, what: str) -> None:
    if len(data) < n:
        raise ProtocolError(f"{what}: expected at least {n} bytes, got {len(data)}")


# --------------------------------------------------------------------------- IPMI messages


@dataclass(frozen=True, slots=True)
class IpmiMessage:
    """One IPMI LAN message, request or response (odd netfn). Responses keep the
    completion code as ``data[0]``; `completion_code` and `body` split it out."""

    netfn: int
    cmd: int
    rq_seq: int
    data: bytes = b""
    rs_addr: int = BMC_SLAVE_ADDRESS
    rq_addr: int = REMOTE_CONSOLE_SWID
    rs_lun: int = 0
    rq_lun: int = 0

    @property
    def is_response(self) -> bool:
        return bool(self.netfn & 1)

    @property
    def completion_code(self) -> int:
        if not self.data:
            raise ProtocolError("response carries no completion code")
        return self.data[0]

    @property
    def body(self) -> bytes:
        """Response data after the completion code."""
        return self.data[1:]


def encode_ipmi_message(msg: IpmiMessage) -> bytes:
    """Request order: rsAddr, netFn/rsLUN, chk1, rqAddr, rqSeq/rqLUN, cmd, data, chk2.
    A response swaps the addresses: rqAddr, netFn/rqLUN, chk1, rsAddr, rqSeq/rsLUN, ..."""
    if not 0 <= msg.rq_seq < 64:
        raise ValueError(f"rqSeq {msg.rq_seq} is not 0..63")
    if msg.is_response:
        first = bytes((msg.rq_addr, (msg.netfn << 2) | msg.rq_lun))
        second = bytes((msg.rs_addr, (msg.rq_seq << 2) | msg.rs_lun, msg.cmd)) + msg.data
    else:
        first = bytes((msg.rs_addr, (msg.netfn << 2) | msg.rs_lun))
        second = bytes((msg.rq_addr, (msg.rq_seq << 2) | msg.rq_lun, msg.cmd)) + msg.data
    return first + bytes((checksum(first),)) + second + bytes((checksum(second),))


def decode_ipmi_message(data: bytes, *, check_checksums: bool = True) -> IpmiMessage:
    _at_least(data, 7, "IPMI message")
    if check_checksums:
        if checksum(data[:2]) != data[2]:
            raise ProtocolError("IPMI message: header checksum mismatch")
        if checksum(data[3:-1]) != data[-1]:
            raise ProtocolError("IPMI message: data checksum mismatch")
    netfn = data[1] >> 2
    lun1 = data[1] & 3
    seq = data[4] >> 2
    lun2 = data[4] & 3
    body = bytes(data[6:-1])
    if netfn & 1:
        if not body:
            raise ProtocolError("IPMI response without a completion code")
        return IpmiMessage(
            netfn=netfn, cmd=data[5], rq_seq=seq, data=body,
            rq_addr=data[0], rq_lun=lun1, rs_addr=data[3], rs_lun=lun2,
        )
    return IpmiMessage(
        netfn=netfn, cmd=data[5], rq_seq=seq, data=body,
        rs_addr=data[0], rs_lun=lun1, rq_addr=data[3], rq_lun=lun2,
    )


# --------------------------------------------------------------------------- IPMI 1.5 framing


@dataclass(frozen=True, slots=True)
class Ipmi15Packet:
    """Pre-session IPMI 1.5 packet (auth type none); carries Get Channel Auth Capabilities."""

    message: bytes
    session_id: int = 0
    seq: int = 0


def encode_ipmi15(packet: Ipmi15Packet) -> bytes:
    if len(packet.message) > 255:
        raise ValueError("IPMI 1.5 message longer than 255 bytes")
    return (
        RMCP_IPMI_HEADER
        + bytes((AUTH_TYPE_NONE,))
        + _U32.pack(packet.seq)
        + _U32.pack(packet.session_id)
        + bytes((len(packet.message),))
        + packet.message
    )


def decode_ipmi15(datagram: bytes) -> Ipmi15Packet:
    _at_least(datagram, 14, "IPMI 1.5 packet")
    if datagram[:4] != RMCP_IPMI_HEADER:
        raise ProtocolError("not an RMCP IPMI-class packet")
    if datagram[4] != AUTH_TYPE_NONE:
        raise ProtocolError(f"IPMI 1.5 auth type 0x{datagram[4]:02x} is not supported")
    length = datagram[13]
    _need(datagram[14:], length, "IPMI 1.5 message")
    return Ipmi15Packet(
        message=bytes(datagram[14:]),
        seq=_U32.unpack_from(datagram, 5)[0],
        session_id=_U32.unpack_from(datagram, 9)[0],
    )


# --------------------------------------------------------------------------- RMCP+ framing


@dataclass(frozen=True, slots=True)
class RmcpPlusHeader:
    """The 16 bytes before an RMCP+ payload; `payload_length` counts IV and pad if encrypted."""

    payload_type: int
    encrypted: bool
    authenticated: bool
    session_id: int
    seq: int
    payload_length: int


def encode_rmcpplus_header(header: RmcpPlusHeader) -> bytes:
    ptype = header.payload_type & PAYLOAD_TYPE_MASK
    if header.encrypted:
        ptype |= PAYLOAD_ENCRYPTED
    if header.authenticated:
        ptype |= PAYLOAD_AUTHENTICATED
    return _RMCPPLUS_HEADER.pack(
        RMCP_IPMI_HEADER, AUTH_TYPE_RMCPPLUS, ptype,
        header.session_id, header.seq, header.payload_length,
    )


def unpack_rmcpplus_header(datagram: bytes) -> tuple[int, int, int, int]:
    """The fixed header as (payload type byte with its encrypted and authenticated bits,
    session ID, sequence number, payload length): `decode_rmcpplus_header` without the
    object, for the per-packet path. Raises what it raises."""
    if len(datagram) < RMCPPLUS_HEADER_LEN:
        _at_least(datagram, RMCPPLUS_HEADER_LEN, "RMCP+ header")
    rmcp, auth_type, ptype, sid, seq, length = _RMCPPLUS_HEADER.unpack_from(datagram)
    if rmcp != RMCP_IPMI_HEADER:
        raise ProtocolError("not an RMCP IPMI-class packet")
    if auth_type != AUTH_TYPE_RMCPPLUS:
        raise ProtocolError(f"auth type 0x{auth_type:02x} is not RMCP+")
    if ptype & PAYLOAD_TYPE_MASK == PayloadType.OEM_EXPLICIT:
        raise ProtocolError("OEM explicit payloads are not supported")
    if RMCPPLUS_HEADER_LEN + length > len(datagram):
        raise ProtocolError("RMCP+ payload length runs past the datagram")
    return ptype, sid, seq, length


def decode_rmcpplus_header(datagram: bytes) -> RmcpPlusHeader:
    """Parse the fixed header; the caller checks the rest of the datagram's length."""
    ptype, sid, seq, length = unpack_rmcpplus_header(datagram)
    return RmcpPlusHeader(
        payload_type=ptype & PAYLOAD_TYPE_MASK,
        encrypted=bool(ptype & PAYLOAD_ENCRYPTED),
        authenticated=bool(ptype & PAYLOAD_AUTHENTICATED),
        session_id=sid,
        seq=seq,
        payload_length=length,
    )


def encode_unauthenticated(payload_type: int, payload: bytes, session_id: int = 0,
                           seq: int = 0) -> bytes:
    """A whole RMCP+ datagram without trailer: session setup, or a suite with no integrity."""
    header = RmcpPlusHeader(payload_type, False, False, session_id, seq, len(payload))
    return encode_rmcpplus_header(header) + payload


def decode_unauthenticated(datagram: bytes) -> tuple[RmcpPlusHeader, bytes]:
    header = decode_rmcpplus_header(datagram)
    if header.authenticated or header.encrypted:
        raise ProtocolError("expected an unauthenticated, unencrypted RMCP+ packet")
    _need(datagram[RMCPPLUS_HEADER_LEN:], header.payload_length, "RMCP+ payload")
    return header, bytes(datagram[RMCPPLUS_HEADER_LEN:])


def is_ipmi15(datagram: bytes) -> bool:
    """True for an IPMI 1.5 (pre-session) datagram, False for RMCP+; no validation."""
    return len(datagram) > 4 and datagram[4] != AUTH_TYPE_RMCPPLUS


def is_asf(datagram: bytes) -> bool:
    return len(datagram) >= 4 and datagram[3] & 0x1F == RMCP_ASF_CLASS


# --------------------------------------------------------------------------- session setup


def _algorithm_record(kind: int, algorithm: int) -> bytes:
    return bytes((kind, 0, 0, 8, algorithm & 0x3F, 0, 0, 0))


def _parse_algorithm_record(data: bytes, kind: int, what: str) -> int:
    if data[0] != kind:
        raise ProtocolError(f"{what}: algorithm record type 0x{data[0]:02x} != 0x{kind:02x}")
    if data[3] not in (0, 8):
        raise ProtocolError(f"{what}: algorithm record length 0x{data[3]:02x}")
    return data[4] & 0x3F


@dataclass(frozen=True, slots=True)
class OpenSessionRequest:
    tag: int
    privilege: int
    console_session_id: int
    auth_alg: int
    integrity_alg: int
    conf_alg: int


def encode_open_session_request(m: OpenSessionRequest) -> bytes:
    return (
        bytes((m.tag, m.privilege & 0x0F, 0, 0))
        + _U32.pack(m.console_session_id)
        + _algorithm_record(0, m.auth_alg)
        + _algorithm_record(1, m.integrity_alg)
        + _algorithm_record(2, m.conf_alg)
    )


def decode_open_session_request(data: bytes) -> OpenSessionRequest:
    what = "Open Session Request"
    _need(data, 32, what)
    return OpenSessionRequest(
        tag=data[0],
        privilege=data[1] & 0x0F,
        console_session_id=_U32.unpack_from(data, 4)[0],
        auth_alg=_parse_algorithm_record(data[8:16], 0, what),
        integrity_alg=_parse_algorithm_record(data[16:24], 1, what),
        conf_alg=_parse_algorithm_record(data[24:32], 2, what),
    )


@dataclass(frozen=True, slots=True)
class OpenSessionResponse:
    tag: int
    status: int
    privilege: int = 0
    console_session_id: int = 0
    bmc_session_id: int = 0
    auth_alg: int = 0
    integrity_alg: int = 0
    conf_alg: int = 0


def encode_open_session_response(m: OpenSessionResponse) -> bytes:
    if m.status != RakpStatus.NO_ERRORS:
        return bytes((m.tag, m.status, 0, 0)) + _U32.pack(m.console_session_id)
    return (
        bytes((m.tag, m.status, m.privilege & 0x0F, 0))
        + _U32.pack(m.console_session_id)
        + _U32.pack(m.bmc_session_id)
        + _algorithm_record(0, m.auth_alg)
        + _algorithm_record(1, m.integrity_alg)
        + _algorithm_record(2, m.conf_alg)
    )


def decode_open_session_response(data: bytes) -> OpenSessionResponse:
    what = "Open Session Response"
    _at_least(data, 2, what)
    if data[1] != RakpStatus.NO_ERRORS:
        # On error only tag and status are guaranteed; tolerate up to the full layout.
        if len(data) > 36:
            raise ProtocolError(f"{what}: {len(data)} bytes")
        sidm = _U32.unpack_from(data, 4)[0] if len(data) >= 8 else 0
        return OpenSessionResponse(tag=data[0], status=data[1], console_session_id=sidm)
    _need(data, 36, what)
    return OpenSessionResponse(
        tag=data[0],
        status=data[1],
        privilege=data[2] & 0x0F,
        console_session_id=_U32.unpack_from(data, 4)[0],
        bmc_session_id=_U32.unpack_from(data, 8)[0],
        auth_alg=_parse_algorithm_record(data[12:20], 0, what),
        integrity_alg=_parse_algorithm_record(data[20:28], 1, what),
        conf_alg=_parse_algorithm_record(data[28:36], 2, what),
    )


@dataclass(frozen=True, slots=True)
class Rakp1:
    tag: int
    bmc_session_id: int
    console_random: bytes
    role: int
    username: bytes


def encode_rakp1(m: Rakp1) -> bytes:
    if len(m.console_random) != 16:
        raise ValueError("Rm must be 16 bytes")
    if len(m.username) > 16:
        raise ValueError("usernames are at most 16 bytes")
    return (
        bytes((m.tag, 0, 0, 0))
        + _U32.pack(m.bmc_session_id)
        + m.console_random
        + bytes((m.role, 0, 0, len(m.username)))
        + m.username
    )


def decode_rakp1(data: bytes) -> Rakp1:
    what = "RAKP Message 1"
    _at_least(data, 28, what)
    ulen = data[27]
    if ulen > 16:
        raise ProtocolError(f"{what}: username length {ulen} > 16")
    _need(data, 28 + ulen, what)
    return Rakp1(
        tag=data[0],
        bmc_session_id=_U32.unpack_from(data, 4)[0],
        console_random=bytes(data[8:24]),
        role=data[24],
        username=bytes(data[28:]),
    )


@dataclass(frozen=True, slots=True)
class Rakp2:
    tag: int
    status: int
    console_session_id: int = 0
    bmc_random: bytes = b""
    bmc_guid: bytes = b""
    key_exchange_code: bytes = b""


def encode_rakp2(m: Rakp2) -> bytes:
    head = bytes((m.tag, m.status, 0, 0)) + _U32.pack(m.console_session_id)
    if m.status != RakpStatus.NO_ERRORS:
        return head
    return head + m.bmc_random + m.bmc_guid + m.key_exchange_code


def decode_rakp2(data: bytes) -> Rakp2:
    what = "RAKP Message 2"
    _at_least(data, 2, what)
    if data[1] != RakpStatus.NO_ERRORS:
        sidm = _U32.unpack_from(data, 4)[0] if len(data) >= 8 else 0
        return Rakp2(tag=data[0], status=data[1], console_session_id=sidm)
    _at_least(data, 40, what)
    if len(data) > 40 + 64:
        raise ProtocolError(f"{what}: {len(data)} bytes is too long")
    return Rakp2(
        tag=data[0],
        status=data[1],
        console_session_id=_U32.unpack_from(data, 4)[0],
        bmc_random=bytes(data[8:24]),
        bmc_guid=bytes(data[24:40]),
        key_exchange_code=bytes(data[40:]),
    )


@dataclass(frozen=True, slots=True)
class Rakp3:
    tag: int
    status: int
    bmc_session_id: int
    key_exchange_code: bytes = b""


def encode_rakp3(m: Rakp3) -> bytes:
    return bytes((m.tag, m.status, 0, 0)) + _U32.pack(m.bmc_session_id) + m.key_exchange_code


def decode_rakp3(data: bytes) -> Rakp3:
    what = "RAKP Message 3"
    _at_least(data, 8, what)
    if len(data) > 8 + 64:
        raise ProtocolError(f"{what}: {len(data)} bytes is too long")
    return Rakp3(
        tag=data[0],
        status=data[1],
        bmc_session_id=_U32.unpack_from(data, 4)[0],
        key_exchange_code=bytes(data[8:]),
    )


@dataclass(frozen=True, slots=True)
class Rakp4:
    tag: int
    status: int
    console_session_id: int = 0
    integrity_check_value: bytes = b""


def encode_rakp4(m: Rakp4) -> bytes:
    return (
        bytes((m.tag, m.status, 0, 0))
        + _U32.pack(m.console_session_id)
        + m.integrity_check_value
    )


def decode_rakp4(data: bytes) -> Rakp4:
    what = "RAKP Message 4"
    _at_least(data, 2, what)
    if data[1] != RakpStatus.NO_ERRORS:
        sidm = _U32.unpack_from(data, 4)[0] if len(data) >= 8 else 0
        return Rakp4(tag=data[0], status=data[1], console_session_id=sidm)
    _at_least(data, 8, what)
    if len(data) > 8 + 32:
        raise ProtocolError(f"{what}: {len(data)} bytes is too long")
    return Rakp4(
        tag=data[0],
        status=data[1],
        console_session_id=_U32.unpack_from(data, 4)[0],
        integrity_check_value=bytes(data[8:]),
    )


# --------------------------------------------------------------------------- command bodies


@dataclass(frozen=True, slots=True)
class ChannelAuthCapabilities:
    channel: int
    ipmi20_extended: bool
    auth_types: int
    kg_set: bool
    per_message_auth_disabled: bool
    user_level_auth_disabled: bool
    non_null_usernames: bool
    null_usernames: bool
    anonymous_login: bool
    supports_ipmi20: bool
    supports_ipmi15: bool
    oem_iana: int = 0
    oem_aux: int = 0


def encode_channel_auth_capabilities(c: ChannelAuthCapabilities) -> bytes:
    """Response body after the completion code (8 bytes)."""
    b2 = (0x80 if c.ipmi20_extended else 0) | (c.auth_types & 0x37)
    b3 = (
        (0x20 if c.kg_set else 0)
        | (0x10 if c.per_message_auth_disabled else 0)
        | (0x08 if c.user_level_auth_disabled else 0)
        | (0x04 if c.non_null_usernames else 0)
        | (0x02 if c.null_usernames else 0)
        | (0x01 if c.anonymous_login else 0)
    )
    b4 = (0x02 if c.supports_ipmi20 else 0) | (0x01 if c.supports_ipmi15 else 0)
    return bytes((c.channel, b2, b3, b4)) + c.oem_iana.to_bytes(3, "little") + bytes(
        (c.oem_aux,)
    )


def decode_channel_auth_capabilities(body: bytes) -> ChannelAuthCapabilities:
    _need(body, 8, "Get Channel Authentication Capabilities response")
    return ChannelAuthCapabilities(
        channel=body[0],
        ipmi20_extended=bool(body[1] & 0x80),
        auth_types=body[1] & 0x37,
        kg_set=bool(body[2] & 0x20),
        per_message_auth_disabled=bool(body[2] & 0x10),
        user_level_auth_disabled=bool(body[2] & 0x08),
        non_null_usernames=bool(body[2] & 0x04),
        null_usernames=bool(body[2] & 0x02),
        anonymous_login=bool(body[2] & 0x01),
        supports_ipmi20=bool(body[3] & 0x02),
        supports_ipmi15=bool(body[3] & 0x01),
        oem_iana=int.from_bytes(body[4:7], "little"),
        oem_aux=body[7],
    )
