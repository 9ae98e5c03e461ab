"""Request-level security: who is asking, CSRF, Origin, and response headers.

Theory of operation
-------------------
`auth_middleware` resolves every request to an `Identity` stored as
`request[IDENTITY]`: from a bearer token (scripts), from the session cookie
(browsers), or, with `auth = "none"`, the implicit admin "local".  Public paths (the
login page, static files, /healthz) pass without one; any other page redirects to
/login and any API call gets 401.

A state-changing request (POST, PUT, PATCH, DELETE) made with a session cookie must
carry the session's CSRF token in the `X-CSRF-Token` header or a `csrf_token` form
field.  Bearer-token requests are exempt: a browser never adds that header on its
own, so another site cannot make one.  With `auth = "none"` there are no logins, yet
a hostile page could still post to 127.0.0.1; so the browser pages there get a
session for "local" (and its CSRF token) too, and a cookie-less request is accepted
only when it carries neither `Origin` nor `Sec-Fetch-Site`, which every browser sends
on a cross-site POST.  Only page loads create such sessions, so a script polling the
API does not pile them up.

With `auth = "none"` every request must also name a loopback host (`host_allowed`):
a page on another site can point its own DNS name at 127.0.0.1 ("DNS rebinding"), and
its requests then carry that site's name as Host and Origin, which would pass the
Origin and Sec-Fetch checks above.

With `[server] proxy_user_header`, a request from a trusted proxy's address that
carries the header is that user (`auth.ProxyTrust`), treated like the local admin
above: pages get a session bound to the user (a different name from the proxy ends
it), and cookie-less unsafe requests must look like scripts.  A bearer token wins over
the header; the header from any other address is ignored.

WebSocket upgrades are checked separately (`origin_allowed`), before `prepare()`.

Behind a reverse proxy (`[server] trusted_proxies`), the proxy's `X-Forwarded-For`
names the client (`client_address`, used to throttle logins per real client) and
`X-Forwarded-Proto: https` says the browser came over TLS (`is_https`, which makes
cookies `Secure`).  Both headers are ignored from any other peer, since a client that
reaches solgate directly could send them itself.

Every answer except static files says `Cache-Control: no-store`: pages, API answers
and log downloads carry console output and names a shared or later browser must not
find in its cache.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from solgate.users import LOCAL_USER, User
from solgate.web.auth import MAX_PROXY_USER_LENGTH, Authenticator, Session
from solgate.web.keys import allowed_origins_key, auth_key, trusted_proxies_key
from solgate.web.quota import in_networks

IDENTITY = web.RequestKey("identity", object)  # an Identity; typed at the accessor below
SESSION_COOKIE = "solgate_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC_PREFIXES = ("/static/", "/login", "/healthz", "/favicon.ico")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Same-host scripts and styles only; xterm.js sets inline styles on its elements.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Identity:
    """Who made a request and how they proved it."""

    user: User
    via: str  # "session", "token", "local" or "proxy"
    session: Session | None = None


def identity(request: web.Request) -> Identity | None:
    """The request's identity, or None on a public path without credentials."""
    value = request.get(IDENTITY)
    return value if isinstance(value, Identity) else None


def require_identity(request: web.Request) -> Identity:
    ident = identity(request)
    if ident is None:
        raise web.HTTPUnauthorized(text="log in first")
    return ident


def is_api(request: web.Request) -> bool:
    return request.path.startswith(("/api/", "/ws/", "/metrics"))


def json_error(status: int, message: str, **headers: str) -> web.Response:
    """The one error shape of the API: {"error": "..."}."""
    return web.json_response({"error": message}, status=status, headers=headers)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _is_public(path: str) -> bool:
    return path == "/login" or path.startswith(PUBLIC_PREFIXES)


def _from_proxy(request: web.Request) -> bool:
    networks = request.app[trusted_proxies_key]
    return in_networks(request.remote, networks)


def client_address(request: web.Request) -> str:
    """The client's address: the peer, or from a trusted proxy its X-Forwarded-For.

    The header is read from the right: the last address that is not itself a trusted
    proxy is the one the nearest proxy saw (entries further left are the client's word).
    """
    peer = request.remote or "unknown"
    if not _from_proxy(request):
        return peer
    networks = request.app[trusted_proxies_key]
    hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", [])
            for h in v.split(",")]
    for hop in reversed(hops):
        if not hop:
            continue
        if not in_networks(hop, networks):
            return hop[:64]
    return peer


def is_https(request: web.Request) -> bool:
    """Whether the browser's connection is TLS: ours, or a trusted proxy's."""
    if request.secure:
        return True
    if not _from_proxy(request):
        return False
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return proto == "https"


