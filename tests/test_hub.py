"""The hub: every viewer sees the console, none can slow the console or another viewer."""

from __future__ import annotations

import asyncio

import pyte
import pytest

from solgate.console.attachment import (
    AccessChanged,
    Closed,
    Grant,
    Lagged,
    Snapshot,
    StateChanged,
    WriteLockChanged,
)
from solgate.console.hub import Hub
from solgate.console.screen import RawRing
from tests.engine_helpers import wait_for
from tests.hub_helpers import TypingConsole


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


# -- direct output (front ends with a sink) ----------------------------------------


class FakeSink:
    """Records what the hub wrote; can back up like a socket whose peer stopped reading."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.open = True

    def ready(self) -> bool:
        return self.open

    def write(self, data: bytes) -> bool:
        if not self.open:
            return False
        self.writes.append(data)
        return True

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


async def park(attachment, sink: FakeSink) -> asyncio.Task:
    """Read the greeting, then wait in get() the way a front end's writer task does."""
    attachment.set_sink(sink)
    drain(attachment)
    task = asyncio.create_task(attachment.get())
    await asyncio.sleep(0)
    assert not task.done()
    return task


async def test_a_lone_viewer_is_written_on_the_next_loop_turn():
    clock = FakeClock()
    hub = Hub("web01", clock=clock)
    sink = FakeSink()
    reader = await park(hub.attach("alice", can_write=True), sink)
    for key in (b"l", b"s", b"\r\n"):
        clock.now += 0.001  # typed a millisecond apart
        hub.publish(key)
        await asyncio.sleep(0)
        assert sink.writes[-1] == key  # no timer waited for: the echo is out
    assert not reader.done()  # and the reader was never woken
    reader.cancel()


async def test_a_gathered_batch_is_written_at_once_and_loose_output_on_the_next_turn():
    # The compiled fast path hands over ~100 ms of a flood at a time: waiting a loop turn
    # would gather nothing more, so it is written in the same call. Output from the
    # Python path (a packet at a time) still waits for the turn, where a wake-up's
    # packets make one frame.
    clock = FakeClock()
    hub = Hub("web01", clock=clock)
    sink = FakeSink()
    reader = await park(hub.attach("alice", can_write=False), sink)
    hub.publish(b"gathered", batch=True)
    assert sink.writes == [b"gathered"]
    clock.now += 1.0
    hub.publish(b"one ")
    hub.publish(b"wake-up")
    assert sink.writes == [b"gathered"]
    await asyncio.sleep(0)
    assert sink.writes == [b"gathered", b"one wake-up"]
    reader.cancel()


async def test_a_flood_reaches_a_lone_viewer_in_fewer_larger_writes():
    clock = FakeClock()
    hub = Hub("web01", clock=clock)
    sink = FakeSink()
    reader = await park(hub.attach("alice", can_write=False), sink)
    packets = [bytes([0x41 + i]) * 255 for i in range(6)]  # full SOL packets, 1 ms apart
    for packet in packets[:2]:
        hub.publish(packet)
        await asyncio.sleep(0)
        clock.now += 0.001
    assert sink.writes == packets[:2]  # the first output of a burst is not held
    for packet in packets[2:]:
        hub.publish(packet)
        await asyncio.sleep(0)
        clock.now += 0.001
    assert sink.writes == packets[:2], "in full flow the next write waits a few ms"
    await wait_for(lambda: len(sink.writes) == 3)
    assert sink.writes[2] == b"".join(packets[2:])
    # After a quiet spell, output (an echo) goes out on the next loop turn again.
    clock.now += 1.0
    hub.publish(b"x")
    await asyncio.sleep(0)
    assert sink.writes[-1] == b"x"
    reader.cancel()


async def test_many_viewers_share_one_batched_write_per_flush():
    hub = Hub("web01", clock=FakeClock())  # time stands still: every later flush waits
    sinks = [FakeSink() for _ in range(1000)]
    readers = [
        await park(hub.attach(f"u{i}", can_write=False), sink) for i, sink in enumerate(sinks)
    ]
    chunks = [b"line %d\r\n" % i for i in range(200)]
    bytes_out = hub.bytes_out
    hub.publish(chunks[0])
    await asyncio.sleep(0)
    for chunk in chunks[1:]:
        hub.publish(chunk)
    await wait_for(lambda: len(sinks[-1].writes) == 2)
    # The first chunk went out on the next loop turn, the other 199 together after the
    # flush gap, and every viewer got the very same objects: a front end encodes once.
    first = sinks[0].writes
    assert first == [chunks[0], b"".join(chunks[1:])]
    assert all(len(s.writes) == 2 and all(map(bytes.__eq__, s.writes, first)) for s in sinks)
    assert all(s.writes[1] is first[1] for s in sinks)
    assert not any(reader.done() for reader in readers)
    assert hub.bytes_out - bytes_out == 1000 * sum(map(len, chunks))
    for reader in readers:
        reader.cancel()


