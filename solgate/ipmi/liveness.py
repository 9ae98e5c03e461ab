"""Is an established session still alive? Keepalive timing and the verdict, sans-I/O.

Theory of operation
-------------------
A session is alive while authenticated packets keep arriving from the BMC: SOL data,
SOL ACKs and command answers all count (`ClientSession.last_received`), because only the
BMC holding the session keys can make them, and a BMC sends SOL only to the session that
owns the payload. A keepalive (the caller asks Get Payload Instance Info) goes out every
`keepalive_interval` to keep an idle session open on the BMC and to learn who owns SOL.

A keepalive that goes unanswered (every retransmission of it lost, or a BMC too busy to
answer commands while its SOL keeps flowing) proves nothing by itself: it is asked again
at once, as often as needed. The session is declared dead only when nothing
authenticated has arrived for `dead_after` seconds (the console's `session_timeout`);
the verdict says how long and how many keepalives went unanswered. Tearing a session
down is the last resort, because real BMCs drop their buffered output when SOL is
deactivated.

`Liveness` is a plain object like the other cores (STYLE.md item 1): the caller feeds it
`authenticated(at)`, `keepalive_sent/answered/unanswered(now)` and `handle_timeout(now)`,
and pulls `next_deadline()` and events (`KeepaliveDue`, `SessionDead`). It never reads a
clock; jitter comes from the caller's `jitter()` so tests are exact.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from solgate.errors import LocalProtocolError


@dataclass(frozen=True, slots=True)
class KeepaliveDue:
    """Time to ask the BMC for a keepalive answer (call `keepalive_sent` when it leaves)."""


@dataclass(frozen=True, slots=True)
class SessionDead:
    """Nothing authenticated arrived for `idle` seconds: the session is given up."""

    idle: float
    unanswered: int  # keepalives without an answer since the last one answered

    @property
    def reason(self) -> str:
        plural = "" if self.unanswered == 1 else "s"
        return (f"nothing authenticated from the BMC for {self.idle:.1f} s; "
                f"{self.unanswered} keepalive{plural} unanswered")


LivenessEvent = KeepaliveDue | SessionDead


def _no_jitter() -> float:
    return 1.0


class Liveness:
    """Keepalive schedule and dead-session verdict for one session (module docstring)."""

    def __init__(self, *, keepalive_interval: float, dead_after: float, now: float,
                 jitter: Callable[[], float] = _no_jitter) -> None:
        if keepalive_interval <= 0 or dead_after <= 0:
            raise LocalProtocolError("keepalive_interval and dead_after must be positive")
        self.keepalive_interval = keepalive_interval
        self.dead_after = dead_after
        self._jitter = jitter
        self.last_authenticated = now
        self.unanswered = 0
        self.dead = False
        self._outstanding = False
        self._keepalive_at = now + keepalive_interval * jitter()
        self._events: deque[LivenessEvent] = deque()

    # --- inputs -----------------------------------------------------------------------

    def authenticated(self, at: float | None) -> None:
        """An authenticated packet arrived at `at` (the session core's `last_received`)."""
        if at is not None and at > self.last_authenticated:
            self.last_authenticated = at

    def keepalive_sent(self, now: float) -> None:
        if self._outstanding:
            raise LocalProtocolError("a keepalive is already outstanding")
        self._outstanding = True

    def keepalive_answered(self, now: float) -> None:
        """An answer came (whatever it said: only an authenticated BMC can answer)."""
        self._outstanding = False
        self.unanswered = 0
        self.authenticated(now)
        self._keepalive_at = now + self.keepalive_interval * self._jitter()

    def keepalive_unanswered(self, now: float) -> None:
        """Every try of the keepalive went unanswered: ask again now, unless dead."""
        self._outstanding = False
        self.unanswered += 1
        self._keepalive_at = now

    def handle_timeout(self, now: float) -> None:
        if self.dead:
            return
        idle = now - self.last_authenticated
        if idle >= self.dead_after:
            self.dead = True
            self._events.append(SessionDead(idle, self.unanswered + self._outstanding))
        elif not self._outstanding and now >= self._keepalive_at:
            self._events.append(KeepaliveDue())

    # --- outputs ----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if self.dead:
            return None
        dead_at = self.last_authenticated + self.dead_after
        if self._outstanding:
            return dead_at
        return min(dead_at, self._keepalive_at)

    def next_event(self) -> LivenessEvent | None:
        return self._events.popleft() if self._events else None
