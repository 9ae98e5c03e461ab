"""`solgate console NAME`: this terminal attached to a console through the WebSocket API.

Theory of operation
-------------------
The client speaks the contract of docs/websocket-protocol.md with aiohttp: one
WebSocket, binary frames are console bytes both ways, text frames are JSON control
messages. The terminal goes into raw mode so every key reaches the console, and is
put back on every way out: `~.`, the server gone for good, an exception, SIGTERM or
SIGHUP (the handler restores the terminal at once, then the `finally` does it again,
which is harmless). A `snapshot` message is followed by a full repaint: the screen is
reset and the frame written, so a newcomer, a lagging viewer and a reconnect all see
the console as it is now and nothing twice.

Escapes are handled here, not on the server, so `~.` works even while the server is
unreachable and `--escape CHAR` needs nothing from the server: the local
`EscapeParser` turns `~B` into `{"type":"break"}`, `~w` into `take-write`, `~D` into
`POST /api/consoles/NAME/deactivate`, `~?` into local help. Keyboard data is then sent
with every server-escape character that the server's own parser would see at the
start of a line doubled (the server parses the escape it announced in `hello`), so
the server passes our bytes through unchanged. The keyboard is one reader callback
feeding one ordered queue drained by one sender task: keystrokes never reorder.

A connection that drops after it worked is retried a few times with a visible
message and growing delays (each retry starts with a fresh snapshot); then the client
gives up with a non-zero status. A refusal is final: 401 (token), 404 (no such console
or no access).

Used as an sshd `ForceCommand` or `authorized_keys command="solgate console"`,
`$SSH_ORIGINAL_COMMAND` (what the ssh user asked to run) names the console; a NAME
given on the command line wins and pins the key to that console.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import shlex
import signal
import stat
import sys
import termios
import tty
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from solgate.addresses import join_host_port
from solgate.console.escape import (
    Detach,
    EscapeParser,
    ForceReconnect,
    LineStart,
    SendBreak,
    SendData,
    ShowHelp,
    TakeWrite,
)
from solgate.console.notices import TERM_LEAVE, TERM_PREPARE, WriteLockNotices, state_notice
from solgate.errors import ConfigError, SolgateError
from solgate.web import control
from solgate.web.control import CloseCode

__all__ = [
    "ClientOptions",
    "ConsoleClient",
    "RawTerminal",
    "ServerEscaper",
    "console_from_ssh_command",
    "read_token",
    "resolve_server_url",
]

TOKEN_ENV = "SOLGATE_TOKEN"  # noqa: S105 - the name of a variable, not a secret
URL_ENV = "SOLGATE_URL"
SSH_COMMAND_ENV = "SSH_ORIGINAL_COMMAND"
DEFAULT_TOKEN_FILE = "~/.config/solgate/token"  # noqa: S105 - a path
DEFAULT_RETRIES = 5
RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 8.0
STABLE_AFTER = 10.0  # a connection that lived this long resets the retry count
CONNECT_TIMEOUT = 10.0



@dataclass(frozen=True)
class ClientOptions:
    """What `solgate console` was asked to do."""

    name: str
    server: str  # base http(s) URL of the solgate server
    token: str | None = None
    escape: str | None = None  # None: the server's escape character (else "~")
    no_escape: bool = False
    read_only: bool = False
    force: bool = False
    retries: int = DEFAULT_RETRIES

    @property
    def ws_url(self) -> str:
        return f"{self.server.rstrip('/')}/ws/consoles/{quote(self.name, safe='')}"

    @property
    def api_url(self) -> str:
        return f"{self.server.rstrip('/')}/api/consoles/{quote(self.name, safe='')}"


# --- where things come from -----------------------------------------------------------------


def resolve_server_url(explicit: str | None, environ: Mapping[str, str],
                       listen: tuple[str, int, bool] | None) -> str:
    """--server, then $SOLGATE_URL, then the configuration's `[server] listen`."""
    url = explicit or environ.get(URL_ENV)
    if url:
        url = url.strip()
        for ws, http in (("ws://", "http://"), ("wss://", "https://")):
            if url.startswith(ws):
                url = http + url[len(ws):]
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        return url
    if listen is None:
        raise ConfigError(f"no server to connect to: pass --server URL, set ${URL_ENV}, or "
                          "give a configuration with [server] listen (-c FILE)")
    host, port, tls = listen
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    return f"{'https' if tls else 'http'}://{join_host_port(host, port)}"


