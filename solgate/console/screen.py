"""What a newcomer sees the moment they attach to a console.

Theory of operation
-------------------
Replaying the raw tail of a console log to a new viewer shows junk: half an escape
sequence, a BIOS setup screen drawn with cursor moves painted line after line, colours
that leak. So the console keeps two things, at two very different costs:

* `RawRing`, always: the most recent console output as raw bytes (64 KiB by default).
  It is the only per-console memory paid while nobody is watching, and it is allocated
  lazily and grown with the output, so a console that printed a login prompt costs a
  few hundred bytes, and one that printed a lot costs at most `capacity` bytes
  (10,000 consoles x 64 KiB = 640 MiB worst case; lower `capacity` to trade replay
  depth for memory).
* `Screen`, on demand: a VT screen model (pyte) built by replaying the ring when the
  first viewer needs a picture, kept while anyone is attached (the hub feeds it when
  a picture is needed), and thrown away when the last one leaves. An 80x25 screen
  costs about 300 KiB of Python objects (pyte keeps one tuple per cell) and its 200
  lines of scrollback about 30 KiB, which is why an unwatched console has none.

`Screen.render()` turns the model into bytes that repaint a fresh terminal: reset the
modes that change how text lands, clear, (optionally) the scrollback lines, every row
with its SGR attributes, then the scroll margins, cursor position, cursor attributes,
character set and input modes, so the host's next bytes land exactly where they would
on a terminal that had watched from the start.

Serial consoles are not always UTF-8: BIOS screens draw boxes with CP437 bytes. Bytes
that are not valid UTF-8 are decoded as CP437, together with the non-ASCII bytes that
follow them, so box drawing survives and nothing raises. Best effort: a run of CP437
that happens to start with valid UTF-8 (or is split across two reads at the wrong
place) shows some wrong characters.
"""

from __future__ import annotations

import codecs
import re
from collections import deque

import pyte
from pyte import modes as pyte_modes
from pyte.charsets import MAPS as CHARSET_MAPS
from pyte.graphics import FG_BG_256
from pyte.screens import Char
from wcwidth import wcwidth

__all__ = ["DEFAULT_RING_CAPACITY", "RawRing", "Screen"]

DEFAULT_RING_CAPACITY = 64 * 1024
DEFAULT_SCROLLBACK_LINES = 200

# ---------------------------------------------------------------------------
# Decoding: UTF-8, with CP437 for bytes that are not UTF-8.

_CP437_ERRORS = "solgate-cp437"


def _cp437_fallback(exc: UnicodeError) -> tuple[str, int]:
    """Decode what UTF-8 rejected as CP437 (BIOS box drawing).

    The whole run of non-ASCII bytes from the bad byte on is taken as CP437: in "╔══╗"
    (C9 CD CD BB) the last pair is valid UTF-8 by accident, and a run that starts
    invalid is far more likely one CP437 string than a switch back to UTF-8.
    """
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    data = exc.object
    end = exc.end
    limit = len(data)
    while end < limit and data[end] >= 0x80:
        end += 1
    return bytes(data[exc.start : end]).decode("cp437"), end


codecs.register_error(_CP437_ERRORS, _cp437_fallback)


class _ConsoleByteStream(pyte.Stream):
    """Bytes in, UTF-8 with CP437 fallback, and the VT100 line-drawing set honoured.

    pyte's own ByteStream ignores `ESC ( 0` and SI/SO while decoding UTF-8, but xterm and
    xterm.js honour them and curses programs on serial consoles (TERM=vt100/vt220) draw
    their boxes with them. So decoding is done here, and pyte is told the text is not
    UTF-8 (`use_utf8 = False`), which only switches those designations back on.
    """

    def __init__(self, screen: pyte.Screen) -> None:
        super().__init__(screen)
        self.use_utf8 = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(_CP437_ERRORS)

    def feed(self, data: bytes) -> None:  # type: ignore[override]
        super().feed(self._decoder.decode(data))

    def select_other_charset(self, code: str) -> None:
        """Ignore `ESC % @` / `ESC % G`: console bytes are always decoded as above."""


# ---------------------------------------------------------------------------
# The ring.


