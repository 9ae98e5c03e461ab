"""Where event lines go among console output: at a line's end, or after NOTE_HOLD with a mark."""

from __future__ import annotations

import pytest

from solgate.console.notes import BREAK, NOTE_HOLD, Note, NotePlacer


def test_a_note_at_a_line_start_is_written_at_once():
    placer = NotePlacer()
    assert placer.note("SOL up", 5.0) == [Note("SOL up", 5.0)]
    assert placer.output(b"login: ", 5.1) == [b"login: "]
    assert not placer.holding
    assert placer.next_deadline() is None


def test_a_note_mid_line_waits_for_the_newline_and_keeps_its_time():
    placer = NotePlacer()
    assert placer.output(b"flood 00000008 IJKLMNO", 10.0) == [b"flood 00000008 IJKLMNO"]
    assert placer.note("local detached", 10.2) == []
    assert placer.note("local attached", 10.3) == []
    assert placer.holding
    assert placer.next_deadline() == 10.2 + NOTE_HOLD
    assert placer.output(b"PQRS", 10.4) == [b"PQRS"]  # still the same line
    assert placer.output(b"TUV\r\nflood 00000009 AB", 10.5) == [
        b"TUV\r\n",
        Note("local detached", 10.2),
        Note("local attached", 10.3),
        b"flood 00000009 AB",
    ]
    assert not placer.holding
    assert placer.next_deadline() is None
    assert not placer.at_line_start


def test_newline_at_the_end_of_a_chunk():
    placer = NotePlacer(at_line_start=False)
    placer.note("break sent", 1.0)
    assert placer.output(b"end\n", 1.5) == [b"end\n", Note("break sent", 1.0)]
    assert placer.at_line_start


def test_after_the_hold_the_open_line_is_broken_with_a_mark():
    placer = NotePlacer(hold=1.0)
    placer.output(b"root@web01:~# ", 0.0)
    placer.note("alice attached", 3.0)
    assert placer.next_deadline() == 4.0
    assert placer.handle_timeout(3.999) == []
    assert placer.handle_timeout(4.0) == [BREAK, Note("alice attached", 3.0)]
    assert placer.at_line_start  # the rest of the line follows on a line of its own
    assert placer.next_deadline() is None
    assert placer.handle_timeout(9.0) == []


def test_output_after_the_deadline_without_a_newline_breaks_too():
    # The timer has not run yet (a busy loop): the next chunk does the job.
    placer = NotePlacer(hold=1.0, at_line_start=False)
    placer.note("SOL down", 0.0)
    assert placer.output(b"xyz", 1.5) == [b"xyz", BREAK, Note("SOL down", 0.0)]
    # But a newline that comes late still beats the mark.
    placer = NotePlacer(hold=1.0, at_line_start=False)
    placer.note("SOL down", 0.0)
    assert placer.output(b"xyz\r\n", 1.5) == [b"xyz\r\n", Note("SOL down", 0.0)]


def test_a_note_while_others_wait_queues_behind_them_even_at_line_start():
    # Order is kept: a later note never overtakes a held one.
    placer = NotePlacer(at_line_start=False)
    placer.note("first", 1.0)
    placer.at_line_start = True  # (cannot happen through output, but the rule holds)
    assert placer.note("second", 1.1) == []
    assert placer.flush() == [Note("first", 1.0), Note("second", 1.1)]


def test_flush_hands_out_everything_held_with_the_mark():
    placer = NotePlacer(at_line_start=False)
    assert placer.flush() == []
    placer.note("solgate stopping", 2.0)
    assert placer.flush() == [BREAK, Note("solgate stopping", 2.0)]
    assert not placer.holding


def test_zero_hold_breaks_at_once_and_negative_is_refused():
    placer = NotePlacer(hold=0, at_line_start=False)
    assert placer.note("now", 1.0) == [BREAK, Note("now", 1.0)]
    with pytest.raises(ValueError, match="0 or more"):
        NotePlacer(hold=-1)
