"""One viewer of one console: its bounded queue, what it is owed, and its rights.

Theory of operation
-------------------
An `Attachment` is what a front end (a WebSocket, an ssh session) holds: it reads
console bytes and `Message`s from it (`await get()`, `async for`), and sends keys,
lock requests and sizes through it to its `Hub` (solgate.console.hub, whose module
doc has the whole fan-out policy).  The hub feeds it with `deliver` (console bytes),
`notify` (a message) and `end` (Closed); nothing else of it is the hub's business.

Where the next items come from is one state (`Delivery`), not a set of flags:

    NEW ──first read──► QUEUED ◄──reader busy / sink refused──┐
     │                   │  │                                  │
     │                   │  └──reader idle with a sink──► LIVE ┘
     │                   ▼ queue overflowed
     │                LAGGING ──Lagged read──► RESYNC ──next read──► QUEUED
     └────────────── any state ──end()──► CLOSED

NEW and RESYNC render a `Snapshot` at the next read (NEW with scrollback, then the
write lock and state); LAGGING drops console bytes and counts them; LIVE means the
hub writes console bytes straight to the front end's `OutputSink`; CLOSED has only
its `Closed` left to give.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from solgate.console.hub import Hub

__all__ = [
    "AccessChanged",
    "Attachment",
    "Closed",
    "Delivery",
    "Grant",
    "Lagged",
    "Message",
    "OutputSink",
    "Snapshot",
    "StateChanged",
    "WriteLockChanged",
]


class OutputSink(Protocol):
    """A front end's synchronous output path (see "Direct output" in the module doc)."""

    def ready(self) -> bool:
        """True if `write` would take bytes now (open and not backed up)."""
        ...

    def write(self, data: bytes) -> bool:
        """Send console bytes at once; False, and nothing sent, if not `ready()`.

        Must not raise and must not block. `data` is the same object for every sink
        in one flush.
        """
        ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A repaint of the console screen; replaces whatever the viewer showed."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Lagged:
    """This viewer fell behind; `dropped_bytes` of output were skipped, a Snapshot follows."""

    dropped_bytes: int


@dataclass(frozen=True, slots=True)
class WriteLockChanged:
    """The write lock moved; `holder` is the user now holding it, or None if free."""

    holder: str | None


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The console worker's state changed (connected, reconnecting, stolen, ...)."""

    state: str
    detail: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The attachment is over (detached, console closed, or too slow); nothing follows."""

    reason: str
    idle: bool = False  # ended by the client idle timeout: front ends must not reattach
    revoked: bool = False  # the user lost access to this console: front ends must not reattach


@dataclass(frozen=True, slots=True)
class AccessChanged:
    """This attachment's user may no longer type (`can_write` False); `reason` says why."""

    can_write: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Grant:
    """How an attachment's user proved who they are, so a later check can revoke it.

    `how` is "session", "token", "local", "proxy" or "ssh-key"; `credential` names the
    session id, the API token's hash or the ssh key's fingerprint (never logged).
    """

    how: str
    credential: str = ""


Message = Snapshot | Lagged | WriteLockChanged | StateChanged | AccessChanged | Closed


class _Resync:
    """Queue marker: the queue overflowed here; yield Lagged then a fresh Snapshot."""

    __slots__ = ()


_RESYNC = _Resync()


class Delivery(enum.Enum):
    """Where an attachment's next items come from (see the module doc)."""

    NEW = "new"  # the first read renders a Snapshot with scrollback, then lock and state
    QUEUED = "queued"  # console bytes and messages come through the queue
    LIVE = "live"  # the reader waits idle: the hub writes console bytes to the sink
    LAGGING = "lagging"  # the queue overflowed: console bytes are dropped, Lagged is queued
    RESYNC = "resync"  # Lagged was read: the next read renders a Snapshot (no scrollback)
    CLOSED = "closed"  # only Closed is left


