"""The BMC's System Event Log: the requests that read it, its records, and their words.

Theory of operation
-------------------
Reading the SEL is three Storage commands (NetFn 0x0A, IPMI v2.0 section 31): Get SEL
Info says how many entries there are; Reserve SEL gives a reservation ID (needed only
for partial reads, which we never do, but some BMCs want one anyway, so it is taken);
Get SEL Entry returns one 16-byte record and the ID of the next, from ID 0x0000 (the
first) until the next ID is 0xFFFF. This module builds those requests and parses the
answers without any I/O; `read_sel` in `console/bundle.py` walks them over a session.

A system event record (type 0x02) says who generated it, which sensor type and number,
the event type and three data bytes. `SelEntry.words()` turns the common ones into what
an operator reads: "OS Critical Stop: run-time critical stop (panic)", "Power Unit:
power off / power down", "System Boot / Restart Initiated: initiated by power up". The
tables cover the sensor types a host crash or a power event produces, not all of
section 42.2; anything else is shown by its numbers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from solgate.errors import ProtocolError
from solgate.ipmi.codec import IpmiMessage
from solgate.ipmi.commands import Request, _body

__all__ = [
    "FIRST_ENTRY",
    "LAST_ENTRY",
    "STORAGE",
    "SelEntry",
    "SelInfo",
    "encode_record",
    "get_sel_entry",
    "get_sel_info",
    "parse_record",
    "parse_sel_entry",
    "parse_sel_info",
    "parse_reserve_sel",
    "reserve_sel",
]

STORAGE = 0x0A  # NetFn
GET_SEL_INFO = 0x40
RESERVE_SEL = 0x42
GET_SEL_ENTRY = 0x43
FIRST_ENTRY = 0x0000
LAST_ENTRY = 0xFFFF
RECORD_SIZE = 16
SYSTEM_EVENT = 0x02

SENSOR_TYPES = {
    0x01: "Temperature", 0x02: "Voltage", 0x04: "Fan", 0x05: "Physical Security",
    0x07: "Processor", 0x08: "Power Supply", 0x09: "Power Unit", 0x0C: "Memory",
    0x0F: "System Firmware Progress", 0x10: "Event Logging Disabled", 0x12: "System Event",
    0x13: "Critical Interrupt", 0x14: "Button / Switch", 0x1D: "System Boot / Restart Initiated",
    0x1F: "OS Boot", 0x20: "OS Critical Stop", 0x22: "System ACPI Power State",
    0x23: "Watchdog 2", 0x2B: "Version Change",
}  # fmt: skip
# Sensor-specific offsets (event type 0x6F), by sensor type.
OFFSETS = {
    0x07: {0x00: "IERR", 0x01: "thermal trip", 0x05: "configuration error",
           0x0B: "machine check exception"},
    0x09: {0x00: "power off / power down", 0x01: "power cycle", 0x02: "240VA power down",
           0x04: "AC lost", 0x06: "soft power control failure", 0x07: "power unit failure"},
    0x0C: {0x00: "correctable ECC", 0x01: "uncorrectable ECC", 0x05: "correctable ECC "
           "logging limit reached"},
    0x12: {0x00: "system reconfigured", 0x01: "OEM system boot event", 0x04: "PEF action",
           0x05: "timestamp clock synchronised"},
    0x13: {0x00: "front panel NMI / diagnostic interrupt", 0x04: "PCI PERR", 0x05: "PCI SERR",
           0x07: "bus correctable error", 0x08: "bus uncorrectable error", 0x0A: "bus fatal "
           "error"},
    0x1D: {0x00: "initiated by power up", 0x01: "initiated by hard reset",
           0x02: "initiated by warm reset", 0x03: "user requested PXE boot",
           0x07: "system restart"},
    0x1F: {0x00: "A: boot completed", 0x01: "C: boot completed", 0x02: "PXE boot completed",
           0x07: "base OS / hypervisor installation completed"},
    0x20: {0x00: "critical stop during OS load / initialization",
           0x01: "run-time critical stop (panic)", 0x02: "OS graceful stop",
           0x03: "OS graceful shutdown", 0x04: "soft shutdown initiated by PEF",
           0x05: "agent not responding"},
    0x22: {0x00: "S0 / G0 working", 0x05: "S5 / G2 soft-off", 0x06: "S4/S5 soft-off",
           0x08: "G3 mechanical off", 0x0B: "legacy on state", 0x0C: "legacy off state"},
    0x23: {0x00: "timer expired", 0x01: "hard reset", 0x02: "power down",
           0x03: "power cycle", 0x08: "timer interrupt"},
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SelInfo:
    version: int
    entries: int
    free_bytes: int
    last_addition: int  # BMC clock, epoch seconds (0xFFFFFFFF: never)
    last_erase: int


@dataclass(frozen=True, slots=True)
class SelEntry:
    """One SEL record; for non-system records only `record_id`, `record_type`, `raw`."""

    record_id: int
    record_type: int
    timestamp: int  # BMC clock, epoch seconds
    generator: int
    evm_rev: int
    sensor_type: int
    sensor_number: int
    event_type: int  # bits 0-6
    asserted: bool  # event direction: True = assertion
    data: bytes  # event data 1-3
    raw: bytes

    def words(self) -> str:
        """What the record says, for a person."""
        if self.record_type != SYSTEM_EVENT:
            return f"record type 0x{self.record_type:02x}: {self.raw.hex()}"
        sensor = SENSOR_TYPES.get(self.sensor_type, f"sensor type 0x{self.sensor_type:02x}")
        offset = self.data[0] & 0x0F
        if self.event_type == 0x6F:
            what = OFFSETS.get(self.sensor_type, {}).get(offset, f"offset 0x{offset:x}")
        elif self.event_type == 0x01:
            what = "threshold " + ("lower" if offset < 6 else "upper") + f" (offset {offset})"
        else:
            what = f"event type 0x{self.event_type:02x} offset 0x{offset:x}"
        text = f"{sensor}: {what}"
        if not self.asserted:
            text += " (deasserted)"
        software = self.generator & 0xFF  # bit 0 set: a software ID in bits 7-1
        if software & 0x01 and software >> 1 in range(0x20, 0x30):
            text += " [reported by the OS]"
        return text

    def to_json(self) -> dict[str, object]:
        return {"id": self.record_id, "type": self.record_type, "timestamp": self.timestamp,
                "generator": f"0x{self.generator:04x}", "sensor_type": self.sensor_type,
                "sensor_number": self.sensor_number, "event_type": self.event_type,
                "asserted": self.asserted, "data": self.data.hex(), "words": self.words()}


def get_sel_info() -> Request:
    return Request(STORAGE, GET_SEL_INFO, b"", "Get SEL Info")


def parse_sel_info(msg: IpmiMessage, label: str) -> SelInfo:
    b = _body(msg, label, "Get SEL Info", 14)
    version, entries, free, added, erased = struct.unpack_from("<BHHII", b)
    return SelInfo(version, entries, free, added, erased)


def reserve_sel() -> Request:
    return Request(STORAGE, RESERVE_SEL, b"", "Reserve SEL")


def parse_reserve_sel(msg: IpmiMessage, label: str) -> int:
    return int(struct.unpack_from("<H", _body(msg, label, "Reserve SEL", 2))[0])


def get_sel_entry(reservation: int, record_id: int) -> Request:
    """The whole record `record_id` (offset 0, 0xFF = all of it)."""
    return Request(STORAGE, GET_SEL_ENTRY, struct.pack("<HHBB", reservation, record_id, 0, 0xFF),
                   "Get SEL Entry")


def parse_sel_entry(msg: IpmiMessage, label: str) -> tuple[int, SelEntry]:
    """(next record ID, the record)."""
    b = _body(msg, label, "Get SEL Entry", 2 + RECORD_SIZE)
    (next_id,) = struct.unpack_from("<H", b)
    return next_id, parse_record(b[2 : 2 + RECORD_SIZE])


def parse_record(raw: bytes) -> SelEntry:
    if len(raw) != RECORD_SIZE:
        raise ProtocolError(f"a SEL record is {RECORD_SIZE} bytes, not {len(raw)}")
    record_id, record_type, timestamp, generator = struct.unpack_from("<HBIH", raw)
    evm, sensor_type, number, dir_type = raw[9], raw[10], raw[11], raw[12]
    return SelEntry(record_id, record_type, timestamp, generator, evm, sensor_type, number,
                    dir_type & 0x7F, not dir_type & 0x80, bytes(raw[13:16]), bytes(raw))


def encode_record(record_id: int, timestamp: int, generator: int, sensor_type: int,
                  sensor_number: int, event_type: int, data: bytes, *,
                  asserted: bool = True) -> bytes:
    """A system event record (the simulated BMC's side of the same bytes)."""
    return struct.pack("<HBIHBBBB3s", record_id, SYSTEM_EVENT, timestamp & 0xFFFFFFFF,
                       generator, 0x04, sensor_type, sensor_number,
                       (event_type & 0x7F) | (0 if asserted else 0x80), data[:3].ljust(3, b"\xff"))
