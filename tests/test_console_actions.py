"""One path for escape actions: permission, then the hub or the engine, then the notice."""

from __future__ import annotations

from solgate.console.actions import ConsoleActions, Help, Leave, Notice, Outcome, Typed
from solgate.console.escape import EscapeParser
from solgate.console.hub import Hub
from tests.hub_helpers import TypingConsole


class Engine:
    """Records what the actions asked of the engine."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def send_break(self, name: str, user: str) -> None:
        self.calls.append(("break", name, user))

    async def deactivate(self, name: str, user: str) -> None:
        self.calls.append(("deactivate", name, user))


async def outcomes(actions: ConsoleActions, data: bytes) -> list[Outcome]:
    return [outcome async for outcome in actions.keyboard(data)]


async def test_only_the_lock_holder_types_and_the_others_are_told_who_holds_it() -> None:
    console = TypingConsole()
    typed = console.typed
    hub = Hub("web01", console=console)
    engine = Engine()
    alice = ConsoleActions(engine, hub.attach("alice", can_write=True), EscapeParser("~"))
    bob = ConsoleActions(engine, hub.attach("bob", can_write=True), EscapeParser("~"))
    guest = ConsoleActions(engine, hub.attach("guest", can_write=False), EscapeParser("~"))

    assert await outcomes(alice, b"ls\r") == [Typed()]
    assert await outcomes(bob, b"x") == [
        Notice("read-only: take the write lock to type (alice holds it; ~w takes it)")]
    assert await outcomes(guest, b"x") == [
        Notice("read-only: your role cannot type on this console")]
    assert typed == [b"ls\r"]

    guest.parser = EscapeParser("~")  # at the start of a line again
    assert await outcomes(guest, b"~w") == [
        Notice("read-only: your role cannot take the write lock")]
    bob.parser = EscapeParser("~")
    assert await outcomes(bob, b"~w") == []
    assert hub.writer == "bob"


async def test_break_and_reconnect_go_to_the_engine_for_writers_only() -> None:
    hub = Hub("web01")
    engine = Engine()
    ops = ConsoleActions(engine, hub.attach("ops", can_write=True), EscapeParser("~"))
    guest = ConsoleActions(engine, hub.attach("guest", can_write=False), EscapeParser("~"))

    assert await outcomes(guest, b"~B~D") == [
        Notice("read-only: your role cannot send BREAK"),
        Notice("read-only: your role cannot force a reconnect")]
    assert await outcomes(ops, b"~B~D") == [
        Notice("asked the BMC to drop SOL; reconnecting", refused=False)]
    assert engine.calls == [("break", "web01", "ops"), ("deactivate", "web01", "ops")]


async def test_detach_ends_the_keys_and_help_is_for_this_user() -> None:
    console = TypingConsole()
    typed = console.typed
    hub = Hub("web01", console=console)
    ops = ConsoleActions(Engine(), hub.attach("ops", can_write=True), EscapeParser("~"))
    [shown] = await outcomes(ops, b"~?")
    assert isinstance(shown, Help)
    assert "~." in shown.text
    assert await outcomes(ops, b"\r~.rm -rf /\r") == [Typed(), Leave()]
    assert typed == [b"\r"]  # nothing after ~. reached the console
