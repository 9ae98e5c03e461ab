"""`[server] client_idle_timeout`: a client that has not typed for that long is detached.

The BMC session and the log carry on; only the forgotten terminal goes. The front ends
say why and do not reattach by themselves (a reconnect would defeat the timeout).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiohttp
import pytest

from solgate.config import parse_config
from solgate.console.attachment import Closed
from solgate.console.hub import Hub
from solgate.errors import ConfigError
from tests.engine_helpers import wait_for
from tests.hub_helpers import TypingConsole
from tests.terminal_helpers import console_on_pty, live_server

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def drain(attachment) -> list:
    """Queued items up to and including Closed (a closed attachment repeats it)."""
    items = []
    for _ in range(100):
        item = attachment.get_nowait()
        if item is None:
            break
        items.append(item)
        if isinstance(item, Closed):
            break
    return items


def test_only_clients_without_input_for_the_timeout_are_detached() -> None:
    clock = FakeClock()
    console = TypingConsole()
    hub = Hub("web01", clock=clock, console=console)
    events = console.told
    writer = hub.attach("alice", can_write=True)
    typist = hub.attach("bob", can_write=False)
    watcher = hub.attach("carol", can_write=False)
    clock.now += 1700
    assert typist.send(b"x") is False  # refused (no lock), yet someone is at the keyboard
    clock.now += 100
    assert hub.expire_idle(1800) == 2
    assert writer.closed
    assert watcher.closed
    assert not typist.closed
    closed = [i for i in drain(writer) if isinstance(i, Closed)]
    assert closed == [Closed("idle for 30m without input; attach again to continue", idle=True)]
    assert hub.writer is None  # the lock is free for whoever comes next
    assert ("detach", "alice", "alice detached (idle for 30m)") in events
    # Typing and taking the lock both count as activity.
    clock.now += 1000
    assert typist.take_write() is False  # bob may not write; it still counts
    clock.now += 1000
    assert hub.expire_idle(1800) == 0


def test_config_reads_the_timeout_and_defaults_to_never() -> None:
    assert parse_config("", "t").server.client_idle_timeout == 0
    server = parse_config('[server]\nclient_idle_timeout = "30m"\n', "t").server
    assert server.client_idle_timeout == 1800
    with pytest.raises(ConfigError, match="client_idle_timeout"):
        parse_config('[server]\nclient_idle_timeout = "soon"\n', "t")


def set_idle_timeout(server, seconds: float) -> None:
    """As a reload would: the manager's tick reads the current configuration."""
    config = server.manager.config
    server.manager.config = dataclasses.replace(
        config, server=dataclasses.replace(config.server, client_idle_timeout=seconds))


async def test_the_terminal_client_says_why_and_does_not_reattach(tmp_path: Path) -> None:
    async with live_server(tmp_path) as server:
        set_idle_timeout(server, 2.0)
        worker = server.manager.get(server.names[0])
        with console_on_pty(tmp_path, server) as child:
            await child.expect(b"~. leaves")
            await child.expect(b"[solgate: detached: idle for 2s without input", timeout=15)
            assert await child.wait() == 0
            assert child.modes() == child.modes_before
        assert worker.hub.viewers == 0
        assert worker.state == "active"  # the BMC session carries on
        log = (Path(server.config.data_dir) / "logs" / f"{server.names[0]}.log").read_bytes()
        assert b"detached (idle for 2s)" in log


async def test_the_web_socket_closes_with_the_idle_code(tmp_path: Path) -> None:
    async with live_server(tmp_path) as server:
        set_idle_timeout(server, 2.0)
        name = server.names[0]
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"{server.url}/ws/consoles/{name}") as ws:
            controls = []
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    controls.append(msg.json())
            assert ws.close_code == 4002
            assert {"type": "closed", "idle": True,
                    "reason": "idle for 2s without input; attach again to continue"} in controls
        await wait_for(lambda: server.manager.get(name).hub.viewers == 0, 5, "the detach")
