"""What one client may cost the web server: connections, time, threads, log lines.

Theory of operation
-------------------
Every limit here keeps a greedy or broken client from taking what other users need:

* **Connections.** `ConnectionGuard` wraps aiohttp's protocol factory: a connection
  over `max_connections` in all, or over `max_connections_per_address` from one client
  address, is answered `503` and closed before aiohttp sees it.  Trusted proxies carry
  many users, so they count towards the total only.
* **Time.** A connection must send a complete request head within `request_timeout`
  of connecting or of its previous response (aiohttp's keep-alive timer, which 3.10+
  also runs before the first request and which partial data does not restart), and a
  request body within `request_timeout` (`body_timeout_middleware`), so slow-sending
  clients cannot hold connections for ever.
* **Threads.** Password hashing and log reading each get their own small executor
  (`executors`), so twelve log searches cannot delay a login; `UserSlots` lets one
  user run at most `LOG_READS_PER_USER` log reads at once (more get 429).
* **Log lines.** When accept() fails (EMFILE: out of file descriptors) asyncio logs a
  traceback per attempt; `AcceptErrorFilter` turns that into one line per
  `ACCEPT_LOG_INTERVAL` with a count, so stderr cannot fill the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web

from solgate.web.keys import log_executor_key, log_slots_key
from solgate.web.quota import LOG_READS_PER_USER, Network, UserSlots, in_networks

__all__ = [
    "LOG_READS_PER_USER",
    "AcceptErrorFilter",
    "ConnectionGuard",
    "GuardedSite",
    "UserSlots",
    "body_timeout_middleware",
    "connection_guard",
    "executors",
    "in_networks",
    "install_accept_error_filter",
    "run_log_read",
]

log = logging.getLogger(__name__)

LOGIN_THREADS = 2  # scrypt ~25 ms: two threads check 80 passwords a second
LOG_READ_THREADS = 4
ACCEPT_LOG_INTERVAL = 10.0
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
         b"Connection: close\r\nContent-Length: 36\r\n\r\n"
         b"too many connections; retry shortly\n")
_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

T = TypeVar("T")


def executors() -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
    """(password hashing, log reading): separate, so neither can starve the other."""
    return (ThreadPoolExecutor(LOGIN_THREADS, thread_name_prefix="solgate-login"),
            ThreadPoolExecutor(LOG_READ_THREADS, thread_name_prefix="solgate-logread"))


async def run_log_read(request: web.Request, user: str, job: Callable[[], T]) -> T:
    """Run a blocking log or events read for `user` in the log threads (429 when busy)."""
    async with request.app[log_slots_key].hold(user, json=request.path.startswith("/api/")):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(request.app[log_executor_key], job)


class _Refused(asyncio.Protocol):
    """Says 503 and closes: the connection never reaches aiohttp."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)  # noqa: S101 - a stream transport
        with contextlib.suppress(Exception):
            transport.write(_BUSY)
        transport.close()


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, releasing its slot when it ends."""

    def __init__(self, guard: ConnectionGuard, inner: Any, address: str) -> None:
        self._guard = guard
        self._inner = inner
        self._address = address
        self._open = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._open:
            self._open = False
            self._guard.release(self._address)
        self._inner.connection_lost(exc)


class ConnectionGuard:
    """Counts open connections per client address and in all (see the module docstring)."""

    def __init__(self, *, total: int, per_address: int,
                 exempt: Iterable[Network] = ()) -> None:
        self.total = total
        self.per_address = per_address
        self.exempt = tuple(exempt)
        self.open = 0
        self.refused = 0
        self._per: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        if self.open >= self.total:
            return False
        if not in_networks(address, self.exempt):
            if self._per.get(address, 0) >= self.per_address:
                return False
            self._per[address] = self._per.get(address, 0) + 1
        self.open += 1
        return True

    def release(self, address: str) -> None:
        self.open -= 1
        if address in self._per:
            self._per[address] -= 1
            if not self._per[address]:
                del self._per[address]

    def wrap(self, factory: Callable[[], Any]) -> Callable[[], asyncio.BaseProtocol]:
        """A protocol factory for `loop.create_server` that enforces the limits."""
        guard = self

        class _Gate(asyncio.Protocol):
            """Decides at connection_made, then becomes the counted or the refused one."""

            def __init__(self) -> None:
                self._target: asyncio.Protocol = _Refused()

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                peer = transport.get_extra_info("peername")
                address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
                if guard.admit(address):
                    self._target = _Counted(guard, factory(), address)
                else:
                    guard.refused += 1
                    if guard.refused in (1, 10, 100) or guard.refused % 1000 == 0:
                        log.warning("refused %d web connections so far: too many from %s "
                                    "or in all ([server] max_connections, "
                                    "max_connections_per_address)",
                                    guard.refused, address or "an unknown address")
                self._target.connection_made(transport)

            def data_received(self, data: bytes) -> None:
                self._target.data_received(data)

            def eof_received(self) -> bool | None:
                return self._target.eof_received()

            def pause_writing(self) -> None:
                self._target.pause_writing()

            def resume_writing(self) -> None:
                self._target.resume_writing()

            def connection_lost(self, exc: Exception | None) -> None:
                self._target.connection_lost(exc)

        return _Gate


def connection_guard(config: Any, *, nofile: int | None = None) -> ConnectionGuard:
    """The guard for `[server]`: its caps, the total kept below the open-files limit.

    What the consoles need (`files_needed`) is reserved first, so web clients can
    never take the descriptors the consoles and their logs depend on.
    """
    from solgate.console.manager import files_needed

    server = config.server
    total = server.max_connections
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile != resource.RLIM_INFINITY:
        room = max(16, nofile - files_needed(config.consoles.values()) + 1024 - 64)
        if room < total:
            log.info("[server] max_connections = %d lowered to %d: the open-files limit "
                        "is %d; raise LimitNOFILE to allow more", total, room, nofile)
            total = room
    return ConnectionGuard(total=total, per_address=server.max_connections_per_address,
                           exempt=server.trusted_proxies)


class GuardedSite(web.TCPSite):
    """`web.TCPSite` with a `ConnectionGuard` in front of aiohttp's protocol."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 guard: ConnectionGuard, ssl_context: Any = None) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.guard = guard

    async def start(self) -> None:
        self._runner._reg_site(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None  # noqa: S101 - set up by runner.setup()
        self._server = await loop.create_server(
            self.guard.wrap(server), self._host, self._port,
            ssl=self._ssl_context, backlog=self._backlog)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


def body_timeout_middleware(timeout: float) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Read a request's body within `timeout` seconds, or answer 408."""

    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        if request.body_exists and request.method not in ("GET", "HEAD"):
            try:
                await asyncio.wait_for(request.read(), timeout)
            except TimeoutError:
                raise web.HTTPRequestTimeout(
                    text=f"the request body did not arrive within {timeout:g} s") from None
        return await handler(request)

    return middleware


class AcceptErrorFilter:
    """A loop exception handler: accept() errors become one line per interval.

    Everything else goes to the handler that was installed before (or asyncio's
    default), unchanged.
    """

    def __init__(self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]
                 | None = None, *, interval: float = ACCEPT_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.previous = previous
        self.interval = interval
        self.clock = clock
        self.suppressed = 0
        self._last: float | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", ""))
        if not ((isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS)
                or "accept" in message.lower()):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
        self._last, self.suppressed = now, 0
        log.error("cannot accept web connections: %s%s; raise the open-files limit "
                  "(LimitNOFILE) or lower [server] max_connections", exc or message, more)


def install_accept_error_filter(loop: asyncio.AbstractEventLoop) -> AcceptErrorFilter:
    """Rate-limit accept() error logging on `loop` (see AcceptErrorFilter)."""
    handler = AcceptErrorFilter(loop.get_exception_handler())
    loop.set_exception_handler(handler)
    return handler
