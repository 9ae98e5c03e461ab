"""The cluster core on a fake clock: placement, acquisition, handover and self-fencing."""

from __future__ import annotations

import pytest

from solgate.cluster.core import (
    Acquire,
    Action,
    ClusterCore,
    Fence,
    GrantLease,
    Handover,
    Member,
    Owner,
    Poll,
    PutMember,
    RenewLease,
    StartConsole,
    StopConsole,
    place,
)
from solgate.errors import LocalProtocolError

CONSOLES = [f"node{i:03d}" for i in range(300)]


def drain(core: ClusterCore, *, member_puts: bool = False) -> list[Action]:
    """The queued actions; member key rewrites (load updates) only when asked for."""
    out = []
    while (a := core.next_action()) is not None:
        if member_puts or not isinstance(a, PutMember):
            out.append(a)
    return out


def members(*names: str, lease: int = 1) -> dict[str, Member]:
    return {n: Member(n, lease + i) for i, n in enumerate(names)}


def started(core: ClusterCore, now: float = 0.0, lease: int = 7) -> ClusterCore:
    core.start(now)
    assert drain(core) == [GrantLease(15)]
    core.lease_granted(lease, sent_at=now, now=now)
    assert drain(core, member_puts=True) == [PutMember(lease), Poll()]
    return core


def new_core(name: str = "a", consoles: list[str] | None = None) -> ClusterCore:
    return ClusterCore(name, lease_ttl=15, renew_interval=5, poll_interval=1000,
                       consoles=consoles or ["c1"])


def test_placement_moves_about_one_nth_when_a_member_joins() -> None:
    three = [Member(n, 1) for n in ("a", "b", "c")]
    four = [*three, Member("d", 1)]
    before = {c: place(c, three) for c in CONSOLES}
    after = {c: place(c, four) for c in CONSOLES}
    moved = [c for c in CONSOLES if before[c] != after[c]]
    assert all(after[c] == "d" for c in moved)  # only to the new member, none between others
    assert 50 <= len(moved) <= 100  # about 1/4 of 300
    counts = {m: list(before.values()).count(m) for m in "abc"}
    assert all(70 <= n <= 130 for n in counts.values()), counts


def test_weight_gives_a_proportional_share() -> None:
    ms = [Member("a", 1, weight=2.0), Member("b", 2)]
    share = sum(place(c, ms) == "a" for c in CONSOLES) / len(CONSOLES)
    assert 0.58 <= share <= 0.76


def test_acquires_only_unowned_consoles_it_wins_then_starts_them() -> None:
    core = started(new_core("a", ["c1", "c2"]), lease=7)
    others = {c: place(c, [Member("a", 7), Member("b", 8)]) for c in ("c1", "c2")}
    core.polled(members("a", "b", lease=7), {}, now=0.1)
    wanted = [c for c, m in others.items() if m == "a"]
    assert drain(core) == [Acquire(c, 7) for c in wanted]
    for c in wanted:
        core.acquired(c, True, Owner(c, "a", 7, epoch=42), now=0.2)
    assert drain(core) == [StartConsole(c, 42, None, None) for c in wanted]
    assert set(core.running) == set(wanted)


def test_lost_race_starts_nothing() -> None:
    core = started(new_core("a"))
    core.polled(members("a"), {}, now=0.1)
    assert drain(core) == [Acquire("c1", 7)]
    core.acquired("c1", False, Owner("c1", "b", 99, 50), now=0.2)
    assert drain(core) == []
    assert core.running == {}


def test_takeover_names_the_previous_owner_and_the_gap() -> None:
    core = started(new_core("a"))
    core.polled(members("a", "b", lease=7), {"c1": Owner("c1", "b", 8, 10)}, now=1.0)
    assert drain(core) == []
    core.polled(members("a", lease=7), {}, now=13.0)  # b's lease expired
    assert drain(core) == [Acquire("c1", 7)]
    core.acquired("c1", True, Owner("c1", "a", 7, 60), now=13.5)
    assert drain(core) == [StartConsole("c1", 60, "b", 12.5)]
    assert core.moves == 1


