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
* The terminal's automatic replies do not count as typing (`LineStart`): a shell
  that asks for the cursor position with each prompt (busybox ash, systemd's
  serial getty: `ESC [ 6 n`) gets `ESC [ row ; col R` back from the user's
  terminal as input, and a `~` typed after it is still at the start of a line. An
  answer that arrives between a quickly typed `~` and its key goes on to the host
  and the `~` keeps waiting, so Enter `~` `.` typed in one go still leaves.

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
    "LineStart",
    "SendBreak",
    "SendData",
    "ShowHelp",
    "TakeWrite",
    "help_text",
]


@dataclass(frozen=True, slots=True)
class SendData:
    """Bytes to send to the console (consecutive data in one feed are coalesced).

    `typed` is False when the bytes are only the terminal's automatic replies: a front
    end drops those quietly for a user who may not type, instead of telling a viewer
    "read-only" each time the host asks the terminal where its cursor is.
    """

    data: bytes
    typed: bool = True


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
_ESC = 0x1B
_BEL = 0x07

# What the input side of a terminal sends that the user did not type. Other sequences
# (cursor and function keys, Alt+key) are typing: an Up arrow recalls a shell's history
# and the line is no longer empty.
_REPLY_FINALS = frozenset(b"RncIOy")
"""CSI final bytes of replies: cursor position `R` (also DECXCPR `ESC [ ? r ; c R`),
device status `n`, device attributes `c` (`ESC [ ? ... c`, `ESC [ > ... c`), focus in
and out `I` / `O`, mode reports `$ y`."""
_STRING_STARTS = frozenset(b"]P_^X")
"""ESC + one of these opens a string (OSC, DCS, APC, PM, SOS) ended by ST or BEL: the
colour, title, DECRQSS, XTVERSION and XTGETTCAP replies."""
MAX_REPLY = 4096
"""Longest sequence taken as a reply; anything longer was typing after all."""

# LineStart states
_GROUND, _ESCAPE, _CSI, _STRING, _STRING_ESC, _MOUSE = range(6)


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


class LineStart:
    """Whether keyboard input is at the start of a line, not counting terminal replies.

    Bytes go through `feed_byte` one at a time (the caller passes them on unchanged;
    nothing is held back). Inside an escape sequence `at_line_start` is False; when the
    sequence ends it is either a reply (cursor position, device attributes, device
    status, focus, mode and string reports, mouse reports), which leaves the state as
    it was before, or a key (arrows, function keys, Alt+key), which is typing. A CR or
    LF always means line start, even one that cuts an unfinished sequence short, so a
    stray ESC never disables escapes for more than a line.
    """

    __slots__ = ("_at", "_state", "_saved", "_params", "_length", "typed")

    def __init__(self) -> None:
        self.typed = False
        """Set when a byte that is not (yet known to be) part of a reply goes by; the
        caller resets it."""
        self._at = True
        self._state = _GROUND
        self._saved = True  # the line-start state before the current sequence
        self._params = bytearray()  # a CSI's parameter and intermediate bytes
        self._length = 0

    @property
    def at_line_start(self) -> bool:
        return self._at and self._state == _GROUND

    @property
    def in_sequence(self) -> bool:
        """True inside an escape sequence (an escape character there is part of it)."""
        return self._state != _GROUND

    def set(self, at_line_start: bool) -> None:
        """The caller decided (after an escape command or an escaped escape character)."""
        self._at = at_line_start
        self._state = _GROUND

    def feed(self, data: bytes) -> None:
        """Track a whole chunk (fast when it holds no ESC and no sequence is open)."""
        if not data:
            return
        if self._state == _GROUND and _ESC not in data:
            self._at = data[-1] in (_CR, _LF)
            self.typed = True
            return
        for byte in data:
            self.feed_byte(byte)

    def feed_byte(self, byte: int) -> None:
        state = self._state
        if state == _GROUND:
            if byte == _ESC:
                self._begin()
            else:
                self._at = byte in (_CR, _LF)
                self.typed = True
            return
        self._length += 1
        if byte in (_CR, _LF) or self._length > MAX_REPLY:
            self._state = _GROUND  # not a reply: typing, and a line end is a line end
            self._at = byte in (_CR, _LF)
            self.typed = True
            return
        if state == _ESCAPE:
            if byte == ord("["):
                self._state = _CSI
                self._params.clear()
            elif byte in _STRING_STARTS:
                self._state = _STRING
            elif byte == _ESC:
                self._begin()  # the first ESC was a key of its own (typing)
                self._saved = False
                self.typed = True
            elif byte == ord("O"):
                self._state = _CSI  # SS3 (keypad, F1-F4): its final byte ends it, typing
                self._params[:] = b"O"
            else:
                self._end(reply=False)  # Alt+key
        elif state == _CSI:
            if 0x20 <= byte <= 0x3F:
                self._params.append(byte)
            elif 0x40 <= byte <= 0x7E:
                params = bytes(self._params)
                if params.startswith(b"O"):
                    self._end(reply=False)
                elif byte == ord("M") and not params:
                    self._state = _MOUSE  # X10 mouse report: three raw bytes follow
                    self._length = 0
                elif byte in _REPLY_FINALS and (byte != ord("y") or params.endswith(b"$")):
                    self._end(reply=True)
                elif byte in b"Mm" and params.startswith(b"<"):
                    self._end(reply=True)  # SGR mouse report: not typing
                elif byte == ord("t") and params[:1].isdigit():
                    self._end(reply=True)  # window size or position report
                else:
                    self._end(reply=False)
            elif byte == _ESC:
                self._begin()
                self._saved = False
                self.typed = True
            else:
                self._end(reply=False)
        elif state == _STRING:
            if byte == _BEL:
                self._end(reply=True)
            elif byte == _ESC:
                self._state = _STRING_ESC
            elif byte < 0x20:
                self._end(reply=False)
        elif state == _STRING_ESC:
            if byte == ord("\\"):
                self._end(reply=True)
            else:  # ESC that is not ST cut the string short: a new sequence starts
                self._state = _ESCAPE
                self._saved = False
                self.typed = True
                self._length = 0
                self.feed_byte(byte)
        elif state == _MOUSE:
            if self._length >= 3:
                self._end(reply=True)

    def _begin(self) -> None:
        self._saved = self._at
        self._state = _ESCAPE
        self._length = 0

    def _end(self, *, reply: bool) -> None:
        self._state = _GROUND
        self._at = self._saved if reply else False
        if not reply:
            self.typed = True


