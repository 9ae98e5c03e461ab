"""`Liveness` under a fake clock: when keepalives go out, and when a session is dead."""

from __future__ import annotations

import pytest

from solgate.errors import LocalProtocolError
from solgate.ipmi.liveness import KeepaliveDue, Liveness, SessionDead


def events(live: Liveness) -> list[object]:
    out = []
    while (event := live.next_event()) is not None:
        out.append(event)
    return out


def tick(live: Liveness, now: float, last_received: float | None = None) -> list[object]:
    live.authenticated(last_received)
    live.handle_timeout(now)
    return events(live)


def test_keepalives_go_out_every_interval_while_answered():
    live = Liveness(keepalive_interval=20.0, dead_after=60.0, now=0.0)
    assert live.next_deadline() == 20.0
    assert tick(live, 19.9) == []
    assert tick(live, 20.0) == [KeepaliveDue()]
    live.keepalive_sent(20.0)
    assert live.next_deadline() == 60.0  # only the dead check while one is out
    live.keepalive_answered(20.3)
    assert live.next_deadline() == 40.3
    assert live.last_authenticated == 20.3


def test_unanswered_keepalive_while_data_flows_is_asked_again_and_never_kills():
    """Issue 12 item 1: SOL keeps arriving, keepalives keep failing: the session lives."""
    live = Liveness(keepalive_interval=20.0, dead_after=60.0, now=0.0)
    now = 0.0
    for _ in range(100):  # 100 keepalives, each unanswered after 4 s of retries
        (due,) = tick(live, live.next_deadline() or 0.0, last_received=now)
        assert due == KeepaliveDue()
        live.keepalive_sent(now)
        now += 4.0
        live.keepalive_unanswered(now)
        assert live.next_deadline() == now  # asked again at once
    assert not live.dead
    assert live.unanswered == 100


def test_dead_after_the_window_without_anything_authenticated_says_why():
    live = Liveness(keepalive_interval=20.0, dead_after=60.0, now=0.0)
    assert tick(live, 20.0, last_received=5.0) == [KeepaliveDue()]
    live.keepalive_sent(20.0)
    live.keepalive_unanswered(24.0)
    assert tick(live, 24.0) == [KeepaliveDue()]
    live.keepalive_sent(24.0)
    assert live.next_deadline() == 65.0
    (dead,) = tick(live, 65.0)
    assert dead == SessionDead(60.0, 2)
    assert dead.reason == "nothing authenticated from the BMC for 60.0 s; 2 keepalives unanswered"
    assert live.next_deadline() is None
    assert tick(live, 100.0) == []


def test_late_data_moves_the_dead_line():
    live = Liveness(keepalive_interval=5.0, dead_after=12.0, now=0.0)
    assert tick(live, 5.0) == [KeepaliveDue()]
    live.keepalive_sent(5.0)
    assert tick(live, 12.0, last_received=11.0) == []  # SOL arrived at 11.0
    assert live.next_deadline() == 23.0
    (dead,) = tick(live, 23.0)
    assert isinstance(dead, SessionDead)
    assert dead.reason.endswith("; 1 keepalive unanswered")


def test_jitter_comes_from_the_caller():
    live = Liveness(keepalive_interval=10.0, dead_after=60.0, now=0.0, jitter=lambda: 0.9)
    assert live.next_deadline() == 9.0


def test_misuse_raises_local_protocol_error():
    with pytest.raises(LocalProtocolError):
        Liveness(keepalive_interval=0.0, dead_after=1.0, now=0.0)
    live = Liveness(keepalive_interval=1.0, dead_after=5.0, now=0.0)
    live.keepalive_sent(1.0)
    with pytest.raises(LocalProtocolError):
        live.keepalive_sent(1.0)
