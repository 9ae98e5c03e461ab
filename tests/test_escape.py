"""The `~` escape parser: what a user's keystrokes turn into, however they are split."""

from __future__ import annotations

import pytest

from solgate.console.escape import (
    HELP_TEXT,
    Detach,
    EscapeParser,
    ForceReconnect,
    LineStart,
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


# --- the terminal's own replies are not typing ----------------------------------------------
# busybox ash and systemd's serial getty send ESC [ 6 n with each prompt; the user's
# terminal answers as if typed. The escapes after such an answer must still work.

REPLIES = [
    pytest.param(b"\x1b[24;80R", id="cursor-position"),
    pytest.param(b"\x1b[?24;80;1R", id="decxcpr"),
    pytest.param(b"\x1b[?62;22c", id="primary-device-attributes"),
    pytest.param(b"\x1b[>41;380;0c", id="secondary-device-attributes"),
    pytest.param(b"\x1b[0n", id="device-status-ok"),
    pytest.param(b"\x1b[I", id="focus-in"),
    pytest.param(b"\x1b[O", id="focus-out"),
    pytest.param(b"\x1b[?2004;1$y", id="mode-report"),
    pytest.param(b"\x1b[8;24;80t", id="window-size"),
    pytest.param(b"\x1b]11;rgb:0000/0000/0000\x1b\\", id="osc-colour-st"),
    pytest.param(b"\x1b]10;rgb:ffff/ffff/ffff\x07", id="osc-colour-bel"),
    pytest.param(b"\x1bP>|xterm(380)\x1b\\", id="xtversion"),
    pytest.param(b"\x1b[<0;12;5M\x1b[<0;12;5m", id="sgr-mouse-click"),
    pytest.param(b"\x1b[M !!", id="x10-mouse"),
]


@pytest.mark.parametrize("reply", REPLIES)
@pytest.mark.parametrize(("key", "action"), COMMANDS)
def test_escape_after_a_terminal_reply(reply, key, action):
    # Enter, the host's prompt asks for the cursor, the terminal answers, the user types ~B.
    stream = b"\r" + reply + b"~" + key
    expected = [SendData(b"\r" + reply), action]
    assert EscapeParser().feed(stream) == expected
    assert normalize(feed_bytewise(EscapeParser(), stream)) == expected
    # At the very start of the input too, and after two replies in a row.
    assert EscapeParser().feed(reply + reply + b"~" + key) == [
        SendData(reply + reply, typed=False), action]


@pytest.mark.parametrize("reply", REPLIES)
def test_a_reply_mid_line_leaves_the_input_mid_line(reply):
    parser = EscapeParser()
    assert parser.feed(b"ls" + reply + b"~.") == [SendData(b"ls" + reply + b"~.")]


def test_a_reply_in_separate_reads_keeps_the_line_start():
    parser = EscapeParser()
    assert parser.feed(b"uname\r") == [SendData(b"uname\r")]
    assert parser.feed(b"\x1b[") == [SendData(b"\x1b[", typed=False)]
    assert not parser.at_line_start  # unfinished: not yet known to be a reply
    assert parser.feed(b"5;1") == [SendData(b"5;1", typed=False)]
    assert parser.feed(b"R") == [SendData(b"R", typed=False)]
    assert parser.at_line_start
    assert parser.feed(b"~D") == [ForceReconnect()]


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(b"\x1b[A", id="up-arrow"),
        pytest.param(b"\x1bOA", id="up-arrow-application-mode"),
        pytest.param(b"\x1bOR", id="f3"),
        pytest.param(b"\x1b[15~", id="f5"),
        pytest.param(b"\x1b[1;5C", id="ctrl-right"),
        pytest.param(b"\x1bb", id="alt-b"),
        pytest.param(b"\x1b", id="escape-key"),
        pytest.param(b"\x1b\x1b[A", id="escape-then-up"),
        pytest.param(b"\x1b[200~x\x1b[201~", id="bracketed-paste"),
    ],
)
def test_keys_that_send_sequences_are_typing(key):
    # An Up arrow recalls a shell's history: the line is no longer empty, "~." is data.
    parser = EscapeParser()
    assert parser.feed(b"\r" + key + b"~.") == [SendData(b"\r" + key + b"~.")]


