"""The web side of `solgate screen`, `export` and `grep`: a console's screen at a moment,
a recording to download, and a search across the consoles a user may see.

The work is the same code as the commands (`solgate.forensics`), run like every other
log read of the web app (`solgate.web.limits.run_log_read`): in the log-reading threads,
apart from password hashing, and at most `LOG_READS_PER_USER` at once per user (the
next gets 429 and a Retry-After), so one curious user can starve neither logins nor
other users. Each request is bounded too: a screen replays at most `DEFAULT_REPLAY`
bytes, a recording covers at most `MAX_CAST_BYTES` of output, a search stops at
`SEARCH_LIMIT` hits, `SEARCH_BUDGET` seconds or when the browser goes away.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import io
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from solgate.console.bundle import format_bundle, read_bundle
from solgate.console.log import format_time
from solgate.console.logindex import Timeline, first_time
from solgate.console.logread import iter_log_files
from solgate.console.replay import DEFAULT_REPLAY, asciicast, screen_at
from solgate.errors import SolgateError
from solgate.forensics import GrepResult, Hit, grep_logs, parse_time
from solgate.users import User
from solgate.web.api import visible_console
from solgate.web.keys import data_dir_key, manager_key, peer_logs_key
from solgate.web.limits import run_log_read
from solgate.web.middleware import CONTENT_SECURITY_POLICY, json_error, require_identity
from solgate.web.views import _page_context

if TYPE_CHECKING:
    from solgate.console.logwindow import Merged
    from solgate.web.model import PeerLogs

T = TypeVar("T")

MAX_CAST_BYTES = 32 * 1024 * 1024
SEARCH_LIMIT = 200
SEARCH_BUDGET = 5.0
CAST_DEFAULT_SPAN = 600.0  # the recording link on the screen page: the 10 minutes before

def _timeline(path: Any, t_from: float, t_to: float) -> Timeline:
    return Timeline.around(iter_log_files(path), t_from, t_to)


def _at(text: str, default: float) -> float:
    if not text:
        return default
    try:
        return parse_time(text[:100])
    except SolgateError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


# The screen page loads the vendored asciinema player, whose terminal is WebAssembly:
# that page alone may compile WebAssembly (not eval JavaScript).
PLAYER_CSP = CONTENT_SECURITY_POLICY.replace("script-src 'self'",
                                             "script-src 'self' 'wasm-unsafe-eval'")


async def screen_page(request: web.Request) -> web.Response:
    """The console's screen at a moment, with a slider over the log's time span."""
    response = aiohttp_jinja2.render_template("screen.html", request,
                                              await _screen_context(request))
    response.headers["Content-Security-Policy"] = PLAYER_CSP
    return response


@dataclass(frozen=True, slots=True)
class _Named:
    """A console the page names but this member does not run (in a cluster)."""

    name: str


def _console_anywhere(request: web.Request, peers: PeerLogs | None) -> Any:
    """The console named in the URL: run here, or in a cluster configured (its log may
    be on any member); 404 if this user may not see it."""
    if peers is None:
        return visible_console(request)
    ident = require_identity(request)
    name = request.match_info["name"]
    tags = {n: t for n, t, _ in peers.local_logs()}.get(name)
    if tags is None or not ident.user.can_view(name, tags):
        raise web.HTTPNotFound(text=json.dumps({"error": f"no console named {name!r}"}),
                               content_type="application/json")
    return request.app[manager_key].get(name) or _Named(name)


async def _cluster_replay(request: web.Request, peers: PeerLogs, name: str, t1: float,
                          t2: float, job: Callable[[Merged], T]) -> tuple[T, list[str]]:
    """`job` run on the console's log between two times across every member, merged in
    epoch order (`solgate.console.logwindow`); and why some members' parts are missing."""
    from solgate.console.logwindow import merge_windows

    windows, missing = await peers.windows(name, t1, t2, DEFAULT_REPLAY)

    def work() -> T:
        with tempfile.TemporaryDirectory(prefix="solgate-replay-") as tmp:
            return job(merge_windows(windows, Path(tmp)))

    result = await run_log_read(request, require_identity(request).user.name, work)
    return result, [f"member {m}: {why}" for m, why in sorted(missing.items())]


