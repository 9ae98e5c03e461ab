"""The console WebSocket's protocol: its messages both ways and its close codes, in one place.

Theory of operation
-------------------
Shared by the server (solgate.web.ws) and its terminal client (`solgate console`,
solgate.terminal), so the two cannot drift apart; the contract in words is
docs/websocket-protocol.md.  Binary frames are console bytes; text frames are the
JSON messages below, built with `encode` and read with `parse_control` (client to
server, strict) or `parse_server` (server to client, tolerant: a client ignores what
it does not know).

A text frame from a client is a JSON object with a `"type"`; `parse_control` turns it
into one of the frozen message classes below or raises `ControlError`, whose text is
sent back to that client as an `error` message while the connection stays open
(docs/websocket-protocol.md).  Nothing a client sends may end the socket or reach the
server log as a traceback, so the parser accepts only what the schema names:

* JSON only: `NaN`, `Infinity` and numbers too large for a float (`1e400`) are refused
  while parsing, so no non-finite number gets past this module.
* Every field has one type.  Sizes are integers (a float with no fraction, such as
  `80.0`, counts: JavaScript has no other kind of number); `true` is not a number.
  Sizes outside the allowed range are clamped, as the protocol says.
* Fields a message does not define are ignored, so a newer client can add some.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from solgate.errors import SolgateError

MIN_COLS, MAX_COLS = 10, 1000
MIN_ROWS, MAX_ROWS = 2, 500
MAX_CONTROL_CHARS = 4096  # the longest valid message is under 100 characters


class CloseCode(enum.IntEnum):
    """Close codes of our own (4000-4999 are the application's, RFC 6455 section 7.4.2)."""

    DETACHED = 4000  # the user typed ~. : the client must not reconnect
    HUB_CLOSED = 4001  # the hub ended this attachment (console removed, too slow)
    IDLE = 4002  # the client idle timeout ended it: the client must not reconnect
    REVOKED = 4003  # the user lost access (logout, reload): the client must not reconnect


class ControlError(SolgateError):
    """A control message the schema refuses; the text is for the client that sent it."""


@dataclass(frozen=True, slots=True)
class Resize:
    """The viewer's terminal size, clamped to the allowed range."""

    TYPE: ClassVar[str] = "resize"

    cols: int
    rows: int


@dataclass(frozen=True, slots=True)
class TakeWrite:
    """Take the write lock from its holder."""

    TYPE: ClassVar[str] = "take-write"


@dataclass(frozen=True, slots=True)
class Break:
    """Send a serial BREAK."""

    TYPE: ClassVar[str] = "break"


@dataclass(frozen=True, slots=True)
class SysRq:
    """BREAK, then one letter or digit: Linux Magic SysRq."""

    TYPE: ClassVar[str] = "sysrq"

    key: str


@dataclass(frozen=True, slots=True)
class Ping:
    """Ask for a `pong`."""

    TYPE: ClassVar[str] = "ping"


ControlMessage = Resize | TakeWrite | Break | SysRq | Ping


# --- server to client ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """The first message: who is attached to what, and what it may do."""

    TYPE: ClassVar[str] = "hello"
    console: str
    user: str
    state: str
    state_detail: str  # "" for viewers: it names the BMC's address and IPMI user
    can_write: bool  # the role may type (it still needs the write lock)
    writer: str | None
    role: str
    escape: str | None  # the escape character the server parses


@dataclass(frozen=True, slots=True)
class SnapshotFollows:
    """The next binary frame is a full repaint."""

    TYPE: ClassVar[str] = "snapshot"


@dataclass(frozen=True, slots=True)
class Lagged:
    """This viewer fell behind and `dropped` bytes were skipped for it; a snapshot follows."""

    TYPE: ClassVar[str] = "lagged"
    dropped: int


@dataclass(frozen=True, slots=True)
class WriteLock:
    """The write lock moved to `holder` (None: it is free)."""

    TYPE: ClassVar[str] = "write-lock"
    holder: str | None


@dataclass(frozen=True, slots=True)
class State:
    """The console's connection to its BMC changed state."""

    TYPE: ClassVar[str] = "state"
    state: str
    detail: str


@dataclass(frozen=True, slots=True)
class Access:
    """This user lost the right to type while attached."""

    TYPE: ClassVar[str] = "access"
    can_write: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Error:
    """A request of this client was refused; nothing else happened."""

    TYPE: ClassVar[str] = "error"
    message: str


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to `ping`."""

    TYPE: ClassVar[str] = "pong"


@dataclass(frozen=True, slots=True)
class Closed:
    """The server ends this attachment; a close frame with the matching code follows."""

    TYPE: ClassVar[str] = "closed"
    reason: str
    idle: bool = False
    revoked: bool = False

    @property
    def code(self) -> CloseCode:
        """The close code that goes with this message."""
        return (CloseCode.IDLE if self.idle else CloseCode.REVOKED if self.revoked
                else CloseCode.HUB_CLOSED)


ServerMessage = (Hello | SnapshotFollows | Lagged | WriteLock | State | Access | Error | Pong
                 | Closed)


def encode(message: ControlMessage | ServerMessage) -> str:
    """One message as its text frame: `{"type": ..., fields...}`; unset flags are left out."""
    body: dict[str, Any] = {"type": message.TYPE}
    for f in fields(message):
        value = getattr(message, f.name)
        if isinstance(message, Closed) and value is False:
            continue  # "idle" and "revoked" appear only when true
        body[f.name] = value
    return json.dumps(body)


def parse_server(text: str) -> ServerMessage | None:
    """A server's text frame as a message; None for what this client does not know.

    Tolerant, as a client must be: a missing or odd field reads as empty.
    """
    try:
        m = json.loads(text)
    except ValueError:
        return None
    if not isinstance(m, dict):
        return None
    kind = m.get("type")
    escape = m.get("escape")
    match kind:
        case "hello":
            return Hello(console=_text(m, "console"), user=_text(m, "user"),
                         state=_text(m, "state"), state_detail=_text(m, "state_detail"),
                         can_write=bool(m.get("can_write")), writer=_name(m.get("writer")),
                         role=_text(m, "role"), escape=escape if isinstance(escape, str) else None)
        case "snapshot":
            return SnapshotFollows()
        case "lagged":
            dropped = m.get("dropped")
            return Lagged(dropped if isinstance(dropped, int) else 0)
        case "write-lock":
            return WriteLock(_name(m.get("holder")))
        case "state":
            return State(_text(m, "state"), _text(m, "detail"))
        case "access":
            return Access(bool(m.get("can_write")), _text(m, "reason"))
        case "error":
            return Error(_text(m, "message"))
        case "pong":
            return Pong()
        case "closed":
            return Closed(_text(m, "reason"), idle=bool(m.get("idle")),
                          revoked=bool(m.get("revoked")))
    return None


def _text(message: dict[str, Any], field: str) -> str:
    """A string field of a server message; missing or null reads as empty."""
    return str(message.get(field) or "")


def _name(value: object) -> str | None:
    return None if value is None else str(value)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is too large")
    return value


def _size(message: dict[str, Any], field: str, lo: int, hi: int) -> int:
    value = message.get(field)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ControlError(f"{message['type']} needs whole numbers as cols and rows "
                           f"({field} is {_kind(value)})")
    return min(hi, max(lo, value))


def _kind(value: object) -> str:
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "not a whole number"
    return f"a {type(value).__name__}"


def parse_control(text: str) -> ControlMessage:
    """One text frame as a message; raises ControlError with what to fix."""
    if len(text) > MAX_CONTROL_CHARS:
        raise ControlError(f"control messages are at most {MAX_CONTROL_CHARS} characters")
    try:
        message = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        message = None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ControlError('control messages are JSON objects with a "type"')
    kind = message["type"]
    if kind == "resize":
        return Resize(_size(message, "cols", MIN_COLS, MAX_COLS),
                      _size(message, "rows", MIN_ROWS, MAX_ROWS))
    if kind == "take-write":
        return TakeWrite()
    if kind == "break":
        return Break()
    if kind == "sysrq":
        key = message.get("key")
        if not (isinstance(key, str) and len(key) == 1 and key.isascii() and key.isalnum()):
            raise ControlError("sysrq needs one letter or digit as key")
        return SysRq(key)
    if kind == "ping":
        return Ping()
    raise ControlError(f"unknown control message type {kind[:40]!r}")