def test_a_tilde_inside_a_sequence_is_part_of_it():
    # F5 ends in "~": at line start it must not be taken for the escape character.
    parser = EscapeParser()
    assert parser.feed(b"\x1b[15~") == [SendData(b"\x1b[15~")]
    assert not parser.pending


@pytest.mark.parametrize(
    "opened",
    [
        pytest.param(b"\x1b]", id="alt-bracket-opens-a-string"),
        pytest.param(b"\x1bP", id="alt-shift-p-opens-a-dcs"),
        pytest.param(b"\x1b[12;", id="unfinished-csi"),
    ],
)
def test_an_unfinished_sequence_never_outlives_the_line(opened):
    # A stray Alt+] must not swallow the escapes that follow the next Enter.
    parser = EscapeParser()
    stream = opened + b"text\r~."
    assert parser.feed(stream) == [SendData(opened + b"text\r"), Detach()]
    assert normalize(feed_bytewise(EscapeParser(), stream)) == [
        SendData(opened + b"text\r"), Detach()]


def test_an_endless_string_gives_up_being_a_reply():
    parser = EscapeParser()
    parser.feed(b"\r\x1b]" + b"x" * 5000)
    assert not parser.at_line_start
    assert parser.feed(b"~.") == [SendData(b"~.")]  # mid-line: typing after all
    assert parser.feed(b"\r~.") == [SendData(b"\r"), Detach()]


def test_line_start_fast_path_matches_bytewise():
    for stream in (b"ab\r\x1b[3;4R", b"\x1b[3;4Rab", b"x\x1b[I", b"\r\x1b[A", b"\r"):
        whole, bytewise = LineStart(), LineStart()
        whole.feed(stream)
        for byte in stream:
            bytewise.feed_byte(byte)
        assert whole.at_line_start == bytewise.at_line_start, stream


def test_data_that_is_only_terminal_replies_is_marked_not_typed():
    # A viewer's terminal answers the host's cursor query too; the front end drops that
    # quietly instead of telling the viewer "read-only" at every prompt.
    parser = EscapeParser()
    assert parser.feed(b"\x1b[3;16R") == [SendData(b"\x1b[3;16R", typed=False)]
    assert parser.feed(b"\x1b[I\x1b[?62;22c") == [SendData(b"\x1b[I\x1b[?62;22c", typed=False)]
    assert parser.feed(b"\x1b[3;16Rls") == [SendData(b"\x1b[3;16Rls")]
    assert parser.feed(b"\x1b[A") == [SendData(b"\x1b[A")]  # a key is typing
    assert parser.feed(b"\r\x1b[3;16R~x") == [SendData(b"\r\x1b[3;16R~x")]
    assert parser.feed(b"\r\x1b[3;16R~B\x1b[3;16R") == [
        SendData(b"\r\x1b[3;16R"), SendBreak(), SendData(b"\x1b[3;16R", typed=False)]


CPR = b"\x1b[5;16R"


@pytest.mark.parametrize(("key", "action"), COMMANDS)
def test_a_reply_between_a_quick_tilde_and_its_key_does_not_spoil_the_escape(key, action):
    # Enter, ~, . typed in one go: the answer to the new prompt's cursor query comes back
    # from the terminal after the ~ and before the key.
    stream = b"\r~" + CPR + key
    assert EscapeParser().feed(stream) == [
        SendData(b"\r"), SendData(CPR, typed=False), action]
    assert normalize(feed_bytewise(EscapeParser(), stream)) == [SendData(b"\r" + CPR), action]


def test_a_key_sequence_after_a_tilde_is_typing():
    parser = EscapeParser()
    assert parser.feed(b"~\x1b[A.") == [SendData(b"~\x1b[A.")]
    parser = EscapeParser()
    assert parser.feed(b"~" + CPR + b"~x") == [SendData(CPR, typed=False), SendData(b"~x")]


def test_flush_sends_the_tilde_and_an_unfinished_sequence_after_it():
    parser = EscapeParser()
    assert parser.feed(b"~\x1b[5") == []
    assert parser.pending
    assert parser.flush() == [SendData(b"~\x1b[5")]
    assert not parser.pending
    assert parser.feed(b";16R~.") == [SendData(b";16R~.")]  # mid-line now
