"""What the web layer needs from the console engine, as a `typing.Protocol`.

The web app never imports the engine; it is handed an object that satisfies
`ConsoleManager` (the daemon passes the real engine, tests pass an in-memory
stand-in).  Everything the pages, the REST API and the WebSockets show comes from
`ConsoleView` attributes, and every action goes through the manager's coroutines,
so the engine stays the only place where console state changes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from solgate.console.hub import Hub
    from solgate.console.logwindow import Window

# Console states in words an operator reads at a glance; unknown states fall back
# to the state name with dashes turned into spaces.
STATE_WORDS = {
    "active": "connected",
    "connecting": "connecting",
    "activating": "activating SOL",
    "backoff": "waiting to reconnect",
    "auth-failed": "BMC rejected the login",
    "unreachable": "BMC unreachable",
    "held-elsewhere": "SOL held by another session",
    "stopped": "stopped",
}

# States in which the console is healthy; the list page colours the rest.
GOOD_STATES = frozenset({"active"})


class LogHealth(Protocol):
    """How a console's log file fares on disk (for /metrics)."""

    @property
    def write_errors(self) -> int:
        """Failed writes so far (the bytes wait and are retried)."""
        ...

    @property
    def bytes_lost(self) -> int:
        """Console bytes lost because the disk refused them for too long."""
        ...

    @property
    def error(self) -> str | None:
        """What is wrong with the file now, or None while it is writable."""
        ...


class EventsHealth(Protocol):
    """How events.jsonl fares on disk (for /metrics)."""

    @property
    def write_errors(self) -> int: ...

    @property
    def records_dropped(self) -> int: ...

    @property
    def error(self) -> str | None: ...


@runtime_checkable
class ConsoleView(Protocol):
    """One console as the web sees it: read-only attributes, refreshed by the engine."""

    # Read-only properties, so an engine may keep narrower types (a `StrEnum` state, a
    # tuple of tags) or compute a value, and still satisfy this protocol.

    @property
    def name(self) -> str: ...

    @property
    def tags(self) -> Sequence[str]: ...

    @property
    def state(self) -> str:
        """A short key such as "active", "connecting", "auth-failed"."""
        ...

    @property
    def state_detail(self) -> str:
        """One line that says what to do, or ""."""
        ...

    @property
    def state_since(self) -> float:
        """Epoch seconds of the last state change."""
        ...

    @property
    def last_output(self) -> float | None:
        """Epoch seconds of the last byte from the host."""
        ...

    @property
    def panic_count(self) -> int: ...

    @property
    def hub(self) -> Hub: ...

    @property
    def log_path(self) -> Path: ...

    # Counters for /metrics, kept by the engine over the console's life.

    @property
    def bytes_in(self) -> int:
        """Console output bytes from the host."""
        ...

    @property
    def bytes_out(self) -> int:
        """Keystroke bytes sent to the host."""
        ...

    @property
    def reconnects(self) -> int: ...

    @property
    def log(self) -> LogHealth: ...

    def sol_counters(self) -> Mapping[str, int]:
        """The SOL stream's counters (retransmits, stalls, NACKs, ...), summed over sessions."""
        ...

    def datagram_drops(self) -> Mapping[str, int]:
        """Datagrams from the BMC the session layer dropped, by reason."""
        ...


@runtime_checkable
class ConsoleManager(Protocol):
    """The engine's face towards the web: the consoles, their totals and three actions.

    Actions take the acting user's name for the audit trail (events.jsonl) and raise a
    `SolgateError` whose message the web shows as is.
    """

    def consoles(self) -> Sequence[ConsoleView]:
        """Every configured console, in display order."""
        ...

    def get(self, name: str) -> ConsoleView | None:
        """One console by name, or None."""
        ...

    def counts_by_state(self) -> Mapping[str, int]:
        """How many consoles are in each state, every state the engine knows included."""
        ...

    @property
    def events(self) -> EventsHealth: ...

    def udp_counters(self) -> Mapping[str, int]:
        """The shared UDP sockets' counters over every console: "send_dropped",
        "truncated", "errors", "stray" (solgate.ipmi.udp_pool.COUNTERS)."""
        ...

    async def send_break(self, name: str, user: str) -> None:
        """Send a serial BREAK to the host."""
        ...

    async def deactivate(self, name: str, user: str) -> None:
        """Force the BMC's SOL payload off, then reconnect (frees a stuck or stolen slot)."""
        ...

    async def power(self, name: str, action: str, user: str) -> str:
        """Run a chassis power action (one of solgate.console.power.POWER_ACTIONS); returns
        the power state in words."""
        ...

    def record(self, name: str | None, kind: str, message: str, **fields: object) -> None:
        """An audit record in the console's log and events.jsonl (None: events.jsonl only)."""
        ...


def state_words(state: str) -> str:
    """The state as the list page prints it."""
    return STATE_WORDS.get(state, state.replace("-", " "))


def console_json(console: ConsoleView, *, now: float | None = None,
                 detail: bool = True) -> dict[str, Any]:
    """The JSON shape of one console, shared by the REST API and the list page poll.

    `detail=False` blanks `state_detail`, which names the BMC's address, port and IPMI
    user: viewers get the state without them.
    """
    now = time.time() if now is None else now
    hub = console.hub
    last = console.last_output
    return {
        "name": console.name,
        "tags": list(console.tags),
        "state": console.state,
        "state_words": state_words(console.state),
        "state_detail": console.state_detail if detail else "",
        "state_since": console.state_since,
        "state_age": max(0.0, now - console.state_since),
        "last_output": last,
        "last_output_age": None if last is None else max(0.0, now - last),
        "panic_count": console.panic_count,
        "viewers": hub.viewers,
        "writer": hub.writer,
        "healthy": console.state in GOOD_STATES,
    }


class PeerLogs(Protocol):
    """In a cluster, the way of the search, screen, recording and panic bundle pages to
    the logs this member keeps of consoles it no longer runs, and to the other members'
    (`solgate.cluster.fleet`)."""

    @property
    def member_name(self) -> str:
        """This member's name, for its own hits."""
        ...

    def local_logs(self) -> Sequence[tuple[str, tuple[str, ...], Path]]:
        """Every configured console (name, tags, log path on this member's disk)."""
        ...

    async def search(self, params: Mapping[str, str],
                     user: str) -> Mapping[str, Mapping[str, Any] | None]:
        """Each other live member's answer to the same search as `user` (its hits,
        `t` in epoch seconds, and `stopped`), or None when it did not answer."""
        ...

    async def bundle(self, ident: str) -> Mapping[str, Any] | None:
        """The panic bundle `ident` from whichever other member recorded it, or None."""
        ...

    async def windows(self, console: str, t1: float, t2: float,
                      context: int) -> tuple[Mapping[str, Window], Mapping[str, str]]:
        """Every member's log of `console` between two times (this one's too), with
        `context` bytes before; and why a member's part is missing."""
        ...