async def _screen_context(request: web.Request) -> dict[str, Any]:
    ident = require_identity(request)
    peers = request.app.get(peer_logs_key)
    console = _console_anywhere(request, peers)
    at = _at(request.query.get("at", "").strip(), time.time())

    def shown_at(timeline: Timeline, first: float | None, last: float | None,
                 before_window: float | None = None, after_window: float | None = None,
                 *, empty: bool) -> dict[str, Any]:
        shown = screen_at(timeline, at, replay=DEFAULT_REPLAY)
        notes = timeline.notes()
        before = [m.time for m in notes if m.time < at - 0.001]
        after = [m.time for m in notes if m.time > at + 0.001]
        if before_window is not None:
            before = sorted([*before, before_window])
        if after_window is not None:
            after = sorted([*after, after_window])
        return {"shown": shown, "first": first, "last": last,
                "prev_note": before[-1] if before else None,
                "next_note": after[0] if after else None,
                "empty": empty}

    def work() -> dict[str, Any]:
        files = iter_log_files(console.log_path)
        timeline = Timeline.around(files, at, at)
        last = timeline.last_time if timeline.files else None  # the newest file's mtime
        return shown_at(timeline, first_time(files), last, empty=not timeline.files)

    missing: list[str] = []
    if peers is None:
        result = await run_log_read(request, ident.user.name, work)
    else:
        result, missing = await _cluster_replay(
            request, peers, console.name, at, at,
            lambda m: shown_at(m.timeline, m.first, m.last, m.note_before, m.note_after,
                               empty=m.first is None))
    shown = result["shown"]

    def at_url(t: float | None) -> str | None:
        return None if t is None else f"?{urlencode({'at': format_time(t, millis=True)})}"

    cast_from = max(at - CAST_DEFAULT_SPAN, result["first"] or at)
    cast_url = (f"/api/consoles/{console.name}/cast?"
                + urlencode({"from": format_time(cast_from, millis=True),
                             "to": format_time(at, millis=True)}))
    return _page_context(
        request, title=f"{console.name} at {format_time(at)}", console=console,
        at=format_time(at, millis=True), at_epoch=int(at), rows=shown.screen.display,
        header=shown.header(console.name), empty=result["empty"],
        first=int(result["first"]) if result["first"] else None,
        last=int(result["last"]) + 1 if result["last"] else None,
        prev_note_url=at_url(result["prev_note"]), next_note_url=at_url(result["next_note"]),
        minus_url=at_url(at - 60), plus_url=at_url(at + 60), cast_url=cast_url,
        missing=missing,
    )


async def get_cast(request: web.Request) -> web.StreamResponse:
    """`GET /api/consoles/{name}/cast?from=T1&to=T2`: an asciicast v2 download."""
    ident = require_identity(request)
    peers = request.app.get(peer_logs_key)
    console = _console_anywhere(request, peers)
    now = time.time()
    try:
        t1 = parse_time(request.query.get("from", "")[:100] or "10m", now=now)
        t2 = parse_time(request.query.get("to", "")[:100] or "now", now=now)
    except SolgateError as exc:
        return json_error(400, str(exc))
    if t2 < t1:
        return json_error(400, "'to' is before 'from'; give the earlier time first")

    def cast(timeline: Timeline) -> str | None:
        if timeline.offset_at(t2) - timeline.offset_at(t1) > MAX_CAST_BYTES:
            return None
        out = io.StringIO()
        asciicast(timeline, t1, t2, out,
                  title=f"{console.name} {format_time(t1)} - {format_time(t2)}")
        return out.getvalue()

    missing: list[str] = []
    if peers is None:
        text = await run_log_read(request, ident.user.name,
                                  lambda: cast(_timeline(console.log_path, t1, t2)))
    else:
        text, missing = await _cluster_replay(request, peers, console.name, t1, t2,
                                              lambda m: cast(m.timeline))
    if text is None or any("MiB of log" in why for why in missing):
        return json_error(413, f"more than {MAX_CAST_BYTES // 2**20} MiB of output between "
                               "those times; choose a shorter stretch")
    name = f"{console.name}-{format_time(t1).replace(':', '')}.cast"
    # A member that did not answer: its part is missing from the recording, said here.
    headers = {"Content-Disposition": f'attachment; filename="{name}"',
               **({"X-Solgate-Missing": "; ".join(missing)} if missing else {})}
    return web.Response(text=text, content_type="application/x-asciicast", headers=headers)


