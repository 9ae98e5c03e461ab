"""One console's life as a sans-I/O core: connect, activate SOL (stealing when allowed),
keep it alive, back off, reconnect, stop.

Theory of operation
-------------------
`ConsoleLifecycle` decides; the worker (`console/worker.py`) does. Like `ClientSession`
(STYLE.md items 1 and 4) it never reads a clock, sleeps or touches a socket: the worker
feeds it what happened (`take_over`, `slot_acquired`, `connected`, `taken_over`,
`activated`, `held_elsewhere`, `failed`, `ended`, `closed`, keepalive outcomes,
`reconnect`, `stop`) and timer expiries (`handle_timeout`), each with `now`, and pulls
`next_action()` (what to do, in order) and `next_deadline()` (when to call
`handle_timeout`). Jitter comes from the `rng` it is given, so a test with a seeded
`random.Random` and a fake clock gets exact numbers.

The life is a table of phases; each phase shows as one of the `ConsoleState` names the
web page, the API and `/metrics` print:

    IDLE --start--> WAIT_SLOT --slot--> CONNECTING --connected--> ACTIVATING --activated--> ACTIVE
                        ^                   |   |           held | ^ settle    ^     | ended
                        |                   |   |       STEALING-+ SETTLING    |     v
                        |                   |   +--connected--> TAKING_OVER ---+     |
                        |                   | failed   (takeover)  taken_over        |
                        +--- timeout / -- WAITING <--closed-- CLOSING <-------------+
                             reconnect                                  (failures too)

* Session setups over all consoles are capped by a shared semaphore (`setup_concurrency`):
  the slot is held from before the handshake until SOL is active or the try failed.
* SOL held by another session: with `steal = true`, or once after an operator's forced
  deactivate, the holder is named in the log, forced off (Deactivate Payload), and SOL is
  activated again after `STEAL_SETTLE`; if it is still held the try fails as
  `held-elsewhere`, otherwise `held-elsewhere` at once. In a cluster the worker first
  asks whether this member still owns the console (`steal_refused` if not), so two
  members never fight over one BMC.
* A takeover (a cluster member won a console whose previous owner's lease expired, so
  that member's SOL session is known stale): with `steal = true` the first try after the
  handshake deactivates SOL first (`TAKING_OVER`, after the same ownership check) and
  activates at once, without asking who holds SOL and without `STEAL_SETTLE`: two round
  trips and the settle less than the steal above. The settle is kept for BMCs that need
  it: if SOL is still held after that activation, the steal above follows (deactivate,
  settle, activate), as FreeIPMI's ipmiconsole retries after a deactivate a BMC did not
  honour. A BMC that refuses the deactivate gets the activation anyway (it decides).
* A failed try or an ended activation closes the session, then waits: `Backoff` (full
  jitter, doubling up to `reconnect_max`) for everything but confirmed authentication
  failures, which wait minutes (`AUTH_FAILURE_BACKOFF`, doubling up to
  `AUTH_FAILURE_BACKOFF_MAX`) so the BMC does not lock the account. Handshake errors are
  not authenticated, so one forged datagram could claim a wrong password: a lone
  authentication failure gets the short backoff and only the next one in a row
  confirms it (`LoginFailures`).
* While active, `ipmi.liveness.Liveness` schedules the keepalives (Get Payload Instance
  Info) and gives the session up only after `session_timeout` without anything
  authenticated; an answer naming another SOL owner ends the activation too.
* An operator's reconnect starts a waiting console at once; an active one is ended (and
  reconnects after the short backoff). Stop ends an active console (deactivating SOL so
  the BMC is free), lets a setup in progress finish, and stops waiting.

A pair (phase, input) not in the table raises `LocalProtocolError`: a bug in the worker.
`ended` is the one input every phase takes (the first end of an activation wins; later
ones, racing with the close, are ignored).
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass
from enum import Enum, auto

from solgate.errors import (
    AuthenticationError,
    LocalProtocolError,
    PayloadActiveElsewhere,
    SolgateError,
    SolgateTimeoutError,
)
from solgate.ipmi.liveness import KeepaliveDue, Liveness, SessionDead

AUTH_FAILURE_BACKOFF = 300.0  # seconds; repeated bad logins lock BMC accounts
AUTH_FAILURE_BACKOFF_MAX = 1800.0
INITIAL_BACKOFF = 1.0
STEAL_SETTLE = 0.2  # seconds between a forced deactivate and the new activation


class ConsoleState(enum.StrEnum):
    """What the web page, the API and /metrics show; names are part of the interface."""

    CONNECTING = "connecting"
    ACTIVATING = "activating"
    ACTIVE = "active"
    HELD_ELSEWHERE = "held-elsewhere"
    AUTH_FAILED = "auth-failed"
    UNREACHABLE = "unreachable"
    BACKOFF = "backoff"
    STOPPED = "stopped"


@dataclass
class Backoff:
    """Exponential backoff with full jitter: the nth failure waits up to base * 2^n, capped."""

    cap: float
    base: float = INITIAL_BACKOFF
    failures: int = 0
    rng: random.Random | None = None

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * float(2**self.failures))
        self.failures += 1
        if self.rng is None:
            return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class LoginFailures:
    """Consecutive authentication failures; the long backoff needs a confirmed one.

    RMCP+ error statuses and RAKP codes carry no proof of origin, so a lone failure may
    be forged (issue 11 finding 3); the next attempt, after the normal short backoff,
    confirms or clears it. Any other outcome ends the run.
    """

    confirm_after: int = 2
    consecutive: int = 0

    def failed(self) -> bool:
        """Count one failure; True once it is confirmed (lock out for minutes)."""
        self.consecutive += 1
        return self.consecutive >= self.confirm_after

    def reset(self) -> None:
        self.consecutive = 0


class Failure(Enum):
    """How a try to bring SOL up failed; each kind shows as its own state."""

    HELD_ELSEWHERE = auto()
    AUTHENTICATION = auto()
    TIMEOUT = auto()  # no answer: unreachable
    NETWORK = auto()  # the socket said no (OSError): unreachable
    OTHER = auto()  # any other SolgateError: backoff


def classify(exc: BaseException, host: str) -> tuple[Failure, str] | None:
    """The failure kind and the detail shown for `exc`; None for a bug (let it raise)."""
    match exc:
        case PayloadActiveElsewhere():
            return Failure.HELD_ELSEWHERE, str(exc)
        case AuthenticationError():
            return Failure.AUTHENTICATION, str(exc)
        case SolgateTimeoutError():
            return Failure.TIMEOUT, str(exc)
        case SolgateError():
            return Failure.OTHER, str(exc)
        case OSError():
            return Failure.NETWORK, f"{host}: {exc}"
    return None


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class StateChanged:
    """Show `state` with `detail` (the worker logs a change and tells the hub)."""

    state: ConsoleState
    detail: str


@dataclass(frozen=True, slots=True)
class Note:
    """Record `message` in the console log and events.jsonl as `kind`."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class AcquireSlot:
    """Wait for a session-setup slot, then call `slot_acquired`."""


