"""The console WebSocket: Origin check before upgrade, roles, escapes, lag and shutdown."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType
from web_fakes import StaticConsoles, login, make_app, start_client

from solgate.web.control import CloseCode
from solgate.web.keys import heartbeat_key, websockets_key
from solgate.web.ws import close_all
from tests.engine_helpers import wait_for


@pytest.fixture
def manager(tmp_path: Path) -> StaticConsoles:
    m = StaticConsoles(tmp_path)
    m.add("web01")
    m.add("db01")
    m.add("tiny", queue_bytes=1024)
    return m


@pytest.fixture
async def client(tmp_path: Path, manager: StaticConsoles):
    c = await start_client(make_app(tmp_path, manager))
    yield c
    await c.close()


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict:
    msg = await ws.receive(timeout=2)
    assert msg.type == WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def until_type(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict:
    """Skip control messages until one of `kind` (bounded by receive timeouts)."""
    for _ in range(20):
        message = await next_json(ws)
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind} message")


async def open_console(client, name: str = "web01") -> aiohttp.ClientWebSocketResponse:
    """Attach and read the greeting: hello, snapshot marker + screen, write-lock."""
    ws = await client.ws_connect(f"/ws/consoles/{name}")
    hello = await next_json(ws)
    assert hello["type"] == "hello"
    assert (await next_json(ws))["type"] == "snapshot"
    screen = await ws.receive(timeout=2)
    assert screen.type == WSMsgType.BINARY
    assert (await next_json(ws))["type"] == "write-lock"
    ws.hello = hello  # type: ignore[attr-defined]
    return ws


async def test_foreign_origin_is_403_before_upgrade(client, manager) -> None:
    await login(client, "alice")
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws/consoles/web01", headers={"Origin": "http://evil.example"})
    assert info.value.status == 403
    assert manager.get("web01").hub.viewers == 0
    # The page's own origin is fine.
    own = f"http://{client.host}:{client.port}"
    ws = await client.ws_connect("/ws/consoles/web01", headers={"Origin": own})
    assert (await next_json(ws))["type"] == "hello"
    await ws.close()


async def test_websocket_needs_a_login(client, manager) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws/consoles/web01")
    assert info.value.status == 401
    assert manager.get("web01").hub.viewers == 0


async def test_unknown_or_hidden_console_is_404_before_upgrade(client) -> None:
    await login(client, "rita")  # consoles = ["web*"]
    for name in ("nope", "db01"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(f"/ws/consoles/{name}")
        assert info.value.status == 404


async def test_newcomer_sees_current_screen_then_live_output(client, manager) -> None:
    hub = manager.get("web01").hub
    hub.publish(b"login: ")
    await login(client, "victor")
    ws = await client.ws_connect("/ws/consoles/web01")
    hello = await next_json(ws)
    assert hello == {
        "type": "hello",
        "console": "web01",
        "user": "victor",
        "state": "active",
        "state_detail": "",
        "can_write": False,
        "writer": None,
        "role": "viewer",
        "escape": "~",
    }
    assert await next_json(ws) == {"type": "snapshot"}
    screen = await ws.receive(timeout=2)
    assert b"login:" in screen.data
    assert await next_json(ws) == {"type": "write-lock", "holder": None}
    hub.publish(b"root\r\n")
    live = await ws.receive(timeout=2)
    assert live.data == b"root\r\n"
    await ws.close()


async def test_viewer_keystrokes_are_refused_and_never_reach_the_console(client, manager) -> None:
    console = manager.get("web01")
    await login(client, "victor")
    ws = await open_console(client)
    assert ws.hello["can_write"] is False
    await ws.send_bytes(b"reboot\r")
    error = await next_json(ws)
    assert error["type"] == "error"
    assert "read-only" in error["message"]
    await ws.send_str(json.dumps({"type": "take-write"}))
    assert "read-only" in (await next_json(ws))["message"]
    await ws.send_str(json.dumps({"type": "break"}))
    assert "read-only" in (await next_json(ws))["message"]
    assert console.inputs == []
    assert manager.actions == []
    assert console.hub.writer is None
    await ws.close()


async def test_read_only_mode_never_takes_the_lock_or_types(client, manager) -> None:
    console = manager.get("web01")
    await login(client, "oscar")  # an operator, who could type
    ws = await client.ws_connect("/ws/consoles/web01?mode=ro")
    hello = await next_json(ws)
    assert hello["can_write"] is False
    assert (await next_json(ws))["type"] == "snapshot"
    assert (await ws.receive(timeout=2)).type == WSMsgType.BINARY
    assert await next_json(ws) == {"type": "write-lock", "holder": None}
    await ws.send_bytes(b"reboot\r")
    assert "read-only" in (await until_type(ws, "error"))["message"]
    assert console.hub.writer is None
    assert console.inputs == []
    await ws.close()


async def test_operator_types_and_second_operator_must_take_the_lock(
    tmp_path, client, manager
) -> None:
    console = manager.get("web01")
    await login(client, "oscar")
    ws1 = await open_console(client)
    assert ws1.hello["can_write"] is True
    await ws1.send_bytes(b"uptime\r")
    await wait_for(lambda: console.inputs == [b"uptime\r"])

    other = await start_client(client.server.app)
    try:
        await login(other, "otto")
        ws2 = await open_console(other)
        assert ws2.hello["writer"] == "oscar"
        await ws2.send_bytes(b"ls\r")
        assert "take the write lock" in (await next_json(ws2))["message"]
        await ws2.send_str(json.dumps({"type": "take-write"}))
        assert await until_type(ws1, "write-lock") == {"type": "write-lock", "holder": "otto"}
        assert await until_type(ws2, "write-lock") == {"type": "write-lock", "holder": "otto"}
        await ws2.send_bytes(b"ls\r")
        await wait_for(lambda: console.inputs == [b"uptime\r", b"ls\r"])
        await ws1.send_bytes(b"x")
        assert "take the write lock" in (await next_json(ws1))["message"]
        assert console.inputs == [b"uptime\r", b"ls\r"]
        await ws2.close()
    finally:
        await other.close()
    await ws1.close()


async def test_escapes_are_parsed_on_the_server(client, manager) -> None:
    console = manager.get("web01")
    await login(client, "oscar")
    ws = await open_console(client)
    await ws.send_bytes(b"~B")
    await wait_for(lambda: manager.actions == [("break", "web01", "oscar")])
    await ws.send_bytes(b"~?")
    help_frame = await ws.receive(timeout=2)
    assert b"detach" in help_frame.data
    await ws.send_bytes(b"echo a~b\r~.ignored")
    msg = await ws.receive(timeout=2)
    assert msg.type == WSMsgType.CLOSE
    assert msg.data == CloseCode.DETACHED
    assert console.inputs == [b"echo a~b\r"]
    await wait_for(lambda: console.hub.viewers == 0)


async def test_sysrq_sends_break_then_the_key(client, manager) -> None:
    console = manager.get("web01")
    await login(client, "oscar")
    ws = await open_console(client)
    await ws.send_str(json.dumps({"type": "sysrq", "key": "t"}))
    await wait_for(lambda: console.inputs == [b"t"])
    assert manager.actions == [("break", "web01", "oscar")]
    await ws.send_str(json.dumps({"type": "sysrq", "key": "tt"}))
    assert "one letter" in (await next_json(ws))["message"]
    await ws.close()


async def test_resize_and_bad_control_messages(client, manager) -> None:
    await login(client, "oscar")
    ws = await open_console(client)
    await ws.send_str(json.dumps({"type": "resize", "cols": 132, "rows": 43}))
    await ws.send_str("not json")
    assert "JSON" in (await next_json(ws))["message"]
    await ws.send_str(json.dumps({"type": "dance"}))
    assert "unknown" in (await next_json(ws))["message"]
    attachment = manager.get("web01").hub.attachments[0]
    assert (attachment.cols, attachment.rows) == (132, 43)
    await ws.close()


async def test_closed_socket_ends_its_attachment(client, manager) -> None:
    hub = manager.get("web01").hub
    await login(client, "oscar")
    ws = await open_console(client)
    assert hub.viewers == 1
    assert hub.writer == "oscar"
    await ws.close()
    await wait_for(lambda: hub.viewers == 0)
    assert hub.writer is None
    assert len(client.server.app[websockets_key]) == 0


class RawViewer:
    """A WebSocket client on a plain socket that can stop reading, like a stalled browser."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, client, name: str) -> RawViewer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up soon
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (client.host, client.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws/consoles/{name} HTTP/1.1\r\nHost: {client.host}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Authorization: Bearer sgt_alice-token\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self) -> tuple[int, bytes]:
        """The next (opcode, payload); server frames are never masked."""
        head = await asyncio.wait_for(self.reader.readexactly(2), 2)
        assert head[0] & 0x70 == 0  # RSV bits: this client offered no compression
        n = head[1] & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2))
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8))
        return head[0] & 0x0F, await self.reader.readexactly(n)

    async def json(self) -> dict:
        opcode, payload = await self.frame()
        assert opcode == 1, (opcode, payload[:80])
        return json.loads(payload)

    def close(self) -> None:
        self.writer.close()