def _search_pattern(query: str, regex: bool) -> re.Pattern[str]:
    try:
        return re.compile(query if regex else re.escape(query), re.IGNORECASE)
    except re.error as exc:
        raise web.HTTPBadRequest(text=f"{query!r} is not a regular expression ({exc})") from None


def _search_params(request: web.Request) -> dict[str, Any]:
    return {"q": request.query.get("q", "").strip()[:200],
            "since": request.query.get("since", "24h").strip()[:100],
            "console": request.query.get("console", "").strip()[:100],
            "tag": request.query.get("tag", "").strip()[:100],
            "regex": request.query.get("regex", "") in ("1", "on", "true")}


async def search_here(request: web.Request, user: User,
                      params: dict[str, Any]) -> tuple[GrepResult, int]:
    """This member's logs of the consoles `user` may see: its hits and how many logs.

    In a cluster that is every configured console's log on this member's disk, whoever
    runs the console now (a console that moved away keeps its older lines here)."""
    pattern = _search_pattern(params["q"], params["regex"])
    since = _at(params["since"], 0.0) if params["since"] else None
    glob, tag = params["console"], params["tag"]
    peers = request.app.get(peer_logs_key)
    if peers is not None:
        candidates = list(peers.local_logs())
    else:
        candidates = [(c.name, tuple(c.tags), c.log_path)
                      for c in request.app[manager_key].consoles()]
    chosen = [(name, path) for name, tags, path in candidates
              if user.can_view(name, tags)
              and (not glob or fnmatch.fnmatchcase(name, glob)) and (not tag or tag in tags)]
    transport = request.transport

    def gone() -> bool:
        return transport is None or transport.is_closing()

    result = await run_log_read(request, user.name, functools.partial(
        grep_logs, chosen, pattern, since=since, limit=SEARCH_LIMIT, budget=SEARCH_BUDGET,
        cancelled=gone))
    return result, len(chosen)


async def peer_search_answer(request: web.Request, user: User) -> dict[str, Any]:
    """Another member's search, run here as `user` (`/api/cluster/peer/search`)."""
    params = _search_params(request)
    if not params["q"]:
        raise web.HTTPBadRequest(text="give q")
    result, searched = await search_here(request, user, params)
    return {"hits": [{"console": h.console, "line": h.line, "t": h.time} for h in result.hits],
            "stopped": result.stopped, "searched": searched}


