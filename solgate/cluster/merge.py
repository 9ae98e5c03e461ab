"""One console's log across members: each member's pieces, put in epoch order.

Each member logs what it ran, in its own `data_dir`. Every stretch a member ran a console
starts with its note `cluster: NAME owns the console (epoch E)`; the epoch is the owner
key's create_revision, which grows with every change of owner, so sorting the stretches
by epoch puts the members' pieces in the order they held the console. Text before a
member's first note (logged before the cluster existed) sorts first. Within one epoch a
member's pieces keep their order in its file (a fence and a resume share the epoch).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_OWNS = re.compile(rb"\[-- solgate [^\]]*?: cluster: (?P<member>\S+) owns the console "
                   rb"\(epoch (?P<epoch>\d+)\)")


def split_by_epoch(member: str, data: bytes) -> list[tuple[int, str, int, bytes]]:
    """`(epoch, member, position, piece)` for each stretch of `data` (one member's log)."""
    pieces: list[tuple[int, str, int, bytes]] = []
    starts = [(m.start(), int(m.group("epoch"))) for m in _OWNS.finditer(data)]
    if not starts or starts[0][0] > 0:
        head_end = starts[0][0] if starts else len(data)
        if data[:head_end]:
            pieces.append((0, member, 0, data[:head_end]))
    for i, (at, epoch) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(data)
        pieces.append((epoch, member, at, data[at:end]))
    return pieces


def merge_logs(logs: Mapping[str, bytes]) -> bytes:
    """Every member's log of one console (member name -> bytes), as one history."""
    pieces = [p for member, data in logs.items() for p in split_by_epoch(member, data)]
    pieces.sort(key=lambda p: (p[0], p[1], p[2]))
    out = bytearray()
    for _, _, _, piece in pieces:
        if out and not out.endswith(b"\n"):
            out += b"\r\n"  # a member's piece may end mid-line (it stopped there)
        out += piece
    return bytes(out)