def read_token(token_file: str | None, environ: Mapping[str, str],
               warn: Any = None) -> str | None:
    """$SOLGATE_TOKEN, else the first line of the token file; None when there is neither."""
    token = environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    path = Path(os.path.expanduser(token_file or DEFAULT_TOKEN_FILE))
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if token_file:
            raise ConfigError(f"--token-file {path}: no such file") from None
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token file {path} ({exc}); check its "
                          "permissions") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and warn is not None:
        warn(f"warning: {path} is readable by other users; chmod 600 {path}")
    lines = text.strip().splitlines()
    return lines[0].strip() if lines and lines[0].strip() else None


def console_from_ssh_command(name: str | None, command: str | None) -> tuple[str, set[str]]:
    """The console (and the safe flags) an ssh user asked for in $SSH_ORIGINAL_COMMAND.

    Accepts `NAME`, `console NAME`, plus `--read-only`/`-r` and `--force`. A NAME fixed
    by the administrator on the command line cannot be overridden.
    """
    flags: set[str] = set()
    if not command or not command.strip():
        if name is None:
            raise ConfigError("which console? give NAME (or, behind ssh, run `ssh GATEWAY "
                              "NAME`)")
        return name, flags
    try:
        words = shlex.split(command)
    except ValueError:
        raise ConfigError(f"cannot parse the ssh command {command!r}; run `ssh GATEWAY "
                          "NAME`") from None
    if words[:1] == ["solgate"]:
        words = words[1:]
    if words[:1] == ["console"]:
        words = words[1:]
    asked: str | None = None
    for word in words:
        if word in ("--read-only", "-r"):
            flags.add("read_only")
        elif word == "--force":
            flags.add("force")
        elif word.startswith("-") or asked is not None:
            raise ConfigError(f"the ssh command {command!r} is not allowed here; run "
                              "`ssh GATEWAY NAME [--read-only] [--force]`")
        else:
            asked = word
    if name is not None and asked is not None and asked != name:
        raise ConfigError(f"this login is limited to console {name!r}, not {asked!r}")
    chosen = name or asked
    if chosen is None:
        raise ConfigError("which console? run `ssh GATEWAY NAME`")
    return chosen, flags


# --- the terminal ---------------------------------------------------------------------------


