"""Logins, API tokens, sessions and login throttling for the web console.

Theory of operation
-------------------
Who a user is, what its role is and which consoles it may see is `solgate.users`
(shared with the ssh gateway); this module proves it for web requests: a password
login, a bearer token or a trusted proxy's header, and the session that follows.

Sessions are kept in memory on the server: the cookie holds a random id plus an
HMAC of it under a per-process key, so a forged or guessed cookie is rejected before
any lookup, and a restart logs everyone out.  Each session has its own CSRF token.

Behind a reverse proxy that authenticates users itself (single sign-on), the proxy
may name the user in a header (`[server] proxy_user_header`).  The header is believed
only on connections whose peer address is in `trusted_proxies`; from anywhere else it
is ignored, so a client that reaches solgate directly cannot claim a name.  The named
user must exist in `[users]`, whose role and access lists apply as for a login.

Logins are counted per client address and per user name in a sliding window, and a
login counts *before* its password is hashed (on the event loop, so parallel guesses
cannot all pass the check while the first hashes are still running); a login that
succeeds takes its count back.  Past the limit an address is refused without a
password check until the window moves on.  A user name past the limit is slowed down,
not banned: its password is checked at most once every `LOGIN_USER_SLOWDOWN` seconds
(later attempts wait their turn, up to `LOGIN_USER_MAX_WAIT`), so guessing one user's
password from many addresses stays slow while the user can still log in.  The client
address is the connection's peer, or, from a trusted proxy, the address the proxy puts
in `X-Forwarded-For` (see `middleware.client_address`).  Hashing runs in the app's own
small executor, so nothing else that uses threads can delay a login.  Everything that
reads time takes a `clock` so tests need no sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from solgate.addresses import is_loopback
from solgate.errors import ConfigError, SolgateError
from solgate.users import LOCAL_USER, User, hash_api_token, password_matches

if TYPE_CHECKING:
    from solgate.config.server import ServerConfig
    from solgate.web.model import ConsoleView

Clock = Callable[[], float]

SESSION_IDLE_TIMEOUT = 12 * 3600.0
SESSION_MAX_AGE = 7 * 24 * 3600.0
LOGIN_FAILURES_PER_ADDRESS = 10
LOGIN_FAILURES_PER_USER = 10
LOGIN_WINDOW = 300.0
LOGIN_USER_SLOWDOWN = 2.0  # seconds between password checks of a user past the limit
LOGIN_USER_MAX_WAIT = 10.0  # a login that would wait longer for its turn is refused


class LoginError(SolgateError):
    """A login was refused; the message is safe to show (it never says which part was wrong)."""


class LoginThrottled(LoginError):
    """Too many failed logins from this address or for this user."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            f"too many failed logins; try again in {int(retry_after) + 1} seconds"
        )
        self.retry_after = retry_after


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


class RateLimiter:
    """Counts failures per key in a sliding window; past the limit the key is blocked."""

    def __init__(self, max_failures: int, window: float, *, clock: Clock = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = self._clock()
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def blocked_for(self, key: str) -> float:
        """Seconds until `key` may try again; 0.0 when it may try now."""
        times = self._recent(key)
        if len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[-self.max_failures] + self.window - self._clock())

    def failure(self, key: str) -> None:
        if len(self._failures) > 100_000:  # bound memory under a spray of addresses
            self._failures.clear()
        self._failures.setdefault(key, deque()).append(self._clock())

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)

    def forgive(self, key: str) -> None:
        """Take back the newest count of `key` (a login counted before it succeeded)."""
        times = self._failures.get(key)
        if times:
            times.pop()
            if not times:
                del self._failures[key]


@dataclass
class Session:
    """One logged-in browser."""

    id: str
    user: str
    csrf_token: str
    created: float
    last_seen: float
    data: dict[str, Any] = field(default_factory=dict)


