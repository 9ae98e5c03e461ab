"""The simulated BMC's System Event Log: what a real BMC records when its host panics
or its power changes, served with Get SEL Info, Reserve SEL and Get SEL Entry.

What is recorded, as real BMCs and the Linux IPMI driver do it:

* a kernel panic with the IPMI driver loaded: the driver's Platform Event Message, an
  "OS Critical Stop" (sensor type 0x20) "run-time critical stop" (offset 1, with OEM
  codes in data 2-3: 0xA1), generator 0x0041 (system software ID 0x20), the sensor
  number and data 2-3 being the first three characters of the panic message, as
  `ipmi_msghandler.c` fills them in;
* power off: "Power Unit" (0x09) "power off / power down";
* power on and reset: "System Boot / Restart Initiated" (0x1D), "initiated by power up"
  or "initiated by hard reset"; a power cycle is an off and an on.

Timestamps come from the BMC's clock (`clock`, epoch seconds). The log holds at most
`capacity` records and then drops the oldest (real BMCs either do that or stop
logging). Record IDs count up from 1 and are never reused.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable

from solgate.ipmi.codec import CompletionCode
from solgate.ipmi.sel import LAST_ENTRY, RECORD_SIZE, encode_record

CC = CompletionCode
Result = tuple[int, bytes]
BMC_GENERATOR = 0x0020  # the BMC itself (slave address 0x20)
OS_GENERATOR = 0x0041  # system software ID 0x20: the OS's IPMI driver
DEFAULT_CAPACITY = 512
PANIC_MESSAGE = b"Kernel panic - not syncing: sysrq triggered crash"


class SimSel:
    """The records and the reservation of one simulated BMC."""

    def __init__(self, *, clock: Callable[[], float] = time.time,
                 capacity: int = DEFAULT_CAPACITY) -> None:
        self._clock = clock
        self.records: deque[bytes] = deque(maxlen=capacity)
        self._next_id = 1
        self.reservation = 0
        self.last_addition = 0xFFFFFFFF

    def add(self, generator: int, sensor_type: int, number: int, event_type: int,
            data: bytes) -> None:
        now = int(self._clock())
        self.records.append(encode_record(self._next_id, now, generator, sensor_type, number,
                                          event_type, data))
        self._next_id = self._next_id % 0xFFFE + 1
        self.last_addition = now

    def host_event(self, kind: str) -> None:
        """What the host just did ("panic", "power-off", "power-on", "reset")."""
        if kind == "panic":
            message = PANIC_MESSAGE
            self.add(OS_GENERATOR, 0x20, message[0], 0x6F, bytes((0xA1, *message[1:3])))
        elif kind == "power-off":
            self.add(BMC_GENERATOR, 0x09, 0x01, 0x6F, b"\x00\xff\xff")
        elif kind == "power-on":
            self.add(BMC_GENERATOR, 0x1D, 0x01, 0x6F, b"\x00\xff\xff")
        elif kind == "reset":
            self.add(BMC_GENERATOR, 0x1D, 0x01, 0x6F, b"\x01\xff\xff")

    # -- the commands ----------------------------------------------------------------

    def info(self, data: bytes) -> Result:
        if data:
            return CC.REQUEST_LENGTH_INVALID, b""
        free = (self.records.maxlen or 0) - len(self.records)
        return CC.OK, struct.pack("<BHHIIB", 0x51, len(self.records), free * RECORD_SIZE,
                                  self.last_addition, 0xFFFFFFFF, 0x02)  # supports reserve

    def reserve(self, data: bytes) -> Result:
        if data:
            return CC.REQUEST_LENGTH_INVALID, b""
        self.reservation = self.reservation % 0xFFFF + 1
        return CC.OK, struct.pack("<H", self.reservation)

    def entry(self, data: bytes) -> Result:
        if len(data) != 6:
            return CC.REQUEST_LENGTH_INVALID, b""
        reservation, record_id, offset, count = struct.unpack("<HHBB", data)
        if offset and reservation != self.reservation:
            return CC.RESERVATION_CANCELLED, b""
        records = list(self.records)
        if not records:
            return CC.NOT_PRESENT, b""
        ids = [struct.unpack_from("<H", r)[0] for r in records]
        if record_id == 0:
            index = 0
        elif record_id == LAST_ENTRY:
            index = len(records) - 1
        elif record_id in ids:
            index = ids.index(record_id)
        else:
            return CC.NOT_PRESENT, b""
        next_id = ids[index + 1] if index + 1 < len(ids) else LAST_ENTRY
        record = records[index]
        end = RECORD_SIZE if count == 0xFF else min(RECORD_SIZE, offset + count)
        return CC.OK, struct.pack("<H", next_id) + record[offset:end]