def test_fences_two_thirds_into_the_ttl_counted_from_the_renewal_send() -> None:
    core = started(new_core("a"))
    core.polled(members("a"), {"c1": Owner("c1", "a", 7, 5)}, now=0.0)
    assert drain(core) == [StartConsole("c1", 5)]
    core.handle_timeout(5.0)
    assert drain(core) == [RenewLease(7)]
    core.renewed(15, now=8.0)  # a slow answer: counted from 5.0, when it was sent
    assert core.next_deadline() == 10.0  # the next renewal
    core.handle_timeout(10.0)
    assert drain(core) == [RenewLease(7)]
    core.renew_failed(10.5)  # etcd unreachable
    core.handle_timeout(11.0)
    assert drain(core) == [RenewLease(7)]
    assert core.next_deadline() == pytest.approx(15.0)  # 5.0 + 2/3 * 15
    core.handle_timeout(14.99)
    assert drain(core) == []
    core.handle_timeout(15.0)
    actions = drain(core)
    assert isinstance(actions[0], Fence)
    assert core.fenced
    assert core.running == {}
    # fenced: no acquisitions even when consoles look free
    core.renew_failed(15.5)
    core.polled(members("a"), {}, now=16.0)
    assert not any(isinstance(a, Acquire) for a in drain(core))


def test_renewal_after_a_fence_resumes_the_consoles_still_ours() -> None:
    core = started(new_core("a"))
    core.polled(members("a"), {"c1": Owner("c1", "a", 7, 5)}, now=0.0)
    drain(core)
    core.handle_timeout(10.0)  # no renewal since 0.0: fenced, and a renewal goes out
    actions = drain(core)
    assert isinstance(actions[0], Fence)
    assert actions[1:] == [RenewLease(7)]
    core.renewed(15, now=10.2)
    assert not core.fenced
    assert drain(core) == [Poll()]
    core.polled(members("a"), {"c1": Owner("c1", "a", 7, 5)}, now=10.3)
    assert drain(core) == [StartConsole("c1", 5)]


def test_lost_lease_fences_at_once_and_grants_a_new_one() -> None:
    core = started(new_core("a"))
    core.polled(members("a"), {"c1": Owner("c1", "a", 7, 5)}, now=0.0)
    drain(core)
    core.handle_timeout(5.0)
    drain(core)
    core.renewed(0, now=5.1)
    actions = drain(core)
    assert isinstance(actions[0], Fence)
    assert actions[1:] == [GrantLease(15)]
    assert core.lease is None


def test_a_member_that_no_longer_wins_hands_over_one_at_a_time() -> None:
    names = [c for c in CONSOLES[:40]]
    core = started(new_core("a", names))
    owners = {c: Owner(c, "a", 7, 100 + i) for i, c in enumerate(names)}
    core.polled(members("a", lease=7), owners, now=0.0)
    assert len(drain(core)) == 40
    core.polled(members("a", "b", lease=7), owners, now=1.0)
    actions = drain(core)
    assert len(actions) == 1
    assert isinstance(actions[0], Handover)
    assert actions[0].to == "b"
    core.handed_over(actions[0].console, now=1.5)
    del owners[actions[0].console]
    core.polled(members("a", "b", lease=7), owners, now=2.0)
    again = drain(core)
    assert len(again) == 1
    assert isinstance(again[0], Handover)
    assert again[0].console != actions[0].console


def test_a_console_owned_by_someone_else_is_stopped() -> None:
    core = started(new_core("a"))
    core.polled(members("a"), {"c1": Owner("c1", "a", 7, 5)}, now=0.0)
    drain(core)
    core.polled(members("a", "b"), {"c1": Owner("c1", "b", 8, 9)}, now=1.0)
    assert drain(core) == [StopConsole("c1", "now owned by b (epoch 9)")]


def test_removed_console_stops() -> None:
    core = started(new_core("a", ["c1"]))
    core.polled(members("a"), {"c1": Owner("c1", "a", 7, 5)}, now=0.0)
    drain(core)
    core.set_consoles([], now=1.0)
    assert drain(core) == [StopConsole("c1", "removed from the configuration")]


def test_renew_interval_must_leave_room_before_the_fence() -> None:
    with pytest.raises(LocalProtocolError):
        ClusterCore("a", lease_ttl=3, renew_interval=2.5)