class Attachment:
    """One viewer of one console: a bounded queue and the write-lock rights of its user."""

    __slots__ = (
        "hub",
        "user",
        "can_write",
        "details",
        "grant",
        "cols",
        "rows",
        "delivery",
        "_queue",
        "_queued_bytes",
        "_waiter",
        "_lagging_since",
        "_dropped",
        "_lag_streak",
        "_read_since_lag",
        "_closed",
        "_sink",
        "last_input",
    )

    def __init__(self, hub: Hub, user: str, *, can_write: bool, cols: int, rows: int,
                 grant: Grant | None = None, details: bool = True) -> None:
        self.hub = hub
        self.user = user
        self.can_write = can_write
        # Whether state messages carry their detail (BMC address, IPMI user): the front
        # end decides by the user's role, and a reload that demotes the user takes it.
        self.details = details
        self.grant = grant
        self.cols = cols
        self.rows = rows
        # A new attachment starts as if it had just resynced: its first item is a
        # Snapshot rendered when it first reads, and data until then is in that Snapshot.
        self.delivery = Delivery.NEW
        self._queue: deque[bytes | Message | _Resync] = deque()
        self._queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._lagging_since: float | None = None  # the last overflow
        self._dropped = 0
        self._lag_streak = 0  # overflows without a full queue's worth read in between
        self._read_since_lag = 0  # console bytes read since the last overflow
        self._closed: Closed | None = None
        self._sink: OutputSink | None = None
        # When its user last typed (or attached, or took the lock): for the idle timeout.
        self.last_input = hub.clock()

    def __repr__(self) -> str:
        return f"<Attachment {self.user!r} to {self.hub.name!r}{' rw' if self.can_write else ''}>"

    # -- what the front end calls ------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def is_writer(self) -> bool:
        return self.hub.holds_write(self)

    @property
    def queued_bytes(self) -> int:
        """Console bytes waiting in this attachment's queue."""
        return self._queued_bytes

    def send(self, data: bytes) -> bool:
        """Pass keyboard input to the console; False (and nothing sent) unless we hold the lock."""
        return self.hub.keyboard(self, data)

    def state_message(self, state: str, detail: str) -> StateChanged:
        """The console's state as this viewer may see it (detail only if `details`)."""
        return StateChanged(state, detail if self.details else "")

    def hide_details(self) -> bool:
        """Stop showing state details (its user no longer may see them); False if it did
        not show them. A viewer that has been told the state is told it again without."""
        if not self.details:
            return False
        self.details = False
        state = self.hub.state
        if state is not None and not self.closed and self.delivery is not Delivery.NEW:
            self.notify(StateChanged(state, ""))
        return True

    def take_write(self) -> bool:
        """Take the write lock from its holder; False if this user may not write."""
        return self.hub.take_write(self)

    def release_write(self) -> None:
        """Give the write lock up (if held), leaving it free."""
        self.hub.release_write(self)

    def resize(self, cols: int, rows: int) -> None:
        """Record this viewer's terminal size; the writer's size sizes the shared screen."""
        self.cols, self.rows = cols, rows
        self.hub.resized(self)

    def detach(self) -> None:
        """Leave the console: releases the write lock; a pending `get()` returns Closed."""
        self.hub.detach(self)

    def set_sink(self, sink: OutputSink | None) -> None:
        """Let the hub write console bytes straight to `sink` while `get()` waits idle.

        Control messages, snapshots and anything queued still come from `get()`; the
        caller must send what `get()` returns before it calls `get()` again, as usual.
        """
        if sink is None and self.delivery is Delivery.LIVE:
            self.hub.leave_live(self)
        self._sink = sink

    def __aiter__(self) -> AsyncIterator[bytes | Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes | Message]:
        while True:
            item = await self.get()
            yield item
            if isinstance(item, Closed):
                return

    async def get(self) -> bytes | Message:
        """The next item: console bytes or a control message. Never blocks the hub."""
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            loop = asyncio.get_running_loop()
            sink = self._sink
            if sink is not None and sink.ready():
                # The caller has sent everything it got: later bytes may bypass the queue.
                self.hub.go_live(self, loop)
            self._waiter = waiter = loop.create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
                if self.delivery is Delivery.LIVE:  # cancelled while live: nobody sends
                    self.hub.leave_live(self)

    def get_nowait(self) -> bytes | Message | None:
        """The next item if one is ready, else None."""
        if self.delivery is Delivery.NEW or self.delivery is Delivery.RESYNC:
            return self._take_snapshot()
        queue = self._queue
        if not queue:
            return self._closed
        item = queue.popleft()
        if isinstance(item, bytes):
            chunks = [item]
            while queue and isinstance(queue[0], bytes):
                chunks.append(queue.popleft())  # type: ignore[arg-type]
            data = b"".join(chunks) if len(chunks) > 1 else item
            self._queued_bytes -= len(data)
            self.count_read(len(data))
            return data
        if item is _RESYNC:
            # From here on, output goes into the Snapshot rendered on the next read.
            dropped, self._dropped = self._dropped, 0
            self.delivery = Delivery.RESYNC
            return Lagged(dropped)
        return item  # type: ignore[return-value]

    # -- what the hub calls ------------------------------------------------------

    @property
    def sink(self) -> OutputSink | None:
        """The front end's synchronous output path, if it gave one (`set_sink`)."""
        return self._sink

    def count_read(self, n: int) -> None:
        """`n` console bytes reached the front end (from the queue or a sink)."""
        if self._lag_streak:
            self._read_since_lag += n
            if self._read_since_lag >= self.hub.queue_bytes:
                self._lag_streak = 0  # it kept up for a whole queue: forgiven
        self.hub.bytes_out += n

    def _take_snapshot(self) -> Snapshot:
        first = self.delivery is Delivery.NEW
        data = self.hub.render(scrollback=first)
        self.delivery = Delivery.QUEUED
        self.hub.bytes_out += len(data)
        if first:
            # Tell the newcomer who writes and how the console is, right after the picture.
            self._queue.appendleft(WriteLockChanged(self.hub.writer))
            if self.hub.state is not None:
                self._queue.insert(1, self.state_message(self.hub.state, self.hub.state_detail))
        return Snapshot(data)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def go_live(self) -> bool:
        """The reader waits with nothing queued: console bytes may go to the sink now."""
        if self.delivery is not Delivery.QUEUED:
            return False
        self.delivery = Delivery.LIVE
        return True

    def back_to_queue(self, owed: bytes) -> None:
        """Out of the live state; `owed` (what the hub's batch held for it) is queued first."""
        if self.delivery is not Delivery.LIVE:
            return
        self.delivery = Delivery.QUEUED
        if owed:
            # At most one flush interval of output (or one large publish): no overflow
            # check here; the next delivery's check sees the queue's size.
            self._queue.append(owed)
            self._queued_bytes += len(owed)
            self._wake()

    def notify(self, message: Message) -> None:
        """Queue a control message (after any console bytes it is owed)."""
        if self._closed is None:
            if self.delivery is Delivery.LIVE:
                self.hub.leave_live(self)  # owed bytes first, then the message
            self._queue.append(message)
            self._wake()

    def deliver(self, data: bytes, now: float | None) -> str | None:
        """Queue console output; returns a reason to drop this viewer, or None."""
        delivery = self.delivery
        if delivery is Delivery.CLOSED:
            return None
        if delivery is Delivery.NEW or delivery is Delivery.RESYNC or delivery is Delivery.LAGGING:
            # NEW or RESYNC: the next Snapshot will show it; LAGGING: it is dropped.
            if delivery is Delivery.LAGGING:
                self._dropped += len(data)
                if self._stalled(now):
                    return "too slow"
            return None
        if self._queued_bytes + len(data) > self.hub.queue_bytes:
            if self._stalled(now):
                self._lag_streak = 0  # the last overflow was long ago: not in a row
            self._lag_streak += 1
            if self._lag_streak > self.hub.max_lag_streak:
                return "too slow"
            self._overflow(len(data), now)
            return None
        self._queue.append(data)
        self._queued_bytes += len(data)
        self._wake()
        return None

    def _stalled(self, now: float | None) -> bool:
        """Whether the last overflow (if any) is more than the hub's stall timeout ago."""
        since = self._lagging_since
        timeout = self.hub.stall_timeout
        return (now is not None and since is not None and timeout is not None
                and now - since > timeout)

    def _overflow(self, incoming: int, now: float | None) -> None:
        """Drop queued console bytes (keeping control messages), queue the resync marker."""
        kept = [item for item in self._queue if not isinstance(item, bytes)]
        self._dropped = self._queued_bytes + incoming
        self._queue.clear()
        self._queue.extend(kept)
        self._queue.append(_RESYNC)
        self._queued_bytes = 0
        self.delivery = Delivery.LAGGING
        self._lagging_since = now
        self._read_since_lag = 0
        self.hub.lagged_total += 1
        self._wake()

    def end(self, message: Closed) -> None:
        """The attachment is over: `message` is the last item the front end gets."""
        if self._closed is not None:
            return
        if self.delivery is Delivery.LIVE:
            self.hub.leave_live(self)  # its owed bytes go below with the rest
        self._closed = message
        self.delivery = Delivery.CLOSED
        # Nothing more to show: the queue's remaining control messages are kept, the
        # console bytes go, and Closed comes last.
        kept = [item for item in self._queue if not isinstance(item, bytes | _Resync)]
        self._queue.clear()
        self._queue.extend(kept)
        self._queued_bytes = 0
        self._wake()
