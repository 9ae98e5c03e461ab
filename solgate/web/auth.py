"""Users, passwords, API tokens, sessions and login throttling for the web console.

Theory of operation
-------------------
Users live in the configuration, one `[users.NAME]` table each::

    [users.alice]
    password_hash = "scrypt$16384$8$1$<salt>$<hash>"   # from `solgate passwd`
    role = "operator"                  # viewer | operator | admin
    consoles = ["web*", "db01"]        # shell-style patterns of console names
    tags = ["rack12"]                  # or any console carrying one of these tags
    api_tokens = ["sha256$<hex>"]      # hashes of bearer tokens for scripts

A user sees a console when its name matches one of `consoles` or it carries one of
`tags`; a user with neither key sees every console (a small site's natural default),
and `consoles = []` with no tags sees none.  Roles are ordered: a viewer watches, an
operator also types (once holding the write lock), sends BREAK and forces a
deactivate; an admin also runs power actions.

Passwords are stored as stdlib scrypt hashes with a random salt; verification is
constant-time and an unknown user costs the same as a wrong password.  Bearer tokens
are random strings of which only a SHA-256 hash is stored (they carry 256 bits of
entropy, so a slow hash adds nothing).

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
import enum
import fnmatch
import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from solgate.config_values import is_loopback
from solgate.errors import ConfigError, SolgateError

if TYPE_CHECKING:
    from solgate.web.model import ConsoleView

Clock = Callable[[], float]

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAX_N = 2**20  # refuse absurd cost parameters from a hand-edited hash
SALT_BYTES = 16
HASH_BYTES = 32
TOKEN_PREFIX = "sgt_"  # noqa: S105 - a marker, not a secret

SESSION_IDLE_TIMEOUT = 12 * 3600.0
SESSION_MAX_AGE = 7 * 24 * 3600.0
LOGIN_FAILURES_PER_ADDRESS = 10
LOGIN_FAILURES_PER_USER = 10
LOGIN_WINDOW = 300.0
LOGIN_USER_SLOWDOWN = 2.0  # seconds between password checks of a user past the limit
LOGIN_USER_MAX_WAIT = 10.0  # a login that would wait longer for its turn is refused
# User names appear in pages, logs, events and ssh logins: printable, one line, no markup.
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


class Role(enum.IntEnum):
    """What a user may do; higher includes lower."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3


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


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
        maxmem=256 * r * n + 1024 * 1024, dklen=HASH_BYTES,
    )


