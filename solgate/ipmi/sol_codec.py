"""The SOL payload (payload type 0x01): four header bytes and character data.

Layout (ipmi-sol-protocol.md section 6.1), the same in both directions:
byte 0 packet sequence (1..15, 0 = ACK-only), byte 1 the peer's sequence being
acknowledged (0 = none), byte 2 accepted character count, byte 3 operation (console to
BMC) or status (BMC to console) flags, then 0..255 characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

from solgate.errors import ProtocolError

MAX_SOL_CHARACTERS = 255


class SolOperation(IntFlag):
    """Console -> BMC flags (byte 3)."""

    NONE = 0
    FLUSH_OUTBOUND = 0x01
    FLUSH_INBOUND = 0x02
    DEASSERT_DCD_DSR = 0x04
    DEASSERT_CTS = 0x08
    BREAK = 0x10
    RING_WOR = 0x20
    NACK = 0x40


class SolStatus(IntFlag):
    """BMC -> console flags (byte 3)."""

    NONE = 0
    BREAK_DETECTED = 0x04
    TRANSMIT_OVERRUN = 0x08
    DEACTIVATING = 0x10
    CHARACTER_TRANSFER_UNAVAILABLE = 0x20
    NACK = 0x40


NACK_FLAG = 0x40


@dataclass(frozen=True, slots=True)
class SolPacket:
    seq: int = 0
    ack_seq: int = 0
    accepted: int = 0
    flags: int = 0
    data: bytes = b""

    @property
    def nack(self) -> bool:
        return bool(self.flags & NACK_FLAG)


def encode_sol(p: SolPacket) -> bytes:
    if not (0 <= p.seq <= 15 and 0 <= p.ack_seq <= 15 and 0 <= p.accepted <= 255):
        raise ValueError(f"SOL header out of range: {p!r}")
    if len(p.data) > MAX_SOL_CHARACTERS:
        raise ValueError("a SOL packet carries at most 255 characters")
    return bytes((p.seq, p.ack_seq, p.accepted, p.flags & 0xFF)) + p.data


def decode_sol(payload: bytes) -> SolPacket:
    if len(payload) < 4:
        raise ProtocolError(f"SOL payload of {len(payload)} bytes")
    if len(payload) > 4 + MAX_SOL_CHARACTERS:
        raise ProtocolError(f"SOL payload of {len(payload)} bytes is too long")
    return SolPacket(
        seq=payload[0] & 0x0F,
        ack_seq=payload[1] & 0x0F,
        accepted=payload[2],
        flags=payload[3],
        data=bytes(payload[4:]),
    )