def set_session_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    """HttpOnly, SameSite=Strict, and Secure whenever the browser came over TLS."""
    response.set_cookie(
        SESSION_COOKIE, value, httponly=True, samesite="Strict", path="/",
        secure=is_https(request),
    )


def looks_like_script(request: web.Request) -> bool:
    """A request no browser made cross-site: no cookie, no Origin, no Sec-Fetch-Site."""
    return (SESSION_COOKIE not in request.cookies
            and "Origin" not in request.headers
            and "Sec-Fetch-Site" not in request.headers)


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Headers that keep pages from being framed, sniffed or pulling code from elsewhere."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        _add_headers(request, response)
        raise
    if not response.prepared:
        _add_headers(request, response)
    return response


def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    if not request.path.startswith(("/static/", "/favicon.ico")):
        response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the identity, enforce login and CSRF."""
    auth = request.app[auth_key]
    if not auth.login_required and not host_allowed(request.host):
        return json_error(
            403,
            'with auth = "none" solgate answers only to a loopback host name '
            "(127.0.0.1, localhost or [::1]); open it by that name, or set "
            'auth = "login" to serve other names',
        )
    ident: Identity | None = None
    new_cookie: str | None = None

    token = _bearer(request)
    proxied = (auth.proxy.user_name(request.remote, request.headers)
               if auth.proxy is not None and token is None else None)
    if token is not None:
        user = auth.user_for_token(token)
        if user is None:
            return json_error(401, "the bearer token is not valid",
                              **{"WWW-Authenticate": 'Bearer realm="solgate"'})
        ident = Identity(user, "token")
    elif proxied is not None:
        user = auth.users.get(proxied) if len(proxied) <= MAX_PROXY_USER_LENGTH else None
        if user is None:
            return json_error(403, "the proxy signed in a user solgate does not know; add "
                                   "a [users.NAME] table with that name and a role")
        session = auth.sessions.lookup(request.cookies.get(SESSION_COOKIE))
        if session is not None and session.user == user.name:
            ident = Identity(user, "session", session)
        else:  # no session yet, or the proxy now names someone else
            if session is not None:
                auth.sessions.drop(session)
            ident, new_cookie = _implicit_identity(request, auth, user, "proxy")
            if ident is None:
                return json_error(403, "missing CSRF token; reload the page")
    else:
        session = auth.sessions.lookup(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            user = auth.user_named(session.user)
            if user is None:  # removed from the configuration since login
                auth.sessions.drop(session)
            else:
                ident = Identity(user, "session", session)
        if ident is None and not auth.login_required:
            ident, new_cookie = _implicit_identity(request, auth, LOCAL_USER, "local")

    if ident is not None:
        request[IDENTITY] = ident
    elif not _is_public(request.path):
        if is_api(request) or request.method != "GET":
            return json_error(401, "log in first (session cookie or Authorization: Bearer)")
        raise web.HTTPFound("/login?" + urlencode({"next": str(request.rel_url)}, safe="/"))

    if (ident is not None and ident.session is not None
            and request.method in UNSAFE_METHODS and not _is_public(request.path)):
        if not await _csrf_ok(request, ident.session):
            return json_error(403, "missing or wrong CSRF token; reload the page")

    response = await handler(request)
    if new_cookie is not None and not response.prepared:
        set_session_cookie(request, response, new_cookie)
    return response


def _implicit_identity(request: web.Request, auth: Authenticator, user: User,
                       via: str) -> tuple[Identity | None, str | None]:
    """An identity vouched for without a login (loopback admin, or a trusted proxy's user).

    Such a user's browser would send a cross-site POST with the same credentials, so
    pages get a session (and its CSRF token) and an unsafe request is accepted without
    one only when it looks like a script.  Returns (identity, new session cookie).
    """
    if request.method not in UNSAFE_METHODS:
        if is_api(request) or _is_public(request.path):
            return Identity(user, via), None
        cookie, session = auth.sessions.create(user.name)  # a page
        return Identity(user, "session", session), cookie
    if looks_like_script(request):
        return Identity(user, via), None
    return None, None


async def _csrf_ok(request: web.Request, session: Session) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in (
        "application/x-www-form-urlencoded", "multipart/form-data"
    ):
        form = await request.post()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    return sent is not None and hmac.compare_digest(sent, session.csrf_token)


def host_allowed(host: str | None) -> bool:
    """Whether a Host header names this machine's loopback (with or without a port)."""
    if not host:
        return False
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return False
    if name is None:
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origin_allowed(request: web.Request) -> bool:
    """Whether a WebSocket may be opened from the page's origin.

    No Origin header means a non-browser client (it still needs credentials).  A
    browser's Origin must name the host it connected to, or be listed in the
    configuration's allowed origins.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin.lower() in request.app[allowed_origins_key]:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc.lower() == (request.host or "").lower()
