"""The console WebSocket: `/ws/consoles/{name}` (protocol in docs/websocket-protocol.md).

Theory of operation
-------------------
Checks happen before the upgrade, in this order: `Origin` (403), identity (401),
the console exists and the user may see it (404, so names are not revealed).  Only
then is the response prepared.

Each socket gets one hub `Attachment`, which is its bounded queue, and one writer
task that awaits `attachment.get()` and sends: console bytes as binary frames,
control items as JSON text frames.  The hub only ever appends to the queue, so a
slow browser costs the hub nothing; when the queue overflows the hub hands the
writer a `Lagged` and then a fresh `Snapshot`, and the browser repaints.

While the writer task waits with nothing queued, the hub writes console bytes
itself through the socket's `_DirectSink` (see "Direct output" in console/hub.py):
one binary frame per flush, built once and written to every caught-up socket's
transport, so a console watched by a thousand browsers costs one `transport.write`
per browser per flush, not a task wake-up, a lock and a `send_bytes` per chunk.  The
frame is plain RFC 6455 framing (a server never masks) and uncompressed, which
RFC 7692 allows on a connection that negotiated permessage-deflate; frames are whole
`transport.write` calls, and aiohttp writes its own frames the same way, so the two
never interleave inside a frame.  A socket whose transport holds more than
`DIRECT_BUFFER_LIMIT` unsent bytes, or that is closing, refuses the write and goes
back to its queue, where aiohttp's flow control and the hub's slow-viewer policy
(lagged, resync, "too slow") apply.

The reader loop (this handler) feeds binary frames through the server-side
`EscapeParser`, so `~.` and `~B` behave the same in every front end.  Data from a
user without write permission, or without the write lock, never reaches the
console: the user gets an error message instead.  Whether the user may write is asked
of the attachment at every action: a logout or a reload re-checks live sockets
(solgate.web.revoke) and may make one read-only (an `access` message) or end it (close
code 4003).

Whichever side ends first ends the other: the reader loop ends on a close frame or
an error, then cancels the writer; the writer ends on `Closed` or a send failure and
closes the socket, which ends the reader.  The attachment is detached in `finally`,
at once, so a vanished tab never lingers as a viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, web

from solgate.console.actions import ConsoleActions, Help, Leave, Notice, Typed
from solgate.console.attachment import (
    AccessChanged,
    Attachment,
    Closed,
    Lagged,
    Snapshot,
    StateChanged,
    WriteLockChanged,
)
from solgate.console.escape import EscapeParser
from solgate.web import control
from solgate.web.control import MAX_COLS, MAX_ROWS, MIN_COLS, MIN_ROWS, CloseCode
from solgate.web.keys import (
    auth_key,
    config_key,
    heartbeat_key,
    manager_key,
    websockets_key,
)
from solgate.web.middleware import identity, origin_allowed
from solgate.web.revoke import check_new, grant_for

if TYPE_CHECKING:
    from solgate.web.middleware import Identity
    from solgate.web.model import ConsoleView

log = logging.getLogger(__name__)

HEARTBEAT = 20.0  # seconds between pings; under the 30-60 s idle cut of most proxies
MAX_MESSAGE = 64 * 1024  # a paste larger than this is refused by aiohttp
# Unsent bytes a transport may hold and still take direct writes: asyncio's default
# high-water mark, above which aiohttp would wait for the socket to drain.
DIRECT_BUFFER_LIMIT = 64 * 1024
_BINARY_FIN = 0x82  # FIN + opcode 2 (binary), RSV bits clear: not compressed


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    try:
        return min(hi, max(lo, int(request.query.get(name, default))))
    except ValueError:
        return default


def _escape_char(request: web.Request, name: str) -> str | None:
    console_cfg = request.app[config_key].consoles.get(name)
    return console_cfg.escape if console_cfg is not None else "~"


def binary_frame(data: bytes) -> bytes:
    """`data` as one final, unmasked, uncompressed binary frame (RFC 6455 section 5.2)."""
    n = len(data)
    if n < 126:
        return bytes((_BINARY_FIN, n)) + data
    if n < 65536:
        return struct.pack("!BBH", _BINARY_FIN, 126, n) + data
    return struct.pack("!BBQ", _BINARY_FIN, 127, n) + data


class _FrameCache:
    """The frame of the last chunk: the hub hands every sink the same object per flush."""

    __slots__ = ("data", "frame")

    def __init__(self) -> None:
        self.data = b""
        self.frame = binary_frame(b"")

    def frame_of(self, data: bytes) -> bytes:
        if data is not self.data:
            self.data, self.frame = data, binary_frame(data)
        return self.frame


_frames = _FrameCache()


class _DirectSink:
    """The hub's synchronous output path to one socket (an `OutputSink`)."""

    __slots__ = ("ws", "transport")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self.ws = ws
        self.transport = transport

    def ready(self) -> bool:
        transport = self.transport
        return (
            not self.ws.closed
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= DIRECT_BUFFER_LIMIT
        )

    def write(self, data: bytes) -> bool:
        if not self.ready():
            return False
        try:
            self.transport.write(_frames.frame_of(data))
        except Exception:  # the transport broke under us: let the writer task find out
            log.debug("direct write failed", exc_info=True)
            return False
        return True