def test_a_drained_member_hands_everything_over_and_gets_nothing() -> None:
    names = CONSOLES[:40]
    a = started(new_core("a", names))
    owners = {c: Owner(c, "a", 7, 100 + i) for i, c in enumerate(names)}
    a.polled(members("a", "b", lease=7), owners, now=0.0, draining={"a"})
    first = drain(a)
    assert [x for x in first if isinstance(x, StartConsole)] == [
        StartConsole(c, 100 + i) for i, c in enumerate(names)]
    a.polled(members("a", "b", lease=7), owners, now=1.0, draining={"a"})
    handovers = drain(a)
    assert len(handovers) == 8
    assert all(isinstance(x, Handover) and x.to == "b" for x in handovers)
    # b acquires whatever is free and never hands anything back to a drained member.
    b = started(new_core("b", names), lease=8)
    b.polled(members("a", "b", lease=7), {}, now=0.0, draining={"a"})
    assert sorted(x.console for x in drain(b) if isinstance(x, Acquire)) == sorted(names)


def test_when_every_member_is_drained_the_drain_is_ignored() -> None:
    a = started(new_core("a", ["c1"]))
    a.polled(members("a"), {}, now=0.0, draining={"a"})
    assert drain(a) == [Acquire("c1", 7)]


def test_a_starting_member_waits_to_see_the_others_before_acquiring() -> None:
    core = ClusterCore("a", lease_ttl=15, renew_interval=5, poll_interval=1, settle=2,
                       consoles=["c1"])
    started(core)
    core.polled(members("a"), {}, now=1.0)
    assert not any(isinstance(x, Acquire) for x in drain(core))
    core.polled(members("a"), {}, now=2.0)
    assert Acquire("c1", 7) in drain(core)


def test_member_key_load_is_refreshed_at_most_every_ten_seconds() -> None:
    core = started(new_core("a", ["c1"]))
    owners = {"c1": Owner("c1", "a", 7, 5)}
    core.polled(members("a", lease=7), owners, now=1.0)  # load 0 published, 1 running
    assert drain(core, member_puts=True) == [StartConsole("c1", 5), PutMember(7)]
    core.polled(members("a", lease=7), owners, now=2.0)
    assert drain(core, member_puts=True) == []
    core.polled(members("a", lease=7), owners, now=11.0)
    assert drain(core, member_puts=True) == [PutMember(7)]


def test_a_poll_racing_the_acquire_answer_starts_the_console_once() -> None:
    core = started(new_core("a"))
    core.polled(members("a"), {}, now=0.1)
    assert drain(core) == [Acquire("c1", 7)]
    core.polled(members("a"), {"c1": Owner("c1", "a", 7, 60)}, now=0.2)  # ours already
    assert drain(core) == []
    core.acquired("c1", True, Owner("c1", "a", 7, 60), now=0.3)
    assert drain(core) == [StartConsole("c1", 60, None, None)]
    core.polled(members("a"), {"c1": Owner("c1", "a", 7, 60)}, now=1.2)
    assert drain(core) == []


def test_abandon_fences_for_good() -> None:
    core = started(new_core("a"))
    core.polled(members("a"), {"c1": Owner("c1", "a", 7, 5)}, now=0.0)
    drain(core)
    core.abandon("the loop failed")
    assert drain(core) == [Fence("the loop failed")]
    assert core.running == {}
    core.handle_timeout(100.0)
    assert drain(core) == []
    assert core.next_deadline() is None


def test_settled_members_read_owner_keys_rarely_and_at_once_when_members_change() -> None:
    core = ClusterCore("a", lease_ttl=15, renew_interval=5, poll_interval=1, consoles=["c1"])
    started(core)
    ours = {"c1": Owner("c1", "a", 7, 5)}
    core.polled(members("a", lease=7), ours, now=0.0)
    assert drain(core) == [StartConsole("c1", 5)]
    reads: list[tuple[float, bool]] = []

    def run(until: float, who: dict[str, Member]) -> None:
        now = 0.0
        while (deadline := core.next_deadline()) is not None and deadline <= until:
            now = max(now, deadline)
            core.handle_timeout(now)
            for action in drain(core):
                if isinstance(action, RenewLease):
                    core.renewed(15, now)
                elif isinstance(action, Poll):
                    reads.append((now, action.owners))
                    core.polled(who, ours if action.owners else None, now)

    run(25.0, members("a", lease=7))
    full = [t for t, owners in reads if owners]
    assert len(reads) >= 20
    assert len(full) == 2  # the periodic full reads, 10 s apart
    assert full[1] - full[0] == pytest.approx(10.0, abs=1.0)
    reads.clear()
    run(26.0, members("a", "b", lease=7))  # b joined: the owners are read at once
    assert reads[0][1] is False
    assert reads[1] == (reads[0][0], True)
