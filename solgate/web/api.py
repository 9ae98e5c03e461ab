"""The REST API: console list and detail, actions, log tail, events, health, metrics.

Every answer is JSON (the log download aside); errors are `{"error": "..."}` with a
status that says whose fault it is: 401 no identity, 403 the role may not, 404 no such
console (or not visible to this user), 409/502 the engine refused or the BMC failed.
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from pathlib import Path

from aiohttp import web

from solgate.console.events import read_events
from solgate.console.logread import read_tail as log_tail
from solgate.console.power import POWER_ACTIONS
from solgate.errors import SolgateError
from solgate.web import logview
from solgate.web.keys import auth_key, data_dir_key, manager_key
from solgate.web.limits import run_log_read
from solgate.web.metrics import metrics as metrics  # the /metrics route lives with its collector
from solgate.web.middleware import json_error, require_identity
from solgate.web.model import ConsoleView, console_json

MAX_TAIL_LINES = 10_000
MAX_TAIL_BYTES = 4 * 1024 * 1024
MAX_EVENTS = 5_000
DEFAULT_EVENTS = 200


def visible_console(request: web.Request) -> ConsoleView:
    """The console named in the URL, if this user may see it; else 404."""
    ident = require_identity(request)
    name = request.match_info["name"]
    console = request.app[manager_key].get(name)
    if console is None or not ident.user.can_view(console.name, console.tags):
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no console named {name!r}"}),
            content_type="application/json",
        )
    return console


async def list_consoles(request: web.Request) -> web.Response:
    ident = require_identity(request)
    now = time.time()
    consoles = request.app[auth_key].visible(ident.user, request.app[manager_key].consoles())
    return web.json_response({
        "now": now,
        "consoles": [
            {**console_json(c, now=now, detail=ident.user.sees_bmc_details),
             "can_write": ident.user.can_write(c.name, c.tags),
             "can_power": ident.user.can_power(c.name, c.tags)}
            for c in consoles
        ],
    })


async def get_console(request: web.Request) -> web.Response:
    ident = require_identity(request)
    console = visible_console(request)
    return web.json_response({
        **console_json(console, detail=ident.user.sees_bmc_details),
        "can_write": ident.user.can_write(console.name, console.tags),
        "can_power": ident.user.can_power(console.name, console.tags),
    })


async def post_break(request: web.Request) -> web.Response:
    return await _writer_action(request, "break")


async def post_deactivate(request: web.Request) -> web.Response:
    return await _writer_action(request, "deactivate")


async def _writer_action(request: web.Request, action: str) -> web.Response:
    """An action anyone who may type on the console may take: a BREAK, a deactivate."""
    ident = require_identity(request)
    console = visible_console(request)
    if not ident.user.can_write(console.name, console.tags):
        return json_error(403, f"user {ident.user.name!r} may only watch {console.name!r}")
    manager = request.app[manager_key]
    run = manager.send_break if action == "break" else manager.deactivate
    try:
        await run(console.name, ident.user.name)
    except SolgateError as exc:
        return json_error(502, str(exc))
    return web.json_response({"ok": True, "console": console.name, "action": action})


async def post_power(request: web.Request) -> web.Response:
    ident = require_identity(request)
    console = visible_console(request)
    action = await _power_action(request)
    if action not in POWER_ACTIONS:
        return json_error(400, f"power action must be one of {', '.join(POWER_ACTIONS)}")
    user, name, tags = ident.user, console.name, console.tags
    allowed = (user.can_write(name, tags) if action == "status"
               else user.can_power(name, tags))
    if not allowed:
        role = "operator" if action == "status" else "admin"
        return json_error(403, f"power {action} on {console.name!r} needs the {role} role; "
                               f"user {ident.user.name!r} is a {ident.user.role.name.lower()}")
    try:
        result = await request.app[manager_key].power(console.name, action, ident.user.name)
    except SolgateError as exc:
        return json_error(502, str(exc))
    return web.json_response({"ok": True, "console": console.name, "action": action,
                              "result": result})


async def _power_action(request: web.Request) -> str:
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            return ""
        return str(body.get("action", "")) if isinstance(body, dict) else ""
    form = await request.post()
    value = form.get("action", "")
    return value if isinstance(value, str) else ""


def read_tail(path: Path, lines: int, max_bytes: int = MAX_TAIL_BYTES) -> bytes:
    """The last `lines` lines of a console log, across rotated files, at most `max_bytes`."""
    return b"".join(log_tail(path, lines, max_bytes=max_bytes))


async def get_log(request: web.Request) -> web.StreamResponse:
    """The raw console log: `?tail=N` for the last N lines as text, else the whole file.

    `?format=json` (or `before=`, `after=`, `q=`) answers the log page's pages as JSON:
    clean lines across rotated files, with cursors to page on (see `logview`).
    """
    console = visible_console(request)
    if request.query.get("format") == "json" or {"before", "after", "q"} & request.query.keys():
        return await _log_page_json(request, console)
    path = console.log_path
    if not path.exists():
        return json_error(404, f"console {console.name!r} has no log yet at {path}")
    tail = request.query.get("tail")
    if tail is None:
        return web.FileResponse(path, headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{console.name}.log"',
        })
    try:
        lines = min(MAX_TAIL_LINES, max(0, int(tail)))
    except ValueError:
        return json_error(400, "tail must be a number of lines, like ?tail=200")
    data = await run_log_read(request, require_identity(request).user.name,
                              functools.partial(read_tail, path, lines))
    return web.Response(body=data, content_type="text/plain", charset="utf-8")


async def _log_page_json(request: web.Request, console: ConsoleView) -> web.Response:
    try:
        limit = int(request.query.get("lines", logview.DEFAULT_PAGE_LINES))
    except ValueError:
        return json_error(400, "lines must be a number, like ?lines=200")
    try:
        panics, page = await run_log_read(
            request, require_identity(request).user.name, functools.partial(
                logview.read_page_with_panics, console.log_path,
                request.app[data_dir_key] / "events.jsonl", console.name,
                before=request.query.get("before"), after=request.query.get("after"),
                query=request.query.get("q", "").strip(), limit=limit))
    except logview.BadCursor as exc:
        return json_error(400, str(exc))
    return web.json_response({
        "console": console.name,
        "lines": [{"text": ln.text, "kind": ln.kind, "start": ln.start, "end": ln.end}
                  for ln in page.lines],
        "older": page.older, "newer": page.newer, "stopped_early": page.stopped_early,
        "cursor_lost": page.cursor_lost,
        "panics": [{"time": p.time, "severity": p.severity, "line": p.line} for p in panics],
    })


async def get_events(request: web.Request) -> web.Response:
    """Recent events, newest first, only for consoles the user sees.

    `?console=NAME`, `?kind=panic` (or several: `?kind=sol-up,sol-down`), `?limit=N`.
    """
    ident = require_identity(request)
    try:
        limit = min(MAX_EVENTS, max(1, int(request.query.get("limit", DEFAULT_EVENTS))))
    except ValueError:
        return json_error(400, "limit must be a number, like ?limit=100")
    want_console = request.query.get("console")
    want_kinds = frozenset(k.strip() for k in request.query.get("kind", "").split(",")
                           if k.strip())
    manager = request.app[manager_key]
    path = request.app[data_dir_key] / "events.jsonl"
    # Newest first; the file reader filters by console and kind, visibility is checked here.
    events = list(reversed(await run_log_read(request, ident.user.name, functools.partial(
        read_events, path, console=want_console or None, kinds=want_kinds, limit=MAX_EVENTS))))
    visible: dict[str, bool] = {}
    out = []
    for event in events:
        name = event.get("console")
        if name is not None:
            if name not in visible:
                console = manager.get(str(name))
                visible[name] = (console is not None
                                 and ident.user.can_view(console.name, console.tags))
            if not visible[name]:
                continue
        elif not ident.user.is_admin:
            continue  # daemon-wide events are for admins
        out.append(event)
        if len(out) >= limit:
            break
    return web.json_response({"events": out})


async def healthz(request: web.Request) -> web.Response:
    """Liveness for load balancers: no login, no console names, only counts."""
    states = Counter(c.state for c in request.app[manager_key].consoles())
    return web.json_response({"status": "ok", "consoles": sum(states.values()),
                              "states": dict(states)})
