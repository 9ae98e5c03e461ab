"""Session sequence numbers: outbound counters and the inbound replay window (digest s4).

Each side numbers its own packets from 1, skipping 0 on wrap. A receiver accepts a number
up to `ahead` above the highest seen (and advances), or up to `behind` below it if not
seen yet; anything else is a replay or garbage and is dropped. Call `accept` only after
the packet's integrity was verified, so a forged packet cannot move the window.
"""

from __future__ import annotations

MOD = 1 << 32


class OutboundCounter:
    __slots__ = ("value",)

    def __init__(self, start: int = 0) -> None:
        self.value = start

    def next(self) -> int:
        self.value = (self.value + 1) % MOD or 1
        return self.value


class ReplayWindow:
    __slots__ = ("ahead", "behind", "highest", "_seen", "_mask")

    def __init__(self, ahead: int = 32, behind: int = 16) -> None:
        self.ahead = ahead
        self.behind = behind
        self.highest: int | None = None
        self._seen = 0  # bit i set: highest - i was seen
        self._mask = (1 << (behind + 1)) - 1

    @property
    def seen(self) -> int:
        """Bit i set: `highest - i` was seen (for the compiled fast path to carry on)."""
        return self._seen

    def restore(self, highest: int | None, seen: int) -> None:
        """Take the window back as the compiled fast path left it."""
        self.highest, self._seen = highest, seen

    def check(self, seq: int) -> bool:
        """Would `seq` be accepted? Does not change the window."""
        if seq == 0:
            return False
        if self.highest is None:
            return True
        fwd = (seq - self.highest) % MOD
        if 1 <= fwd <= self.ahead:
            return True
        back = (self.highest - seq) % MOD
        return 1 <= back <= self.behind and not self._seen >> back & 1

    def accept(self, seq: int) -> bool:
        """Record `seq` if acceptable; return whether it was."""
        highest = self.highest
        if highest is not None and seq == highest + 1 and self.ahead:  # in order: most calls
            self._seen = ((self._seen << 1) | 1) & self._mask
            self.highest = seq
            return True
        if not self.check(seq):
            return False
        if self.highest is None:
            self.highest, self._seen = seq, 1
            return True
        fwd = (seq - self.highest) % MOD
        if 1 <= fwd <= self.ahead:
            self._seen = ((self._seen << fwd) | 1) & self._mask
            self.highest = seq
        else:
            self._seen |= 1 << ((self.highest - seq) % MOD)
        return True