class EscapeParser:
    """Splits keyboard input into console data and escape commands.

    `escape_char=None` disables escapes: every byte is data.
    """

    __slots__ = ("escape_char", "help_text", "_esc", "_line", "_pending", "_reply")

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
        self._line = LineStart()
        self._pending = False
        # A sequence that began while the escape character waits: the terminal's answer
        # to a prompt's query often arrives between a quickly typed `~` and the next key.
        self._reply: bytearray | None = None

    @property
    def pending(self) -> bool:
        """True while an escape character at line start is held back, waiting for the next byte."""
        return self._pending

    @property
    def at_line_start(self) -> bool:
        """True if an escape character typed now would start an escape."""
        return self._line.at_line_start and not self._pending

    def flush(self) -> list[Action]:
        """Send a held-back escape character as data (a front end's timeout)."""
        if not self._pending:
            return []
        held = bytes([self._esc]) + (self._reply or b"")
        self._pending = False
        self._reply = None
        self._line.set(False)
        return [SendData(held)]

    def feed(self, data: bytes) -> list[Action]:
        """Parse a chunk of input, however it was split; return the actions in order."""
        if not data:
            return []
        esc = self._esc
        line = self._line
        line.typed = False
        if not self._pending and (esc < 0 or esc not in data):
            # Fast path: a paste or a chunk without the escape character.
            line.feed(data)
            return [SendData(bytes(data), line.typed)]

        actions: list[Action] = []
        out = bytearray()

        def flush_out() -> None:
            if out:
                actions.append(SendData(bytes(out), line.typed))
                out.clear()
                line.typed = False

        for byte in data:
            reply = self._reply
            if reply is not None:
                reply.append(byte)
                line.feed_byte(byte)
                if line.in_sequence:
                    continue
                self._reply = None
                if not line.typed:  # the terminal's reply: it goes on, `~` still waits
                    actions.append(SendData(bytes(reply), typed=False))
                    continue
                self._pending = False  # a key after all: `~` and it are typing
                out.append(esc)
                out += reply
                continue
            if self._pending:
                if byte == _ESC and esc != _ESC:
                    flush_out()
                    line.typed = False
                    self._reply = bytearray((byte,))
                    line.feed_byte(byte)
                    continue
                self._pending = False
                command = _COMMANDS.get(byte)
                if command is not None:
                    flush_out()
                    actions.append(command)
                    # Still at line start, as after any escape command.
                    line.set(True)
                    if isinstance(command, Detach):
                        return actions
                    continue
                out.append(esc)
                line.set(False)
                line.typed = True
                if byte == esc:
                    continue
                out.append(byte)
                line.feed_byte(byte)
                continue
            if byte == esc and line.at_line_start:
                self._pending = True
                continue
            out.append(byte)
            line.feed_byte(byte)
        flush_out()
        return actions
