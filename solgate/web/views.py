"""HTML pages: login, console list, one console, its log, events.

Pages are thin Jinja2 shells; live data comes from the REST API and the console
WebSocket, so what a page shows and what a script sees never disagree.
"""

from __future__ import annotations

import functools
import hmac
import re
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp_jinja2
from aiohttp import web

from solgate.users import Role
from solgate.web import logview
from solgate.web.api import visible_console
from solgate.web.auth import LoginError, LoginThrottled
from solgate.web.keys import auth_key, data_dir_key, login_executor_key
from solgate.web.limits import run_log_read
from solgate.web.middleware import (
    SESSION_COOKIE,
    client_address,
    identity,
    is_https,
    require_identity,
    set_session_cookie,
)
from solgate.web.model import state_words

LOGIN_CSRF_COOKIE = "solgate_login"
_LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")


# A path on this server: printable ASCII without spaces or backslashes.  Browsers drop
# tabs and newlines anywhere in a URL and read "\\" as "/", so "/\t/evil.example" and
# "/\\evil.example" would leave the site; anything outside this set is refused whole.
_NEXT_CHARS = re.compile(r"[!-\[\]-~]*")


def _safe_next(target: str | None) -> str:
    """Only a path on this server, so /login?next= cannot send users elsewhere."""
    if not target or not _NEXT_CHARS.fullmatch(target):
        return "/"
    try:
        parts = urlsplit(target)
    except ValueError:
        return "/"
    if (parts.scheme or parts.netloc or not parts.path.startswith("/")
            or parts.path.startswith("//")):
        return "/"
    return target


def _page_context(request: web.Request, **extra: Any) -> dict[str, Any]:
    ident = identity(request)
    return {
        "user": ident.user if ident else None,
        "csrf_token": ident.session.csrf_token if ident and ident.session else "",
        "login_required": request.app[auth_key].login_required,
        **extra,
    }


async def login_page(request: web.Request) -> web.Response:
    if not request.app[auth_key].login_required:
        raise web.HTTPFound("/")
    return _login_form(request, error="", status=200)


def _login_form(request: web.Request, *, error: str, status: int, username: str = "",
                next_path: str | None = None,
                headers: dict[str, str] | None = None) -> web.Response:
    # Reuse a well-formed token the browser already holds: a second login tab, or a
    # favicon request redirected here, must not invalidate the form on screen.
    token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not _LOGIN_TOKEN.fullmatch(token):
        token = secrets.token_urlsafe(24)
    response = aiohttp_jinja2.render_template(
        "login.html", request,
        {"error": error, "next": _safe_next(next_path or request.query.get("next")),
         "login_csrf": token, "username": username, "user": None},
        status=status,
    )
    # Double-submit token: a foreign page cannot read this cookie to fill the form.
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict",
                        path="/login", secure=is_https(request))
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


async def login_submit(request: web.Request) -> web.StreamResponse:
    auth = request.app[auth_key]
    if not auth.login_required:
        raise web.HTTPFound("/")
    form = await request.post()
    username = str(form.get("username", ""))[:200]
    next_path = _safe_next(str(form.get("next", "/")))
    password = str(form.get("password", ""))[:1000]
    sent = str(form.get("login_csrf", ""))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(sent, expected):
        return _login_form(request, error="the login form expired; please try again",
                           status=403, username=username, next_path=next_path)
    try:
        user = await auth.login(username, password, client_address(request),
                                request.app[login_executor_key])
    except LoginThrottled as exc:
        return _login_form(request, error=str(exc), status=429, username=username,
                           next_path=next_path,
                           headers={"Retry-After": str(int(exc.retry_after) + 1)})
    except LoginError as exc:
        return _login_form(request, error=str(exc), status=401, username=username,
                           next_path=next_path)
    old = identity(request)
    if old is not None and old.session is not None:
        auth.sessions.drop(old.session)  # a fresh id on every login: no session fixation
    cookie, _session = auth.sessions.create(user.name)
    response = web.HTTPFound(next_path)
    set_session_cookie(request, response, cookie)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    ident = identity(request)
    if ident is not None and ident.session is not None:
        request.app[auth_key].sessions.drop(ident.session)
    target = "/login" if request.app[auth_key].login_required else "/"
    response = web.HTTPFound(target)
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


@aiohttp_jinja2.template("consoles.html")
async def consoles_page(request: web.Request) -> dict[str, Any]:
    ident = require_identity(request)
    # Fleet actions need at least the operator role on a console: a viewer is refused
    # everything, so the action bar and the checkboxes are not offered.
    return _page_context(request, title="Consoles", fleet=ident.user.role >= Role.OPERATOR)


@aiohttp_jinja2.template("console.html")
async def console_page(request: web.Request) -> dict[str, Any]:
    ident = require_identity(request)
    console = visible_console(request)
    return _page_context(
        request, title=console.name, console=console,
        can_write=ident.user.can_write(console.name, console.tags),
        can_power=ident.user.can_power(console.name, console.tags),
    )


@aiohttp_jinja2.template("log.html")
async def log_page(request: web.Request) -> dict[str, Any]:
    """The console log, paged across rotated files, searchable, with panics marked.

    Reads files only, so it works the same for a console that is down.
    """
    ident = require_identity(request)
    console = visible_console(request)
    query = request.query.get("q", "").strip()[:200]
    before, after = request.query.get("before"), request.query.get("after")
    try:
        limit = int(request.query.get("lines", logview.DEFAULT_PAGE_LINES))
    except ValueError:
        limit = logview.DEFAULT_PAGE_LINES
    events_path = request.app[data_dir_key] / "events.jsonl"
    try:
        panics, page = await run_log_read(request, ident.user.name, functools.partial(
            logview.read_page_with_panics, console.log_path, events_path, console.name,
            before=before, after=after, query=query, limit=limit))
    except logview.BadCursor as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None

    def link(**params: str | None) -> str:
        keep = {"q": query or None, "lines": request.query.get("lines"), **params}
        query_string = urlencode({k: v for k, v in keep.items() if v})
        return f"?{query_string}" if query_string else "?"

    return _page_context(
        request, title=f"{console.name} log", console=console, page=page, query=query,
        state_detail=console.state_detail if ident.user.sees_bmc_details else "",
        panics=panics, state_words=state_words(console.state),
        older_url=link(before=page.older) if page.older else None,
        newer_url=link(after=page.newer) if page.newer else None,
        newest_url=link() if page.newer else None,
        context_url=lambda cursor: f"?{urlencode({'before': cursor})}",
        search_url=lambda text: f"?{urlencode({'q': text[:200]})}",
        events_url=f"/events?{urlencode({'console': console.name, 'kind': 'panic'})}",
    )


@aiohttp_jinja2.template("events.html")
async def events_page(request: web.Request) -> dict[str, Any]:
    require_identity(request)
    return _page_context(request, title="Events")


async def favicon(request: web.Request) -> web.Response:
    """No icon; answered here so browsers do not get redirected to the login page."""
    return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})
