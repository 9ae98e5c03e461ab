"""One RMCP+ session on the simulated BMC: handshake state, keys and counters.

Theory of operation
-------------------
A session is born on Open Session Request (state ``OPENED``), learns the user and both
random numbers on RAKP1 (``RAKP2_SENT``), and becomes ``ACTIVE`` when RAKP3 proves the
console knows the password. Each step keeps the exact request it answered and the bytes
of its answer, so a console that retransmits a step because our answer was lost gets the
same answer again instead of a second session or a new random number (FreeIPMI
retransmits the pending step; ipmitool restarts from Open Session, which simply opens a
new session).

Once active, all traffic is sealed and opened by the shared `PacketProtector`; inbound
session sequence numbers go through a `ReplayWindow` *after* integrity was verified, so
a forged packet cannot move the window. The BMC (`bmc.py`) owns the session table and
the timers; this module holds no clock and sends nothing by itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from solgate.ipmi.codec import Privilege
from solgate.ipmi.crypto import CipherSuite, PacketProtector
from solgate.ipmi.replay import OutboundCounter, ReplayWindow

Address = tuple[Any, ...]
"""A peer's socket address as asyncio hands it over: (host, port) or the IPv6 4-tuple."""

# How long a retransmitted IPMI request is answered from the cache instead of re-executed.
DUPLICATE_REQUEST_WINDOW = 5.0


class SessionState(enum.Enum):
    OPENED = "opened"  # Open Session Response sent, waiting for RAKP1
    RAKP2_SENT = "rakp2-sent"  # waiting for RAKP3
    ACTIVE = "active"  # RAKP4 sent; IPMI and SOL payloads allowed


@dataclass(frozen=True, slots=True)
class SimUser:
    """A BMC account. `password` is a secret: never log it."""

    name: bytes
    password: bytes
    max_privilege: Privilege


class BmcSession:
    """Per-session state (digest section 11, item 4)."""

    __slots__ = (
        "sidc", "sidm", "addr", "suite", "max_privilege", "state", "expires",
        "open_request", "open_response",
        "rakp1", "rakp2", "rakp3", "rakp4",
        "user", "rm", "rc", "role",
        "privilege", "protector", "outbound", "window",
        "last_request", "last_response", "last_request_at", "closing",
    )

    def __init__(self, sidc: int, sidm: int, addr: Address, suite: CipherSuite,
                 max_privilege: Privilege, expires: float) -> None:
        self.sidc = sidc
        self.sidm = sidm
        self.addr = addr
        self.suite = suite
        self.max_privilege = max_privilege
        self.state = SessionState.OPENED
        self.expires = expires
        # Cached handshake exchanges: request payload -> the datagram we answered with.
        self.open_request = b""
        self.open_response = b""
        self.rakp1 = b""
        self.rakp2 = b""
        self.rakp3 = b""
        self.rakp4 = b""
        self.user: SimUser | None = None
        self.rm = b""
        self.rc = b""
        self.role = 0
        self.privilege = Privilege.USER
        self.protector: PacketProtector | None = None
        self.outbound = OutboundCounter()
        self.window = ReplayWindow()
        # Last IPMI request key and the response payload sent for it.
        self.last_request: tuple[int, int, int, bytes] | None = None
        self.last_response = b""
        self.last_request_at = 0.0
        self.closing = False

    @property
    def active(self) -> bool:
        return self.state is SessionState.ACTIVE

    @property
    def username(self) -> str:
        return self.user.name.decode("utf-8", "replace") if self.user else ""

    def __repr__(self) -> str:  # never show keys
        return (
            f"BmcSession(sidc=0x{self.sidc:08x}, sidm=0x{self.sidm:08x}, "
            f"state={self.state.value}, user={self.username!r}, cs={self.suite.id})"
        )

    def cached_response(self, key: tuple[int, int, int, bytes], now: float) -> bytes | None:
        """The response to an identical recent request: a retransmission, not a new call."""
        if key == self.last_request and now - self.last_request_at < DUPLICATE_REQUEST_WINDOW:
            return self.last_response
        return None

    def remember_response(self, key: tuple[int, int, int, bytes], response: bytes,
                          now: float) -> None:
        self.last_request = key
        self.last_response = response
        self.last_request_at = now
