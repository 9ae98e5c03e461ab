"""IPMI commands the simulated BMC answers: request body in, (completion code, body) out.

Theory of operation
-------------------
Each handler takes the BMC, the session and the decoded request and returns the
completion code and the response data after it. The table `_COMMANDS` maps
``(netfn, cmd)`` to a handler and the least session privilege it needs (``D4`` below
that); anything not in the table gets ``C1`` (invalid command), which is what ipmitool's
PICMG/DCMI probes expect. Handlers change BMC state only through `SimBmc`/`SolPort`
methods, never by reaching into sockets or clocks. Byte layouts are those of
ipmi-sol-protocol.md section 5.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from solgate.ipmi import sel
from solgate.ipmi.codec import (
    ChannelAuthCapabilities,
    ChassisCommand,
    Command,
    CompletionCode,
    IpmiMessage,
    NetFn,
    PayloadType,
    Privilege,
    TransportCommand,
    encode_channel_auth_capabilities,
)
from solgate.ipmi.crypto import CIPHER_SUITES

if TYPE_CHECKING:
    from solgate.sim.bmc import SimBmc
    from solgate.sim.bmc_session import BmcSession

CC = CompletionCode
Result = tuple[int, bytes]
LAN_CHANNEL = 1
SOL_INSTANCE = 1
_OK = (CC.OK, b"")
_BIT_RATE_CODES = {9600: 0x06, 19200: 0x07, 38400: 0x08, 57600: 0x09, 115200: 0x0A}


def _channel_ok(channel: int) -> bool:
    return channel & 0x0F in (LAN_CHANNEL, 0x0E)


# ----------------------------------------------------------------------- pre-session


def channel_auth_capabilities(bmc: SimBmc, data: bytes) -> Result:
    """Byte 2 bit 7, byte 3 bit 2 and byte 4 bit 1 set: ipmitool and FreeIPMI need all three."""
    if len(data) != 2:
        return CC.REQUEST_LENGTH_INVALID, b""
    if not _channel_ok(data[0]):
        return CC.INVALID_DATA_FIELD, b""
    kg = bmc.config.kg
    caps = ChannelAuthCapabilities(
        channel=LAN_CHANNEL, ipmi20_extended=True, auth_types=0,
        kg_set=bool(kg and any(kg)), per_message_auth_disabled=False,
        user_level_auth_disabled=False, non_null_usernames=True, null_usernames=False,
        anonymous_login=False, supports_ipmi20=True, supports_ipmi15=False,
    )
    return CC.OK, encode_channel_auth_capabilities(caps)


def channel_cipher_suites(bmc: SimBmc, data: bytes) -> Result:
    """Records ``C0 id auth 40|integ 80|conf``, 16 bytes per response, by list index."""
    if len(data) != 3:
        return CC.REQUEST_LENGTH_INVALID, b""
    if not _channel_ok(data[0]):
        return CC.INVALID_DATA_FIELD, b""
    records = b"".join(
        bytes((0xC0, s.id, s.auth, 0x40 | s.integrity, 0x80 | s.confidentiality))
        for s in (CIPHER_SUITES[i] for i in bmc.config.cipher_suites)
    )
    index = data[2] & 0x3F
    return CC.OK, bytes((LAN_CHANNEL,)) + records[index * 16 : index * 16 + 16]


def pre_session(bmc: SimBmc, req: IpmiMessage) -> Result:
    """The only commands a BMC answers outside a session."""
    if req.netfn == NetFn.APP and req.cmd == Command.GET_CHANNEL_AUTH_CAPABILITIES:
        return channel_auth_capabilities(bmc, req.data)
    if req.netfn == NetFn.APP and req.cmd == Command.GET_CHANNEL_CIPHER_SUITES:
        return channel_cipher_suites(bmc, req.data)
    return CC.INSUFFICIENT_PRIVILEGE, b""


# ----------------------------------------------------------------------- in session


def _device_id(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    c = bmc.config
    body = (
        bytes((c.device_id, 0x01, 0x01, 0x00, 0x02, 0xBF))
        + c.manufacturer_id.to_bytes(3, "little")
        + struct.pack("<H", c.product_id)
        + b"\x00\x00\x00\x00"
    )
    return CC.OK, body


def _set_privilege(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    if len(data) != 1:
        return CC.REQUEST_LENGTH_INVALID, b""
    wanted = data[0] & 0x0F
    if wanted == 0:
        return CC.OK, bytes((s.privilege,))
    if wanted > Privilege.OEM or wanted < Privilege.USER:
        return CC.COMMAND_SPECIFIC_80, b""  # not available for this user
    if wanted > s.max_privilege:
        return CC.COMMAND_SPECIFIC_81, b""  # exceeds the user's / session's limit
    s.privilege = Privilege(wanted)
    return CC.OK, bytes((wanted,))


def _close_session(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    if len(data) not in (4, 5):
        return CC.REQUEST_LENGTH_INVALID, b""
    sidc = struct.unpack_from("<I", data)[0]
    if sidc == s.sidc:
        s.closing = True  # dropped after this response is sealed with its keys
        return _OK
    if sidc in bmc.sessions and s.privilege >= Privilege.ADMINISTRATOR:
        bmc.close_session(sidc, now)
        return _OK
    return CC.INVALID_SESSION_ID, b""


def _sol_request(data: bytes) -> int | None:
    """Completion code for a bad payload type / instance in bytes 0-1, else None."""
    if data[0] & 0x3F != PayloadType.SOL:
        return CC.INVALID_DATA_FIELD
    if data[1] & 0x0F != SOL_INSTANCE:
        return CC.INVALID_DATA_FIELD
    return None


def _activate_payload(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    if len(data) != 6:
        return CC.REQUEST_LENGTH_INVALID, b""
    if (cc := _sol_request(data)) is not None:
        return cc, b""
    if bmc.sol.active:
        return CC.COMMAND_SPECIFIC_80, b""  # already active (in this or another session)
    encrypt = bool(data[2] & 0x80)
    if s.protector is not None and s.protector.encrypts and not encrypt:
        return CC.COMMAND_SPECIFIC_84, b""  # this BMC requires encryption
    if encrypt and not (s.protector is not None and s.protector.encrypts):
        return CC.COMMAND_SPECIFIC_83, b""  # no confidentiality negotiated
    bmc.sol.activate(s.sidc, now)
    c = bmc.config
    body = b"\x00\x00\x00\x00" + struct.pack(
        "<HHHH", c.inbound_payload_size, c.outbound_payload_size, bmc.port, 0xFFFF
    )
    return CC.OK, body


def _deactivate_payload(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    if len(data) != 6:
        return CC.REQUEST_LENGTH_INVALID, b""
    if (cc := _sol_request(data)) is not None:
        return cc, b""
    sol = bmc.sol
    if not sol.active:
        return CC.COMMAND_SPECIFIC_80, b""  # already deactivated
    if sol.owner != s.sidc and s.privilege < Privilege.ADMINISTRATOR:
        return CC.INSUFFICIENT_PRIVILEGE, b""
    bmc.steal_sol(s.sidc, now)
    return _OK


def _activation_status(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    if len(data) != 1:
        return CC.REQUEST_LENGTH_INVALID, b""
    if data[0] & 0x3F != PayloadType.SOL:
        return CC.INVALID_DATA_FIELD, b""
    return CC.OK, bytes((1, 1 if bmc.sol.active else 0, 0))


def _instance_info(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    if len(data) != 2:
        return CC.REQUEST_LENGTH_INVALID, b""
    if (cc := _sol_request(data)) is not None:
        return cc, b""
    owner = bmc.sol.owner or 0
    return CC.OK, struct.pack("<I", owner) + bytes((1 if owner else 0,)) + bytes(7)


def _payload_support(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    if len(data) != 1:
        return CC.REQUEST_LENGTH_INVALID, b""
    if not _channel_ok(data[0]):
        return CC.INVALID_DATA_FIELD, b""
    # standard payloads: IPMI + SOL; session setup: 0x10-0x15; no OEM payloads.
    return CC.OK, bytes((0x03, 0x00, 0x3F, 0x00, 0x00, 0x00, 0x00, 0x00))


def _payload_version(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    if len(data) != 2:
        return CC.REQUEST_LENGTH_INVALID, b""
    if not _channel_ok(data[0]):
        return CC.INVALID_DATA_FIELD, b""
    if data[1] & 0x3F not in (PayloadType.IPMI, PayloadType.SOL):
        return CC.COMMAND_SPECIFIC_80, b""  # payload type not available
    return CC.OK, b"\x10"  # version 1.0


def _cipher_suites(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    return channel_cipher_suites(bmc, data)


def _auth_caps(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    return channel_auth_capabilities(bmc, data)


def _chassis_status(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    host = bmc.host
    powered = bool(host is not None and host.powered)
    current = (0x01 if powered else 0x00) | 0x40  # restore policy: previous state
    return CC.OK, bytes((current, bmc.last_power_event, 0x00, 0x00))


def _chassis_control(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    if len(data) != 1:
        return CC.REQUEST_LENGTH_INVALID, b""
    host = bmc.host
    action = data[0] & 0x0F
    if action > 5:
        return CC.INVALID_DATA_FIELD, b""
    if host is None:
        return CC.DESTINATION_UNAVAILABLE, b""
    if action in (0, 5):
        host.power_off(now)
    elif action == 1:
        host.power_on(now)
        bmc.last_power_event = 0x10  # power on via IPMI command
    elif action == 2:
        host.power_cycle(now)
        bmc.last_power_event = 0x10
    elif action == 3:
        host.reset(now)
    else:
        return CC.INVALID_DATA_FIELD, b""  # diagnostic interrupt (NMI): not simulated
    return _OK


def _sol_config(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    """Parameters 0-8 (digest section 5.8) from the BMC's own SOL settings."""
    if len(data) != 4:
        return CC.REQUEST_LENGTH_INVALID, b""
    if not _channel_ok(data[0]):
        return CC.INVALID_DATA_FIELD, b""
    revision = b"\x11"
    if data[0] & 0x80:
        return CC.OK, revision
    c = bmc.config
    baud = c.host.baud if c.host is not None else 115200
    rate = _BIT_RATE_CODES.get(baud, 0x00)
    params = {
        0: b"\x00",  # set complete
        1: b"\x01",  # SOL enabled
        2: bytes((Privilege.USER,)),  # no forced encryption/auth; USER may activate
        3: bytes((max(1, round(c.accumulate_interval / 0.005)), min(255, c.send_threshold))),
        4: bytes((min(7, c.sol_retry_count), max(1, round(c.sol_retry_interval / 0.01)) & 0xFF)),
        5: bytes((rate,)),
        6: bytes((rate,)),
        7: bytes((LAN_CHANNEL,)),
        8: struct.pack("<H", bmc.port),
    }
    value = params.get(data[1])
    if value is None:
        return CC.COMMAND_SPECIFIC_80, b""  # parameter not supported
    return CC.OK, revision + value