class SessionStore:
    """Server-side sessions keyed by random ids; cookies carry `id.hmac(id)`."""

    def __init__(
        self,
        *,
        idle_timeout: float = SESSION_IDLE_TIMEOUT,
        max_age: float = SESSION_MAX_AGE,
        clock: Clock = time.time,
        secret: bytes | None = None,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self._clock = clock
        self._secret = secret or secrets.token_bytes(32)
        self._sessions: dict[str, Session] = {}
        # Told the ids of sessions that were ended (logout, user removed), so their live
        # WebSockets end too (solgate.web.revoke); expiry is not an ending of this kind.
        self.on_end: Callable[[frozenset[str]], None] | None = None

    def _sign(self, sid: str) -> str:
        return _b64(hmac.new(self._secret, sid.encode("ascii"), hashlib.sha256).digest())

    def _expired(self, session: Session, now: float) -> bool:
        return (now - session.last_seen > self.idle_timeout
                or now - session.created > self.max_age)

    def create(self, user: str) -> tuple[str, Session]:
        """A new session for `user`; returns the cookie value and the session."""
        now = self._clock()
        self._purge(now)
        sid = secrets.token_urlsafe(32)
        session = Session(sid, user, secrets.token_urlsafe(32), now, now)
        self._sessions[sid] = session
        return f"{sid}.{self._sign(sid)}", session

    def lookup(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, or None (forged, unknown or expired)."""
        if not cookie or "." not in cookie:
            return None
        sid, _, sig = cookie.rpartition(".")
        try:
            expected = self._sign(sid)
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(sig, expected):
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            del self._sessions[sid]
            return None
        session.last_seen = now
        return session

    def alive(self, sid: str) -> bool:
        """Whether the session `sid` has not been dropped (nor yet purged as expired)."""
        return sid in self._sessions

    def drop(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        self._ended(frozenset((session.id,)))

    def drop_user(self, user: str) -> None:
        """Log a user out everywhere."""
        ended = frozenset(s.id for s in self._sessions.values() if s.user == user)
        for sid in ended:
            del self._sessions[sid]
        if ended:
            self._ended(ended)

    def _ended(self, ids: frozenset[str]) -> None:
        if self.on_end is not None:
            self.on_end(ids)

    def _purge(self, now: float) -> None:
        for sid in [s.id for s in self._sessions.values() if self._expired(s, now)]:
            del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)


MAX_PROXY_USER_LENGTH = 256


@dataclass(frozen=True)
class ProxyTrust:
    """Which peers may name the user in which header (`[server] proxy_user_header`)."""

    header: str
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_server(cls, server: ServerConfig) -> ProxyTrust | None:
        header = server.proxy_user_header
        return cls(header, tuple(server.trusted_proxies)) if header else None

    def trusts(self, peer: str | None) -> bool:
        """Whether a connection from `peer` (its IP address) comes from a trusted proxy."""
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.networks)

    def user_name(self, peer: str | None, headers: Mapping[str, str]) -> str | None:
        """The user the proxy vouches for, or None (no header, or not from a proxy)."""
        if not self.trusts(peer):
            return None
        name = headers.get(self.header, "").strip()
        return name or None


class Authenticator:
    """The web app's one authority on who a request is."""

    def __init__(
        self,
        users: Mapping[str, User],
        *,
        mode: str = "login",
        clock: Clock = time.monotonic,
        sessions: SessionStore | None = None,
        proxy: ProxyTrust | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if mode not in ("login", "none"):
            raise ConfigError(f'[server] auth = "{mode}" is unknown; use "login" or "none"')
        self.mode = mode
        self.users = dict(users)
        self.sessions = sessions or SessionStore()
        self.proxy = proxy
        self.address_limiter = RateLimiter(LOGIN_FAILURES_PER_ADDRESS, LOGIN_WINDOW, clock=clock)
        self.user_limiter = RateLimiter(LOGIN_FAILURES_PER_USER, LOGIN_WINDOW, clock=clock)
        self._clock = clock
        self._sleep = sleep
        self._user_turn: dict[str, float] = {}  # when a slowed-down user's next check may run
        self._tokens = {h: u for u in self.users.values() for h in u.api_token_hashes}
        # Called after users change (a reload) with no ended sessions, and when sessions
        # end with their ids: live attachments are re-checked (solgate.web.revoke).
        self.on_change: Callable[[frozenset[str]], None] | None = None
        self.sessions.on_end = self._changed

    def _changed(self, ended_sessions: frozenset[str] = frozenset()) -> None:
        if self.on_change is not None:
            self.on_change(ended_sessions)

    @property
    def login_required(self) -> bool:
        return self.mode == "login"

    async def login(self, username: str, password: str, client: str,
                    executor: Executor | None = None) -> User:
        """The user if the password is right; raises `LoginError` or `LoginThrottled`.

        Counts the attempt first (see the module docstring), waits its turn when the
        user name is being slowed down, then hashes in `executor`.
        """
        delay = self.admit_login(username, client)
        if delay > 0:
            await self._sleep(delay)
        loop = asyncio.get_running_loop()
        user = await loop.run_in_executor(executor, self.verify, username, password)
        if user is None:
            raise LoginError("wrong user name or password")
        self.address_limiter.forgive(client)
        self.user_limiter.reset(username)
        self._user_turn.pop(username, None)
        return user

    def admit_login(self, username: str, client: str) -> float:
        """Count a login before its password is checked; returns seconds it must wait.

        Raises `LoginThrottled` when the address is over its limit, or the user name's
        queue of slowed-down attempts is longer than `LOGIN_USER_MAX_WAIT`.
        """
        wait = self.address_limiter.blocked_for(client)
        if wait > 0:
            raise LoginThrottled(wait)
        delay = 0.0
        if self.user_limiter.blocked_for(username) > 0:
            now = self._clock()
            turn = max(now, self._user_turn.get(username, now))
            delay = turn - now
            if delay > LOGIN_USER_MAX_WAIT:
                raise LoginThrottled(delay)
            if len(self._user_turn) > 100_000:  # bound memory under a spray of names
                self._user_turn.clear()
            self._user_turn[username] = turn + LOGIN_USER_SLOWDOWN
        self.address_limiter.failure(client)
        self.user_limiter.failure(username)
        return delay

    def verify(self, username: str, password: str) -> User | None:
        """The user if the password matches (blocking: scrypt); counts nothing."""
        user = self.users.get(username)
        return user if password_matches(user, password) else None

    def replace_users(self, users: Mapping[str, User]) -> None:
        """A reloaded `[users]`: roles, access lists and tokens apply from the next request,
        and to live attachments at once (`on_change`, see solgate.web.revoke).

        Whoever was removed, or had their password changed, must log in again: a
        password change is how an operator locks out someone who knew the old one.
        """
        old, self.users = self.users, dict(users)
        self._tokens = {h: u for u in self.users.values() for h in u.api_token_hashes}
        for name, user in old.items():
            new = self.users.get(name)
            if new is None or new.password_hash != user.password_hash:
                self.sessions.drop_user(name)
        self._changed()

    def user_for_token_hash(self, token_hash: str) -> User | None:
        """The user owning a stored token hash now, or None (the token was deleted)."""
        return self._tokens.get(token_hash)

    def user_for_token(self, token: str) -> User | None:
        """The user owning a bearer token, or None."""
        if not token:
            return None
        return self._tokens.get(hash_api_token(token))

    def user_named(self, name: str) -> User | None:
        if self.mode == "none":
            return LOCAL_USER
        return self.users.get(name)

    def visible(self, user: User, consoles: Iterable[ConsoleView]) -> list[ConsoleView]:
        return [c for c in consoles if user.can_view(c.name, c.tags)]


def check_auth_mode(mode: str, host: str) -> None:
    """Refuse `auth = "none"` unless the web server listens on loopback only."""
    if mode == "none" and not is_loopback(host):
        raise ConfigError(
            f'[server] auth = "none" is only allowed when listening on loopback, but listen '
            f'is on {host}; use auth = "login" or listen on 127.0.0.1'
        )
