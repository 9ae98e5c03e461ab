"""What a user at a terminal is told: the banner, write-lock changes, and screen resets.

Two front ends draw a console into a real terminal: the ssh gateway (server side,
solgate.ssh) and `solgate console` (client side, solgate.terminal, over the WebSocket).
Both say the same things in the same words, so the words live here; each front end
decides when to print them.  Pure: no I/O, no hub.
"""

from __future__ import annotations

__all__ = ["TERM_LEAVE", "TERM_PREPARE", "WriteLockNotices", "state_notice"]

# Before a repaint: leave the alternate screen, normal cursor keys and keypad, no
# bracketed paste, no mouse reporting; the snapshot itself resets the rest.
TERM_PREPARE = b"\x1b[?1049l\x1b[?1l\x1b>\x1b[?2004l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l"
# On the way out: the same, plus plain colours and a visible cursor for the shell.
TERM_LEAVE = TERM_PREPARE + b"\x1b[0m\x1b[?25h"


class WriteLockNotices:
    """The banner on arrival and a line when the write lock moves, for one attachment."""

    def __init__(self, console: str, user: str, escape: str | None, *,
                 read_only: bool = False) -> None:
        self.console = console
        self.user = user
        self.escape = escape or "~"
        self.read_only = read_only  # watch-only by the user's own choice
        self.holder: str | None = None

    def banner(self, can_write: bool) -> str:
        """The first line a user sees: who they are here and whether they may type."""
        esc = self.escape
        if self.read_only:
            how = "read-only (--read-only)"
        elif not can_write:
            how = "read-only: your role cannot type"
        elif self.holder not in (None, self.user):
            how = f"{self.holder} holds the write lock ({esc}w takes it)"
        else:
            how = "read-write"
        return f"{self.console} as {self.user or 'you'}, {how}; {esc}. leaves, {esc}? help"

    def moved(self, holder: str | None, can_write: bool) -> str | None:
        """The line for a write lock now held by `holder`, or None (nothing to say)."""
        previous, self.holder = self.holder, holder
        if not can_write or holder == previous:
            return None  # a viewer is not told who types
        if holder is not None and holder != self.user:
            return f"{holder} took the write lock; {self.escape}w takes it back"
        if holder == self.user and not self.read_only:
            return "you hold the write lock"
        return None


def state_notice(console: str, state: str, detail: str) -> str:
    """The line for a console whose connection to its BMC changed state."""
    return f"{console} is {state}" + (f": {detail}" if detail else "")
