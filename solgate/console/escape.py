"""The `~` escape parser shared by the web, terminal and ssh front ends.

Theory of operation
-------------------
A user typing into a console needs a few commands that must never reach the host:
detach, send a serial break, force the BMC session to reconnect, take the write lock,
show help. Like ssh and ipmitool, they are the escape character followed by one more
character, and only at the start of a line (the very start of the input, or right
after CR or LF), so a `~` inside a word or a path is just a `~`.

The parser is sans-I/O: `feed(bytes)` returns a list of actions, in order; it never
reads a clock. The escape character at the start of a line is held back until the
next byte decides what it is (`pending`); a front end that wants a lone `~` to go
through after a pause calls `flush()` from its own timer.

Rules (the same as OpenSSH's):

* `~.` detach, `~B` serial break, `~D` forced deactivate and reconnect, `~w` take the
  write lock, `~?` help. After any of them the input is still at the start of a line,
  so `~?~.` works.
* `~~` sends one `~`; the input is then mid-line.
* `~` followed by anything else sends both characters; the start-of-line state
  follows that character (so `~` then Enter sends `~\\r` and stays at line start).
* Nothing after `~.` in the same chunk is sent: the user asked to leave.

Behind an ssh client, whose own escape is also `~`, a user types `~~.` to reach ours,
or picks another escape character per user.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "HELP_TEXT",
    "Action",
    "Detach",
    "EscapeParser",
    "ForceReconnect",
    "SendBreak",
    "SendData",
    "ShowHelp",
    "TakeWrite",
    "help_text",
]


@dataclass(frozen=True, slots=True)
class SendData:
    """Bytes to send to the console (consecutive data in one feed are coalesced)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Detach:
    """The user typed `~.`: leave the console, the session to the BMC stays up."""


@dataclass(frozen=True, slots=True)
class SendBreak:
    """The user typed `~B`: send a serial break (SysRq on Linux) through SOL."""


@dataclass(frozen=True, slots=True)
class ForceReconnect:
    """The user typed `~D`: force-deactivate the SOL payload and reconnect."""


@dataclass(frozen=True, slots=True)
class TakeWrite:
    """The user typed `~w`: take the write lock from whoever holds it."""


@dataclass(frozen=True, slots=True)
class ShowHelp:
    """The user typed `~?`: show `EscapeParser.help_text` locally."""


Action = SendData | Detach | SendBreak | ForceReconnect | TakeWrite | ShowHelp

_COMMANDS: dict[int, Action] = {
    ord("."): Detach(),
    ord("B"): SendBreak(),
    ord("D"): ForceReconnect(),
    ord("w"): TakeWrite(),
    ord("?"): ShowHelp(),
}

_CR = 0x0D
_LF = 0x0A


def help_text(escape_char: str = "~") -> str:
    """The escape list for `~?`, with CRLF line ends so a raw-mode terminal shows it."""
    e = escape_char
    lines = [
        "Supported escape sequences (at the start of a line):",
        f"  {e}.  - detach from the console (the console keeps running)",
        f"  {e}B  - send a serial break (SysRq)",
        f"  {e}D  - force the BMC to drop SOL and reconnect",
        f"  {e}w  - take the write lock (read-write users only)",
        f"  {e}?  - this help",
        f"  {e}{e}  - send one {e}",
        f"(Behind ssh, whose escape is also ~, type ~{e} for each {e}.)"
        if e == "~"
        else f"(Escape character is {e}.)",
    ]
    return "\r\n".join(lines) + "\r\n"


HELP_TEXT = help_text("~")


class EscapeParser:
    """Splits keyboard input into console data and escape commands.

    `escape_char=None` disables escapes: every byte is data.
    """

    __slots__ = ("escape_char", "help_text", "_esc", "_at_line_start", "_pending")

    def __init__(self, escape_char: str | None = "~") -> None:
        if escape_char is None:
            self._esc = -1
        else:
            encoded = escape_char.encode("utf-8")
            if len(encoded) != 1:
                raise ValueError(
                    f"escape character must be one ASCII character, not {escape_char!r}"
                )
            self._esc = encoded[0]
        self.escape_char = escape_char
        self.help_text = help_text(escape_char) if escape_char else ""
        self._at_line_start = True
        self._pending = False

    @property
    def pending(self) -> bool:
        """True while an escape character at line start is held back, waiting for the next byte."""
        return self._pending

    @property
    def at_line_start(self) -> bool:
        """True if an escape character typed now would start an escape."""
        return self._at_line_start and not self._pending

    def flush(self) -> list[Action]:
        """Send a held-back escape character as data (a front end's timeout)."""
        if not self._pending:
            return []
        self._pending = False
        self._at_line_start = False
        return [SendData(bytes([self._esc]))]

    def feed(self, data: bytes) -> list[Action]:
        """Parse a chunk of input, however it was split; return the actions in order."""
        if not data:
            return []
        esc = self._esc
        if not self._pending and (esc < 0 or esc not in data):
            # Fast path: a paste or a chunk without the escape character.
            last = data[-1]
            self._at_line_start = last in (_CR, _LF)
            return [SendData(bytes(data))]

        actions: list[Action] = []
        out = bytearray()

        def flush_out() -> None:
            if out:
                actions.append(SendData(bytes(out)))
                out.clear()

        for byte in data:
            if self._pending:
                self._pending = False
                command = _COMMANDS.get(byte)
                if command is not None:
                    flush_out()
                    actions.append(command)
                    # Still at line start, as after any escape command.
                    self._at_line_start = True
                    if isinstance(command, Detach):
                        return actions
                    continue
                if byte == esc:
                    out.append(esc)
                    self._at_line_start = False
                    continue
                out.append(esc)
                out.append(byte)
                self._at_line_start = byte in (_CR, _LF)
                continue
            if byte == esc and self._at_line_start:
                self._pending = True
                continue
            out.append(byte)
            self._at_line_start = byte in (_CR, _LF)
        flush_out()
        return actions
