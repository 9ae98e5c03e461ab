"""The fleet runner's parts that need no network: pacing, the lent write lock, parsing."""

from __future__ import annotations

import asyncio

import pytest

from solgate.console.fleet import FleetError, FleetRunner, Pacer, lend_write, parse_action
from solgate.console.hub import Hub
from solgate.errors import SolgateError
from tests.hub_helpers import TypingConsole


def test_pacer_spaces_starts_by_the_rate() -> None:
    pacer = Pacer(4.0)  # one start every 0.25 s
    starts = [pacer.reserve(10.0) for _ in range(5)]
    assert starts == [10.0, 10.25, 10.5, 10.75, 11.0]
    assert pacer.reserve(20.0) == 20.0  # an idle pacer does not owe a backlog


def test_broadcast_lends_the_write_lock_and_gives_it_back() -> None:
    console = TypingConsole()
    typed = console.typed
    hub = Hub("web01", console=console)
    holder = hub.attach("bob", can_write=True)
    assert holder.is_writer
    assert lend_write(hub, "alice", b"uptime\r")
    assert typed == [b"uptime\r"]
    assert holder.is_writer  # bob holds the lock again
    assert [a.user for a in hub.attachments] == ["bob"]  # the broadcast left no attachment
    assert console.told[-1][2] == "write lock given back to bob by alice"


def test_broadcast_on_a_free_lock_leaves_it_free() -> None:
    hub = Hub("web01", console=TypingConsole())
    watcher = hub.attach("carol", can_write=False)
    assert lend_write(hub, "alice", b"x")
    assert hub.writer is None
    assert not watcher.is_writer


@pytest.mark.parametrize(("kind", "args", "message"), [
    ("power", {"power": "explode"}, "power needs one of"),
    ("sysrq", {"key": "ss"}, "one SysRq letter"),
    ("broadcast", {}, "needs the text"),
    ("broadcast", {"text": "x" * 300}, "at most 256"),
    ("reboot", {}, "unknown fleet action"),
])
def test_bad_actions_say_what_to_use(kind: str, args: dict[str, object], message: str) -> None:
    with pytest.raises(FleetError, match=message):
        parse_action(kind, args)


def test_actions_and_the_rights_they_need() -> None:
    assert parse_action("power", {"power": "cycle"}).needs_power
    assert not parse_action("power", {"power": "status"}).touches
    assert parse_action("broadcast", {"text": "ls", "line": True}).arg == "ls\r"
    assert not parse_action("sysrq", {"key": "s"}).needs_power


class Engine:
    """Single-console operations that take a while; counts how many run at once."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.in_flight = 0
        self.most = 0
        self.done: list[str] = []
        self.records: list[tuple[str | None, str]] = []
        self.fail = fail

    def get(self, name: str) -> None:
        return None

    async def send_break(self, name: str, user: str) -> None:
        raise AssertionError("not used")

    async def deactivate(self, name: str, user: str) -> None:
        raise AssertionError("not used")

    async def power(self, name: str, action: str, user: str) -> str:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            if name in self.fail:
                raise SolgateError(f"BMC for {name} did not answer")
            self.done.append(name)
            return "on"
        finally:
            self.in_flight -= 1

    def record(self, name: str | None, kind: str, message: str, **fields: object) -> None:
        self.records.append((name, message))


async def test_runner_keeps_the_concurrency_limit_and_reports_each_outcome() -> None:
    engine = Engine(fail=frozenset({"c07"}))
    runner = FleetRunner(engine, concurrency=3, rate=10_000)
    seen: list[tuple[str, int, int]] = []
    runner.on_progress = lambda o, done, total: seen.append((o.console, done, total))
    names = [f"c{i:02d}" for i in range(12)]
    result = await runner.run(parse_action("power", {"power": "cycle"}), names,
                              {"x01": "alice may only watch x01 (viewer)"}, user="alice",
                              selection="tag:rack12", unseen=2)
    assert engine.most == 3
    assert sorted(engine.done) == [n for n in names if n != "c07"]
    assert result["summary"] == {"total": 15, "done": 11, "refused": 3, "unseen": 2,
                                 "error": 1}
    errors = [r for r in result["results"] if r["status"] == "error"]
    assert errors == [{"console": "c07", "status": "error",
                       "detail": "BMC for c07 did not answer"}]
    assert [d for _, d, _ in seen] == list(range(3, 16))  # unseen count as finished
    # One record per touched console (the failed one too), one summary, none for x01.
    assert sorted(n for n, _ in engine.records if n) == names
    assert "selection tag:rack12; 15 consoles): error: BMC for c07" in dict(
        engine.records)["c07"]
    assert engine.records[-1][0] is None


class Console:
    """A console whose SOL send buffer takes only what it has room for, as the worker's
    send_input does (the rest is dropped), counting what it took in `bytes_out`."""

    def __init__(self, room: int) -> None:
        self.state = "active"
        self.room = room
        self.bytes_out = 0
        self.host: list[bytes] = []
        self.hub = Hub("web01", console=self)

    def send_input(self, data: bytes) -> None:
        took = data[: self.room]
        self.room -= len(took)
        self.bytes_out += len(took)
        if took:
            self.host.append(took)

    def viewer_event(self, kind: str, user: str, message: str) -> None:
        pass


class TypingEngine(Engine):
    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def get(self, name: str) -> Console:  # type: ignore[override]
        return self.console


async def test_a_broadcast_waits_for_room_instead_of_cutting_the_text_short() -> None:
    console = Console(room=10)
    text = "x" * 200 + "\r"

    async def acks() -> None:  # the BMC acknowledges 40 bytes every 20 ms
        while True:
            await asyncio.sleep(0.02)
            console.room = min(console.room + 40, 64)

    drain = asyncio.ensure_future(acks())
    try:
        result = await FleetRunner(TypingEngine(console), concurrency=1, rate=1000).run(
            parse_action("broadcast", {"text": text}), ["web01"], {}, user="alice",
            selection="web01")
    finally:
        drain.cancel()
    assert result["results"] == [{"console": "web01", "status": "done", "detail": ""}]
    assert b"".join(console.host) == text.encode()  # all of it, once, in order


async def test_a_broadcast_a_console_cannot_take_is_an_error_saying_how_much_went() -> None:
    console = Console(room=30)  # and no acks: the buffer stays full
    runner = FleetRunner(TypingEngine(console), concurrency=1, rate=1000, broadcast_wait=0.2)
    result = await runner.run(parse_action("broadcast", {"text": "y" * 100}), ["web01"], {},
                              user="alice", selection="web01")
    [outcome] = result["results"]
    assert outcome["status"] == "error"
    assert "took 30 of 100 bytes" in outcome["detail"]
    assert "rest was not sent" in outcome["detail"]
    assert console.hub.writer is None  # the lent lock was given up
