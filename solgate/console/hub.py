"""Fan-out of one console to many attachments, without ever blocking the console.

Theory of operation
-------------------
The hub is built for its console (a `HubConsole`, the console worker): keystrokes of the
write-lock holder go to its `send_input`, and who attached, left or took the lock to its
`viewer_event`, for the console log. When a reload replaces the worker, the viewers stay
attached and `hand_over` gives the hub to the new one.

The console worker calls `Hub.publish(data)` after the bytes are logged. `publish`
never awaits: it appends to the `RawRing`, feeds the live `Screen` (only while someone
is attached) and appends to each attachment's own bounded queue. Each front end (a
WebSocket writer task, the ssh session, the terminal client) pulls from its
`Attachment` with `await attachment.get()` or `async for item in attachment`.
The attachment (solgate.console.attachment) is the viewer's side: its queue and its
delivery state; this module is the console's side: the ring, the screen, the lock,
the batch of direct output, and the policy below.

What an attachment receives, in order:

* `Snapshot(data)` first: the rendered screen (with scrollback), so a newcomer sees
  what is on the console now, not a raw tail. It is rendered when the front end first
  reads, so bytes published between `attach()` and that first read are in it, not
  doubled after it.
* Console output as `bytes` (consecutive chunks are joined into one item).
* `WriteLockChanged(holder)` whenever the write lock moves (and once after the first
  snapshot), `StateChanged(state, detail)` whenever the worker calls `set_state` (and
  once after the first snapshot if a state is known).
* `Lagged(dropped_bytes)` then a fresh `Snapshot` (screen only, no scrollback) when the
  queue overflowed: the console output that did not fit is dropped for this viewer only
  and replaced by a repaint, so a stalled viewer never slows the worker or the others.
* `AccessChanged(can_write, reason)` when the user lost the right to type while
  attached (a logout, or a reload that demoted the user): see "Revocation" below.
* `Closed(reason)` last; after it the async iterator stops and `get()` keeps returning it.

Slow-viewer policy (documented for operators): a viewer whose queue overflows is
resynced as above. It is dropped with `Closed("too slow")` when either

* it overflows more than `max_lag_streak` times in a row (default 3), "in a row"
  meaning that between two overflows it neither read a whole queue's worth
  (`queue_bytes`) of live output nor went `stall_timeout` seconds without overflowing
  (it reads, but can never keep up), or
* it stays lagged, without reading, for longer than `stall_timeout` seconds (default 60)
  while the console keeps producing output (checked on `publish`, with the injected
  `clock`; a viewer that stalls on an idle console costs nothing and is kept).

While lagged, a viewer's queue holds no console bytes at all, so a stalled viewer costs
a few control messages, not `queue_bytes`.

Write lock: one writer at a time. The first attachment with `can_write` takes it when
it is free; `take_write()` takes it from the holder (everyone, including the previous
holder, gets `WriteLockChanged(new holder)`); an attachment without `can_write` never
holds it. Input from anyone but the holder is refused and never reaches the console.
When the holder leaves, the lock is free (nobody is promoted silently).

Revocation: rights are checked when a front end attaches, and again whenever what they
rest on changes (a logout, a reload of users, tokens or ssh keys: `solgate.access`).
Each attachment carries its `Grant` (how its user proved who they are) so that check
can tell which attachments lost what. `downgrade()` takes the right to write away (the
lock is released and the front end gets `AccessChanged`); `revoke()` ends the
attachment with `Closed(reason, revoked=True)`. Both are recorded through the console,
so the console log says who lost access and why. Front ends ask `can_write` of the
attachment at every action, never a copy taken at attach.

The screen model is only needed to render a Snapshot, and pyte interprets about 1 MB/s,
so a watched console does not pay it per byte: while someone is attached the hub keeps
a `Screen` plus the bytes published since it was last brought up to date, and feeds
them in when a Snapshot is rendered. If those pending bytes grow past the ring's
capacity the screen is dropped and rebuilt from the ring at the next render (the ring
holds the same bytes), so a busy console costs no pyte time and bounded memory until a
newcomer or a lagging viewer needs a picture.

Direct output (the fan-out fast path): a front end that can take console bytes
synchronously registers an `OutputSink` with `Attachment.set_sink`. While its reader is
parked in `get()` with nothing queued, the attachment is *live*: `publish` does not
touch it, the bytes go into the hub's batch instead, and `_flush` hands the whole batch,
as one `bytes` object (the same object for every live sink, so a front end can encode
it once), to each live sink. No task is woken per viewer per chunk. The first flush
after a quiet spell runs on the loop's next turn (`call_soon`, as a woken reader would):
after the worker has acknowledged the packet and handled whatever else arrived with it,
so an echo waits for nothing else and the BMC's ACK never waits for the viewers. After a
flush to N sinks the next waits until `N * FLUSH_GAP_PER_SINK` seconds (at most
`MAX_FLUSH_GAP`) have passed, so with many viewers each gets fewer, larger writes and
the fan-out's CPU share stays bounded, while one or a few viewers see no added delay.
A console in full flow (big flushes close together) holds each flush `BUSY_FLUSH_GAP`
even for one viewer: a few packets per write instead of one, which no eye notices and
which saves a frame, a system call and a wake-up of the viewer per SOL packet.
An attachment leaves the live state, back to its queue, when a control message is
queued for it (what it was owed from the batch is queued first, so order is kept),
when its sink refuses a write (backed up or closing: then the queue, and with it
Lagged/Snapshot and the slow-viewer policy, apply as before), or when it is closed.

Memory per console while nobody is attached: the `RawRing` (lazily allocated, up to its
capacity) and this object; no pyte screen and no queues. While attached: the screen
(a few hundred KiB at 80x25 with scrollback), pending bytes up to the ring's capacity,
and up to `queue_bytes` per attachment. Everything here runs on the event loop thread;
nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from solgate.console.attachment import (
    AccessChanged,
    Attachment,
    Closed,
    Delivery,
    Grant,
    StateChanged,
    WriteLockChanged,
)
from solgate.console.screen import RawRing, Screen

__all__ = ["Hub", "HubConsole"]

DEFAULT_QUEUE_BYTES = 256 * 1024
DEFAULT_MAX_LAG_STREAK = 3
DEFAULT_STALL_TIMEOUT = 60.0
# After a flush to N live sinks, the next waits N * FLUSH_GAP_PER_SINK (at most
# MAX_FLUSH_GAP): 1,000 viewers get a write every 10 ms plus the flush itself (~9 us
# per viewer, mostly the kernel's send), so the fan-out takes about half a core at
# most; a lone viewer's echo is written on the loop's next turn. See "Direct output".
FLUSH_GAP_PER_SINK = 10e-6
MAX_FLUSH_GAP = 0.05
# A console pouring out output (a flood, a boot log at full speed) gets its viewers'
# writes coalesced: a flush of at least BUSY_FLUSH_BYTES within BUSY_WINDOW of the one
# before holds the next flush for BUSY_FLUSH_GAP. A keystroke's echo (a few bytes) and
# the first output after a quiet spell are never held.
BUSY_FLUSH_BYTES = 128
BUSY_WINDOW = 0.010
BUSY_FLUSH_GAP = 0.004

log = logging.getLogger(__name__)


class HubConsole(Protocol):
    """The console a hub fans out (the worker): what the hub hands back to it."""

    def send_input(self, data: bytes) -> None:
        """Keystrokes of the write-lock holder, for the console's serial line."""

    def viewer_event(self, kind: str, user: str, message: str) -> None:
        """Who attached, left or took the write lock, for the console log and
        events.jsonl, so "who typed that" has an answer the next morning."""


