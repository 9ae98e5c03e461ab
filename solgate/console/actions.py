"""One path for what a user asks of a console, shared by the web and ssh front ends.

Theory of operation
-------------------
Keystrokes go through the escape parser, and each action it finds goes through the
same three steps whichever front end it came from: is this attachment allowed
(`attachment.can_write`, asked at every action, because a logout or a reload can take
the right away), then the hub or the engine call, then what to tell the user.  The
front end only moves bytes and shows `Outcome`s in its own way: the WebSocket sends a
refusal as an `error` message, the ssh gateway prints every notice as a line.

`solgate console` parses escapes on the client (so `~.` works while the server is
away) and asks the server through the WebSocket's control messages, which land here
too (`take_write`, `send_break`, `sysrq`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from solgate.console.escape import (
    Detach,
    EscapeParser,
    ForceReconnect,
    SendBreak,
    SendData,
    ShowHelp,
    TakeWrite,
)
from solgate.errors import SolgateError

if TYPE_CHECKING:
    from solgate.console.attachment import Attachment

__all__ = ["ConsoleActions", "Engine", "Help", "Leave", "Notice", "Outcome", "Typed"]


class Engine(Protocol):
    """The two engine actions an attached user may ask for; both raise `SolgateError`."""

    async def send_break(self, name: str, user: str) -> None: ...

    async def deactivate(self, name: str, user: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Notice:
    """A line for the user; `refused` when the request was refused and nothing happened."""

    text: str
    refused: bool = True


@dataclass(frozen=True, slots=True)
class Typed:
    """Keyboard bytes reached the console."""


@dataclass(frozen=True, slots=True)
class Help:
    """The escape help, for this user only."""

    text: str


@dataclass(frozen=True, slots=True)
class Leave:
    """The user typed the detach escape; what followed it is dropped."""


Outcome = Notice | Typed | Help | Leave


class ConsoleActions:
    """One attachment's actions: permission, then hub or engine, then the outcome."""

    def __init__(self, engine: Engine, attachment: Attachment, parser: EscapeParser) -> None:
        self.engine = engine
        self.attachment = attachment
        self.parser = parser
        self.console = attachment.hub.name
        self.user = attachment.user

    async def keyboard(self, data: bytes) -> AsyncIterator[Outcome]:
        """Bytes typed by the user, action by action; ends after `Leave`."""
        attachment = self.attachment
        for action in self.parser.feed(data):
            match action:
                case SendData(typed=False) if not attachment.is_writer:
                    pass  # the terminal answering the host (a cursor query): not typing
                case SendData(data=payload):
                    yield self._type(payload)
                case Detach():
                    yield Leave()
                    return
                case SendBreak():
                    if (notice := await self.send_break()) is not None:
                        yield notice
                case ForceReconnect():
                    yield await self.deactivate()
                case TakeWrite():
                    if (notice := self.take_write()) is not None:
                        yield notice
                case ShowHelp():
                    yield Help(self.parser.help_text)

    def _type(self, payload: bytes) -> Outcome:
        attachment = self.attachment
        if not attachment.can_write:
            return Notice("read-only: your role cannot type on this console")
        if not attachment.send(payload):
            holder = attachment.hub.writer
            who = f"{holder} holds it" if holder else "it is free"
            esc = self.parser.escape_char or "~"
            return Notice(f"read-only: take the write lock to type ({who}; {esc}w takes it)")
        return Typed()

    def take_write(self) -> Notice | None:
        """Take the write lock from its holder; everyone attached is told by the hub."""
        if not self.attachment.take_write():
            return Notice("read-only: your role cannot take the write lock")
        return None

    async def send_break(self) -> Notice | None:
        """A serial BREAK (logged with the user's name); a Notice when it did not happen."""
        if not self.attachment.can_write:
            return Notice("read-only: your role cannot send BREAK")
        try:
            await self.engine.send_break(self.console, self.user)
        except SolgateError as exc:
            return Notice(f"BREAK failed: {exc}")
        return None

    async def sysrq(self, key: str) -> Notice | None:
        """BREAK, then `key`: Linux Magic SysRq (the key needs the write lock)."""
        notice = await self.send_break()
        if notice is not None:
            return notice
        if not self.attachment.send(key.encode("ascii")):
            return Notice("BREAK sent, but the SysRq key was not: take the write lock")
        return None

    async def deactivate(self) -> Notice:
        """Force the BMC to drop SOL, then reconnect (frees a stuck or stolen payload)."""
        if not self.attachment.can_write:
            return Notice("read-only: your role cannot force a reconnect")
        try:
            await self.engine.deactivate(self.console, self.user)
        except SolgateError as exc:
            return Notice(f"deactivate failed: {exc}")
        return Notice("asked the BMC to drop SOL; reconnecting", refused=False)
