"""The ring and the screen model: what a newcomer sees must be what the console shows."""

from __future__ import annotations

import pyte
import pytest

from solgate.console.screen import RawRing, Screen


def replay(rendered: bytes, cols: int, rows: int) -> pyte.Screen:
    """Paint `rendered` on a fresh, independent terminal model."""
    fresh = pyte.Screen(cols, rows)
    pyte.ByteStream(fresh).feed(rendered)
    return fresh


def assert_same_terminal(screen: Screen, fresh: pyte.Screen) -> None:
    """Same text, same attributes in every cell, same cursor and cursor attributes."""
    model = screen._screen
    assert fresh.display == screen.display
    for y in range(screen.rows):
        for x in range(screen.cols):
            assert fresh.buffer[y][x] == model.buffer[y][x], (x, y)
    assert (fresh.cursor.x, fresh.cursor.y) == screen.cursor
    assert fresh.cursor.attrs == model.cursor.attrs
    assert fresh.cursor.hidden == model.cursor.hidden


COLOURFUL = (
    b"plain \x1b[1mbold\x1b[22m \x1b[3;4mital-under\x1b[0m \x1b[7mreverse\x1b[27m\r\n"
    b"\x1b[31mred \x1b[92mbright green \x1b[44mon blue\x1b[49m \x1b[39mdefault\r\n"
    b"\x1b[38;5;202m256-orange \x1b[48;5;17mon navy\x1b[0m \x1b[38;5;3mpalette-3\x1b[0m\r\n"
    b"\x1b[38;2;10;20;30mtruecolor \x1b[48;2;200;100;50mon rust\x1b[0m\r\n"
    b"\x1b[9mstrike\x1b[29m \x1b[5mblink\x1b[25m caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 wide\r\n"
    b"\x1b[10;20H\x1b[45m   magenta block   \x1b[0m"
    b"\x1b[3;70Hright edge"
    b"\x1b[20;5H\x1b[1;33;41m"  # cursor left inside a coloured, bold state
)


def test_render_repaints_text_colours_and_cursor():
    screen = Screen(80, 25)
    screen.feed(COLOURFUL)
    rendered = screen.render()
    assert_same_terminal(screen, replay(rendered, 80, 25))
    # Text written after the repaint continues with the host's current attributes.
    fresh = replay(rendered + b"X", 80, 25)
    screen.feed(b"X")
    assert fresh.buffer[19][4] == screen._screen.buffer[19][4]
    assert fresh.buffer[19][4].bold
    assert fresh.buffer[19][4].bg == "red"


def test_render_uses_256_colour_codes_for_palette_colours():
    screen = Screen(40, 5)
    screen.feed(b"\x1b[38;5;202mX")
    assert b"38;5;202" in screen.render()


def test_render_repaints_a_full_screen_bios_layout():
    """A BIOS-style screen: blue background, boxes drawn with cursor moves and CP437."""
    screen = Screen(80, 25)
    screen.feed(b"\x1b[0;37;44m\x1b[2J")
    screen.feed(b"\x1b[2;3H\xc9" + b"\xcd" * 30 + b"\xbb")
    for row in range(3, 8):
        screen.feed(b"\x1b[%d;3H\xba" % row + b" " * 30 + b"\xba")
    screen.feed(b"\x1b[8;3H\xc8" + b"\xcd" * 30 + b"\xbc")
    screen.feed(b"\x1b[4;6H\x1b[1;33mMain  Advanced  Boot\x1b[0;37;44m\x1b[25;1HF10 Save")
    assert screen.display[1][2:34] == "╔" + "═" * 30 + "╗"
    assert screen.display[7][2:34] == "╚" + "═" * 30 + "╝"
    assert_same_terminal(screen, replay(screen.render(), 80, 25))


def test_pending_wrap_survives_the_repaint():
    screen = Screen(10, 3)
    screen.feed(b"0123456789")  # cursor sits past the last column, wrap pending
    assert screen.cursor == (10, 0)
    rendered = screen.render()
    fresh = replay(rendered, 10, 3)
    assert_same_terminal(screen, fresh)
    pyte.ByteStream(fresh).feed(b"A")
    screen.feed(b"A")
    assert fresh.display == screen.display
    assert screen.display[1].startswith("A")


@pytest.mark.parametrize("move", [b"\x1b[1;3H", b"\x1b[3;3H", b"\x1b[2;10H", b""])
def test_full_last_row_then_cursor_anywhere(move):
    screen = Screen(10, 3)
    screen.feed(b"\x1b[3;1Habcdefghij" + move)
    fresh = replay(screen.render(), 10, 3)
    assert_same_terminal(screen, fresh)
    pyte.ByteStream(fresh).feed(b"XY")
    screen.feed(b"XY")
    assert fresh.display == screen.display


def test_hidden_cursor_margins_and_origin_mode_are_restored():
    screen = Screen(40, 10)
    screen.feed(b"\x1b[?25l\x1b[3;8r\x1b[?6h\x1b[2;5Hin region")
    fresh = replay(screen.render(), 40, 10)
    assert_same_terminal(screen, fresh)
    assert fresh.margins == screen._screen.margins
    # The host's next relative move lands in the same place on both.
    pyte.ByteStream(fresh).feed(b"\x1b[1;1Hz")
    screen.feed(b"\x1b[1;1Hz")
    assert fresh.display == screen.display