async def test_slow_client_is_told_it_lagged_and_gets_a_fresh_snapshot(client, manager) -> None:
    hub = manager.get("tiny").hub  # queue_bytes = 1024
    viewer = await RawViewer.open(client, "tiny")
    try:
        assert (await viewer.json())["type"] == "hello"
        assert (await viewer.json())["type"] == "snapshot"
        assert (await viewer.frame())[0] == 2
        assert (await viewer.json())["type"] == "write-lock"
        # The viewer stops reading; output keeps coming until its socket backs up and
        # its queue overflows (bounded: 64 MB would fill any loopback buffers).
        published = bytearray()
        for i in range(16384):
            chunk = b"x" * 4000 + b"\r\nline %05d\r\n" % i
            hub.publish(chunk)
            published += chunk
            if hub.lagged_total:
                break
            if i % 64 == 0:
                await asyncio.sleep(0)  # let the loop write, as it would between packets
        assert hub.lagged_total == 1
        assert hub.viewers == 1  # lagged, not dropped
        # It reads again: an in-order prefix of the output, then lagged and a repaint.
        received = bytearray()
        while (frame := await viewer.frame())[0] == 2:
            received += frame[1]
        assert frame[0] == 1
        lagged = json.loads(frame[1])
        assert lagged["type"] == "lagged"
        assert lagged["dropped"] > 0
        assert published.startswith(received)
        assert len(received) + lagged["dropped"] == len(published)
        assert await viewer.json() == {"type": "snapshot"}
        opcode, screen = await viewer.frame()
        assert opcode == 2
        assert b"line %05d" % i in screen  # the repaint shows the latest output
        hub.publish(b"after\r\n")
        assert await viewer.frame() == (2, b"after\r\n")
    finally:
        viewer.close()


