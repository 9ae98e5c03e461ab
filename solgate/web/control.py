"""The console WebSocket's control messages (text frames): one schema, checked in one place.

Theory of operation
-------------------
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

import json
import math
from dataclasses import dataclass
from typing import Any

from solgate.errors import SolgateError

MIN_COLS, MAX_COLS = 10, 1000
MIN_ROWS, MAX_ROWS = 2, 500
MAX_CONTROL_CHARS = 4096  # the longest valid message is under 100 characters


class ControlError(SolgateError):
    """A control message the schema refuses; the text is for the client that sent it."""


@dataclass(frozen=True, slots=True)
class Resize:
    """The viewer's terminal size, clamped to the allowed range."""

    cols: int
    rows: int


@dataclass(frozen=True, slots=True)
class TakeWrite:
    """Take the write lock from its holder."""


@dataclass(frozen=True, slots=True)
class Break:
    """Send a serial BREAK."""


@dataclass(frozen=True, slots=True)
class SysRq:
    """BREAK, then one letter or digit: Linux Magic SysRq."""

    key: str


@dataclass(frozen=True, slots=True)
class Ping:
    """Ask for a `pong`."""


ControlMessage = Resize | TakeWrite | Break | SysRq | Ping


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
