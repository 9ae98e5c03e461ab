"""The hub: every viewer sees the console, none can slow the console or another viewer."""

from __future__ import annotations

import asyncio

import pyte
import pytest

from solgate.console.hub import (
    Closed,
    Hub,
    Lagged,
    Snapshot,
    StateChanged,
    WriteLockChanged,
)
from solgate.console.screen import RawRing


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def painted(snapshot: Snapshot, cols: int = 80, rows: int = 25) -> list[str]:
    screen = pyte.Screen(cols, rows)
    pyte.ByteStream(screen).feed(snapshot.data)
    return [line.rstrip() for line in screen.display]


def drain(attachment) -> list:
    """Everything ready right now, without waiting."""
    items = []
    while (item := attachment.get_nowait()) is not None:
        items.append(item)
        if isinstance(item, Closed):
            break
    return items


async def first_items(attachment, n: int) -> list:
    return [await asyncio.wait_for(attachment.get(), 1) for _ in range(n)]


# -- attach and fan-out -----------------------------------------------------------


async def test_snapshot_comes_first_and_shows_what_was_printed_before():
    hub = Hub("web01")
    hub.publish(b"BIOS v1.0\r\n\x1b[1mbooting\x1b[0m\r\nlogin: ")
    viewer = hub.attach("alice", can_write=False)
    snapshot, lock = await first_items(viewer, 2)
    assert isinstance(snapshot, Snapshot)
    assert painted(snapshot)[:3] == ["BIOS v1.0", "booting", "login:"]
    assert lock == WriteLockChanged(None)


async def test_output_between_attach_and_first_read_is_in_the_snapshot_not_doubled():
    hub = Hub("web01")
    viewer = hub.attach("alice", can_write=False)
    hub.publish(b"early\r\n")
    snapshot = await viewer.get()
    assert isinstance(snapshot, Snapshot)
    assert painted(snapshot)[0] == "early"
    assert isinstance(await viewer.get(), WriteLockChanged)
    hub.publish(b"late")
    assert await viewer.get() == b"late"
    assert viewer.get_nowait() is None


async def test_two_viewers_get_the_same_bytes_in_order():
    hub = Hub("web01")
    a = hub.attach("alice", can_write=False)
    b = hub.attach("bob", can_write=False)
    drain(a)
    drain(b)
    chunks = [b"line %d\r\n" % i for i in range(100)]

    async def collect(att, total: int) -> bytes:
        got = b""
        while len(got) < total:
            item = await asyncio.wait_for(att.get(), 1)
            assert isinstance(item, bytes)
            got += item
        return got

    total = sum(map(len, chunks))
    tasks = [asyncio.create_task(collect(a, total)), asyncio.create_task(collect(b, total))]
    for chunk in chunks:
        hub.publish(chunk)
        await asyncio.sleep(0)
    assert await asyncio.gather(*tasks) == [b"".join(chunks)] * 2
    assert hub.bytes_out >= 2 * total


async def test_async_iteration_ends_with_closed():
    hub = Hub("web01")
    viewer = hub.attach("alice", can_write=False)
    hub.publish(b"x")
    hub.close("console removed from the configuration")
    items = [item async for item in viewer]
    assert items[-1] == Closed("console removed from the configuration")
    assert await viewer.get() == Closed("console removed from the configuration")


# -- slow viewers -----------------------------------------------------------------


async def test_a_stalled_viewer_slows_neither_publish_nor_another_viewer():
    hub = Hub("web01", queue_bytes=64 * 1024)
    stalled = hub.attach("stalled", can_write=False)
    reader = hub.attach("reader", can_write=False)
    drain(stalled)  # it read its first snapshot, then its connection stalled
    line = b"\x1b[33m" + b"x" * 90 + b"\x1b[0m\r\n"  # 100 bytes
    lines = 40_000  # 4 MB

    received: list = []
    done = asyncio.Event()

    async def read() -> None:
        async for item in reader:
            received.append(item)
            if isinstance(item, bytes) and item.endswith(b"END\r\n"):
                done.set()
                return

    task = asyncio.create_task(read())
    await asyncio.sleep(0)
    for i in range(lines):
        hub.publish(line)
        # The stalled viewer never holds more than its queue, whatever is published.
        assert stalled.queued_bytes <= hub.queue_bytes
        if i % 16 == 0:
            await asyncio.sleep(0)  # let the reader run, as the event loop would
    hub.publish(b"END\r\n")
    await asyncio.wait_for(done.wait(), 5)
    await task

    # The reader, which ran whenever the loop let it, got every byte after its snapshot.
    assert isinstance(received[0], Snapshot)
    assert not any(isinstance(item, Lagged) for item in received)
    data = [item for item in received if isinstance(item, bytes)]
    assert b"".join(data) == line * lines + b"END\r\n"

    # The stalled viewer is told it lagged, then repainted with the current screen.
    items = drain(stalled)
    kinds = [type(item) for item in items]
    assert kinds[:2] == [Lagged, Snapshot]
    lagged, snapshot = items[0], items[1]
    assert lagged.dropped_bytes > 3_000_000
    assert painted(snapshot)[-2] == "END"
    assert hub.lagged_total >= 1
    assert hub.viewers == 2