async def test_many_browsers_get_identical_output_in_order(client, manager) -> None:
    hub = manager.get("web01").hub
    await login(client, "victor")
    sockets = [await open_console(client) for _ in range(20)]
    # Every writer task now waits in get(), so the hub writes their frames itself.
    await wait_for(lambda: len(hub._live) == 20)

    async def read_bytes(ws: aiohttp.ClientWebSocketResponse, n: int) -> bytes:
        got = b""
        while len(got) < n:
            msg = await ws.receive(timeout=2)
            assert msg.type == WSMsgType.BINARY, msg
            got += msg.data
        return got

    # Every length form of the frame header (7-bit, 16-bit, 64-bit), on connections
    # that negotiated compression (aiohttp's client offers it) and mixed with aiohttp's
    # own compressed frames.
    for size in (1, 125, 126, 200, 65535, 65536, 70000):
        chunk = bytes(range(32, 127)) * (size // 95) + b"z" * (size % 95)
        hub.publish(chunk)
        assert await asyncio.gather(*(read_bytes(ws, size) for ws in sockets)) == [chunk] * 20
    hub.publish(b"before\r\n")
    hub.set_state("backoff", "BMC unreachable")
    hub.publish(b"after\r\n")
    for ws in sockets:
        assert await read_bytes(ws, 8) == b"before\r\n"
        assert await next_json(ws) == {
            "type": "state",
            "state": "backoff",
            "detail": "",  # a viewer is not shown the BMC details
        }
        assert await read_bytes(ws, 7) == b"after\r\n"
    for ws in sockets:
        await ws.close()
    await wait_for(lambda: hub.viewers == 0)


async def test_state_changes_reach_the_browser(client, manager) -> None:
    hub = manager.get("web01").hub
    await login(client, "oscar")  # an operator: viewers get the state without its detail
    ws = await open_console(client)
    hub.set_state("backoff", "BMC 10.0.0.5:623 unreachable; retrying in 8 s")
    assert await until_type(ws, "state") == {
        "type": "state",
        "state": "backoff",
        "detail": "BMC 10.0.0.5:623 unreachable; retrying in 8 s",
    }
    await ws.close()


async def test_hub_close_closes_the_socket(client, manager) -> None:
    hub = manager.get("web01").hub
    await login(client, "victor")
    ws = await open_console(client)
    hub.close("console removed from the configuration")
    assert await until_type(ws, "closed") == {
        "type": "closed",
        "reason": "console removed from the configuration",
    }
    msg = await ws.receive(timeout=2)
    assert msg.type == WSMsgType.CLOSE
    assert msg.data == 4001


async def test_shutdown_closes_sockets_with_going_away(client, manager) -> None:
    await login(client, "victor")
    ws = await open_console(client)
    await close_all(client.server.app)
    msg = await ws.receive(timeout=2)
    assert msg.type == WSMsgType.CLOSE
    assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
    await wait_for(lambda: manager.get("web01").hub.viewers == 0)


async def test_bearer_token_client_can_attach_without_origin(client, manager) -> None:
    ws = await client.ws_connect(
        "/ws/consoles/web01", headers={"Authorization": "Bearer sgt_alice-token"}
    )
    hello = await next_json(ws)
    assert hello["user"] == "alice"
    assert hello["can_write"] is True
    await ws.close()


async def test_client_that_never_answers_pings_is_dropped_and_detached(tmp_path, manager) -> None:
    app = make_app(tmp_path, manager)
    app[heartbeat_key] = 0.2  # instead of 20 s
    client = await start_client(app)
    hub = manager.get("web01").hub
    try:
        # Answers pings (aiohttp's client does by itself while someone reads).
        alive = await client.ws_connect(
            "/ws/consoles/web01", headers={"Authorization": "Bearer sgt_alice-token"}
        )
        received: list[aiohttp.WSMessage] = []

        async def read_all() -> None:
            async for msg in alive:  # pongs are sent from here, as in a browser
                received.append(msg)

        reader = asyncio.create_task(read_all())
        silent = await RawViewer.open(client, "web01")  # never reads, never answers
        await wait_for(lambda: hub.viewers == 2)
        await wait_for(lambda: hub.viewers == 1, timeout=5)
        assert [a.user for a in hub.attachments] == ["alice"]
        assert len(client.server.app[websockets_key]) == 1
        assert not alive.closed
        hub.publish(b"still watching")
        await wait_for(lambda: any(m.data == b"still watching" for m in received))
        silent.close()
        await alive.close()
        await reader
        await wait_for(lambda: hub.viewers == 0)
    finally:
        await client.close()