class RawRing:
    """The newest `capacity` bytes of console output, for rebuilding a screen on attach.

    Memory: nothing until the first byte, then a bytearray that grows with the output
    up to `capacity` bytes and stays there (a fixed ring from then on). `append` copies
    each byte once (at most two slice assignments), whatever the ring's size.
    """

    __slots__ = ("capacity", "_buf", "_pos", "_wrapped", "total_bytes")

    def __init__(self, capacity: int = DEFAULT_RING_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError(f"ring capacity must be positive, not {capacity}")
        self.capacity = capacity
        self._buf: bytearray | None = None
        self._pos = 0  # next write position once the ring is full
        self._wrapped = False  # True once the buffer reached capacity
        self.total_bytes = 0  # every byte ever appended, for metrics and resume offsets

    def __len__(self) -> int:
        if self._buf is None:
            return 0
        return self.capacity if self._wrapped else len(self._buf)

    @property
    def wrapped(self) -> bool:
        """True once older output has been overwritten (the snapshot starts mid-stream)."""
        return self.total_bytes > self.capacity

    def append(self, data: bytes) -> None:
        """Add console output, forgetting the oldest bytes beyond `capacity`."""
        n = len(data)
        if not n:
            return
        self.total_bytes += n
        cap = self.capacity
        if n >= cap:
            self._buf = bytearray(data[n - cap :])
            self._pos = 0
            self._wrapped = True
            return
        if self._buf is None:
            self._buf = bytearray()
        buf = self._buf
        if not self._wrapped:
            room = cap - len(buf)
            if n < room:
                buf += data
                return
            buf += data[:room]
            # Exactly `capacity` now: copy once so the ring holds no growth slack.
            self._buf = buf = bytearray(buf)
            self._wrapped = True
            self._pos = 0
            data = data[room:]
            n = len(data)
            if not n:
                return
        pos = self._pos
        first = min(n, cap - pos)
        buf[pos : pos + first] = data[:first]
        rest = n - first
        if rest:
            buf[:rest] = data[first:]
            self._pos = rest
        else:
            self._pos = (pos + first) % cap

    def snapshot(self) -> bytes:
        """The retained bytes, oldest first."""
        buf = self._buf
        if buf is None:
            return b""
        if not self._wrapped:
            return bytes(buf)
        pos = self._pos
        return bytes(buf[pos:]) + bytes(buf[:pos])

    def clear(self) -> None:
        """Forget everything and give the memory back."""
        self._buf = None
        self._pos = 0
        self._wrapped = False


# ---------------------------------------------------------------------------
# The screen model.


class _ScrollbackScreen(pyte.Screen):
    """A plain pyte Screen that keeps the lines scrolled off the top in a bounded deque.

    Cheaper than pyte's HistoryScreen, which wraps every attribute access; we only need
    the lines that leave a full-height scrolling region, for the attach repaint. They are
    kept already rendered (text with SGR sequences, ~100 bytes a line) rather than as
    pyte cells (~150 bytes a cell: 200 lines of 80 cells would be 2.4 MB).
    """

    def __init__(self, columns: int, lines: int, scrollback: int) -> None:
        self.scrollback: deque[str] = deque(maxlen=scrollback)
        super().__init__(columns, lines)

    def index(self) -> None:
        margins = self.margins
        top = margins.top if margins else 0
        bottom = margins.bottom if margins else self.lines - 1
        if (
            top == 0
            and self.cursor.y == bottom
            and bottom == self.lines - 1
            and self.scrollback.maxlen
        ):
            line = self.buffer.get(0)
            out: list[str] = []
            if line:
                _render_line(line, self.columns, self.default_char, out)
            self.scrollback.append("".join(out))
        super().index()


_SGR_FG_NAMED = {
    "black": 30, "red": 31, "green": 32, "brown": 33, "blue": 34, "magenta": 35,
    "cyan": 36, "white": 37,
    "brightblack": 90, "brightred": 91, "brightgreen": 92, "brightbrown": 93,
    "brightblue": 94, "brightmagenta": 95, "brightcyan": 96, "brightwhite": 97,
}  # fmt: skip

# pyte turns 256-colour indexes into "rrggbb"; map them back so terminals with their own
# palette show the colour the host asked for. Indexes 16..255 win over the 16 palette
# colours when both have the same value, because those are the same on every terminal.
_HEX_TO_256: dict[str, int] = {}
for _index in [*range(16, 256), *range(16)]:
    _HEX_TO_256.setdefault(FG_BG_256[_index], _index)
del _index

_SGR_FLAGS = (("bold", "1"), ("italics", "3"), ("underscore", "4"), ("blink", "5"),
              ("reverse", "7"), ("strikethrough", "9"))  # fmt: skip

# Private modes (DEC ?N) restored after the repaint, as pyte numbers them (N << 5).
# DECOM and DECTCEM are handled separately; DECSCNM is already folded into the cells by
# pyte; DECCOLM would resize; anything else (mouse, alternate screen) pyte does not model.
_PRIVATE_MODES_RESTORED = (1, 7, 2004)
_PUBLIC_MODES_RESTORED = (pyte_modes.IRM, pyte_modes.LNM)

# Puts a terminal that may have watched something else into a known state before the
# repaint: SGR reset, full scrolling region, origin mode off, autowrap on, insert mode
# off, newline mode off, G0 = ASCII and selected, cursor visible, home, clear.
_RESET = b"\x1b[0m\x1b[r\x1b[?6l\x1b[?7h\x1b[4l\x1b[20l\x1b(B\x0f\x1b[?25h\x1b[H\x1b[2J"


def _colour(value: str, *, background: bool) -> str:
    if value == "default":
        return ""
    named = _SGR_FG_NAMED.get(value)
    if named is not None:
        return str(named + 10 if background else named)
    base = "48" if background else "38"
    index = _HEX_TO_256.get(value)
    if index is not None:
        return f"{base};5;{index}"
    if len(value) == 6:
        try:
            r, g, b = int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
        except ValueError:
            return ""
        return f"{base};2;{r};{g};{b}"
    return ""


def _sgr(char: Char) -> str:
    """One SGR sequence that sets exactly `char`'s attributes from any previous state."""
    params = ["0"]
    params.extend(code for name, code in _SGR_FLAGS if getattr(char, name))
    fg = _colour(char.fg, background=False)
    if fg:
        params.append(fg)
    bg = _colour(char.bg, background=True)
    if bg:
        params.append(bg)
    return "\x1b[" + ";".join(params) + "m"


def _same_attrs(a: Char, b: Char) -> bool:
    return a[1:] == b[1:]


def _render_line(line: dict[int, Char], cols: int, default: Char, out: list[str]) -> None:
    """Append one row: text with SGR changes, up to the last cell that is not blank."""
    last = -1
    for x, ch in line.items():
        if x < cols and x > last and (ch.data != " " or not _same_attrs(ch, default)):
            last = x
    current = default
    x = 0
    while x <= last:
        ch = line.get(x, default)
        data = ch.data
        if not data:
            # The stub after a wide character is skipped; a stray stub is a blank.
            data = " "
        if not _same_attrs(ch, current):
            out.append(_sgr(ch))
            current = ch
        out.append(data)
        x += 2 if wcwidth(data[0]) == 2 else 1
    if not _same_attrs(current, default):
        out.append("\x1b[0m")


_SGR_PATTERN = re.compile("\x1b\\[[0-9;]*m")


class Screen:
    """A console's current screen (plus some scrollback), able to repaint a new terminal.

    Built on demand: `Screen.from_ring(ring, cols, rows)` when someone attaches; fed with
    the same bytes as the log afterwards. Not thread-safe; one console, one event loop.
    """

    __slots__ = ("_screen", "_stream")

    def __init__(
        self, cols: int = 80, rows: int = 25, *, scrollback: int = DEFAULT_SCROLLBACK_LINES
    ) -> None:
        if cols <= 0 or rows <= 0:
            raise ValueError(f"screen size must be positive, not {cols}x{rows}")
        self._screen = _ScrollbackScreen(cols, rows, scrollback)
        self._stream = _ConsoleByteStream(self._screen)

    @classmethod
    def from_ring(
        cls,
        ring: RawRing,
        cols: int = 80,
        rows: int = 25,
        *,
        scrollback: int = DEFAULT_SCROLLBACK_LINES,
    ) -> Screen:
        """Rebuild the screen by replaying the ring's bytes.

        When the ring has wrapped, its first bytes may be the tail of an escape sequence
        or of a UTF-8 character; we skip to the first line break (if one is near) so that
        garbage is not drawn.
        """
        screen = cls(cols, rows, scrollback=scrollback)
        data = ring.snapshot()
        if ring.wrapped:
            cut = data.find(b"\n", 0, 512)
            if cut >= 0:
                data = data[cut + 1 :]
        screen.feed(data)
        return screen

    @property
    def cols(self) -> int:
        return self._screen.columns

    @property
    def rows(self) -> int:
        return self._screen.lines

    @property
    def cursor(self) -> tuple[int, int]:
        """(x, y), 0-based; x may equal `cols` when a wrap is pending."""
        return self._screen.cursor.x, self._screen.cursor.y

    @property
    def display(self) -> list[str]:
        """The screen's rows as text (each exactly `cols` cells wide)."""
        return self._screen.display

    @property
    def scrollback_lines(self) -> list[str]:
        """Lines that scrolled off the top, oldest first, without trailing blanks."""
        return [_SGR_PATTERN.sub("", line).rstrip() for line in self._screen.scrollback]

    def feed(self, data: bytes) -> None:
        """Interpret console output; never raises on malformed bytes."""
        if data:
            self._stream.feed(data)

    def resize(self, cols: int, rows: int) -> None:
        """Change the size; rows are dropped from the top and columns from the right."""
        if cols <= 0 or rows <= 0:
            raise ValueError(f"screen size must be positive, not {cols}x{rows}")
        scr = self._screen
        dropped = max(0, scr.lines - rows)
        scr.resize(lines=rows, columns=cols)
        # pyte moves the rows up but leaves the cursor where it was: follow the text.
        scr.cursor.y = max(0, min(scr.cursor.y - dropped, rows - 1))
        scr.cursor.x = min(scr.cursor.x, cols)

    # -- rendering -----------------------------------------------------------------

    def render(self, *, scrollback: bool = True) -> bytes:
        """Bytes that repaint a fresh (or any) terminal to this screen.

        With `scrollback`, the scrolled-off lines are printed first so that they end up
        in the viewer's own scrollback. A resync after lag passes False: the viewer
        already has most of them.
        """
        scr = self._screen
        out: list[str] = [_RESET.decode("ascii")]
        if scrollback:
            for text in scr.scrollback:
                out.append(text)
                out.append("\r\n")
        for y in range(scr.lines):
            if y:
                out.append("\r\n")
            line = scr.buffer.get(y)
            if line:
                _render_line(line, scr.columns, scr.default_char, out)
        # The cursor. Without a scrolling region it is placed relative to the last row
        # just drawn, so a terminal taller than the screen (rows below, or scrollback
        # above) still gets it right. DECSTBM homes the cursor, so with a region the
        # position is absolute (relative to the region in origin mode).
        margins = scr.margins
        cx, cy = scr.cursor.x, scr.cursor.y
        col = min(cx, scr.columns - 1) + 1
        if margins is None:
            up = scr.lines - 1 - cy
            if up:
                out.append(f"\x1b[{up}A")
            out.append(f"\x1b[{col}G")
        else:
            out.append(f"\x1b[{margins.top + 1};{margins.bottom + 1}r")
            top = 0
            if pyte_modes.DECOM in scr.mode:
                out.append("\x1b[?6h")
                top = margins.top
            out.append(f"\x1b[{cy - top + 1};{col}H")
        if cx >= scr.columns:
            # A wrap is pending: rewrite the last cell so the terminal is in the same
            # state (the next character goes to the next line).
            line = scr.buffer.get(cy)
            cell = line[scr.columns - 1] if line is not None else scr.default_char
            out.append(_sgr(cell))
            out.append(cell.data or " ")
        out.append(_sgr(scr.cursor.attrs))
        # Character sets, after the rows: pyte stored the rows already translated.
        g0 = _charset_code(scr.g0_charset)
        g1 = _charset_code(scr.g1_charset)
        if g0 != "B":
            out.append(f"\x1b({g0}")
        if g1 != "0":
            out.append(f"\x1b){g1}")
        if scr.charset == 1:
            out.append("\x0e")
        for mode in _PRIVATE_MODES_RESTORED:
            wanted = (mode << 5) in scr.mode
            default = mode == 7
            if wanted != default:
                out.append(f"\x1b[?{mode}{'h' if wanted else 'l'}")
        for mode in _PUBLIC_MODES_RESTORED:
            if mode in scr.mode:
                out.append(f"\x1b[{mode}h")
        if pyte_modes.DECTCEM not in scr.mode:
            out.append("\x1b[?25l")
        return "".join(out).encode("utf-8", "replace")


def _charset_code(mapping: str) -> str:
    for code, candidate in CHARSET_MAPS.items():
        if candidate is mapping or candidate == mapping:
            return code
    return "B"