class RawTerminal:
    """A tty in raw mode, with the saved modes put back by `restore()` (idempotent)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.is_tty = os.isatty(fd)
        self._saved: list[Any] | None = None

    def enter(self) -> None:
        if self.is_tty and self._saved is None:
            self._saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSANOW)

    def restore(self) -> None:
        saved, self._saved = self._saved, None
        if saved is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)

    def size(self) -> tuple[int, int] | None:
        """(cols, rows), or None when this is not a terminal."""
        try:
            cols, rows = os.get_terminal_size(self.fd)
        except OSError:
            return None
        return (cols, rows) if cols > 0 and rows > 0 else None


class ServerEscaper:
    """Doubles each server-escape character the server's parser would see at a line start.

    The server's `EscapeParser` only ever sees our bytes, so this mirror of its
    line-start state is exact (the same `LineStart`, which passes over the terminal's
    replies); after `~~` the server sends one `~` and is mid-line.
    """

    def __init__(self, escape_char: str | None) -> None:
        self.esc = escape_char.encode()[0] if escape_char else -1
        self._line = LineStart()

    @property
    def at_line_start(self) -> bool:
        return self._line.at_line_start

    def escape(self, data: bytes) -> bytes:
        if self.esc < 0 or not data:
            return data
        line = self._line
        if self.esc not in data:
            line.feed(data)
            return data
        out = bytearray()
        for byte in data:
            if byte == self.esc and line.at_line_start:
                out += bytes((byte, byte))
                line.set(False)
                continue
            out.append(byte)
            line.feed_byte(byte)
        return bytes(out)


class _Lost(Exception):
    """The connection went away after it had worked: worth a retry."""


class ConsoleClient:
    """One `solgate console` run: the terminal, the connection, the retries."""

    def __init__(self, options: ClientOptions, *, stdin_fd: int = 0, stdout_fd: int = 1,
                 stderr: Any = None) -> None:
        self.options = options
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.stderr = stderr if stderr is not None else sys.stderr
        self.terminal = RawTerminal(stdin_fd)
        self.parser: EscapeParser | None = None
        self._escape_fixed = options.escape is not None or options.no_escape
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._http: aiohttp.ClientSession | None = None
        self._outq: asyncio.Queue[bytes | control.ControlMessage] = asyncio.Queue()
        self._done: asyncio.Future[int] | None = None
        self._server_escape = ServerEscaper(None)
        self._expect_snapshot = False
        self._greeted = False  # the first snapshot of this run was shown
        self._can_write = False
        self._revoked = False  # the server said our access was revoked
        self._lock = WriteLockNotices(options.name, "", None, read_only=options.read_only)
        self._state = "active"
        self._last_note = ""
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- output --------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Write everything to the terminal; a vanished terminal ends the run."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.stdout_fd, view)
            except BlockingIOError:
                select.select([], [self.stdout_fd], [], 1.0)
                continue
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EPIPE, errno.EBADF):
                    self._finish(1)
                    return
                raise
            view = view[n:]

    def note(self, text: str) -> None:
        """A line of ours, set apart from console output; repeats are not shown twice."""
        if text == self._last_note:
            return
        self._last_note = text
        self._write(f"\r\n[solgate: {text}]\r\n".encode())

    def _finish(self, status: int) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(status)

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> int:
        """Attach until `~.` (0), a signal (128+n), or the server is gone for good (raises)."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        if not self._escape_fixed:
            self.parser = EscapeParser("~")
        else:
            self.parser = EscapeParser(None if self.options.no_escape else self.options.escape)
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(sig, self._on_signal, sig)
            installed.append(sig)
        if self.terminal.is_tty:
            loop.add_signal_handler(signal.SIGWINCH, self._on_winch)
            installed.append(signal.SIGWINCH)
        reading = False
        try:
            self.terminal.enter()
            try:
                loop.add_reader(self.stdin_fd, self._on_keyboard)
                reading = True
            except (PermissionError, ValueError, OSError):
                pass  # stdin is a regular file or /dev/null: watch only, until a signal
            return await self._session()
        finally:
            if reading:
                loop.remove_reader(self.stdin_fd)
            for sig in installed:
                loop.remove_signal_handler(sig)
            for task in list(self._tasks):
                task.cancel()
            if self._greeted and self.terminal.is_tty:
                with contextlib.suppress(OSError):
                    os.write(self.stdout_fd, TERM_LEAVE)
            self.terminal.restore()

    def _on_signal(self, sig: int) -> None:
        # Put the terminal back now, whatever the loop does next.
        self.terminal.restore()
        self._finish(128 + sig)

    def _on_winch(self) -> None:
        size = self.terminal.size()
        if size is not None and self._ws is not None:
            self._outq.put_nowait(control.Resize(size[0], size[1]))

    async def _session(self) -> int:
        assert self._done is not None
        headers = {}
        if self.options.token:
            headers["Authorization"] = f"Bearer {self.options.token}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
            self._http = http
            failures = 0
            delay = RETRY_FIRST_DELAY
            connected_once = False
            while True:
                loop = asyncio.get_running_loop()
                started = loop.time()
                attempt = asyncio.ensure_future(self._attach_once(connected_once))
                await asyncio.wait({attempt, self._done}, return_when=asyncio.FIRST_COMPLETED)
                if self._done.done():
                    attempt.cancel()
                    with contextlib.suppress(asyncio.CancelledError, _Lost, SolgateError):
                        await attempt
                    await self._close_ws()
                    if self._done.result() == 0:
                        self.note(f"left {self.options.name}")
                    return self._done.result()
                try:
                    return attempt.result()
                except _Lost as lost:
                    connected_once = True
                    if loop.time() - started > STABLE_AFTER:
                        failures, delay = 0, RETRY_FIRST_DELAY
                    failures += 1
                    if failures > self.options.retries:
                        self.note(f"connection lost ({lost}); giving up")
                        raise SolgateError(
                            f"lost the connection to {self.options.server} ({lost}) and "
                            f"{self.options.retries} reconnect attempts failed; is solgate "
                            "serve running?") from None
                    self.note(f"connection lost ({lost}); reconnecting in {delay:g} s "
                              f"(attempt {failures} of {self.options.retries}; "
                              f"{self._escape_hint()}. quits)")
                    sleeper: asyncio.Future[Any] = asyncio.ensure_future(asyncio.sleep(delay))
                    await asyncio.wait({sleeper, self._done},
                                       return_when=asyncio.FIRST_COMPLETED)
                    sleeper.cancel()
                    delay = min(delay * 2, RETRY_MAX_DELAY)

    def _escape_hint(self) -> str:
        return self.parser.escape_char if self.parser and self.parser.escape_char else "~"

    async def _close_ws(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)

    async def _attach_once(self, retrying: bool, redirects: int = 3) -> int:
        """One WebSocket connection; returns an exit status or raises `_Lost`. A cluster
        member that does not run the console redirects to the one that does."""
        assert self._http is not None
        size = self.terminal.size() or (80, 25)
        url = f"{self.options.ws_url}?cols={size[0]}&rows={size[1]}"
        if self.options.read_only:
            url += "&mode=ro"  # never take the write lock, not even a free one
        try:
            ws = await self._http.ws_connect(url, heartbeat=30.0, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            moved = self._moved(exc)
            if moved is not None and redirects > 0:
                self.note(f"{self.options.name} is served by {moved}")
                self.options = replace(self.options, server=moved)
                return await self._attach_once(retrying, redirects - 1)
            raise self._refused(exc.status) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if retrying:
                raise _Lost(_describe(exc)) from None
            raise SolgateError(f"cannot reach the solgate server at {self.options.server} "
                               f"({_describe(exc)}); is solgate serve running? (set "
                               f"--server or ${URL_ENV})") from None
        self._ws = ws
        self._server_escape = ServerEscaper(None)
        self._outq = asyncio.Queue()
        sender = asyncio.ensure_future(self._sender(ws))
        try:
            return await self._receive(ws, retrying)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            if self._ws is ws:
                self._ws = None
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 2.0)

    def _moved(self, exc: aiohttp.WSServerHandshakeError) -> str | None:
        """The owner's base URL when a cluster member redirected the WebSocket (307)."""
        location = exc.headers.get("Location", "") if exc.headers else ""
        suffix = self.options.ws_url[len(self.options.server.rstrip("/")):]
        if exc.status not in (307, 308) or suffix not in location:
            return None
        base = location[:location.index(suffix)]
        return base if base.startswith(("http://", "https://")) else None

    def _refused(self, status: int) -> SolgateError | _Lost:
        if status == 401:
            return SolgateError(
                f"the server refused the token (HTTP 401); set ${TOKEN_ENV} or put a valid "
                f"token in {DEFAULT_TOKEN_FILE} (make one with `solgate token`)")
        if status == 404:
            return SolgateError(f"no console {self.options.name!r} or no access to it "
                                "(HTTP 404); check the name on the console list")
        if status == 403:
            return SolgateError("the server refused the connection (HTTP 403); check --server")
        return _Lost(f"HTTP {status}")

    async def _sender(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The only code that writes to the socket, so keystrokes keep their order."""
        while True:
            item = await self._outq.get()
            if isinstance(item, bytes):
                await ws.send_bytes(item)
            else:
                await ws.send_str(control.encode(item))

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse, retrying: bool) -> int:
        closed_reason = ""
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self._on_console(msg.data, retrying)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                message = control.parse_server(msg.data)
                if message is not None:
                    closed_reason = self._on_control(message) or closed_reason
            else:
                break
        if ws.close_code == CloseCode.DETACHED:
            return 0
        if ws.close_code == CloseCode.IDLE:
            self.note(f"detached: {closed_reason or 'idle without input'}")
            return 0
        if ws.close_code == CloseCode.REVOKED or self._revoked:  # reconnecting would be refused
            raise SolgateError(f"the server ended this console: access revoked "
                               f"({closed_reason or 'logged out'})")
        if ws.close_code == aiohttp.WSCloseCode.GOING_AWAY:
            raise _Lost("the server is shutting down")
        raise _Lost(closed_reason or f"closed with code {ws.close_code}")

    def _on_console(self, data: bytes, retrying: bool) -> None:
        if not self._expect_snapshot:
            self._write(data)
            return
        self._expect_snapshot = False
        self._write(TERM_PREPARE + data)
        if not self._greeted:
            self._greeted = True
            self._banner()
        elif retrying:
            self.note(f"reconnected to {self.options.name}")

    def _banner(self) -> None:
        self.note(self._lock.banner(self._can_write))

    def _on_control(self, message: control.ServerMessage) -> str | None:
        match message:
            case control.Hello(user=user, can_write=can_write, writer=writer, escape=escape):
                self._can_write = can_write
                self._server_escape = ServerEscaper(escape)
                if not self._escape_fixed:
                    self._escape_fixed = True
                    if escape is not None and escape != "~":
                        self.parser = EscapeParser(escape)
                self._lock = WriteLockNotices(self.options.name, user, self._escape_hint(),
                                              read_only=self.options.read_only)
                self._lock.holder = writer
                if self.options.force and can_write and not self.options.read_only:
                    self._outq.put_nowait(control.TakeWrite())
                self._on_winch()
            case control.SnapshotFollows():
                self._expect_snapshot = True
            case control.WriteLock(holder=holder):
                line = self._lock.moved(holder, self._can_write)
                if self._greeted and line is not None:
                    self.note(line)
            case control.State(state=state, detail=detail):
                if state != self._state and self._greeted:
                    self.note(state_notice(self.options.name, state, detail))
                self._state = state
            case control.Access(can_write=can_write, reason=reason):  # a reload took it away
                self._can_write = can_write
                self.note(f"read-only now: {reason or 'access changed'}")
            case control.Error(message=text):
                self.note(text or "the server refused a request")
            case control.Closed(reason=reason, revoked=revoked):
                self._revoked = revoked
                return reason or "closed by the server"
        return None

    # -- the keyboard --------------------------------------------------------------------

    def _on_keyboard(self) -> None:
        try:
            data = os.read(self.stdin_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # end of input (a pipe, or the terminal went away): leave
            asyncio.get_running_loop().remove_reader(self.stdin_fd)
            self._finish(0)
            return
        assert self.parser is not None
        for action in self.parser.feed(data):
            match action:
                case SendData(data=payload):
                    self._send_data(payload)
                case Detach():
                    self._finish(0)
                    return
                case SendBreak():
                    self._control(control.Break(), "send a BREAK")
                case TakeWrite():
                    self._control(control.TakeWrite(), "take the write lock")
                case ForceReconnect():
                    if self._allowed("force a reconnect"):
                        self._spawn(self._deactivate())
                case ShowHelp():
                    self._write(self.parser.help_text.encode())

    def _allowed(self, what: str) -> bool:
        if self.options.read_only:
            self.note(f"read-only (--read-only): cannot {what}")
            return False
        return True

    def _send_data(self, data: bytes) -> None:
        if self.options.read_only:
            self.note(f"read-only (--read-only): input is not sent; {self._escape_hint()}. "
                      "leaves")
            return
        if self._ws is None:
            self.note("not connected: input dropped")
            return
        self._outq.put_nowait(self._server_escape.escape(data))

    def _control(self, message: control.ControlMessage, what: str) -> None:
        if not self._allowed(what):
            return
        if self._ws is None:
            self.note(f"not connected: cannot {what}")
            return
        self._outq.put_nowait(message)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deactivate(self) -> None:
        assert self._http is not None
        try:
            async with self._http.post(f"{self.options.api_url}/deactivate") as resp:
                if resp.status == 200:
                    self.note("asked the BMC to drop SOL; reconnecting")
                    return
                try:
                    detail = (await resp.json()).get("error", "")
                except (ValueError, aiohttp.ContentTypeError):
                    detail = ""
                self.note(f"forced reconnect refused (HTTP {resp.status}) {detail}".strip())
        except (aiohttp.ClientError, OSError) as exc:
            self.note(f"forced reconnect failed: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) or not text:
        return type(exc).__name__.replace("Error", " error").strip() or "timeout"
    return text
