"""One console's log across members: each member's pieces, put in epoch order.

Each member logs what it ran, in its own `data_dir`. Every stretch a member ran a console
starts with its note `cluster: NAME owns the console (epoch E)`; the epoch is the owner
key's create_revision, which grows with every change of owner, so sorting the stretches
by epoch puts the members' pieces in the order they held the console. Text before a
member's first note (logged before the cluster existed) sorts first, unless the member
says which epoch it belongs to (`Part.epoch`: a tail that starts in the middle of a
piece, whose note is further back). Within one epoch a member's pieces keep their order
in its file (a fence and a resume share the epoch).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

OWNS = re.compile(rb"\[-- solgate [^\]]*?: cluster: (?P<member>\S+) owns the console "
                   rb"\(epoch (?P<epoch>\d+)\)")


EPOCH_HEADER = "X-Solgate-Epoch"  # a member's answer: the epoch its part starts in


@dataclass(frozen=True, slots=True)
class Part:
    """Some of one member's log of a console, and the epoch of the piece it starts in
    (0: before the member's first ownership note, or the part starts with a note)."""

    data: bytes
    epoch: int = 0


def split_by_epoch(member: str, data: bytes,
                   lead: int = 0) -> list[tuple[int, str, int, bytes]]:
    """`(epoch, member, position, piece)` for each stretch of `data` (one member's log);
    text before its first note belongs to epoch `lead`."""
    pieces: list[tuple[int, str, int, bytes]] = []
    starts = [(m.start(), int(m.group("epoch"))) for m in OWNS.finditer(data)]
    if not starts or starts[0][0] > 0:
        head_end = starts[0][0] if starts else len(data)
        if data[:head_end]:
            pieces.append((lead, member, 0, data[:head_end]))
    for i, (at, epoch) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(data)
        pieces.append((epoch, member, at, data[at:end]))
    return pieces


def _part(value: bytes | Part) -> Part:
    return value if isinstance(value, Part) else Part(value)


def merged_lines(logs: Mapping[str, bytes | Part]) -> list[tuple[int, bytes]]:
    """Every member's log of one console (member name -> its part) as one history's
    lines, each with the epoch of its piece (a history page counts them per epoch)."""
    pieces = [p for member, value in logs.items()
              for p in split_by_epoch(member, _part(value).data, _part(value).epoch)]
    pieces.sort(key=lambda p: (p[0], p[1], p[2]))
    out: list[tuple[int, bytes]] = []
    for epoch, _, _, piece in pieces:
        if out and not out[-1][1].endswith(b"\n"):
            out[-1] = (out[-1][0], out[-1][1] + b"\r\n")  # a piece may end mid-line
        out.extend((epoch, line) for line in piece.splitlines(keepends=True))
    return out


def merge_logs(logs: Mapping[str, bytes | Part]) -> bytes:
    """Every member's log of one console (member name -> bytes), as one history."""
    return b"".join(line for _, line in merged_lines(logs))