async def test_a_reader_that_falls_behind_is_resynced_from_the_screen():
    hub = Hub("web01", queue_bytes=1024)
    viewer = hub.attach("alice", can_write=False)
    drain(viewer)
    for i in range(200):  # no chance to read in between
        hub.publish(b"row %03d\r\n" % i)
    hub.publish(b"\x1b[31mprompt# ")
    lagged = await viewer.get()
    assert isinstance(lagged, Lagged)
    snapshot = await viewer.get()
    assert isinstance(snapshot, Snapshot)
    rows = painted(snapshot)
    assert rows[-1] == "prompt#"
    assert rows[-2] == "row 199"
    # Resync repaints the screen only: the viewer already has the older lines.
    assert b"row 150" not in snapshot.data
    # Live again afterwards.
    hub.publish(b"ls\r\n")
    assert await viewer.get() == b"ls\r\n"


async def test_control_messages_survive_an_overflow():
    hub = Hub("web01", queue_bytes=100)
    viewer = hub.attach("alice", can_write=False)
    drain(viewer)
    hub.set_state("connected", "cipher suite 17")
    hub.publish(b"y" * 500)
    assert drain(viewer)[:3] == [
        StateChanged("connected", "cipher suite 17"),
        Lagged(500),
        Snapshot(viewer.hub.screen.render(scrollback=False)),
    ]


async def test_a_viewer_that_never_keeps_up_is_dropped_as_too_slow():
    hub = Hub("web01", queue_bytes=100, max_lag_streak=3)
    slow = hub.attach("slow", can_write=True)
    drain(slow)
    for _ in range(3):
        hub.publish(b"z" * 150)  # overflow
        assert [type(item) for item in drain(slow)] == [Lagged, Snapshot]
        hub.publish(b"z" * 10)  # it reads a little, not a queue's worth
        assert drain(slow) == [b"z" * 10]
    assert hub.viewers == 1
    hub.publish(b"z" * 150)  # fourth overflow in a row
    assert drain(slow)[-1] == Closed("too slow")
    assert hub.viewers == 0
    assert hub.writer is None
    assert hub.dropped_total == 1
    assert not hub.screen_allocated


async def test_a_viewer_that_catches_up_is_forgiven():
    hub = Hub("web01", queue_bytes=100, max_lag_streak=1)
    viewer = hub.attach("alice", can_write=False)
    drain(viewer)
    for _ in range(5):
        hub.publish(b"z" * 150)
        assert [type(item) for item in drain(viewer)] == [Lagged, Snapshot]
        for _ in range(2):  # then keeps up with a whole queue's worth
            hub.publish(b"k" * 60)
            assert drain(viewer) == [b"k" * 60]
    assert hub.viewers == 1


async def test_overflows_far_apart_are_not_in_a_row():
    clock = FakeClock()
    hub = Hub("web01", queue_bytes=100, max_lag_streak=1, stall_timeout=60.0, clock=clock)
    viewer = hub.attach("alice", can_write=False)
    drain(viewer)
    for _ in range(4):
        hub.publish(b"z" * 150)
        assert [type(item) for item in drain(viewer)] == [Lagged, Snapshot]
        clock.now += 61
    assert hub.viewers == 1
    hub.publish(b"z" * 150)
    hub.publish(b"z" * 150)  # still lagging: counted into the resync, no new overflow
    drain(viewer)
    hub.publish(b"z" * 150)  # second overflow within the minute: dropped
    assert drain(viewer)[-1] == Closed("too slow")


async def test_a_viewer_stalled_past_the_timeout_is_dropped():
    clock = FakeClock()
    hub = Hub("web01", queue_bytes=100, stall_timeout=60.0, clock=clock)
    stalled = hub.attach("stalled", can_write=False)
    other = hub.attach("other", can_write=False)
    drain(stalled)
    hub.publish(b"a" * 150)  # both overflow at t=1000
    drain(other)
    clock.now += 59
    hub.publish(b"b")
    assert hub.viewers == 2
    assert drain(other)[-1] == b"b"
    clock.now += 2
    hub.publish(b"c")
    assert hub.viewers == 1
    assert drain(stalled)[-1] == Closed("too slow")
    assert drain(other) == [b"c"]


# -- the write lock ---------------------------------------------------------------


