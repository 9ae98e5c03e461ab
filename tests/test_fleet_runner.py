"""The fleet runner's parts that need no network: pacing, the lent write lock, parsing."""

from __future__ import annotations

import pytest

from solgate.console.fleet import FleetError, Pacer, lend_write, parse_action
from solgate.console.hub import Hub


def test_pacer_spaces_starts_by_the_rate() -> None:
    pacer = Pacer(4.0)  # one start every 0.25 s
    starts = [pacer.reserve(10.0) for _ in range(5)]
    assert starts == [10.0, 10.25, 10.5, 10.75, 11.0]
    assert pacer.reserve(20.0) == 20.0  # an idle pacer does not owe a backlog


def test_broadcast_lends_the_write_lock_and_gives_it_back() -> None:
    typed: list[bytes] = []
    hub = Hub("web01", on_input=typed.append)
    holder = hub.attach("bob", can_write=True)
    assert holder.is_writer
    assert lend_write(hub, "alice", b"uptime\r")
    assert typed == [b"uptime\r"]
    assert holder.is_writer  # bob holds the lock again
    assert [a.user for a in hub.attachments] == ["bob"]  # the broadcast left no attachment


def test_broadcast_on_a_free_lock_leaves_it_free() -> None:
    hub = Hub("web01", on_input=lambda data: None)
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