async def _search(request: web.Request) -> dict[str, Any]:
    """Run the search the query string asks for, over the consoles this user may see; in
    a cluster, on every member at once, the hits merged newest first with their member."""
    ident = require_identity(request)
    params = _search_params(request)
    empty: dict[str, Any] = {"hits": None, "stopped": None, "searched": 0, "members": [],
                             "missing": []}
    if not params["q"]:
        return {**params, **empty}
    _search_pattern(params["q"], params["regex"])  # a bad pattern is the asker's 400
    if params["since"]:
        _at(params["since"], 0.0)
    peers = request.app.get(peer_logs_key)
    if peers is None:
        result, searched = await search_here(request, ident.user, params)
        return {**params, **empty, "hits": result.hits, "stopped": result.stopped,
                "searched": searched}
    raw = {k: request.query[k] for k in ("q", "since", "console", "tag", "regex")
           if k in request.query}
    (result, searched), answers = await asyncio.gather(
        search_here(request, ident.user, params), peers.search(raw, ident.user.name))
    visible = {name: tags for name, tags, _ in peers.local_logs()}
    hits = [replace(h, member=peers.member_name) for h in result.hits]
    stopped = [f"{peers.member_name}: {result.stopped}"] if result.stopped else []
    missing = sorted(m for m, answer in answers.items() if answer is None)
    for member, answer in sorted(answers.items()):
        if answer is None:
            continue
        if answer.get("stopped"):
            stopped.append(f"{member}: {answer['stopped']}")
        for h in answer.get("hits") or ():
            name = h.get("console") if isinstance(h, dict) else None
            if not isinstance(name, str) or name not in visible \
                    or not ident.user.can_view(name, visible[name]):
                continue
            t = h.get("t")
            hits.append(Hit(name, float(t) if isinstance(t, int | float) else None,
                            str(h.get("line", "")), member))
    hits.sort(key=lambda h: -(h.time or 0.0))
    if len(hits) > SEARCH_LIMIT:
        del hits[SEARCH_LIMIT:]
        stopped.append(f"the limit of {SEARCH_LIMIT} hits was reached")
    return {**params, "hits": hits, "stopped": "; ".join(stopped) or None,
            "searched": searched, "members": sorted({peers.member_name, *answers} - {*missing}),
            "missing": missing}


@aiohttp_jinja2.template("search.html")
async def search_page(request: web.Request) -> dict[str, Any]:
    """Which consoles printed something, when, with a link to the screen at that moment."""
    found = await _search(request)

    def screen_url(name: str, t: float | None) -> str:
        at = {"at": format_time(t, millis=True)} if t is not None else {}
        return f"/consoles/{name}/screen?{urlencode(at)}"

    return _page_context(request, title="Search the logs", format_time=format_time,
                         screen_url=screen_url, **found)


async def get_search(request: web.Request) -> web.Response:
    """`GET /api/search?q=...`: the same search as JSON."""
    found = await _search(request)
    hits = found.pop("hits") or []
    return web.json_response({
        **found,
        "hits": [{"console": h.console, "line": h.line,
                  "time": format_time(h.time, millis=True) if h.time is not None else None,
                  **({"member": h.member} if h.member else {})}
                 for h in hits],
    })


async def _visible_bundle(request: web.Request) -> dict[str, Any]:
    """The bundle named in the URL, if its console is one this user may see; else 404.
    In a cluster, a bundle another member recorded is fetched from it."""
    ident = require_identity(request)
    name = request.match_info["id"]
    found: dict[str, Any] | None
    try:
        found = await run_log_read(request, ident.user.name,
                                   functools.partial(read_bundle, request.app[data_dir_key], name))
    except SolgateError:
        found = None
    peers = request.app.get(peer_logs_key)
    if peers is None:
        console = request.app[manager_key].get(str(found.get("console"))) if found else None
        tags = tuple(console.tags) if console is not None else None
    else:
        if found is None:
            remote = await peers.bundle(name)
            found = dict(remote) if remote is not None else None
        configured = {n: t for n, t, _ in peers.local_logs()}
        tags = configured.get(str(found.get("console"))) if found else None
    if found is None or tags is None \
            or not ident.user.can_view(str(found.get("console")), tags):
        raise web.HTTPNotFound(text=f"no panic bundle {name!r}")
    return found


async def get_bundle(request: web.Request) -> web.Response:
    """`GET /api/bundles/{id}`: one panic bundle as JSON (the webhook names the ID)."""
    return web.json_response(await _visible_bundle(request))


@aiohttp_jinja2.template("bundle.html")
async def bundle_page(request: web.Request) -> dict[str, Any]:
    found = await _visible_bundle(request)
    return _page_context(request, title=f"panic bundle {found.get('id')}", bundle=found,
                         text=format_bundle(found))