def _sel_info(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    return bmc.sel.info(data)


def _reserve_sel(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    return bmc.sel.reserve(data)


def _sel_entry(bmc: SimBmc, s: BmcSession, data: bytes, now: float) -> Result:
    return bmc.sel.entry(data)


Handler = Callable[["SimBmc", "BmcSession", bytes, float], Result]
_USER, _OPERATOR, _ADMIN = Privilege.USER, Privilege.OPERATOR, Privilege.ADMINISTRATOR
_COMMANDS: dict[tuple[int, int], tuple[Handler, Privilege]] = {
    (NetFn.APP, Command.GET_DEVICE_ID): (_device_id, _USER),
    (NetFn.APP, Command.GET_CHANNEL_AUTH_CAPABILITIES): (_auth_caps, Privilege.CALLBACK),
    (NetFn.APP, Command.SET_SESSION_PRIVILEGE_LEVEL): (_set_privilege, Privilege.CALLBACK),
    (NetFn.APP, Command.CLOSE_SESSION): (_close_session, Privilege.CALLBACK),
    (NetFn.APP, Command.ACTIVATE_PAYLOAD): (_activate_payload, _USER),
    (NetFn.APP, Command.DEACTIVATE_PAYLOAD): (_deactivate_payload, _USER),
    (NetFn.APP, Command.GET_PAYLOAD_ACTIVATION_STATUS): (_activation_status, _USER),
    (NetFn.APP, Command.GET_PAYLOAD_INSTANCE_INFO): (_instance_info, _USER),
    (NetFn.APP, Command.GET_CHANNEL_PAYLOAD_SUPPORT): (_payload_support, _USER),
    (NetFn.APP, Command.GET_CHANNEL_PAYLOAD_VERSION): (_payload_version, _USER),
    (NetFn.APP, Command.GET_CHANNEL_CIPHER_SUITES): (_cipher_suites, Privilege.CALLBACK),
    (NetFn.CHASSIS, ChassisCommand.GET_CHASSIS_STATUS): (_chassis_status, _USER),
    (NetFn.CHASSIS, ChassisCommand.CHASSIS_CONTROL): (_chassis_control, _OPERATOR),
    (NetFn.TRANSPORT, TransportCommand.GET_SOL_CONFIGURATION): (_sol_config, _USER),
    (sel.STORAGE, sel.GET_SEL_INFO): (_sel_info, _USER),
    (sel.STORAGE, sel.RESERVE_SEL): (_reserve_sel, _USER),
    (sel.STORAGE, sel.GET_SEL_ENTRY): (_sel_entry, _USER),
}


def in_session(bmc: SimBmc, s: BmcSession, req: IpmiMessage, now: float) -> Result:
    entry = _COMMANDS.get((req.netfn, req.cmd))
    if entry is None:
        return CC.INVALID_COMMAND, b""
    handler, needed = entry
    if s.privilege < needed:
        return CC.INSUFFICIENT_PRIVILEGE, b""
    return handler(bmc, s, req.data, now)
