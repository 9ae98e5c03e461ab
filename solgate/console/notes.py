"""Where solgate's notes go in a console log: at a line boundary of the console's output.

Theory of operation
-------------------
A note (`[-- solgate <time>: alice attached --]`) written the moment its event happens
lands wherever the console's output happens to be, and during a flood that is the middle
of a line: `grep` then misses the line it cuts in two (a panic line cut in two is a
panic a script never sees). So a note that comes while the console is mid-line is held
and written right after the line's `\\n`. A line may never end (a prompt waiting for
input, a progress bar), so a held note waits at most `NOTE_HOLD` seconds; then it is
written anyway, after a visible `BREAK_MARK` that ends the open line, and the line's
rest follows the notes on a line of its own.

A note keeps the time of its event, not the time it was written: the placer hands
`Note(text, when)` back and the log formats it.

`NotePlacer` is sans-I/O: it takes console bytes, notes and `now`, and returns the items
to write, in order: console bytes, `Note`s and `BREAK` (write `BREAK_MARK` here).
`next_deadline()` says when `handle_timeout(now)` must run; `flush()` hands out what is
held (closing, rotating or reopening the file: a note never moves to a later file than
the one being written when it was due).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["BREAK", "BREAK_MARK", "NOTE_HOLD", "Item", "Note", "NotePlacer"]

NOTE_HOLD = 1.0
"""Seconds a note waits for the console's current line to end before breaking it."""
BREAK_MARK = b" [-- solgate: line continues below --]"
"""Ends a console line that a held note had to break; the line goes on after the notes."""

_NL = 0x0A


@dataclass(frozen=True, slots=True)
class Note:
    """A note to write on a line of its own; `when` is the time of its event."""

    text: str
    when: float


class _Break(enum.Enum):
    BREAK = "break"


BREAK = _Break.BREAK
"""The open line is broken here: write `BREAK_MARK` (the notes that follow end it)."""

Item = bytes | Note | _Break


class NotePlacer:
    """Holds notes that come mid-line until the line ends, or `hold` seconds have passed."""

    __slots__ = ("at_line_start", "_hold", "_held", "_deadline")

    def __init__(self, *, hold: float = NOTE_HOLD, at_line_start: bool = True) -> None:
        if hold < 0:
            raise ValueError(f"note hold must be 0 or more seconds, not {hold}")
        self.at_line_start = at_line_start
        """Whether the stream written so far (console bytes and notes) ends a line."""
        self._hold = hold
        self._held: list[Note] = []
        self._deadline: float | None = None

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def next_deadline(self) -> float | None:
        """When the held notes break the open line if it has not ended by then."""
        return self._deadline

    def note(self, text: str, now: float) -> list[Item]:
        """A note about something that happened at `now`: write it now, or hold it."""
        note = Note(text, now)
        if self.at_line_start and not self._held:
            return [note]
        self._held.append(note)
        if self._deadline is None:
            self._deadline = now + self._hold
            if self._hold == 0:
                return self.handle_timeout(now)
        return []

    def output(self, data: bytes, now: float) -> list[Item]:
        """Console bytes: the held notes go right after the first newline among them."""
        if not data:
            return []
        if not self._held:
            self.at_line_start = data[-1] == _NL
            return [data]
        nl = data.find(b"\n")
        if nl < 0:
            self.at_line_start = False
            if self._deadline is not None and now >= self._deadline:
                return [data, *self._release()]
            return [data]
        items: list[Item] = [data[: nl + 1], *self._held]
        self._held = []
        self._deadline = None
        rest = data[nl + 1 :]
        if rest:
            items.append(rest)
            self.at_line_start = rest[-1] == _NL
        else:
            self.at_line_start = True
        return items

    def handle_timeout(self, now: float) -> list[Item]:
        """The hold is over and the line is still open: break it."""
        if self._deadline is None or now < self._deadline:
            return []
        return self._release()

    def flush(self) -> list[Item]:
        """Everything held, now (the file is closing or changing)."""
        return self._release()

    def _release(self) -> list[Item]:
        if not self._held:
            return []
        items: list[Item] = [BREAK] if not self.at_line_start else []
        items += self._held
        self._held = []
        self._deadline = None
        self.at_line_start = True
        return items
