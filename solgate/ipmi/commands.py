"""The few IPMI commands a console server needs: request bytes in, typed answers out.

Theory of operation
-------------------
Pure functions, no state and no I/O (ipmi-sol-protocol.md section 5). Each command has a
builder returning a `Request` (netfn, cmd, data, name) and a parser taking the response
`IpmiMessage`, checking its completion code and returning a frozen dataclass. A non-zero
completion code becomes a `CommandError` (or a more precise subclass) whose message names
the BMC, the command and `CompletionCode.describe(code)` and says what to do. A response
body too short to parse is a `ProtocolError` naming the command.

Policies from the digest live here: the SOL activation aux byte (section 5.3: encryption
and authentication bits follow the negotiated suite, serial alerts deferred, handshake
bit set: 0xC6 for CS3/CS17), the characters-per-packet limit derived from the inbound
payload size, and treating every SOL configuration parameter as optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from solgate.errors import (
    BmcError,
    CommandError,
    PayloadActiveElsewhere,
    PayloadDisabled,
    PayloadError,
    PrivilegeError,
    ProtocolError,
)
from solgate.ipmi.codec import (
    CURRENT_CHANNEL,
    ChassisCommand,
    Command,
    CompletionCode,
    IpmiMessage,
    NetFn,
    PayloadType,
    Privilege,
    TransportCommand,
)

if TYPE_CHECKING:  # only named in a signature: `solgate power`'s parser needs no crypto
    from solgate.ipmi.crypto import CipherSuite

SOL_INSTANCE = 1
DEFAULT_SOL_CHARACTERS = 32  # when the BMC's inbound payload size is nonsense (FreeIPMI)
PARAMETER_NOT_SUPPORTED = 0x80

# Hints appended to command errors, by completion code.
_HINTS: dict[int, str] = {
    CompletionCode.INVALID_COMMAND: "the BMC does not implement this command",
    CompletionCode.INSUFFICIENT_PRIVILEGE: (
        "the session's privilege is too low: use a user with ADMINISTRATOR or OPERATOR "
        "privilege for this console"),
    CompletionCode.NODE_BUSY: "the BMC is busy: try again in a moment",
    CompletionCode.NOT_SUPPORTED_IN_STATE: "the BMC cannot do this in its present state",
    CompletionCode.INVALID_SESSION_ID: "the BMC has dropped the session: reconnect",
}


COMMAND_NAMES: dict[tuple[int, int], str] = {
    (NetFn.APP, Command.GET_DEVICE_ID): "Get Device ID",
    (NetFn.APP, Command.SET_SESSION_PRIVILEGE_LEVEL): "Set Session Privilege Level",
    (NetFn.APP, Command.CLOSE_SESSION): "Close Session",
    (NetFn.APP, Command.ACTIVATE_PAYLOAD): "Activate Payload",
    (NetFn.APP, Command.DEACTIVATE_PAYLOAD): "Deactivate Payload",
    (NetFn.APP, Command.GET_PAYLOAD_ACTIVATION_STATUS): "Get Payload Activation Status",
    (NetFn.APP, Command.GET_PAYLOAD_INSTANCE_INFO): "Get Payload Instance Info",
    (NetFn.APP, Command.GET_CHANNEL_CIPHER_SUITES): "Get Channel Cipher Suites",
    (NetFn.APP, Command.GET_CHANNEL_PAYLOAD_VERSION): "Get Channel Payload Version",
    (NetFn.CHASSIS, ChassisCommand.GET_CHASSIS_STATUS): "Get Chassis Status",
    (NetFn.CHASSIS, ChassisCommand.CHASSIS_CONTROL): "Chassis Control",
    (NetFn.TRANSPORT, TransportCommand.GET_SOL_CONFIGURATION):
        "Get SOL Configuration Parameters",
}


def command_name(netfn: int, cmd: int) -> str:
    """Human name of a request, for messages ('netfn 0x06 cmd 0x01' if unknown)."""
    return COMMAND_NAMES.get((netfn, cmd), f"netfn 0x{netfn:02x} cmd 0x{cmd:02x}")


@dataclass(frozen=True, slots=True)
class Request:
    netfn: int
    cmd: int
    data: bytes
    name: str


def command_error(label: str, step: str, cc: int, hint: str = "") -> BmcError:
    """A `CommandError` for completion code `cc`, with a hint on what to do."""
    hint = hint or _HINTS.get(cc, "")
    text = f"{label} refused {step} (completion code {CompletionCode.describe(cc)})"
    if cc == CompletionCode.INSUFFICIENT_PRIVILEGE:
        return PrivilegeError(f"{text}: {hint}", host=label, step=step, code=cc)
    return CommandError(f"{text}: {hint}" if hint else text, host=label, step=step, code=cc)


def _body(msg: IpmiMessage, label: str, step: str, minimum: int = 0) -> bytes:
    """The response body after a zero completion code, at least `minimum` bytes long."""
    cc = msg.completion_code
    if cc != CompletionCode.OK:
        raise command_error(label, step, cc)
    if len(msg.body) < minimum:
        raise ProtocolError(f"{label}: {step} response of {len(msg.body)} bytes is too short")
    return msg.body


# --------------------------------------------------------------------------- device id


@dataclass(frozen=True, slots=True)
class DeviceId:
    device_id: int
    device_revision: int
    firmware: str  # "9.08"
    ipmi_version: str  # "2.0"
    manufacturer_id: int
    product_id: int
    available: bool  # bit 7 of the firmware major byte clear = normal operation
    aux_firmware: bytes = b""


def get_device_id() -> Request:
    return Request(NetFn.APP, Command.GET_DEVICE_ID, b"", "Get Device ID")


def parse_device_id(msg: IpmiMessage, label: str) -> DeviceId:
    b = _body(msg, label, "Get Device ID", 11)
    return DeviceId(
        device_id=b[0],
        device_revision=b[1] & 0x0F,
        firmware=f"{b[2] & 0x7F}.{b[3]:02x}",
        ipmi_version=f"{b[4] & 0x0F}.{b[4] >> 4}",
        manufacturer_id=int.from_bytes(b[6:9], "little") & 0x0FFFFF,
        product_id=int.from_bytes(b[9:11], "little"),
        available=not b[2] & 0x80,
        aux_firmware=bytes(b[11:15]),
    )


# --------------------------------------------------------------------------- privilege


def set_session_privilege(privilege: Privilege) -> Request:
    return Request(NetFn.APP, Command.SET_SESSION_PRIVILEGE_LEVEL, bytes((privilege & 0x0F,)),
                   "Set Session Privilege Level")


def parse_session_privilege(msg: IpmiMessage, label: str) -> Privilege:
    cc = msg.completion_code
    if cc in (0x80, 0x81):
        raise PrivilegeError(
            f"{label} refused the privilege level (Set Session Privilege Level "
            f"{CompletionCode.describe(cc)}): give the user a higher privilege on the BMC",
            host=label, step="Set Session Privilege Level", code=cc)
    b = _body(msg, label, "Set Session Privilege Level", 1)
    try:
        return Privilege(b[0] & 0x0F)
    except ValueError:
        raise ProtocolError(f"{label}: unknown privilege level 0x{b[0]:02x}") from None


# --------------------------------------------------------------------------- chassis


class ChassisAction(IntEnum):
    """Chassis Control request values (digest section 5.2)."""

    OFF = 0
    ON = 1
    CYCLE = 2
    RESET = 3
    DIAGNOSTIC_INTERRUPT = 4
    SOFT = 5


RESTORE_POLICIES = ("always-off", "previous", "always-on", "unknown")


@dataclass(frozen=True, slots=True)
class ChassisStatus:
    power_on: bool
    power_overload: bool
    interlock: bool
    power_fault: bool
    control_fault: bool
    restore_policy: str
    last_power_event: int
    intrusion: bool
    front_panel_lockout: bool
    drive_fault: bool
    fan_fault: bool

    @property
    def faults(self) -> tuple[str, ...]:
        """Names of the fault bits that are set, for display."""
        names = ("power_overload", "interlock", "power_fault", "control_fault", "intrusion",
                 "drive_fault", "fan_fault")
        return tuple(n.replace("_", " ") for n in names if getattr(self, n))


def get_chassis_status() -> Request:
    return Request(NetFn.CHASSIS, ChassisCommand.GET_CHASSIS_STATUS, b"", "Get Chassis Status")


def parse_chassis_status(msg: IpmiMessage, label: str) -> ChassisStatus:
    b = _body(msg, label, "Get Chassis Status", 3)
    return ChassisStatus(
        power_on=bool(b[0] & 0x01),
        power_overload=bool(b[0] & 0x02),
        interlock=bool(b[0] & 0x04),
        power_fault=bool(b[0] & 0x08),
        control_fault=bool(b[0] & 0x10),
        restore_policy=RESTORE_POLICIES[(b[0] >> 5) & 0x03],
        last_power_event=b[1],
        intrusion=bool(b[2] & 0x01),
        front_panel_lockout=bool(b[2] & 0x02),
        drive_fault=bool(b[2] & 0x04),
        fan_fault=bool(b[2] & 0x08),
    )


def chassis_control(action: ChassisAction) -> Request:
    return Request(NetFn.CHASSIS, ChassisCommand.CHASSIS_CONTROL, bytes((int(action),)),
                   "Chassis Control")


def parse_chassis_control(msg: IpmiMessage, label: str) -> None:
    _body(msg, label, "Chassis Control")


# --------------------------------------------------------------------------- SOL payload


def sol_activate_aux(suite: CipherSuite | None, override: int | None = None) -> int:
    """Activate Payload aux byte: encrypt/authenticate bits follow the negotiated suite,
    serial alerts deferred (bits 3:2 = 01), BMC leaves CTS/DCD to us (bit 1)."""
    if override is not None:
        return override & 0xFF
    aux = 0x04 | 0x02
    if suite is not None and suite.integrity:
        aux |= 0x40
    if suite is not None and suite.confidentiality:
        aux |= 0x80
    return aux


@dataclass(frozen=True, slots=True)
class SolActivation:
    inbound_size: int  # largest SOL payload the BMC takes from us, header included
    outbound_size: int
    port: int
    vlan: int | None
    max_characters: int  # characters per packet we send
    aux: bytes = b""


def sol_characters_per_packet(inbound_size: int, workarounds: frozenset[str] = frozenset()
                              ) -> int:
    """clamp(inbound - 4, 1, 255); 32 if the size is out of 5..259 or `solpayloadsize`."""
    if "solpayloadsize" in workarounds or not 5 <= inbound_size <= 259:
        return DEFAULT_SOL_CHARACTERS
    return max(1, min(255, inbound_size - 4))


def activate_payload(instance: int = SOL_INSTANCE, aux: int = 0xC6) -> Request:
    return Request(NetFn.APP, Command.ACTIVATE_PAYLOAD,
                   bytes((PayloadType.SOL, instance, aux, 0, 0, 0)), "Activate Payload")


def parse_activate_payload(msg: IpmiMessage, label: str, *, session_port: int,
                           workarounds: frozenset[str] = frozenset()) -> SolActivation:
    step = "Activate Payload"
    cc = msg.completion_code
    code = CompletionCode.describe(cc)
    if cc == 0x80:
        raise PayloadActiveElsewhere(
            f"SOL on {label} is already active in another session ({step} {code}): "
            "deactivate it (solgate deactivate) or let this console take it over",
            host=label, step=step, code=cc)
    if cc == 0x81:
        raise PayloadDisabled(
            f"SOL is disabled on {label} ({step} {code}): enable Serial over LAN in the "
            "BMC settings", host=label, step=step, code=cc)
    if cc == 0x82:
        raise PayloadError(f"{label} has reached its SOL activation limit ({step} {code}): "
                           "deactivate SOL elsewhere", host=label, step=step, code=cc)
    if cc in (0x83, 0x84):
        need = "with" if cc == 0x84 else "without"
        raise PayloadError(
            f"{label} can only activate SOL {need} encryption ({step} {code}): choose a "
            f"cipher suite {need} AES for this console", host=label, step=step, code=cc)
    b = _body(msg, label, step, 12)
    if len(b) != 12:
        raise ProtocolError(f"{label}: {step} response of {len(b)} bytes, expected 12")
    inbound = int.from_bytes(b[4:6], "little")
    port = int.from_bytes(b[8:10], "little")
    vlan = int.from_bytes(b[10:12], "little")
    swapped = int.from_bytes(session_port.to_bytes(2, "little"), "big")
    if port in (session_port, swapped) or "solport" in workarounds:
        port = session_port
    else:
        raise PayloadError(
            f"{label} wants SOL on UDP port {port}, not the session's port {session_port} "
            f"({step}): solgate does not follow a SOL port change; add the 'solport' "
            "workaround for this console if the BMC works on its own port",
            host=label, step=step, code=port)
    return SolActivation(
        inbound_size=inbound,
        outbound_size=int.from_bytes(b[6:8], "little"),
        port=port,
        vlan=None if vlan == 0xFFFF else vlan & 0x0FFF,
        max_characters=sol_characters_per_packet(inbound, workarounds),
        aux=bytes(b[0:4]),
    )


def deactivate_payload(instance: int = SOL_INSTANCE) -> Request:
    return Request(NetFn.APP, Command.DEACTIVATE_PAYLOAD,
                   bytes((PayloadType.SOL, instance, 0, 0, 0, 0)), "Deactivate Payload")


def parse_deactivate_payload(msg: IpmiMessage, label: str) -> bool:
    """True if SOL was deactivated, False if it was not active (cc 0x80)."""
    cc = msg.completion_code
    if cc == 0x80:
        return False
    if cc == 0x81:
        raise PayloadDisabled(
            f"SOL is disabled on {label} (Deactivate Payload {CompletionCode.describe(cc)}): "
            "nothing to deactivate", host=label, step="Deactivate Payload", code=cc)
    _body(msg, label, "Deactivate Payload")
    return True


@dataclass(frozen=True, slots=True)
class PayloadActivationStatus:
    capacity: int
    active_instances: frozenset[int]

    def is_active(self, instance: int = SOL_INSTANCE) -> bool:
        return instance in self.active_instances


def get_payload_activation_status() -> Request:
    return Request(NetFn.APP, Command.GET_PAYLOAD_ACTIVATION_STATUS, bytes((PayloadType.SOL,)),
                   "Get Payload Activation Status")


def parse_payload_activation_status(msg: IpmiMessage, label: str) -> PayloadActivationStatus:
    b = _body(msg, label, "Get Payload Activation Status", 3)
    bitmap = int.from_bytes(b[1:3], "little")
    return PayloadActivationStatus(
        capacity=(b[0] & 0x0F) or 1,  # Dell M-series report 0
        active_instances=frozenset(i + 1 for i in range(16) if bitmap >> i & 1),
    )


@dataclass(frozen=True, slots=True)
class PayloadInstanceInfo:
    owner_session_id: int  # the BMC's ID of the session that has SOL; 0 = nobody
    port_number: int

    @property
    def active(self) -> bool:
        return self.owner_session_id != 0


def get_payload_instance_info(instance: int = SOL_INSTANCE) -> Request:
    return Request(NetFn.APP, Command.GET_PAYLOAD_INSTANCE_INFO,
                   bytes((PayloadType.SOL, instance)), "Get Payload Instance Info")


def parse_payload_instance_info(msg: IpmiMessage, label: str) -> PayloadInstanceInfo:
    b = _body(msg, label, "Get Payload Instance Info", 4)
    return PayloadInstanceInfo(int.from_bytes(b[0:4], "little"), b[4] if len(b) > 4 else 0)


# --------------------------------------------------------------------------- SOL config


class SolParameter(IntEnum):
    SET_IN_PROGRESS = 0
    ENABLE = 1
    AUTHENTICATION = 2
    ACCUMULATE = 3
    RETRY = 4
    NON_VOLATILE_BIT_RATE = 5
    VOLATILE_BIT_RATE = 6
    PAYLOAD_CHANNEL = 7
    PAYLOAD_PORT = 8


BIT_RATES = {0: "serial-setting", 6: "9600", 7: "19200", 8: "38400", 9: "57600",
             10: "115200"}


def get_sol_config(parameter: int, channel: int = CURRENT_CHANNEL) -> Request:
    return Request(NetFn.TRANSPORT, TransportCommand.GET_SOL_CONFIGURATION,
                   bytes((channel & 0x0F, parameter, 0, 0)), "Get SOL Configuration Parameters")


def parse_sol_config(msg: IpmiMessage, label: str) -> bytes | None:
    """The parameter data (after the revision byte), or None if not supported (cc 0x80)."""
    if msg.completion_code == PARAMETER_NOT_SUPPORTED:
        return None
    return _body(msg, label, "Get SOL Configuration Parameters", 1)[1:]


@dataclass(frozen=True, slots=True)
class SolConfiguration:
    """SOL configuration as far as the BMC reports it; None = parameter not supported."""

    enabled: bool | None = None
    force_encryption: bool | None = None
    force_authentication: bool | None = None
    privilege: int | None = None
    accumulate_interval_ms: int | None = None
    send_threshold: int | None = None
    retry_count: int | None = None
    retry_interval_ms: int | None = None
    bit_rate: str | None = None
    volatile_bit_rate: str | None = None
    channel: int | None = None
    port: int | None = None

    @classmethod
    def from_parameters(cls, params: dict[int, bytes | None]) -> SolConfiguration:
        """Build from raw parameter data; short or missing data means unknown."""
        def get(p: SolParameter, n: int) -> bytes | None:
            data = params.get(p)
            return data if data is not None and len(data) >= n else None

        enable, auth = get(SolParameter.ENABLE, 1), get(SolParameter.AUTHENTICATION, 1)
        acc, retry = get(SolParameter.ACCUMULATE, 2), get(SolParameter.RETRY, 2)
        nv, vol = get(SolParameter.NON_VOLATILE_BIT_RATE, 1), get(
            SolParameter.VOLATILE_BIT_RATE, 1)
        chan, port = get(SolParameter.PAYLOAD_CHANNEL, 1), get(SolParameter.PAYLOAD_PORT, 2)

        def rate(d: bytes | None) -> str | None:
            return None if d is None else BIT_RATES.get(d[0] & 0x0F, f"0x{d[0] & 0x0F:x}")

        return cls(
            enabled=None if enable is None else bool(enable[0] & 1),
            force_encryption=None if auth is None else bool(auth[0] & 0x80),
            force_authentication=None if auth is None else bool(auth[0] & 0x40),
            privilege=None if auth is None else auth[0] & 0x0F,
            accumulate_interval_ms=None if acc is None else acc[0] * 5,
            send_threshold=None if acc is None else acc[1],
            retry_count=None if retry is None else retry[0] & 0x07,
            retry_interval_ms=None if retry is None else retry[1] * 10,
            bit_rate=rate(nv),
            volatile_bit_rate=rate(vol),
            channel=None if chan is None else chan[0] & 0x0F,
            port=None if port is None else int.from_bytes(port[:2], "little"),
        )


# --------------------------------------------------------------------------- cipher suites


def get_channel_cipher_suites(index: int, channel: int = CURRENT_CHANNEL) -> Request:
    """One 16-byte chunk of the channel's cipher suite records (IPMI payload type)."""
    return Request(NetFn.APP, Command.GET_CHANNEL_CIPHER_SUITES,
                   bytes((channel & 0x0F, PayloadType.IPMI, 0x80 | (index & 0x3F))),
                   "Get Channel Cipher Suites")


def parse_channel_cipher_suites_chunk(msg: IpmiMessage, label: str) -> bytes:
    """The record bytes of one chunk; fewer than 16 means it was the last one."""
    return _body(msg, label, "Get Channel Cipher Suites", 1)[1:]


def parse_cipher_suite_records(records: bytes) -> tuple[int, ...]:
    """Cipher suite IDs from concatenated records (C0 id algs... / C1 id iana3 algs...)."""
    ids: list[int] = []
    i = 0
    while i < len(records):
        tag = records[i]
        if tag in (0xC0, 0xC1) and i + 1 < len(records):
            ids.append(records[i + 1])
            i += 2 if tag == 0xC0 else 5
        else:
            i += 1  # algorithm bytes of the current record
    return tuple(ids)