class Hub:
    """One console's fan-out: the ring, the on-demand screen, the attachments, the lock."""

    __slots__ = (
        "name",
        "ring",
        "queue_bytes",
        "console",
        "max_lag_streak",
        "stall_timeout",
        "clock",
        "state",
        "state_detail",
        "lagged_total",
        "dropped_total",
        "bytes_out",
        "_screen",
        "_pending",
        "_pending_bytes",
        "_cols",
        "_rows",
        "_attachments",
        "_writer",
        "_closed",
        "_live",
        "_batch",
        "_flush_handle",
        "_flush_not_before",
        "_last_flush",
        "_loop",
    )

    def __init__(
        self,
        name: str,
        *,
        ring: RawRing | None = None,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        console: HubConsole | None = None,
        max_lag_streak: int = DEFAULT_MAX_LAG_STREAK,
        stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        cols: int = 80,
        rows: int = 25,
    ) -> None:
        if queue_bytes <= 0:
            raise ValueError(f"queue_bytes must be positive, not {queue_bytes}")
        self.name = name
        self.ring = ring if ring is not None else RawRing()
        self.queue_bytes = queue_bytes
        self.console = console  # None: a hub nobody types into (tests, a closed console)
        self.max_lag_streak = max_lag_streak
        self.stall_timeout = stall_timeout
        self.clock = clock
        self.state: str | None = None
        self.state_detail = ""
        self.lagged_total = 0  # overflows (resyncs) over the hub's life
        self.dropped_total = 0  # viewers dropped as too slow
        self.bytes_out = 0  # bytes handed to front ends: console data and snapshots
        self._screen: Screen | None = None
        self._pending: list[bytes] = []  # published, not yet fed to `_screen`
        self._pending_bytes = 0
        self._cols = cols  # console screen size used when the screen is rebuilt
        self._rows = rows
        self._attachments: list[Attachment] = []
        self._writer: Attachment | None = None
        self._closed: Closed | None = None
        # Direct output: live attachments (insertion-ordered), each with the first chunk
        # of the batch it is owed; the bytes published since the last flush, the
        # scheduled flush and when the next may run at once.
        self._live: dict[Attachment, int] = {}
        self._batch: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._flush_not_before = 0.0
        self._last_flush = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<Hub {self.name!r} viewers={self.viewers} writer={self.writer!r}>"

    # -- counters --------------------------------------------------------------

    @property
    def viewers(self) -> int:
        """How many attachments are open (writer included)."""
        return len(self._attachments)

    @property
    def writer(self) -> str | None:
        """The user holding the write lock, or None."""
        return self._writer.user if self._writer is not None else None

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        """The open attachments, oldest first (for `who`)."""
        return tuple(self._attachments)

    @property
    def screen(self) -> Screen | None:
        """The screen model brought up to date, or None while nobody is attached."""
        if not self._attachments:
            return None
        return self._current_screen()

    @property
    def screen_allocated(self) -> bool:
        """True if a pyte screen is held in memory right now."""
        return self._screen is not None

    @property
    def closed(self) -> bool:
        return self._closed is not None

    # -- the worker side ---------------------------------------------------------

    def publish(self, data: bytes, *, batch: bool = False) -> None:
        """Console output, already logged: remember it and queue it to every viewer.

        Never awaits and never blocks; a viewer that cannot keep up is resynced or dropped.
        Output is written to live viewers on the loop's next turn, so that the packets of
        one wake-up make one frame; `batch` says `data` is already such a gathering (the
        compiled fast path's), and it is written at once when no flush spacing is due.
        """
        if not data:
            return
        if type(data) is not bytes:
            data = bytes(data)
        self.ring.append(data)
        attachments = self._attachments
        if not attachments:
            return
        if self._screen is not None:
            self._pending.append(data)
            self._pending_bytes += len(data)
            if self._pending_bytes > self.ring.capacity:
                self._drop_screen()  # cheaper to rebuild from the ring when needed
        live = self._live
        if live:
            # First, so that an attachment leaving the live state below is owed it.
            self._batch.append(data)
        if len(live) < len(attachments):  # someone is not live: the queue and its policy
            now = self.clock() if self.stall_timeout is not None else None
            too_slow: list[Attachment] = []
            for attachment in attachments:
                if attachment.delivery is Delivery.LIVE:
                    continue
                if attachment.deliver(data, now) is not None:
                    too_slow.append(attachment)
            self._drop_too_slow(too_slow)
        if live and self._flush_handle is None:
            loop = self._loop
            assert loop is not None
            wait = self._flush_not_before - self.clock()
            if wait <= 0 and batch:
                self._flush()
            elif wait <= 0:
                self._flush_handle = loop.call_soon(self._flush)
            else:
                self._flush_handle = loop.call_later(wait, self._flush)

    def set_state(self, state: str, detail: str = "") -> None:
        """The worker's state changed; every viewer is told."""
        self.state = state
        self.state_detail = detail
        message = StateChanged(state, detail)
        for attachment in self._attachments:
            if attachment.delivery is not Delivery.NEW:
                attachment.notify(message if attachment.details
                                  else attachment.state_message(state, detail))

    def hand_over(self, console: HubConsole) -> Hub:
        """A reload replaced the console's worker: the viewers stay, `console` takes over."""
        self.console = console
        return self

    def close(self, reason: str) -> None:
        """The console is going away: every attachment gets Closed(reason)."""
        self._closed = Closed(reason)
        attachments, self._attachments = self._attachments, []
        self._writer = None
        for attachment in attachments:
            attachment.end(Closed(reason))
        self._drop_screen()
        self._cancel_flush()

    # -- the front-end side ------------------------------------------------------

    def attach(self, user: str, *, can_write: bool, cols: int = 80, rows: int = 25,
               via: str = "", grant: Grant | None = None, details: bool = True) -> Attachment:
        """A new viewer; it takes the write lock if it may write and the lock is free.

        `via` says how the user came (`over ssh from 192.0.2.7`) for the attach record;
        `grant` how they proved it, for revocation; `details` whether its state messages
        carry their detail. On a closed hub the attachment is already closed (its first
        item is Closed).
        """
        attachment = Attachment(self, user, can_write=can_write, cols=cols, rows=rows,
                                grant=grant, details=details)
        if self._closed is not None:
            attachment.end(self._closed)
            return attachment
        if not self._attachments:
            self._cols, self._rows = cols, rows  # the screen is built at the first render
        self._attachments.append(attachment)
        mode = "read-write" if can_write else "read-only"
        self._tell("attach", user, f"{user} attached{' ' + via if via else ''} ({mode})")
        if can_write and self._writer is None:
            self._set_writer(attachment)
        return attachment

    def take_write(self, attachment: Attachment) -> bool:
        """Give the write lock to `attachment` (taking it from the holder); False if refused."""
        if attachment.hub is not self or attachment.closed:
            return False
        attachment.last_input = self.clock()  # someone asked, allowed or not
        if not attachment.can_write:
            return False
        if self._writer is not attachment:
            previous = self._writer
            self._set_writer(attachment)
            taken = f" from {previous.user}" if previous is not None else ""
            self._tell("takeover", attachment.user,
                       f"{attachment.user} took the write lock{taken}")
        return True

    def _tell(self, kind: str, user: str, message: str) -> None:
        if self.console is not None:
            try:
                self.console.viewer_event(kind, user, message)
            except Exception:  # a record that cannot be written never breaks an attach
                log.exception("%s: recording %s failed", self.name, kind)

    def release_write(self, attachment: Attachment) -> None:
        """Free the write lock if `attachment` holds it."""
        if self._writer is attachment:
            self._set_writer(None)

    def give_back_write(self, attachment: Attachment, lender: str) -> bool:
        """Return the write lock to `attachment` after `lender` borrowed it (a fleet
        broadcast): recorded as given back, not as a take-over by its holder."""
        if (attachment.hub is not self or attachment.closed or not attachment.can_write
                or self._writer is not None):
            return False
        self._set_writer(attachment)
        self._tell("takeover", attachment.user,
                   f"write lock given back to {attachment.user} by {lender}")
        return True

    def downgrade(self, attachment: Attachment, reason: str) -> bool:
        """Take the right to write from a live attachment; False if it had none.

        The write lock is released if it held it, the front end is told why, and the
        console log records it.
        """
        if attachment.hub is not self or attachment.closed or not attachment.can_write:
            return False
        attachment.can_write = False
        if self._writer is attachment:
            self._set_writer(None)
        attachment.notify(AccessChanged(False, reason))
        self._tell("access", attachment.user,
                   f"{attachment.user} is now read-only ({reason})")
        return True

    def revoke(self, attachment: Attachment, reason: str) -> bool:
        """End a live attachment whose user lost access; False if it was already gone."""
        if attachment.hub is not self or attachment.closed:
            return False
        self._remove(attachment, Closed(reason, revoked=True), why=f"access revoked: {reason}")
        return True

    # -- direct output ---------------------------------------------------------------

    def go_live(self, attachment: Attachment, loop: asyncio.AbstractEventLoop) -> None:
        """`attachment` has nothing queued and its reader waits: write its output directly."""
        if attachment.go_live():
            self._live[attachment] = len(self._batch)  # owed only what is published from now
            self._loop = loop

    def leave_live(self, attachment: Attachment) -> None:
        """Back to the queue; what the batch owes the attachment is queued first."""
        start = self._live.pop(attachment, None)
        if start is None:
            return
        attachment.back_to_queue(b"".join(self._batch[start:]))
        if not self._live:
            self._cancel_flush()

    def _flush(self) -> None:
        """Hand the batch to every live sink: one `bytes` object, one write per viewer."""
        self._flush_handle = None
        batch = self._batch
        if not batch:
            return
        self._batch = []
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        written = 0
        too_slow: list[Attachment] = []
        for attachment, start in list(self._live.items()):
            self._live[attachment] = 0
            chunk = data if start == 0 else b"".join(batch[start:])
            if not chunk:
                continue
            sink = attachment.sink
            try:
                ok = sink is not None and sink.write(chunk)
            except Exception:  # a broken front end must not break the console worker
                log.exception("output sink of %r failed", attachment)
                ok = False
            if ok:
                written += 1
                attachment.count_read(len(chunk))
                continue
            # Backed up or closing: back to the queue, where the slow-viewer policy applies.
            del self._live[attachment]
            attachment.back_to_queue(b"")
            now = self.clock() if self.stall_timeout is not None else None
            if attachment.deliver(chunk, now) is not None:
                too_slow.append(attachment)
        now = self.clock()
        gap = min(MAX_FLUSH_GAP, written * FLUSH_GAP_PER_SINK)
        if len(data) >= BUSY_FLUSH_BYTES and now - self._last_flush < BUSY_WINDOW:
            gap = max(gap, BUSY_FLUSH_GAP)
        self._last_flush = now
        self._flush_not_before = now + gap
        self._drop_too_slow(too_slow)  # after the loop: it may move the lock and tell others

    def _drop_too_slow(self, attachments: list[Attachment]) -> None:
        for attachment in attachments:
            self.dropped_total += 1
            self._remove(attachment, Closed("too slow"))

    def _cancel_flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._live:
            self._batch = []

    # -- internals -----------------------------------------------------------------

    def _set_writer(self, attachment: Attachment | None) -> None:
        self._writer = attachment
        message = WriteLockChanged(attachment.user if attachment is not None else None)
        for other in self._attachments:
            if other.delivery is not Delivery.NEW:
                other.notify(message)
        if attachment is not None:
            self._resize_screen(attachment.cols, attachment.rows)

    def holds_write(self, attachment: Attachment) -> bool:
        """Whether `attachment` holds the write lock."""
        return self._writer is attachment

    def resized(self, attachment: Attachment) -> None:
        """`attachment`'s terminal changed size; the writer's size sizes the shared screen."""
        if self._writer is attachment:
            self._resize_screen(attachment.cols, attachment.rows)

    def detach(self, attachment: Attachment) -> None:
        """`attachment` leaves: releases the write lock, records it, ends its reads."""
        self._remove(attachment, Closed("detached"))

    def _resize_screen(self, cols: int, rows: int) -> None:
        if (cols, rows) == (self._cols, self._rows):
            return
        if self._screen is not None:
            # Output already published was laid out at the old size.
            self._current_screen().resize(cols, rows)
        self._cols, self._rows = cols, rows

    def _current_screen(self) -> Screen:
        screen = self._screen
        if screen is None:
            screen = self._screen = Screen.from_ring(self.ring, self._cols, self._rows)
            self._pending.clear()
            self._pending_bytes = 0
        elif self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            screen.feed(data)
        return screen

    def _drop_screen(self) -> None:
        self._screen = None
        self._pending.clear()
        self._pending_bytes = 0

    def keyboard(self, attachment: Attachment, data: bytes) -> bool:
        """Typed input from `attachment`; False (nothing sent) unless it holds the lock."""
        attachment.last_input = self.clock()  # someone is at the keyboard, lock or not
        console = self.console
        if self._writer is not attachment or attachment.closed or console is None:
            return False
        if data:
            console.send_input(bytes(data))
        return True

    def render(self, *, scrollback: bool) -> bytes:
        """The screen as bytes that repaint a terminal (with the scrollback if asked)."""
        return self._current_screen().render(scrollback=scrollback)

    def expire_idle(self, timeout: float) -> int:
        """Detach every attachment whose user has not typed for `timeout` seconds.

        The idle timeout of `[server] client_idle_timeout`: a terminal left logged in
        is closed, while the BMC session and the log carry on. Returns how many went.
        """
        now = self.clock()
        idle = [a for a in self._attachments if now - a.last_input >= timeout]
        for attachment in idle:
            self._remove(attachment, Closed(
                f"idle for {_duration_words(timeout)} without input; attach again to continue",
                idle=True), why=f"idle for {_duration_words(timeout)}")
        return len(idle)

    def _remove(self, attachment: Attachment, message: Closed, why: str = "") -> None:
        attachment.end(message)
        try:
            self._attachments.remove(attachment)
        except ValueError:
            return
        if self._writer is attachment:
            self._set_writer(None)
        self._tell("detach", attachment.user,
                   f"{attachment.user} detached{f' ({why})' if why else ''}")
        if not self._attachments:
            self._drop_screen()  # nobody watching: give the screen's memory back


def _duration_words(seconds: float) -> str:
    """`1800` -> "30m", `90` -> "90s": short, as an operator would write it in the config."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