async def test_a_backed_up_viewer_falls_back_to_its_queue_and_lags():
    hub = Hub("web01", queue_bytes=1024)
    slow_sink, fast_sink = FakeSink(), FakeSink()
    slow = hub.attach("slow", can_write=False)
    slow_reader = await park(slow, slow_sink)
    fast_reader = await park(hub.attach("fast", can_write=False), fast_sink)
    hub.publish(b"before\r\n")
    await asyncio.sleep(0)
    slow_sink.open = False  # its socket backed up
    for i in range(20):
        hub.publish(b"row %02d " % i + b"y" * 60 + b"\r\n")
        await asyncio.sleep(0)
    await wait_for(lambda: fast_sink.data.endswith(b"row 19 " + b"y" * 60 + b"\r\n"))
    assert slow_sink.data == b"before\r\n"
    # Its writer took what was queued first, then stalled sending it; the rest overflowed
    # the queue, so it is resynced like any viewer that falls behind.
    assert (await asyncio.wait_for(slow_reader, 1)).startswith(b"row 00 ")
    lagged, snapshot = drain(slow)
    assert isinstance(lagged, Lagged)
    assert lagged.dropped_bytes > 1024
    assert "row 19 " + "y" * 60 in painted(snapshot)
    assert hub.lagged_total == 1
    # Once its socket drains and it waits again, it is written directly again.
    slow_sink.open = True
    slow_reader = asyncio.create_task(slow.get())
    await asyncio.sleep(0)
    hub.publish(b"after\r\n")
    await wait_for(lambda: slow_sink.data.endswith(b"after\r\n"))
    assert fast_sink.data.endswith(b"after\r\n")
    assert not fast_reader.done()
    for reader in (slow_reader, fast_reader):
        reader.cancel()


async def test_a_control_message_comes_after_the_output_published_before_it():
    hub = Hub("web01", clock=FakeClock())
    sink, other_sink = FakeSink(), FakeSink()
    viewer = hub.attach("alice", can_write=False)
    reader = await park(viewer, sink)
    other = await park(hub.attach("bob", can_write=False), other_sink)
    hub.publish(b"one ")
    await asyncio.sleep(0)  # written on the next loop turn
    hub.publish(b"two ")  # waits for the flush gap
    hub.set_state("backoff", "BMC unreachable")
    assert await asyncio.wait_for(reader, 1) == b"two "
    assert await viewer.get() == StateChanged("backoff", "BMC unreachable")
    assert sink.data == b"one "  # "two " was not written a second time
    reader = asyncio.create_task(viewer.get())
    await asyncio.sleep(0)
    hub.publish(b"three")
    await wait_for(lambda: sink.data == b"one three")
    # The other viewer was told too, in the same order, and no longer waits to be live.
    assert other_sink.data == b"one "
    assert await asyncio.wait_for(other, 1) == b"two "
    assert drain(hub.attachments[1]) == [StateChanged("backoff", "BMC unreachable"), b"three"]
    reader.cancel()


async def test_output_that_drops_the_lock_holder_still_reaches_everyone_before_the_news():
    hub = Hub("web01", queue_bytes=100, max_lag_streak=0)
    holder = hub.attach("alice", can_write=True)
    drain(holder)  # then it stops reading: its next overflow drops it
    sink = FakeSink()
    viewer = hub.attach("guest", can_write=False)
    reader = await park(viewer, sink)
    hub.publish(b"x" * 150)
    assert drain(holder)[-1] == Closed("too slow")
    got = [await asyncio.wait_for(reader, 1), *drain(viewer)]
    assert b"".join([sink.data, got[0]]) == b"x" * 150
    assert got[1:] == [WriteLockChanged(None)]


async def test_a_reader_that_stops_waiting_is_no_longer_written_directly():
    hub = Hub("web01")
    sink = FakeSink()
    viewer = hub.attach("alice", can_write=False)
    reader = await park(viewer, sink)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    hub.publish(b"queued")
    assert sink.writes == []
    assert viewer.get_nowait() == b"queued"
    detached = await park(viewer, sink)
    viewer.detach()
    hub.publish(b"gone")
    assert sink.writes == []
    assert await asyncio.wait_for(detached, 1) == Closed("detached")


async def test_a_failing_sink_never_breaks_publish_or_the_other_viewers():
    class BrokenSink(FakeSink):
        def write(self, data: bytes) -> bool:
            raise OSError("transport gone")

    hub = Hub("web01")
    broken = hub.attach("broken", can_write=False)
    broken_reader = await park(broken, BrokenSink())
    sink = FakeSink()
    reader = await park(hub.attach("fine", can_write=False), sink)
    hub.publish(b"still here")
    await wait_for(lambda: sink.data == b"still here")
    assert await asyncio.wait_for(broken_reader, 1) == b"still here"  # via its queue
    reader.cancel()