def hash_password(
    password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> str:
    """Hash a password for `[users.NAME] password_hash` (used by `solgate passwd`)."""
    if not password:
        raise ConfigError("an empty password cannot be hashed; choose a password")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not an scrypt$n$r$p$salt$hash string")
    n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    if not (2 <= n <= SCRYPT_MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt cost parameters out of range")
    return n, r, p, _unb64(parts[4]), _unb64(parts[5])


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches the stored hash; malformed hashes never match."""
    try:
        n, r, p, salt, expected = _parse_hash(encoded)
    except ValueError:
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), expected)


# Verified against when the user does not exist, so timing does not reveal user names.
_DUMMY_HASH = hash_password(secrets.token_hex(8))


def hash_api_token(token: str) -> str:
    """The form of a bearer token stored in `[users.NAME] api_tokens`."""
    return "sha256$" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_api_token() -> tuple[str, str]:
    """A fresh bearer token and the hash to put in the configuration."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_api_token(token)


@dataclass(frozen=True)
class User:
    """A configured user (or the implicit admin "local" when auth is off)."""

    name: str
    role: Role
    password_hash: str = ""
    consoles: tuple[str, ...] | None = None  # None: no restriction by name given
    tags: tuple[str, ...] = ()
    api_token_hashes: frozenset[str] = frozenset()

    def can_view(self, console: ConsoleView) -> bool:
        """Whether the user may see this console at all."""
        if self.role >= Role.ADMIN:
            return True
        if self.consoles is None and not self.tags:
            return True
        if any(fnmatch.fnmatchcase(console.name, pat) for pat in self.consoles or ()):
            return True
        return any(tag in self.tags for tag in console.tags)

    def can_write(self, console: ConsoleView) -> bool:
        """Whether the user may type, send BREAK and force a deactivate."""
        return self.role >= Role.OPERATOR and self.can_view(console)

    def can_power(self, console: ConsoleView) -> bool:
        """Whether the user may run power actions that change state."""
        return self.role >= Role.ADMIN and self.can_view(console)

    @property
    def sees_bmc_details(self) -> bool:
        """Whether state details (BMC address, port, IPMI user) are shown: operators up."""
        return self.role >= Role.OPERATOR

    @property
    def is_admin(self) -> bool:
        return self.role >= Role.ADMIN


LOCAL_USER = User(name="local", role=Role.ADMIN)

_USER_KEYS = {"password_hash", "role", "consoles", "tags", "api_tokens",
              "ssh_keys", "authorized_keys"}  # the ssh keys are checked by solgate.ssh


def _str_list(name: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[users.{name}] {key} must be a list of strings, like [\"web*\"]")
    return tuple(value)


def parse_users(raw: Mapping[str, Any] | None) -> dict[str, User]:
    """Turn the `[users.NAME]` tables into `User`s; errors name the table and the fix."""
    users: dict[str, User] = {}
    for name, table in (raw or {}).items():
        if not _USER_NAME.fullmatch(name):
            raise ConfigError(
                f"[users] {_shown_name(name)} cannot be a user name; use up to 64 letters, "
                "digits, '.', '_', '@', '+' and '-', starting with a letter or digit"
            )
        if not isinstance(table, Mapping):
            raise ConfigError(f"[users.{name}] must be a table with password_hash and role")
        unknown = set(table) - _USER_KEYS
        if unknown:
            raise ConfigError(
                f"[users.{name}] has unknown key(s) {', '.join(sorted(unknown))}; "
                f"known keys are {', '.join(sorted(_USER_KEYS))}"
            )
        role_text = table.get("role", "viewer")
        try:
            role = Role[str(role_text).upper()]
        except KeyError:
            raise ConfigError(
                f"[users.{name}] role = {role_text!r} is unknown; use viewer, operator or admin"
            ) from None
        password_hash = table.get("password_hash", "")
        if password_hash:
            try:
                _parse_hash(password_hash)
            except ValueError:
                raise ConfigError(
                    f"[users.{name}] password_hash is not a solgate scrypt hash; "
                    "create one with `solgate passwd`"
                ) from None
        tokens = _str_list(name, "api_tokens", table.get("api_tokens", []))
        for token in tokens:
            if not token.startswith("sha256$"):
                raise ConfigError(
                    f"[users.{name}] api_tokens holds hashes (\"sha256$...\"), never tokens"
                )
        consoles = table.get("consoles")
        users[name] = User(
            name=name,
            role=role,
            password_hash=password_hash,
            consoles=None if consoles is None else _str_list(name, "consoles", consoles),
            tags=_str_list(name, "tags", table.get("tags", [])),
            api_token_hashes=frozenset(tokens),
        )
    return users


def _shown_name(name: str) -> str:
    """A refused name as one safe line: control characters escaped, long names cut."""
    shown = repr(name[:80])
    return shown[:-1] + "...'" if len(name) > 80 else shown


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
    def from_server(cls, server: Any) -> ProxyTrust | None:
        header = getattr(server, "proxy_user_header", "")
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
        stored = user.password_hash if user is not None else ""
        ok = verify_password(password, stored or _DUMMY_HASH)
        return user if user is not None and stored and ok else None

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
        return [c for c in consoles if user.can_view(c)]


def check_auth_mode(mode: str, host: str) -> None:
    """Refuse `auth = "none"` unless the web server listens on loopback only."""
    if mode == "none" and not is_loopback(host):
        raise ConfigError(
            f'[server] auth = "none" is only allowed when listening on loopback, but listen '
            f'is on {host}; use auth = "login" or listen on 127.0.0.1'
        )