@dataclass(frozen=True, slots=True)
class ReleaseSlot:
    """Give the setup slot back."""


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Run the RMCP+ handshake; then `connected` or `failed`."""


@dataclass(frozen=True, slots=True)
class ActivateSol:
    """Activate Payload (SOL); then `activated`, `held_elsewhere` or `failed`."""


@dataclass(frozen=True, slots=True)
class StealSol:
    """Name the holder in a `deactivate` note, force SOL off; then `stolen` or `failed`."""

    why: str


@dataclass(frozen=True, slots=True)
class TakeOverSol:
    """Deactivate SOL (the stale session of member `previous`) before activating; then
    `taken_over`, `steal_refused` or `failed`. Ask the ownership check first."""

    previous: str


@dataclass(frozen=True, slots=True)
class AskKeepalive:
    """Ask Get Payload Instance Info; then `keepalive_answered/refused/unanswered`."""


@dataclass(frozen=True, slots=True)
class DropStream:
    """Stop feeding the SOL stream and stop asking keepalives: the activation is over."""


@dataclass(frozen=True, slots=True)
class CloseSession:
    """Drop the SOL stream, deactivate SOL if asked, close the session; then `closed`."""

    deactivate: bool


Action = (StateChanged | Note | AcquireSlot | ReleaseSlot | OpenSession | ActivateSol
          | StealSol | TakeOverSol | AskKeepalive | DropStream | CloseSession)


# --------------------------------------------------------------------------- the table


class Phase(Enum):
    IDLE = auto()
    WAIT_SLOT = auto()
    CONNECTING = auto()
    ACTIVATING = auto()
    TAKING_OVER = auto()
    STEALING = auto()
    SETTLING = auto()
    ACTIVE = auto()
    CLOSING = auto()
    WAITING = auto()
    STOPPED = auto()


class LifecycleInput(Enum):
    START = auto()
    SLOT_ACQUIRED = auto()
    SLOT_ACQUIRED_STOPPING = auto()
    CONNECTED = auto()
    CONNECTED_TAKEOVER = auto()
    TAKEN_OVER = auto()
    ACTIVATED = auto()
    ACTIVATED_STOPPING = auto()
    HELD_STEAL = auto()
    HELD = auto()
    STOLEN = auto()
    FAILED = auto()
    ENDED = auto()
    CLOSED = auto()
    CLOSED_STOPPING = auto()
    KEEPALIVE_RESULT = auto()
    TIMEOUT = auto()
    RECONNECT = auto()
    STOP = auto()


_P = Phase
_I = LifecycleInput
_SETUP = (_P.WAIT_SLOT, _P.CONNECTING, _P.TAKING_OVER, _P.ACTIVATING, _P.STEALING,
          _P.SETTLING)
_TRY = (_P.CONNECTING, _P.TAKING_OVER, _P.ACTIVATING, _P.STEALING)  # an IPMI exchange

_TRANSITIONS: dict[tuple[Phase, LifecycleInput], Phase] = {
    (_P.IDLE, _I.START): _P.WAIT_SLOT,
    (_P.WAIT_SLOT, _I.SLOT_ACQUIRED): _P.CONNECTING,
    (_P.WAIT_SLOT, _I.SLOT_ACQUIRED_STOPPING): _P.STOPPED,
    (_P.CONNECTING, _I.CONNECTED): _P.ACTIVATING,
    (_P.CONNECTING, _I.CONNECTED_TAKEOVER): _P.TAKING_OVER,
    (_P.TAKING_OVER, _I.TAKEN_OVER): _P.ACTIVATING,
    (_P.ACTIVATING, _I.ACTIVATED): _P.ACTIVE,
    (_P.ACTIVATING, _I.ACTIVATED_STOPPING): _P.CLOSING,
    (_P.ACTIVATING, _I.HELD_STEAL): _P.STEALING,
    (_P.ACTIVATING, _I.HELD): _P.CLOSING,
    (_P.STEALING, _I.STOLEN): _P.SETTLING,
    (_P.SETTLING, _I.TIMEOUT): _P.ACTIVATING,
    **{(p, _I.FAILED): _P.CLOSING for p in _TRY},
    (_P.ACTIVE, _I.ENDED): _P.CLOSING,
    **{(p, _I.ENDED): p for p in _P if p is not _P.ACTIVE},
    (_P.ACTIVE, _I.KEEPALIVE_RESULT): _P.ACTIVE,
    (_P.ACTIVE, _I.TIMEOUT): _P.ACTIVE,
    (_P.CLOSING, _I.CLOSED): _P.WAITING,
    (_P.CLOSING, _I.CLOSED_STOPPING): _P.STOPPED,
    (_P.WAITING, _I.TIMEOUT): _P.WAIT_SLOT,
    (_P.WAITING, _I.RECONNECT): _P.WAIT_SLOT,
    **{(p, _I.RECONNECT): p for p in (_P.IDLE, *_SETUP, _P.CLOSING, _P.STOPPED)},
    (_P.IDLE, _I.STOP): _P.STOPPED,
    (_P.WAITING, _I.STOP): _P.STOPPED,
    (_P.STOPPED, _I.STOP): _P.STOPPED,
    # A setup under way finishes (or fails) first; the stop flag decides what follows.
    **{(p, _I.STOP): p for p in (*_SETUP, _P.CLOSING)},
}


class ConsoleLifecycle:
    """The decisions of one console's life (module docstring); the worker executes them."""

    def __init__(self, *, host: str, steal: bool, reconnect_max: float,
                 keepalive_interval: float, session_timeout: float,
                 rng: random.Random) -> None:
        self.host = host  # "host:port", the detail while connecting
        self.steal = steal
        self.keepalive_interval = keepalive_interval
        self.session_timeout = session_timeout
        self._rng = rng
        self.phase = Phase.IDLE
        self.state = ConsoleState.STOPPED
        self.detail = ""
        self.reconnects = 0  # tries after the first
        self.stopping = False
        self.liveness: Liveness | None = None
        self._backoff = Backoff(cap=reconnect_max, rng=rng)
        self._auth_backoff = Backoff(cap=AUTH_FAILURE_BACKOFF_MAX, base=AUTH_FAILURE_BACKOFF,
                                     rng=rng)
        self._logins = LoginFailures()
        self._force_steal = False  # an operator forced a deactivate: steal once
        self._steal_now = steal  # this try may force a holder off
        self._stealing = False  # this try already forced a deactivate
        self._held_detail = ""  # what the first "held elsewhere" said, if the steal fails
        self._takeover_from: str | None = None  # a takeover's previous owner (a member)
        # "a's stale session deactivated": said in the "SOL up" note that follows (one
        # record instead of two a console, thousands at once in a failover), or in a
        # note of its own if the activation does not follow.
        self._takeover_said = ""
        self._our_session = 0
        self._delay = 0.0  # the wait after the close under way
        self._deadline: float | None = None  # WAITING and SETTLING
        self._actions: deque[Action] = deque()

    # --- outputs ----------------------------------------------------------------------

    def next_action(self) -> Action | None:
        return self._actions.popleft() if self._actions else None

    @property
    def has_actions(self) -> bool:
        return bool(self._actions)

    def next_deadline(self) -> float | None:
        if self.phase is Phase.ACTIVE and self.liveness is not None:
            return self.liveness.next_deadline()
        if self.phase in (Phase.WAITING, Phase.SETTLING):
            return self._deadline
        return None

    @property
    def unanswered(self) -> int:
        """Keepalives unanswered in a row (for the worker's log line)."""
        return self.liveness.unanswered if self.liveness is not None else 0

    # --- inputs: the try --------------------------------------------------------------

    def start(self, now: float) -> None:
        self._move(_I.START)
        self._begin_try()

    def slot_acquired(self, now: float) -> None:
        if self.stopping:
            self._move(_I.SLOT_ACQUIRED_STOPPING)
            self._actions.append(ReleaseSlot())
            self._show(ConsoleState.STOPPED, "")
            return
        self._move(_I.SLOT_ACQUIRED)
        self._actions.append(OpenSession())

    def take_over(self, previous: str) -> None:
        """This console was just taken from member `previous`, whose SOL session is stale
        (its lease expired): deactivate first on the next try (with `steal = true`)."""
        self._takeover_from = previous

    def connected(self, now: float) -> None:
        previous = self._takeover_from
        if previous is not None and self.steal:
            self._move(_I.CONNECTED_TAKEOVER)
            self._held_detail = f"not taken over from {previous}: the console is no " \
                                "longer this member's"
            self._show(ConsoleState.ACTIVATING, "")
            self._actions.append(TakeOverSol(previous))
            return
        self._move(_I.CONNECTED)
        self._show(ConsoleState.ACTIVATING, "")
        self._actions.append(ActivateSol())

    def taken_over(self, now: float, *, deactivated: bool, refused: str = "") -> None:
        """The takeover's deactivate was answered: SOL was active (`deactivated`), was not,
        or the BMC `refused` it. Activate now; if SOL is still held, the steal follows."""
        self._move(_I.TAKEN_OVER)
        previous, self._takeover_from = self._takeover_from, None
        self._stealing = False  # the ordinary steal (with its settle) stays available
        if deactivated:
            self._takeover_said = f"SOL was held by {previous}'s stale session; forced " \
                                  "deactivate (takeover)"
        elif refused:
            self._actions.append(Note("deactivate", f"deactivating {previous}'s stale SOL "
                                      f"session was refused ({refused}); activating anyway"))
        self._actions.append(ActivateSol())

    def _say_takeover(self) -> None:
        """The takeover's deactivate, in a note of its own: no "SOL up" follows at once."""
        if self._takeover_said:
            self._actions.append(Note("deactivate", self._takeover_said))
            self._takeover_said = ""

    def held_elsewhere(self, detail: str, now: float) -> None:
        """Activate Payload said another session has SOL."""
        self._say_takeover()
        if self._stealing:  # forced off, and taken again: give up this try
            self._move(_I.HELD)
            self._fail(Failure.HELD_ELSEWHERE, self._held_detail)
            return
        if not self._steal_now:
            self._move(_I.HELD)
            self._fail(Failure.HELD_ELSEWHERE, detail)
            return
        self._move(_I.HELD_STEAL)
        self._stealing = True
        self._held_detail = detail
        why = "steal = true" if self.steal else "requested by an operator"
        self._actions.append(StealSol(why))

    def steal_refused(self, now: float) -> None:
        """The console is no longer ours (a cluster member lost it): leave the holder be."""
        self._move(_I.FAILED)
        self._takeover_from = None
        self._fail(Failure.HELD_ELSEWHERE, self._held_detail)

    def stolen(self, now: float) -> None:
        """The forced deactivate was answered: activate again after a short settle."""
        self._move(_I.STOLEN)
        self._deadline = now + STEAL_SETTLE

    def activated(self, now: float, *, our_session: int, cipher_suite: int | None) -> None:
        self._stealing = False
        self._takeover_from = None
        self._logins.reset()
        self._actions.append(ReleaseSlot())
        if self.stopping:  # stop() came during the setup: free the BMC at once
            self._say_takeover()
            self._move(_I.ACTIVATED_STOPPING)
            self._delay = 0.0
            self._actions.append(CloseSession(deactivate=True))
            return
        self._move(_I.ACTIVATED)
        self._our_session = our_session
        self.liveness = Liveness(keepalive_interval=self.keepalive_interval,
                                 dead_after=self.session_timeout, now=now,
                                 jitter=lambda: 0.9 + 0.1 * self._rng.random())
        self._show(ConsoleState.ACTIVE, f"cipher suite {cipher_suite}")
        said, self._takeover_said = self._takeover_said, ""
        self._actions.append(Note("sol-up", f"SOL up (cipher suite {cipher_suite})"
                                  + (f"; {said}" if said else "")))

    def failed(self, kind: Failure, detail: str, now: float) -> None:
        """The try failed (the handshake, an activation or the forced deactivate)."""
        self._say_takeover()
        if kind is Failure.HELD_ELSEWHERE and self.phase is Phase.ACTIVATING:
            self.held_elsewhere(detail, now)
            return
        self._move(_I.FAILED)
        self._fail(kind, detail)

    def _fail(self, kind: Failure, detail: str) -> None:
        self._stealing = False
        state = {Failure.HELD_ELSEWHERE: ConsoleState.HELD_ELSEWHERE,
                 Failure.TIMEOUT: ConsoleState.UNREACHABLE,
                 Failure.NETWORK: ConsoleState.UNREACHABLE,
                 Failure.OTHER: ConsoleState.BACKOFF}.get(kind, ConsoleState.BACKOFF)
        if kind is Failure.AUTHENTICATION:
            if self._logins.failed():
                state, delay = ConsoleState.AUTH_FAILED, self._auth_backoff.next_delay()
            else:
                detail = f"{detail} (trying once more before backing off for minutes)"
                delay = self._backoff.next_delay()
        else:
            self._logins.reset()
            delay = self._backoff.next_delay()
        self._delay = delay
        self._actions.extend((CloseSession(deactivate=False), ReleaseSlot()))
        self._show(state, detail)

    # --- inputs: the active console ----------------------------------------------------

    def ended(self, reason: str, now: float, *, deactivate: bool = False) -> None:
        """The activation is over (stream, session, keepalive or an operator said so)."""
        was_active = self.phase is Phase.ACTIVE
        self._move(_I.ENDED)
        if not was_active:
            return  # a late report of an end already handled, or of no activation
        self.liveness = None
        self._actions.append(DropStream())
        self._actions.append(Note("sol-down", f"SOL down: {reason}"))
        self._show(ConsoleState.BACKOFF, reason)
        self._backoff.reset()
        self._auth_backoff.reset()
        self._delay = self._backoff.next_delay()
        self._actions.append(CloseSession(deactivate=deactivate or self.stopping))

    def authenticated(self, at: float | None) -> None:
        """The session core's `last_received`: anything authenticated keeps SOL alive."""
        if self.liveness is not None:
            self.liveness.authenticated(at)

    def keepalive_answered(self, owner: int, now: float) -> None:
        """Get Payload Instance Info answered: SOL belongs to session `owner` (0: nobody)."""
        self._move(_I.KEEPALIVE_RESULT)
        if owner != self._our_session:
            who = f"session 0x{owner:08x}" if owner else "nobody"
            self.ended(f"SOL now held by {who}, not by us", now)
            return
        self._live().keepalive_answered(now)

    def keepalive_refused(self, now: float) -> None:
        """An error answer, if not the one asked for: the BMC still holds the session."""
        self._move(_I.KEEPALIVE_RESULT)
        self._live().keepalive_answered(now)

    def keepalive_unanswered(self, now: float) -> None:
        """Every retransmission went unanswered: ask again now (dead only by `Liveness`)."""
        self._move(_I.KEEPALIVE_RESULT)
        self._live().keepalive_unanswered(now)

    def handle_timeout(self, now: float) -> None:
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return  # early or stale: nothing is due
        self._move(_I.TIMEOUT)
        if self.phase is Phase.ACTIVATING:  # settled after the steal
            self._deadline = None
            self._actions.append(ActivateSol())
        elif self.phase is Phase.WAIT_SLOT:
            self._deadline = None
            self.reconnects += 1
            self._begin_try()
        else:
            self._keepalive_timeout(now)

    def _keepalive_timeout(self, now: float) -> None:
        live = self._live()
        live.handle_timeout(now)
        while (event := live.next_event()) is not None:
            match event:
                case SessionDead(reason=reason):
                    self.ended(reason, now)
                    return
                case KeepaliveDue():
                    live.keepalive_sent(now)
                    self._actions.append(AskKeepalive())

    # --- inputs: the close, an operator, the daemon -------------------------------------

    def closed(self, now: float) -> None:
        """The session is closed (and SOL deactivated if asked): wait, or stop."""
        self._say_takeover()
        if self.stopping:
            self._move(_I.CLOSED_STOPPING)
            self._show(ConsoleState.STOPPED, "")
            return
        self._move(_I.CLOSED)
        self._deadline = now + self._delay

    def reconnect(self, *, force_deactivate: bool, reason: str, now: float) -> None:
        """An operator asked to start over (forcing a deactivate: steal on the next try)."""
        # Also when SOL is held elsewhere and steal = false: freeing it is the point.
        self._force_steal = self._force_steal or force_deactivate
        if self.phase is Phase.ACTIVE:
            self.ended(reason, now, deactivate=force_deactivate)
            return
        self._move(_I.RECONNECT)
        if self.phase is Phase.WAIT_SLOT:  # was waiting: go now
            self._deadline = None
            self.reconnects += 1
            self._begin_try()

    def stop(self, now: float) -> None:
        """solgate stops: free the BMC (deactivate SOL, close the session), then STOPPED."""
        self.stopping = True
        if self.phase is Phase.ACTIVE:
            self.ended("solgate stopping", now, deactivate=True)
            return
        self._move(_I.STOP)
        if self.phase is Phase.STOPPED:
            self._deadline = None
            self._show(ConsoleState.STOPPED, "")

    # --- plumbing ---------------------------------------------------------------------

    def _begin_try(self) -> None:
        # An operator's forced deactivate counts for the next try only.
        self._steal_now, self._force_steal = self.steal or self._force_steal, False
        self._show(ConsoleState.CONNECTING, self.host)
        self._actions.append(AcquireSlot())

    def _live(self) -> Liveness:
        if self.liveness is None:
            raise LocalProtocolError("no liveness outside an active console")
        return self.liveness

    def _show(self, state: ConsoleState, detail: str) -> None:
        if state != self.state or detail != self.detail:
            self.state, self.detail = state, detail
            self._actions.append(StateChanged(state, detail))

    def _move(self, event: LifecycleInput) -> None:
        try:
            self.phase = _TRANSITIONS[(self.phase, event)]
        except KeyError:
            old, self.phase = self.phase, Phase.STOPPED
            raise LocalProtocolError(f"no console transition from {old.name} on "
                                     f"{event.name}") from None
