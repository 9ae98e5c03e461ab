from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from solgate.ipmi.replay import OutboundCounter, ReplayWindow


def test_outbound_counter_skips_zero_on_wrap():
    c = OutboundCounter(0xFFFFFFFE)
    assert [c.next(), c.next(), c.next()] == [0xFFFFFFFF, 1, 2]


def test_window_accepts_forward_and_late_once_and_refuses_replays():
    w = ReplayWindow(ahead=32, behind=16)
    assert w.accept(5)
    assert not w.accept(5)  # replay of the highest
    assert w.accept(9)
    assert w.accept(7)  # late but unseen
    assert not w.accept(7)  # replay of a late one
    assert not w.accept(9 + 33)  # too far ahead
    assert not w.accept(9 - 17)  # too far behind
    assert not w.accept(0)


def test_window_wraps_around_2_to_the_32():
    w = ReplayWindow()
    assert w.accept(0xFFFFFFF0)
    assert w.accept(3)
    assert not w.accept(0xFFFFFFF0)


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=200))
def test_no_sequence_number_is_ever_accepted_twice(seqs):
    w = ReplayWindow()
    accepted = []
    for s in seqs:
        if w.accept(s):
            accepted.append(s)
    assert len(accepted) == len(set(accepted))
