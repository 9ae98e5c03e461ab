"""Durations and sizes written with units ("500ms", "20s", "1h30m"; "64KiB", "50MB").

The configuration, the command-line options and the log tools read them alike; this
module needs nothing but the standard library, so a client command can use it without
loading the configuration code. `kind` and `toml_repr` name a wrong value in these
messages, as in the configuration's.
"""

from __future__ import annotations

import math
import re

from solgate.errors import ConfigError

# Units, so defaults read like prose: `keepalive_interval = 20 * SECONDS`.
MILLISECONDS = 0.001
SECONDS = 1.0
MINUTES = 60 * SECONDS
HOURS = 60 * MINUTES
DAYS = 24 * HOURS
BYTES = 1
KB, MB, GB, TB = 1000, 1000**2, 1000**3, 1000**4
KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4

_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)", re.IGNORECASE)
_DURATION = re.compile(r"(?:\s*(?:\d+(?:\.\d*)?|\.\d+)\s*(?:ms|s|m|h|d))+", re.IGNORECASE)
_DURATION_UNITS = {"ms": MILLISECONDS, "s": SECONDS, "m": MINUTES, "h": HOURS, "d": DAYS}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]i?b|b)?\s*", re.IGNORECASE)
_SIZE_UNITS = {
    "b": BYTES, "kb": KB, "mb": MB, "gb": GB, "tb": TB,
    "kib": KIB, "mib": MIB, "gib": GIB, "tib": TIB,
}
_DURATION_HELP = 'write a number with a unit, like "500ms", "20s", "5m" or "1h"'
_SIZE_HELP = 'write a number with a unit, like "64KiB", "50MB" or "1GiB"'


def kind(value: object) -> str:
    """How a wrong value is named in a message: "a string ("x")", "a list", ..."""
    if isinstance(value, bool):
        return f"a boolean ({toml_repr(value)})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({toml_repr(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def toml_repr(value: object) -> str:
    """Render a value the way it would be written in the file (for messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_repr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{...}"
    return str(value)


def duration_seconds(value: object) -> float:
    """Seconds from "500ms", "20s", "5m", "1h", "1h30m" or a number; ValueError if not."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration, got {kind(value)}; {_DURATION_HELP}")
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return float(text)
        if not _DURATION.fullmatch(text):
            raise ValueError(f"{toml_repr(value)} is not a duration; {_DURATION_HELP}")
        return sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in _DURATION_PART.findall(text))
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value} is not a duration; use a positive number of seconds")
    return seconds


def size_bytes(value: object) -> int:
    """Bytes from "50MB", "64KiB", "1.5GB" or an integer; ValueError if not."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a size, got {kind(value)}; {_SIZE_HELP}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is not a size; sizes cannot be negative")
        return value
    m = _SIZE.fullmatch(value)
    if not m:
        raise ValueError(f"{toml_repr(value)} is not a size; {_SIZE_HELP}")
    return int(round(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]))


def parse_duration(value: str | int | float) -> float:
    """Seconds from "500ms", "20s", "5m", "1h" (or "1h30m"); a bare number means seconds."""
    try:
        return duration_seconds(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def parse_size(value: str | int) -> int:
    """Bytes from "50MB" (decimal), "64KiB" (binary) or a plain integer."""
    try:
        return size_bytes(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