# -- the write lock ---------------------------------------------------------------


async def test_write_lock_rules():
    console = TypingConsole()
    typed = console.typed
    hub = Hub("web01", console=console)
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


def test_attach_takeover_and_detach_are_told_with_the_user():
    """What lands in the console log and events.jsonl: who came, who typed, who left."""
    console = TypingConsole()
    told = console.told
    hub = Hub("web01", console=console)
    first = hub.attach("ops1", can_write=True, via="over ssh from 192.0.2.7")
    second = hub.attach("ops2", can_write=True)
    viewer = hub.attach("watcher", can_write=False)
    assert hub.take_write(second)
    assert not hub.take_write(viewer)  # refused: nothing to tell
    assert hub.take_write(second)  # already the holder: nothing to tell
    first.detach()
    assert told == [
        ("attach", "ops1", "ops1 attached over ssh from 192.0.2.7 (read-write)"),
        ("attach", "ops2", "ops2 attached (read-write)"),
        ("attach", "watcher", "watcher attached (read-only)"),
        ("takeover", "ops2", "ops2 took the write lock from ops1"),
        ("detach", "ops1", "ops1 detached"),
    ]


def test_a_failing_record_never_breaks_an_attach():
    class DiskGone(TypingConsole):
        def viewer_event(self, kind: str, user: str, message: str) -> None:
            raise OSError("disk gone")

    hub = Hub("web01", console=DiskGone())
    attachment = hub.attach("ops1", can_write=True)
    assert hub.writer == "ops1"
    attachment.detach()
    assert hub.viewers == 0


def test_downgrade_releases_the_lock_and_tells_why():
    """A reload demoted the writer: it keeps watching, cannot type or take the lock again."""
    console = TypingConsole()
    typed, told = console.typed, console.told
    hub = Hub("web01", console=console)
    writer = hub.attach("ops1", can_write=True, grant=Grant("token", "sha256$x"))
    other = hub.attach("ops2", can_write=True)
    drain(writer)
    drain(other)
    assert writer.grant == Grant("token", "sha256$x")
    assert hub.downgrade(writer, "ops1 is now a viewer on web01")
    assert not hub.downgrade(writer, "again")  # nothing left to take
    assert hub.writer is None
    assert drain(writer) == [WriteLockChanged(None),
                             AccessChanged(False, "ops1 is now a viewer on web01")]
    assert drain(other) == [WriteLockChanged(None)]
    assert not writer.send(b"x")
    assert not writer.take_write()
    assert typed == []
    assert told[-1] == ("access", "ops1", "ops1 is now read-only (ops1 is now a viewer on web01)")


def test_revoke_closes_with_the_reason_and_records_it():
    console = TypingConsole()
    told = console.told
    hub = Hub("web01", console=console)
    attachment = hub.attach("ops1", can_write=True)
    drain(attachment)
    assert hub.revoke(attachment, "logged out")
    assert not hub.revoke(attachment, "logged out")
    assert drain(attachment) == [Closed("logged out", revoked=True)]
    assert hub.viewers == 0
    assert told[-1] == ("detach", "ops1", "ops1 detached (access revoked: logged out)")


async def test_state_details_go_only_to_attachments_that_may_see_them():
    """What the ssh gateway and the WebSocket pass on: the hub leaves the detail (BMC
    address, IPMI user) out for a viewer, and a demotion stops it on a live attachment."""
    from solgate.access import Rights, apply

    hub = Hub("web01")
    hub.set_state("backoff", "BMC 10.0.0.5:623 unreachable")
    viewer = hub.attach("victor", can_write=False, details=False)
    operator = hub.attach("oscar", can_write=False, details=True)
    assert StateChanged("backoff", "") in await first_items(viewer, 3)
    assert StateChanged("backoff", "BMC 10.0.0.5:623 unreachable") in await first_items(
        operator, 3)
    refused = "BMC 10.0.0.5:623 rejected user 'admin'"
    hub.set_state("auth-failed", refused)
    assert drain(viewer) == [StateChanged("auth-failed", "")]
    assert drain(operator) == [StateChanged("auth-failed", refused)]
    # A reload made oscar a viewer: it could not type anyway, but the detail stops too.
    assert apply(operator, Rights(True, False, "oscar is now a viewer", details=False)) == (
        "details hidden")
    assert drain(operator) == [StateChanged("auth-failed", "")]
    hub.set_state("active", "cipher suite 17")
    assert drain(operator) == [StateChanged("active", "")]
    assert apply(operator, Rights(True, False, "oscar is now a viewer", details=False)) is None
