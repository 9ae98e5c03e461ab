"""The `~` escape parser: what a user's keystrokes turn into, however they are split."""

from __future__ import annotations

import pytest

from solgate.console.escape import (
    HELP_TEXT,
    Detach,
    EscapeParser,
    ForceReconnect,
    SendBreak,
    SendData,
    ShowHelp,
    TakeWrite,
    help_text,
)


def feed_bytewise(parser: EscapeParser, data: bytes) -> list:
    """Feed one byte at a time, stopping at Detach as a front end does."""
    actions: list = []
    for i in range(len(data)):
        actions.extend(parser.feed(data[i : i + 1]))
        if Detach() in actions:
            break
    return actions


def normalize(actions: list) -> list:
    """Merge adjacent SendData, so byte-wise and whole feeds can be compared."""
    out: list = []
    for action in actions:
        if isinstance(action, SendData) and out and isinstance(out[-1], SendData):
            out[-1] = SendData(out[-1].data + action.data)
        else:
            out.append(action)
    return out


COMMANDS = [
    (b".", Detach()),
    (b"B", SendBreak()),
    (b"D", ForceReconnect()),
    (b"w", TakeWrite()),
    (b"?", ShowHelp()),
]


@pytest.mark.parametrize(("key", "action"), COMMANDS)
def test_escape_at_start_of_stream(key, action):
    assert EscapeParser().feed(b"~" + key) == [action]


@pytest.mark.parametrize(("key", "action"), COMMANDS)
@pytest.mark.parametrize("eol", [b"\r", b"\n", b"\r\n"])
def test_escape_after_line_end(key, action, eol):
    actions = EscapeParser().feed(b"ls" + eol + b"~" + key)
    assert actions == [SendData(b"ls" + eol), action]


@pytest.mark.parametrize(("key", "action"), COMMANDS)
def test_escape_split_one_byte_at_a_time(key, action):
    assert normalize(feed_bytewise(EscapeParser(), b"ls\r~" + key)) == [
        SendData(b"ls\r"),
        action,
    ]


@pytest.mark.parametrize(("key", "_action"), COMMANDS)
def test_escape_mid_line_is_plain_data(key, _action):
    parser = EscapeParser()
    assert parser.feed(b"cd ~" + key) == [SendData(b"cd ~" + key)]
    assert normalize(feed_bytewise(EscapeParser(), b"cd ~" + key)) == [SendData(b"cd ~" + key)]


def test_double_escape_sends_one_and_is_then_mid_line():
    parser = EscapeParser()
    # "~~." reaching us sends "~." to the host (a nested console's escape); the input
    # is then mid-line, so the following "." is not a second escape.
    assert parser.feed(b"~~.") == [SendData(b"~.")]
    assert parser.feed(b"\r~.") == [SendData(b"\r"), Detach()]


def test_double_escape_bytewise():
    assert normalize(feed_bytewise(EscapeParser(), b"~~~.")) == [SendData(b"~~.")]


def test_unknown_escape_passes_both_characters_through():
    parser = EscapeParser()
    assert parser.feed(b"~x") == [SendData(b"~x")]
    # ~ then Enter stays at line start, like ssh.
    parser = EscapeParser()
    assert parser.feed(b"~\r~.") == [SendData(b"~\r"), Detach()]


def test_still_at_line_start_after_a_command():
    assert EscapeParser().feed(b"~?~B~.") == [ShowHelp(), SendBreak(), Detach()]


def test_nothing_after_detach_in_the_same_chunk_is_sent():
    assert EscapeParser().feed(b"~.rm -rf /\r") == [Detach()]


def test_pending_escape_is_held_back_until_the_next_byte():
    parser = EscapeParser()
    assert parser.feed(b"abc\r") == [SendData(b"abc\r")]
    assert parser.feed(b"~") == []
    assert parser.pending
    assert parser.feed(b"B") == [SendBreak()]
    assert not parser.pending


def test_flush_sends_a_held_back_escape_and_ends_the_line_start():
    parser = EscapeParser()
    assert parser.feed(b"~") == []
    assert parser.flush() == [SendData(b"~")]
    assert not parser.pending
    assert parser.flush() == []
    # After the flushed "~" the input is mid-line: "~." is data now.
    assert parser.feed(b"~.") == [SendData(b"~.")]


def test_custom_escape_char():
    parser = EscapeParser("&")
    assert parser.feed(b"~.") == [SendData(b"~.")]
    assert parser.feed(b"\r&.") == [SendData(b"\r"), Detach()]
    parser = EscapeParser("&")
    assert parser.feed(b"&&x&B") == [SendData(b"&x&B")]
    assert "&." in parser.help_text
    assert "~." not in parser.help_text


def test_escape_char_must_be_one_byte():
    with pytest.raises(ValueError, match="one ASCII character"):
        EscapeParser("é")
    with pytest.raises(ValueError, match="one ASCII character"):
        EscapeParser("~~")


def test_escapes_can_be_disabled():
    parser = EscapeParser(None)
    assert parser.feed(b"~.") == [SendData(b"~.")]
    assert not parser.pending


def test_data_is_coalesced_between_actions():
    actions = EscapeParser().feed(b"one\rtwo~x\n~Bthree\r~~four")
    assert actions == [SendData(b"one\rtwo~x\n"), SendBreak(), SendData(b"three\r~four")]


@pytest.mark.parametrize(
    "stream",
    [
        b"echo hi\r~?ls ~/x\r~~y~.z",
        b"~B~D\n~w~x~\r~~~.",
        b"a" * 50 + b"\r~" + b"b" * 50 + b"\n~.",
    ],
)
def test_any_split_gives_the_same_actions(stream):
    whole = normalize(EscapeParser().feed(stream))
    for cut in range(len(stream) + 1):
        parser = EscapeParser()
        actions = parser.feed(stream[:cut])
        if Detach() not in actions:
            actions += parser.feed(stream[cut:])
        assert normalize(actions) == whole, cut
    assert normalize(feed_bytewise(EscapeParser(), stream)) == whole


def test_help_text_lists_every_escape_with_the_configured_char():
    for key in (".", "B", "D", "w", "?", "~"):
        assert f"  ~{key}  " in HELP_TEXT
    custom = help_text("!")
    for key in (".", "B", "D", "w", "?", "!"):
        assert f"  !{key}  " in custom
    assert HELP_TEXT.endswith("\r\n")
    assert "\n" not in HELP_TEXT.replace("\r\n", "")