def test_line_drawing_charset_is_drawn_and_restored_after_the_repaint():
    screen = Screen(20, 3)
    screen.feed(b"\x1b(0lqqk")  # curses on a vt100: DEC special graphics stays selected
    assert screen.display[0].startswith("┌──┐")
    rendered = screen.render()
    assert rendered.endswith(b"\x1b(0")
    # pyte's stock ByteStream ignores ESC ( 0 in UTF-8 mode, so repaint onto our model.
    fresh = Screen(20, 3)
    fresh.feed(rendered + b"x")
    screen.feed(b"x")
    assert fresh.display == screen.display
    assert screen.display[0].startswith("┌──┐│")


def test_application_cursor_keys_mode_is_restored():
    screen = Screen(20, 3)
    screen.feed(b"\x1b[?1h")
    assert screen.render().endswith(b"\x1b[?1h")


def test_scrollback_lines_are_printed_before_the_screen():
    screen = Screen(20, 3, scrollback=10)
    screen.feed(b"\r\n".join(b"line %d" % i for i in range(8)))
    assert screen.display == ["line 5".ljust(20), "line 6".ljust(20), "line 7".ljust(20)]
    assert screen.scrollback_lines == [f"line {i}" for i in range(5)]
    rendered = screen.render()
    fresh = pyte.HistoryScreen(20, 3, history=50)
    pyte.ByteStream(fresh).feed(rendered)
    assert fresh.display == screen.display
    history = ["".join(c.data for c in line.values()).rstrip() for line in fresh.history.top]
    assert history == [f"line {i}" for i in range(5)]
    # Without scrollback (a resync) the screen alone is repainted.
    assert b"line 0" not in screen.render(scrollback=False)
    assert_same_terminal(screen, replay(screen.render(scrollback=False), 20, 3))


def test_repaint_on_a_taller_terminal_keeps_the_cursor_on_the_right_cell():
    screen = Screen(20, 5, scrollback=10)
    screen.feed(b"\r\n".join(b"line %d" % i for i in range(8)))
    screen.feed(b"\x1b[2;4H")
    fresh = replay(screen.render(), 20, 12)
    assert [row.rstrip() for row in fresh.display[:8]] == [f"line {i}" for i in range(8)]
    assert (fresh.cursor.x, fresh.cursor.y) == (3, 3 + 1)


def test_invalid_utf8_never_raises_and_cp437_box_drawing_survives():
    screen = Screen(40, 4)
    screen.feed(b"\xc9\xcd\xcd\xbb ok \xff\xc3\x28 caf\xc3\xa9\r\n\xc0\xc4\xd9")
    assert screen.display[0].startswith("╔══╗ ok ")
    assert "café" in screen.display[0]
    assert screen.display[1].startswith("└─┘")


def test_utf8_split_across_feeds_is_decoded():
    screen = Screen(20, 2)
    for byte in "café ─ 中".encode():
        screen.feed(bytes([byte]))
    assert screen.display[0].startswith("café ─ 中")


def test_resize_keeps_the_bottom_rows():
    screen = Screen(20, 5)
    screen.feed(b"\r\n".join(b"row %d" % i for i in range(5)))
    screen.resize(10, 3)
    assert (screen.cols, screen.rows) == (10, 3)
    assert screen.display == ["row 2".ljust(10), "row 3".ljust(10), "row 4".ljust(10)]
    assert_same_terminal(screen, replay(screen.render(), 10, 3))


def test_screen_size_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        Screen(0, 25)


# -- the ring ---------------------------------------------------------------------


def test_ring_allocates_nothing_until_written_and_grows_with_output():
    ring = RawRing(1024)
    assert ring._buf is None
    assert ring.snapshot() == b""
    ring.append(b"login: ")
    assert ring.snapshot() == b"login: "
    assert len(ring) == 7
    assert not ring.wrapped


def test_ring_wraps_and_keeps_only_the_newest_bytes():
    ring = RawRing(16)
    written = b""
    for i in range(40):
        chunk = bytes([65 + i % 26]) * (i % 7 + 1)
        ring.append(chunk)
        written += chunk
        assert ring.snapshot() == written[-16:]
        assert len(ring) == min(len(written), 16)
    assert ring.wrapped
    assert ring.total_bytes == len(written)
    assert len(ring._buf) == 16


def test_ring_chunk_larger_than_capacity():
    ring = RawRing(8)
    ring.append(b"abc")
    ring.append(b"0123456789ABCDEF")
    assert ring.snapshot() == b"89ABCDEF"
    ring.append(b"xy")
    assert ring.snapshot() == b"ABCDEFxy"


def test_ring_filling_exactly_to_capacity_then_wrapping():
    ring = RawRing(8)
    ring.append(b"1234")
    ring.append(b"5678")
    assert ring.snapshot() == b"12345678"
    ring.append(b"9")
    assert ring.snapshot() == b"23456789"


def test_screen_rebuilt_from_a_wrapped_ring_shows_the_last_lines():
    ring = RawRing(4096)
    for i in range(1000):
        ring.append(b"\x1b[32mboot message %04d\x1b[0m\r\n" % i)
    ring.append(b"host login: ")
    assert ring.wrapped
    screen = Screen.from_ring(ring, 80, 25)
    assert screen.display[-1].rstrip() == "host login:"
    assert screen.display[-2].rstrip() == "boot message 0999"
    assert screen.display[0].rstrip() == "boot message 0976"
    assert screen.cursor == (12, 24)
    assert screen._screen.buffer[21][0].fg == "green"
    # No garbage from the partial first line at the top of the scrollback.
    assert all(line.startswith("boot message") for line in screen.scrollback_lines)