class _Socket:
    """One browser's connection to one console: the sender side, serialised."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._lock = asyncio.Lock()

    async def send(self, message: control.ServerMessage) -> None:
        async with self._lock:
            await self.ws.send_str(control.encode(message))

    async def data(self, data: bytes) -> None:
        async with self._lock:
            await self.ws.send_bytes(data)

    async def snapshot(self, data: bytes) -> None:
        async with self._lock:  # the marker and its frame must be adjacent
            await self.ws.send_str(control.encode(control.SnapshotFollows()))
            await self.ws.send_bytes(data)

    async def error(self, message: str) -> None:
        await self.send(control.Error(message))


async def console_ws(request: web.Request) -> web.StreamResponse:
    """Attach a browser (or `solgate console`) to one console."""
    if not origin_allowed(request):
        log.warning(
            "refused WebSocket from origin %r for %s", request.headers.get("Origin"), request.path
        )
        raise web.HTTPForbidden(text="WebSocket origin not allowed")
    ident = identity(request)
    if ident is None:
        raise web.HTTPUnauthorized(text="log in first")
    name = request.match_info["name"]
    manager = request.app[manager_key]
    console = manager.get(name)
    if console is None or not ident.user.can_view(console.name, console.tags):
        raise web.HTTPNotFound(text=f"no console named {name!r}")

    heartbeat = request.app.get(heartbeat_key, HEARTBEAT)
    ws = web.WebSocketResponse(heartbeat=heartbeat, max_msg_size=MAX_MESSAGE)
    await ws.prepare(request)
    sockets = request.app[websockets_key]
    sockets.add(ws)
    try:
        await _ConsoleSocket(request, ws, ident, console).run()
    finally:
        sockets.discard(ws)
        if not ws.closed:
            await ws.close()
    return ws


class _ConsoleSocket:
    """One browser attached to one console: the reader loop, the writer task, the actions."""

    def __init__(
        self, request: web.Request, ws: web.WebSocketResponse, ident: Identity,
        console: ConsoleView
    ) -> None:
        self.manager = request.app[manager_key]
        self.sock = _Socket(ws)
        self.user = user = ident.user
        self.name = console.name
        self.console = console
        self.hub = console.hub
        self.transport = request.transport
        # `?mode=ro` asks for a watch-only attachment, even for a user who may type.
        read_only = request.query.get("mode") == "ro"
        self.parser = EscapeParser(_escape_char(request, console.name))
        self.attachment = self.hub.attach(
            user.name,
            can_write=user.can_write(console.name, console.tags) and not read_only,
            cols=_int_param(request, "cols", 80, MIN_COLS, MAX_COLS),
            rows=_int_param(request, "rows", 25, MIN_ROWS, MAX_ROWS),
            via=_web_via(request),
            grant=grant_for(request, ident),
            details=user.sees_bmc_details,
        )
        check_new(request, self.attachment, console)
        self.actions = ConsoleActions(self.manager, self.attachment, self.parser)

    async def run(self) -> None:
        ws = self.sock.ws
        writer: asyncio.Task[None] | None = None
        try:
            await self.sock.send(control.Hello(
                console=self.name,
                user=self.user.name,
                state=self.console.state,
                # The hub leaves the detail out of state messages for a user who may
                # not see it, and stops sending it when a reload takes that right.
                state_detail=self.console.state_detail if self.attachment.details else "",
                can_write=self.attachment.can_write,
                writer=self.hub.writer,
                role=self.user.role.name.lower(),
                escape=self.parser.escape_char,
            ))
            # Started after hello, so hello is always the first message; the hub writes
            # directly only while that task waits in get(), so after hello too.
            if self.transport is not None:
                self.attachment.set_sink(_DirectSink(ws, self.transport))
            writer = asyncio.create_task(
                _pump(self.sock, self.attachment),
                name=f"ws-writer-{self.name}"
            )
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    if not await self.keyboard(msg.data):
                        break
                elif msg.type == WSMsgType.TEXT:
                    await self.control(msg.data)
                else:  # ERROR; CLOSE and friends end the iteration by themselves
                    break
        except ConnectionResetError:
            pass
        finally:
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            self.attachment.detach()

    async def keyboard(self, data: bytes) -> bool:
        """Handle keyboard bytes; returns False when the user asked to leave."""
        async for outcome in self.actions.keyboard(data):
            match outcome:
                case Leave():
                    await self.sock.ws.close(code=CloseCode.DETACHED, message=b"detached")
                    return False
                case Help(text=text):
                    await self.sock.data(text.encode())
                case Notice(text=text, refused=True):
                    await self.sock.error(text)
                case Notice() | Typed():
                    pass  # the browser sees the console's answer, or the lock move
        return True

    async def control(self, text: str) -> None:
        """One text frame; a malformed one gets an `error` and the socket stays open."""
        try:
            message = control.parse_control(text)
        except control.ControlError as exc:
            await self.sock.error(str(exc))
            return
        notice: Notice | None = None
        match message:
            case control.Resize(cols=cols, rows=rows):
                self.attachment.resize(cols, rows)
            case control.TakeWrite():
                notice = self.actions.take_write()
            case control.Break():
                notice = await self.actions.send_break()
            case control.SysRq(key=key):
                notice = await self.actions.sysrq(key)
            case control.Ping():
                await self.sock.send(control.Pong())
        if notice is not None:
            await self.sock.error(notice.text)


async def _pump(sock: _Socket, attachment: Attachment) -> None:
    """The writer task: the only code that moves hub output to this socket."""
    ws = sock.ws
    try:
        while not ws.closed:
            item = await attachment.get()
            match item:
                case bytes() | bytearray() | memoryview():
                    await sock.data(bytes(item))
                case Snapshot(data=data):
                    await sock.snapshot(data)
                case Lagged(dropped_bytes=dropped):
                    await sock.send(control.Lagged(dropped))
                case WriteLockChanged(holder=holder):
                    await sock.send(control.WriteLock(holder))
                case StateChanged(state=state, detail=detail):
                    await sock.send(control.State(state, detail))
                case AccessChanged(can_write=can_write, reason=reason):
                    await sock.send(control.Access(can_write, reason))
                case Closed(reason=reason, idle=idle, revoked=revoked):
                    closed = control.Closed(reason, idle=idle, revoked=revoked and not idle)
                    with contextlib.suppress(ConnectionResetError):
                        await sock.send(closed)
                    await ws.close(code=closed.code, message=reason.encode()[:120])
                    return
                case _:
                    log.debug("ignoring unknown hub item %r", type(item).__name__)
    except (ConnectionResetError, RuntimeError):
        # The browser went away mid-send; closing ends the reader loop too.
        await ws.close()


async def close_all(app: web.Application) -> None:
    """on_shutdown: tell every browser the server is going away."""
    sockets = app[websockets_key]
    for ws in set(sockets):  # a copy: closing removes it from the WeakSet
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


# Set only by the cluster's peer route (member secret checked): how the user reached the
# member that proxies them, e.g. "over ssh from 192.0.2.7:50122 through member gw1".
ATTACH_VIA = web.RequestKey("attach_via", str)


def _web_via(request: web.Request) -> str:
    """How an attachment came, for the console log: the peer, or the proxy it came through."""
    proxied = request.get(ATTACH_VIA)
    if isinstance(proxied, str) and proxied:
        return proxied
    remote = request.remote or "an unknown address"
    proxy = request.app[auth_key].proxy
    if proxy is not None and proxy.trusts(request.remote):
        return f"over the web through the proxy at {remote}"
    return f"over the web from {remote}"
