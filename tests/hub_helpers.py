"""`TypingConsole`: the console end of a `Hub` in tests (what a worker is in the server)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TypingConsole:
    """A `HubConsole` that keeps what its hub hands back: keystrokes and viewer records."""

    typed: list[bytes] = field(default_factory=list)
    told: list[tuple[str, str, str]] = field(default_factory=list)

    def send_input(self, data: bytes) -> None:
        self.typed.append(data)

    def viewer_event(self, kind: str, user: str, message: str) -> None:
        self.told.append((kind, user, message))
