"""The `flood` byte stream: checkable console output for no-loss / no-duplicate tests.

Format (every line but possibly the last is exactly `FLOOD_LINE_LEN` = 64 bytes)::

    flood 00000001 BCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuv\\r\\n
    flood 00000002 CDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvw\\r\\n

Line `k` (counted from 1) is ``b"flood %08d " % k``, then 47 filler characters taken from
the 62 letters and digits ``A-Za-z0-9`` starting at position ``k % 62`` (wrapping), then
CR LF. `flood N` on the simulated host prints exactly the first N bytes of this endless
stream, so the last line may be cut short (like ``head -c N``) and the shell prompt
follows directly. Because every byte is a function of its offset, any slice can be made
on demand (`flood_slice`), which keeps a 10 MB flood cheap, and a receiver can check
every byte (`verify_flood`) and say which line was lost, doubled or moved.
"""

from __future__ import annotations

import re

FLOOD_LINE_LEN = 64
FLOOD_MAX_BYTES = FLOOD_LINE_LEN * 99_999_999  # line numbers have 8 digits

_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_FILLER_SOURCE = _ALNUM * 2
_FILL_LEN = FLOOD_LINE_LEN - len(b"flood 00000000 ") - 2
_LINE_RE = re.compile(rb"flood (\d{8}) ")


def flood_line(k: int) -> bytes:
    """Line number `k` (from 1) of the flood stream, CR LF included."""
    start = k % len(_ALNUM)
    return b"flood %08d " % k + _FILLER_SOURCE[start : start + _FILL_LEN] + b"\r\n"


def flood_slice(offset: int, length: int) -> bytes:
    """Bytes `offset` .. `offset + length` of the endless flood stream, built on demand."""
    if length <= 0:
        return b""
    first = offset // FLOOD_LINE_LEN
    last = (offset + length - 1) // FLOOD_LINE_LEN
    chunk = b"".join(flood_line(i + 1) for i in range(first, last + 1))
    skip = offset - first * FLOOD_LINE_LEN
    return chunk[skip : skip + length]


def flood_bytes(size: int) -> bytes:
    """The first `size` bytes of the flood stream: what `flood <size>` prints."""
    return flood_slice(0, size)


def verify_flood(data: bytes, size: int | None = None) -> tuple[bool, str]:
    """Check that `data` is exactly a flood output; on failure say what went wrong and where.

    `data` must start at the first flood byte (line 1). With `size`, its length must match
    too. The details name the first problem: a dropped, duplicated, reordered or corrupted
    line, with its byte offset.
    """
    lines = len(data) // FLOOD_LINE_LEN
    if data == flood_bytes(len(data)):
        if size is not None and len(data) != size:
            return False, f"flood truncated or overlong: got {len(data)} bytes, expected {size}"
        return True, f"{len(data)} bytes ({lines} full lines) verified"
    return False, _diagnose(data)


def _diagnose(data: bytes) -> str:
    """Walk the lines of a bad flood capture and describe its first defect."""
    expected = 1
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n", pos)
        line = data[pos:] if end < 0 else data[pos : end + 2]
        match = _LINE_RE.match(line)
        if match is None:
            return f"line {expected}: unrecognisable bytes at offset {pos}: {line[:24]!r}"
        seq = int(match.group(1))
        if seq != expected:
            return f"offset {pos}: {_sequence_problem(expected, seq)}"
        if end < 0:  # the cut-short final line
            if not flood_line(seq).startswith(line):
                return f"line {seq}: final partial line corrupted at offset {pos}: {line!r}"
            break
        if line != flood_line(seq):
            return f"line {seq}: corrupted at offset {pos}: {line!r}"
        expected += 1
        pos = end + 2
    return f"{len(data)} bytes differ from the flood stream"


def _sequence_problem(expected: int, seq: int) -> str:
    if seq > expected:
        missing = seq - expected
        which = f"line {expected}" if missing == 1 else f"lines {expected}..{seq - 1}"
        return f"{which} dropped ({missing} line(s) missing before line {seq})"
    if seq == expected - 1:
        return f"line {seq} duplicated (expected line {expected})"
    return f"line {seq} out of order (expected line {expected})"