async def test_write_lock_rules():
    typed: list[bytes] = []
    hub = Hub("web01", on_input=typed.append)
    viewer = hub.attach("guest", can_write=False)
    alice = hub.attach("alice", can_write=True)
    bob = hub.attach("bob", can_write=True)
    for att in (viewer, alice, bob):
        drain(att)
    # The first read-write attachment took the free lock.
    assert hub.writer == "alice"
    assert alice.is_writer
    # A viewer can neither type nor take the lock.
    assert viewer.send(b"reboot\r") is False
    assert viewer.take_write() is False
    assert hub.take_write(viewer) is False
    assert hub.writer == "alice"
    # Only the holder's input reaches the console.
    assert bob.send(b"bob\r") is False
    assert alice.send(b"alice\r") is True
    assert typed == [b"alice\r"]
    # Take-over: everyone, the previous holder included, is told.
    assert bob.take_write() is True
    assert drain(alice) == [WriteLockChanged("bob")]
    assert drain(viewer) == [WriteLockChanged("bob")]
    assert drain(bob) == [WriteLockChanged("bob")]
    assert alice.send(b"too late\r") is False
    assert bob.send(b"ok\r") is True
    assert typed == [b"alice\r", b"ok\r"]
    # The holder leaves: the lock is free, nobody is promoted silently.
    bob.detach()
    assert drain(alice) == [WriteLockChanged(None)]
    assert hub.writer is None
    assert alice.send(b"x") is False
    assert typed == [b"alice\r", b"ok\r"]


async def test_new_attachment_is_told_the_lock_holder_and_state():
    hub = Hub("web01")
    hub.set_state("stolen", "another session holds SOL on 10.0.0.5:623")
    writer = hub.attach("alice", can_write=True)
    viewer = hub.attach("guest", can_write=False)
    items = drain(viewer)
    assert isinstance(items[0], Snapshot)
    assert items[1:] == [
        WriteLockChanged("alice"),
        StateChanged("stolen", "another session holds SOL on 10.0.0.5:623"),
    ]
    drain(writer)
    hub.set_state("connected", "")
    assert drain(writer) == [StateChanged("connected", "")]
    assert drain(viewer) == [StateChanged("connected", "")]


async def test_send_without_a_console_input_is_refused():
    hub = Hub("web01")
    alice = hub.attach("alice", can_write=True)
    assert alice.send(b"x") is False


# -- lifetime and memory ----------------------------------------------------------


async def test_no_screen_and_no_queues_while_nobody_is_attached():
    ring = RawRing(4096)
    hub = Hub("web01", ring=ring)
    hub.publish(b"output nobody watches\r\n" * 10)
    assert not hub.screen_allocated
    assert hub.screen is None
    assert hub.attachments == ()
    assert ring.snapshot().endswith(b"output nobody watches\r\n")
    viewer = hub.attach("alice", can_write=False)
    assert isinstance(await viewer.get(), Snapshot)
    assert hub.screen_allocated
    viewer.detach()
    assert not hub.screen_allocated
    assert hub.viewers == 0
    hub.publish(b"more\r\n")
    assert not hub.screen_allocated
    # Re-attaching rebuilds the screen from the ring.
    again = hub.attach("alice", can_write=False)
    assert painted(await again.get())[9:11] == ["output nobody watches", "more"]


async def test_detach_wakes_a_pending_reader():
    hub = Hub("web01")
    viewer = hub.attach("alice", can_write=False)
    drain(viewer)
    waiter = asyncio.create_task(viewer.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    viewer.detach()
    assert await asyncio.wait_for(waiter, 1) == Closed("detached")
    assert viewer.send(b"x") is False


async def test_close_ends_every_attachment_and_later_attaches():
    hub = Hub("web01")
    a = hub.attach("alice", can_write=True)
    b = hub.attach("bob", can_write=False)
    hub.close("solgate is shutting down")
    assert drain(a)[-1] == Closed("solgate is shutting down")
    assert drain(b)[-1] == Closed("solgate is shutting down")
    assert hub.viewers == 0
    assert hub.writer is None
    late = hub.attach("carol", can_write=True)
    assert await late.get() == Closed("solgate is shutting down")
    assert hub.viewers == 0


async def test_a_busy_watched_console_keeps_screen_memory_bounded():
    ring = RawRing(4096)
    hub = Hub("web01", ring=ring)
    viewer = hub.attach("alice", can_write=False)
    await viewer.get()  # the screen exists now
    for i in range(1000):
        hub.publish(b"busy %04d\r\n" % i)
        assert hub._pending_bytes <= ring.capacity
    # A newcomer still sees the current screen (rebuilt from the ring if it was dropped).
    newcomer = hub.attach("bob", can_write=False)
    assert painted(await newcomer.get())[-2] == "busy 0999"


async def test_writer_size_sizes_the_shared_screen():
    hub = Hub("web01")
    hub.attach("guest", can_write=False, cols=80, rows=25)
    writer = hub.attach("alice", can_write=True, cols=120, rows=40)
    assert (hub.screen.cols, hub.screen.rows) == (120, 40)
    writer.resize(100, 30)
    assert (hub.screen.cols, hub.screen.rows) == (100, 30)


def test_queue_size_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        Hub("web01", queue_bytes=0)
