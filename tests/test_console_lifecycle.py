"""`ConsoleLifecycle` under a fake clock: backoff, steal, takeover, auth lockout, keepalive,
stop.

The core is driven with numbers only (`now` jumps to `next_deadline()`), and a seeded
`random.Random` gives the jitter, so the waits are asserted exactly; the UDP side of the
same behaviours is in tests/test_engine_*.py.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from solgate.console.lifecycle import (
    _TRANSITIONS,
    AUTH_FAILURE_BACKOFF,
    STEAL_SETTLE,
    AcquireSlot,
    Action,
    ActivateSol,
    AskKeepalive,
    Backoff,
    CloseSession,
    ConsoleLifecycle,
    ConsoleState,
    DropStream,
    Failure,
    LifecycleInput,
    Note,
    OpenSession,
    Phase,
    ReleaseSlot,
    StateChanged,
    StealSol,
    TakeOverSol,
    classify,
)
from solgate.errors import (
    AuthenticationError,
    LocalProtocolError,
    PayloadActiveElsewhere,
    SolgateError,
    SolgateTimeoutError,
)

OURS = 0x0A0B0C0D
HOST = "10.0.0.5:623"


def core(*, steal: bool = True, reconnect_max: float = 60.0, keepalive: float = 20.0,
         session_timeout: float = 60.0, seed: int = 7) -> ConsoleLifecycle:
    return ConsoleLifecycle(host=HOST, steal=steal, reconnect_max=reconnect_max,
                            keepalive_interval=keepalive, session_timeout=session_timeout,
                            rng=random.Random(seed))


def drain(life: ConsoleLifecycle) -> list[Action]:
    out = []
    while (action := life.next_action()) is not None:
        out.append(action)
    return out


def to_activating(life: ConsoleLifecycle, now: float = 0.0) -> None:
    """From IDLE or WAITING (at its deadline) through the slot and the handshake."""
    if life.phase is Phase.IDLE:
        life.start(now)
    else:
        life.handle_timeout(now)
    life.slot_acquired(now)
    life.connected(now)
    drain(life)


def to_active(life: ConsoleLifecycle, now: float = 0.0) -> None:
    to_activating(life, now)
    life.activated(now, our_session=OURS, cipher_suite=17)
    drain(life)


def fail_and_close(life: ConsoleLifecycle, kind: Failure, detail: str, now: float) -> float:
    """One failed try; returns how long the core waits before the next."""
    life.failed(kind, detail, now)
    drain(life)
    life.closed(now)
    deadline = life.next_deadline()
    assert deadline is not None
    return deadline - now


def test_a_console_comes_up_step_by_step():
    life = core()
    life.start(0.0)
    assert drain(life) == [StateChanged(ConsoleState.CONNECTING, HOST), AcquireSlot()]
    life.slot_acquired(0.1)
    assert drain(life) == [OpenSession()]
    life.connected(0.5)
    assert drain(life) == [StateChanged(ConsoleState.ACTIVATING, ""), ActivateSol()]
    life.activated(0.6, our_session=OURS, cipher_suite=17)
    assert drain(life) == [ReleaseSlot(), StateChanged(ConsoleState.ACTIVE, "cipher suite 17"),
                           Note("sol-up", "SOL up (cipher suite 17)")]
    assert life.state is ConsoleState.ACTIVE
    assert life.reconnects == 0


def test_backoff_doubles_with_jitter_up_to_reconnect_max_and_resets_after_sol_was_up():
    """An unreachable BMC: waits of 0.5-1, 1-2, 2-4 ... s, then 30-60 s at the cap,
    jittered so consoles do not retry in step; each retry counts as a reconnect."""
    life, now = core(reconnect_max=60.0), 0.0
    expect = Backoff(cap=60.0, rng=random.Random(7))  # the same draws, in the same order
    life.start(now)
    waits = []
    for attempt in range(10):  # noqa: B007 - attempt 0 starts without a wait
        if attempt:
            life.handle_timeout(now)
        life.slot_acquired(now)
        drain(life)
        life.failed(Failure.TIMEOUT, "BMC 10.0.0.5:623 did not answer", now)
        assert drain(life) == [CloseSession(deactivate=False), ReleaseSlot(), StateChanged(
            ConsoleState.UNREACHABLE, "BMC 10.0.0.5:623 did not answer")]
        life.closed(now)
        deadline = life.next_deadline()
        assert deadline is not None
        waits.append(deadline - now)
        assert waits[-1] == pytest.approx(expect.next_delay())
        life.handle_timeout(deadline - 0.001)  # early: nothing happens
        assert life.phase is Phase.WAITING
        assert drain(life) == []
        now = deadline
    for n, wait in enumerate(waits):
        ceiling = min(60.0, 2.0**n)
        assert ceiling / 2 <= wait <= ceiling
    assert len({round(w, 6) for w in waits[-3:]}) == 3
    assert life.reconnects == 9

    # SOL up, then down: the next wait is short again.
    life.handle_timeout(now)
    life.slot_acquired(now)
    life.connected(now)
    life.activated(now, our_session=OURS, cipher_suite=17)
    drain(life)
    life.ended("SOL stalled: no ACK", now)
    assert drain(life) == [DropStream(), Note("sol-down", "SOL down: SOL stalled: no ACK"),
                           StateChanged(ConsoleState.BACKOFF, "SOL stalled: no ACK"),
                           CloseSession(deactivate=False)]
    life.closed(now)
    assert (life.next_deadline() or 0.0) - now <= 1.0


def test_wrong_password_is_confirmed_once_then_waits_minutes():
    """At most 4 logins in 10 minutes: the first failure gets the short backoff (it may be
    forged), the second is confirmed and waits 150-300 s, then 300-600 s."""
    life, now, logins = core(reconnect_max=2.0), 0.0, 0
    life.start(now)
    waits = []
    states = []
    while now < 600.0:
        if logins:
            life.handle_timeout(now)
        life.slot_acquired(now)
        drain(life)
        logins += 1
        waits.append(fail_and_close(life, Failure.AUTHENTICATION,
                                    "BMC node rejected the password", now))
        states.append((life.state, life.detail))
        now += waits[-1]
    assert logins <= 4
    assert waits[0] <= 2.0
    assert AUTH_FAILURE_BACKOFF / 2 <= waits[1] <= AUTH_FAILURE_BACKOFF
    assert AUTH_FAILURE_BACKOFF <= waits[2] <= 2 * AUTH_FAILURE_BACKOFF
    assert states[0] == (ConsoleState.BACKOFF, "BMC node rejected the password (trying once "
                                               "more before backing off for minutes)")
    assert states[1] == (ConsoleState.AUTH_FAILED, "BMC node rejected the password")


def test_a_lone_auth_failure_is_forgotten_after_any_other_outcome():
    life, now = core(reconnect_max=2.0), 0.0
    life.start(now)
    life.slot_acquired(now)
    now += fail_and_close(life, Failure.AUTHENTICATION, "bad password", now)
    to_activating(life, now)
    now += fail_and_close(life, Failure.TIMEOUT, "no answer", now)
    to_activating(life, now)
    wait = fail_and_close(life, Failure.AUTHENTICATION, "bad password", now)
    assert life.state is ConsoleState.BACKOFF
    assert wait <= 2.0


def test_steal_names_the_holder_forces_it_off_and_activates_after_the_settle():
    life = core(steal=True)
    to_activating(life, 1.0)
    life.held_elsewhere("SOL is active in another session", 1.0)
    assert drain(life) == [StealSol("steal = true")]
    life.stolen(1.5)
    assert life.next_deadline() == 1.5 + STEAL_SETTLE
    life.handle_timeout(1.6)
    assert drain(life) == []
    life.handle_timeout(1.5 + STEAL_SETTLE)
    assert drain(life) == [ActivateSol()]
    assert life.state is ConsoleState.ACTIVATING
    life.held_elsewhere("taken again", 1.8)  # the thief came back: no second steal
    assert drain(life) == [CloseSession(deactivate=False), ReleaseSlot(),
                           StateChanged(ConsoleState.HELD_ELSEWHERE,
                                        "SOL is active in another session")]


def test_a_cluster_member_that_lost_the_console_leaves_the_holder_alone():
    life = core(steal=True)
    to_activating(life)
    life.held_elsewhere("SOL is active in another session", 1.0)
    assert drain(life) == [StealSol("steal = true")]
    life.steal_refused(1.1)  # the ownership check said no: no deactivate
    assert drain(life) == [CloseSession(deactivate=False), ReleaseSlot(),
                           StateChanged(ConsoleState.HELD_ELSEWHERE,
                                        "SOL is active in another session")]


def test_a_takeover_deactivates_first_and_activates_at_once_without_the_settle():
    """A cluster member won a console from a dead member: no failed activation, no
    question who holds SOL, no settle; the log names the member whose session it was."""
    life = core(steal=True)
    life.take_over("gw1")
    life.start(0.0)
    life.slot_acquired(0.0)
    drain(life)
    life.connected(0.5)
    assert drain(life) == [StateChanged(ConsoleState.ACTIVATING, ""), TakeOverSol("gw1")]
    assert life.next_deadline() is None
    life.taken_over(0.6, deactivated=True)
    assert drain(life) == [ActivateSol()]
    assert life.next_deadline() is None  # activated at once, no STEAL_SETTLE
    life.activated(0.7, our_session=OURS, cipher_suite=17)
    # One note says both (a failover writes thousands): SOL up, and whose session went.
    assert drain(life)[-1] == Note("sol-up", "SOL up (cipher suite 17); SOL was held by "
                                   "gw1's stale session; forced deactivate (takeover)")
    assert life.state is ConsoleState.ACTIVE


def test_a_takeover_deactivate_is_noted_on_its_own_when_the_activation_fails():
    life = core(steal=True)
    life.take_over("gw1")
    to_activating(life, 0.0)
    life.taken_over(0.1, deactivated=True)
    assert drain(life) == [ActivateSol()]
    life.failed(Failure.TIMEOUT, "no answer to Activate Payload", 0.2)
    actions = drain(life)
    assert actions[0] == Note("deactivate", "SOL was held by gw1's stale session; forced "
                              "deactivate (takeover)")
    assert not any(isinstance(a, Note) and a.kind == "sol-up" for a in actions)


def test_a_takeover_finding_sol_free_activates_without_a_note():
    life = core(steal=True)
    life.take_over("gw1")
    to_activating(life, 0.0)
    life.taken_over(0.1, deactivated=False)  # the BMC had already dropped gw1's session
    assert drain(life) == [ActivateSol()]


def test_a_takeover_whose_bmc_still_holds_sol_falls_back_to_the_steal_and_its_settle():
    """A BMC that needs time after a deactivate (or ignored it) gets the ordinary steal:
    deactivate, wait STEAL_SETTLE, activate; then held-elsewhere if it is still held."""
    life = core(steal=True)
    life.take_over("gw1")
    to_activating(life, 1.0)
    life.taken_over(1.1, deactivated=True)
    drain(life)
    life.held_elsewhere("SOL is active in another session", 1.2)
    assert drain(life) == [Note("deactivate", "SOL was held by gw1's stale session; forced "
                                "deactivate (takeover)"), StealSol("steal = true")]
    life.stolen(1.3)
    assert life.next_deadline() == 1.3 + STEAL_SETTLE
    life.handle_timeout(1.3 + STEAL_SETTLE)
    assert drain(life) == [ActivateSol()]
    life.held_elsewhere("taken again", 1.6)
    assert drain(life) == [CloseSession(deactivate=False), ReleaseSlot(),
                           StateChanged(ConsoleState.HELD_ELSEWHERE,
                                        "SOL is active in another session")]


def test_a_takeover_the_bmc_refuses_still_activates_and_says_so():
    life = core(steal=True)
    life.take_over("gw1")
    to_activating(life, 0.0)
    life.taken_over(0.1, deactivated=False, refused="insufficient privilege (0xd4)")
    assert drain(life) == [Note("deactivate", "deactivating gw1's stale SOL session was "
                                "refused (insufficient privilege (0xd4)); activating anyway"),
                           ActivateSol()]


def test_a_takeover_waits_for_a_try_that_reaches_the_bmc_and_is_done_once():
    life = core(steal=True)
    life.take_over("gw1")
    to_activating(life, 0.0)
    wait = fail_and_close(life, Failure.TIMEOUT, "no answer to Deactivate Payload", 0.5)
    life.handle_timeout(0.5 + wait)
    life.slot_acquired(0.5 + wait)
    drain(life)
    life.connected(0.5 + wait)
    assert drain(life) == [StateChanged(ConsoleState.ACTIVATING, ""), TakeOverSol("gw1")]
    life.taken_over(0.5 + wait, deactivated=True)
    drain(life)
    life.activated(0.6 + wait, our_session=OURS, cipher_suite=17)
    drain(life)
    life.ended("SOL stalled", 100.0)
    drain(life)
    life.closed(100.0)
    to_activating(life, life.next_deadline() or 0.0)
    life.held_elsewhere("held by 0x1", 101.0)  # a later try: the ordinary steal path
    assert drain(life) == [StealSol("steal = true")]


def test_a_takeover_by_a_member_that_lost_the_console_deactivates_nothing():
    life = core(steal=True)
    life.take_over("gw1")
    to_activating(life, 0.0)
    life.steal_refused(0.1)  # the ownership check said no
    assert drain(life) == [CloseSession(deactivate=False), ReleaseSlot(),
                           StateChanged(ConsoleState.HELD_ELSEWHERE, "not taken over from "
                                        "gw1: the console is no longer this member's")]
    life.closed(0.1)
    life.handle_timeout(life.next_deadline() or 0.0)
    life.slot_acquired(2.0)
    life.connected(2.0)
    assert drain(life)[-1] == ActivateSol()  # no second takeover


def test_without_steal_a_takeover_activates_as_usual():
    life = core(steal=False)
    life.take_over("gw1")
    to_activating(life, 0.0)
    life.held_elsewhere("held by 0x1", 0.1)
    assert drain(life)[-1] == StateChanged(ConsoleState.HELD_ELSEWHERE, "held by 0x1")


def test_without_steal_an_operators_forced_deactivate_steals_once_and_goes_now():
    life, now = core(steal=False, reconnect_max=60.0), 0.0
    to_activating(life, now)
    life.held_elsewhere("held by 0x1", now)
    assert drain(life)[-1] == StateChanged(ConsoleState.HELD_ELSEWHERE, "held by 0x1")
    life.closed(now)
    assert life.next_deadline() is not None
    life.reconnect(force_deactivate=True, reason="reconnect requested by alice", now=now + 0.1)
    assert drain(life) == [StateChanged(ConsoleState.CONNECTING, HOST), AcquireSlot()]
    assert life.reconnects == 1
    assert life.next_deadline() is None
    life.slot_acquired(now)
    life.connected(now)
    drain(life)
    life.held_elsewhere("held by 0x1", now)
    assert drain(life) == [StealSol("requested by an operator")]
    life.failed(Failure.OTHER, "deactivate refused", now)
    drain(life)
    life.closed(now)
    to_activating(life, life.next_deadline() or 0.0)
    life.held_elsewhere("held by 0x1", now)  # the operator's steal was for one try
    assert drain(life)[-1] == StateChanged(ConsoleState.HELD_ELSEWHERE, "held by 0x1")


def test_keepalives_every_interval_for_a_simulated_hour_keep_sol_up():
    life, now = core(keepalive=20.0, session_timeout=60.0), 0.0
    to_active(life, now)
    asked = 0
    while now < 3600.0:
        deadline = life.next_deadline()
        assert deadline is not None
        assert 18.0 <= deadline - now <= 20.0
        now = deadline
        life.handle_timeout(now)
        assert drain(life) == [AskKeepalive()]
        asked += 1
        now += 0.01
        life.keepalive_answered(OURS, now)
    assert life.state is ConsoleState.ACTIVE
    assert asked >= 180


def test_a_keepalive_naming_another_owner_ends_sol():
    life = core()
    to_active(life)
    life.handle_timeout(life.next_deadline() or 0.0)
    assert drain(life) == [AskKeepalive()]
    life.keepalive_answered(0x11223344, 21.0)
    assert drain(life) == [
        DropStream(), Note("sol-down", "SOL down: SOL now held by session 0x11223344, not by us"),
        StateChanged(ConsoleState.BACKOFF, "SOL now held by session 0x11223344, not by us"),
        CloseSession(deactivate=False)]


def test_unanswered_keepalives_are_asked_again_and_sol_ends_only_when_nothing_arrives():
    life = core(keepalive=20.0, session_timeout=60.0)
    to_active(life)
    while True:
        now = life.next_deadline() or 0.0
        life.authenticated(min(now - 1.0, 40.0))  # SOL data flows until t=40
        unanswered = life.unanswered
        life.handle_timeout(now)
        actions = drain(life)
        if actions != [AskKeepalive()]:
            break
        life.keepalive_unanswered(now + 4.0)  # every retransmission lost
        assert life.next_deadline() == min(now + 4.0, 100.0)  # asked again at once
    assert now == 100.0
    assert unanswered > 5
    reason = f"nothing authenticated from the BMC for 60.0 s; {unanswered} keepalives unanswered"
    assert actions == [DropStream(), Note("sol-down", f"SOL down: {reason}"),
                       StateChanged(ConsoleState.BACKOFF, reason),
                       CloseSession(deactivate=False)]


def test_stop_frees_the_bmc_whatever_the_phase():
    life = core()
    to_active(life)
    life.stop(5.0)
    assert drain(life) == [DropStream(), Note("sol-down", "SOL down: solgate stopping"),
                           StateChanged(ConsoleState.BACKOFF, "solgate stopping"),
                           CloseSession(deactivate=True)]
    life.closed(5.5)
    assert drain(life) == [StateChanged(ConsoleState.STOPPED, "")]
    assert life.phase is Phase.STOPPED
    assert life.next_deadline() is None

    waiting = core()
    waiting.start(0.0)
    waiting.slot_acquired(0.0)
    fail_and_close(waiting, Failure.TIMEOUT, "no answer", 0.0)
    waiting.stop(1.0)
    assert drain(waiting) == [StateChanged(ConsoleState.STOPPED, "")]

    queued = core()
    queued.start(0.0)
    drain(queued)
    queued.stop(0.5)  # still waiting for a setup slot
    queued.slot_acquired(1.0)
    assert drain(queued) == [ReleaseSlot(), StateChanged(ConsoleState.STOPPED, "")]

    handshaking = core()
    handshaking.start(0.0)
    handshaking.slot_acquired(0.0)
    handshaking.connected(0.0)
    drain(handshaking)
    handshaking.stop(0.1)
    handshaking.activated(0.2, our_session=OURS, cipher_suite=17)  # no "SOL up"
    assert drain(handshaking) == [ReleaseSlot(), CloseSession(deactivate=True)]
    handshaking.closed(0.3)
    assert handshaking.phase is Phase.STOPPED


def test_an_operators_reconnect_ends_an_active_console_and_retries_soon():
    life = core()
    to_active(life)
    life.reconnect(force_deactivate=True, reason="reconnect requested by bob", now=3.0)
    assert drain(life) == [DropStream(), Note("sol-down", "SOL down: reconnect requested by bob"),
                           StateChanged(ConsoleState.BACKOFF, "reconnect requested by bob"),
                           CloseSession(deactivate=True)]
    life.ended("session ended (closed)", 3.1)  # a late second report changes nothing
    assert drain(life) == []
    life.closed(3.2)
    assert (life.next_deadline() or 0.0) - 3.2 <= 1.0


@pytest.mark.parametrize(("exc", "kind"), [
    (PayloadActiveElsewhere("held", host="h", step="activate"), Failure.HELD_ELSEWHERE),
    (AuthenticationError("bad", host="h", step="rakp2"), Failure.AUTHENTICATION),
    (SolgateTimeoutError("late", host="h", step="open"), Failure.TIMEOUT),
    (SolgateError("odd"), Failure.OTHER),
    (OSError("no route"), Failure.NETWORK),
])
def test_errors_map_to_failure_kinds(exc: BaseException, kind: Failure):
    result = classify(exc, "h")
    assert result is not None
    assert result[0] is kind
    assert classify(RuntimeError("a bug"), "h") is None


# --- the table ------------------------------------------------------------------------


@pytest.mark.parametrize(("phase", "event"), list(itertools.product(Phase, LifecycleInput)))
def test_every_phase_and_input_is_a_table_entry_or_an_error(phase: Phase,
                                                            event: LifecycleInput):
    life = core()
    life.phase = phase
    if (phase, event) in _TRANSITIONS:
        life._move(event)  # noqa: SLF001 - the table itself
        assert life.phase is _TRANSITIONS[(phase, event)]
    else:
        with pytest.raises(LocalProtocolError):
            life._move(event)  # noqa: SLF001
        assert life.phase is Phase.STOPPED


_CALLS = [
    lambda c, t: c.start(t),
    lambda c, t: c.slot_acquired(t),
    lambda c, t: c.connected(t),
    lambda c, t: c.held_elsewhere("held", t),
    lambda c, t: c.stolen(t),
    lambda c, t: c.steal_refused(t),
    lambda c, t: c.take_over("gw1"),
    lambda c, t: c.taken_over(t, deactivated=True),
    lambda c, t: c.activated(t, our_session=OURS, cipher_suite=17),
    *[lambda c, t, k=k: c.failed(k, "failed", t) for k in Failure],
    lambda c, t: c.ended("ended", t),
    lambda c, t: c.closed(t),
    lambda c, t: c.authenticated(t),
    lambda c, t: c.keepalive_answered(OURS, t),
    lambda c, t: c.keepalive_answered(1, t),
    lambda c, t: c.keepalive_refused(t),
    lambda c, t: c.keepalive_unanswered(t),
    lambda c, t: c.handle_timeout(c.next_deadline() or t),
    lambda c, t: c.handle_timeout(t),
    lambda c, t: c.reconnect(force_deactivate=True, reason="r", now=t),
    lambda c, t: c.reconnect(force_deactivate=False, reason="r", now=t),
    lambda c, t: c.stop(t),
]
_SHOWN = {
    Phase.IDLE: {ConsoleState.STOPPED}, Phase.STOPPED: {ConsoleState.STOPPED},
    Phase.WAIT_SLOT: {ConsoleState.CONNECTING}, Phase.CONNECTING: {ConsoleState.CONNECTING},
    Phase.ACTIVATING: {ConsoleState.ACTIVATING}, Phase.STEALING: {ConsoleState.ACTIVATING},
    Phase.TAKING_OVER: {ConsoleState.ACTIVATING},
    Phase.SETTLING: {ConsoleState.ACTIVATING}, Phase.ACTIVE: {ConsoleState.ACTIVE},
}
_WAITING = {ConsoleState.BACKOFF, ConsoleState.HELD_ELSEWHERE, ConsoleState.AUTH_FAILED,
            ConsoleState.UNREACHABLE}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_CALLS) - 1), st.floats(0, 5)), max_size=40))
def test_any_sequence_of_inputs_is_followed_or_refused(steps: list[tuple[int, float]]):
    """Every call either follows the table, keeping what is shown true to the phase, or
    raises LocalProtocolError (a bug in the caller) and stops; never anything else."""
    life, now = core(), 0.0
    for index, step in steps:
        now += step
        try:
            _CALLS[index](life, now)
        except LocalProtocolError:
            assert life.phase is Phase.STOPPED
            return
        drain(life)
        shown = _SHOWN.get(life.phase)
        if shown is not None and life.phase is not Phase.IDLE:
            assert life.state in shown, (life.phase, life.state)
        if life.phase is Phase.WAITING:
            assert life.state in _WAITING
            assert life.next_deadline() is not None
        if life.phase in (Phase.ACTIVE, Phase.SETTLING):
            assert life.next_deadline() is not None
