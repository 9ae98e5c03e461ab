"""`/api/cluster`, the cluster's `/metrics` series, and redirects to a console's owner.

Kept here rather than in `solgate/web/` so a server without `[cluster]` has neither route
nor series. The collector joins the app's own registry (`registry_for`), so one scrape of
`/metrics` returns the console series and these together.

A member runs only the consoles it owns. A request for a console it does not run
(`/consoles/NAME`, its log page, `/api/consoles/NAME/...`) that another member owns is
answered with a 307 redirect to the owner's `advertise` URL, for users allowed to see the
console; the browser then talks to the owner (and logs in there if it has no session
yet). WebSockets cannot follow redirects, but a console page served by the owner opens its
WebSocket on the owner.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import aiohttp_jinja2
from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from solgate.console.epochs import EPOCH_HEADER, Part, merged_lines
from solgate.console.logpart import read_part
from solgate.web.keys import auth_key, log_slots_key, manager_key, peer_logs_key
from solgate.web.logview import display_text
from solgate.web.metrics import registry_for
from solgate.web.middleware import identity, require_identity

if TYPE_CHECKING:
    from solgate.cluster.fleet import Fleet
    from solgate.cluster.shell import ClusterMember

cluster_key: web.AppKey[ClusterMember] = web.AppKey("cluster")
fleet_key: web.AppKey[Fleet] = web.AppKey("cluster_fleet")


MAX_LOCAL_LOG_LINES = 100_000
MAX_LOCAL_LOG_BYTES = 16 * 1024 * 1024


def _console_lines(request: web.Request, default: str) -> tuple[str, int]:
    """The console named in the URL (404 unless configured and this user may see it) and
    the `lines` asked for, 1 to `MAX_LOCAL_LOG_LINES`."""
    ident = require_identity(request)
    name = request.match_info["console"]
    console = request.app[cluster_key].manager.config.consoles.get(name)
    if console is None or not ident.user.can_view(console.name, console.tags):
        raise web.HTTPNotFound(text=f"no console named {name!r}")
    try:
        lines = max(1, min(int(request.query.get("lines", default)), MAX_LOCAL_LOG_LINES))
    except ValueError:
        raise web.HTTPBadRequest(text="lines must be a number, like ?lines=2000") from None
    return name, lines


async def local_log(request: web.Request) -> web.Response:
    """What *this* member logged for a console, whoever runs it now (never redirected):
    `solgate cluster log` fetches it from every member and merges by epoch."""
    member = request.app[cluster_key]
    name, lines = _console_lines(request, "10000")
    part = await asyncio.to_thread(read_part, member.manager.log_path(name), lines,
                                   max_bytes=MAX_LOCAL_LOG_BYTES)
    return web.Response(body=part.data, content_type="application/octet-stream",
                        headers={"X-Solgate-Member": member.name,
                                 EPOCH_HEADER: str(part.epoch)})


@dataclass(frozen=True, slots=True)
class History:
    """One console's merged history as the asking member could gather it."""

    lines: list[tuple[int, bytes]]  # (epoch of its piece, raw line), oldest first
    members: list[str]  # whose pieces are in it
    missing: list[str]  # live members that did not answer
    older: str | None = None  # the cursor of the page before this one
    too_deep: bool = False  # older lines exist but are beyond what a page may skip

    @property
    def data(self) -> bytes:
        return b"".join(line for _, line in self.lines)


async def gather_history(request: web.Request, name: str, lines: int,
                         through: int | None = None) -> History:
    """This member's log of `name` and every other member's, merged in epoch order;
    with `through`, each member's part up to the end of that epoch."""
    from solgate.cluster.fleet import read_local_log
    from solgate.console.logpart import TooDeep

    member = request.app[cluster_key]
    logs: dict[str, Part] = {}
    missing: list[str] = []
    try:
        logs[member.name] = await read_local_log(member, name, str(lines), through)
    except TooDeep:
        missing.append(member.name)
    for peer, data in (await request.app[fleet_key].logs(name, lines, through)).items():
        if data is None:
            missing.append(peer)
        else:
            logs[peer] = data
    return History(merged_lines(logs), sorted(logs), sorted(missing))


def _parse_cursor(text: str) -> tuple[int, int] | None:
    """`before=E.K`: the history up to the end of epoch E, without its last K lines."""
    if not text:
        return None
    try:
        epoch, skip = (int(part) for part in text.split(".", 1))
    except ValueError:
        raise web.HTTPBadRequest(text="before must look like 812.0 (from an Older link)") \
            from None
    if epoch < 0 or not 0 <= skip <= MAX_LOCAL_LOG_LINES:
        raise web.HTTPBadRequest(text="before is out of range; start again from the newest")
    return epoch, skip


async def history_page_lines(request: web.Request, name: str, lines: int) -> History:
    """One page of the history: its last `lines` lines, or those before the `before`
    cursor, with the cursor of the page before it.

    A cursor names an epoch E and a count K: the page ends K lines before the end of the
    history of epochs up to E. Every member answers with the last `lines + K` lines of
    its part up to E; the history's last `lines + K` lines are all among them (the
    pieces are concatenated in epoch order), so the page is exact however the members'
    parts interleave. The next cursor is the page's first epoch and the lines of that
    epoch already shown, so deep pages cost more only within one long piece."""
    cursor = _parse_cursor(request.query.get("before", ""))
    through, skip = cursor if cursor is not None else (None, 0)
    # One line more than the page: whether older lines exist, when only one member's
    # part reaches back this far.
    gathered = await gather_history(request, name, lines + skip + 1, through)
    shown = gathered.lines[:len(gathered.lines) - skip] if skip else gathered.lines
    page = shown[-lines:]
    older = None
    too_deep = False
    if len(shown) > len(page) and page:
        first = page[0][0]
        seen = sum(1 for epoch, _ in page if epoch == first)
        seen += skip if first == through else 0
        if lines + seen <= MAX_LOCAL_LOG_LINES:
            older = f"{first}.{seen}"
        else:
            too_deep = True
    return History(page, gathered.members, gathered.missing, older, too_deep)


def _history_request(request: web.Request) -> tuple[str, int, str]:
    name, lines = _console_lines(request, "2000")
    return name, lines, request.query.get("q", "").strip()[:200]


def _matching(history: History, query: str) -> list[str]:
    """The history as display lines; with a query, only the lines containing it."""
    shown = [display_text(raw) for raw in history.data.splitlines()]
    if query:
        needle = query.casefold()
        shown = [line for line in shown if needle in line.casefold()]
    return shown


async def history_api(request: web.Request) -> web.StreamResponse:
    """`GET /api/cluster/history/NAME[?lines=N&before=CURSOR&q=TEXT|?whole=1]`: the
    console's history across members as raw bytes (as logged), a page of it
    (`X-Solgate-Older` names the cursor of the page before), with `q` the matching lines
    as text, or with `whole=1` all of it, every rotated file, streamed."""
    name, lines, query = _history_request(request)
    if request.query.get("whole") == "1" and not query:
        return await _download(request, name)
    if query:
        history = await gather_history(request, name, lines)
    else:
        history = await history_page_lines(request, name, lines)
    headers = {"X-Solgate-Members": ",".join(history.members),
               "X-Solgate-Missing": ",".join(history.missing),
               "X-Solgate-Older": history.older or ""}
    if query:
        text = "".join(line + "\n" for line in _matching(history, query))
        return web.Response(text=text, content_type="text/plain", headers=headers)
    return web.Response(body=history.data, content_type="application/octet-stream",
                        headers=headers)


async def _download(request: web.Request, name: str) -> web.StreamResponse:
    """`?whole=1`: every member's whole log, merged and streamed (`download.py`)."""
    from solgate.cluster.download import download_history

    member = request.app[cluster_key]
    peers = request.app[fleet_key].peers() if member.cluster.member_secret else {}
    # One of the user's log-read slots for as long as it streams: a user cannot start
    # downloads without bound (the next gets 429, as other log reads do).
    async with request.app[log_slots_key].hold(require_identity(request).user.name,
                                               json=True):
        return await download_history(request, member.name,
                                      member.manager.log_path(name),
                                      peers, member.cluster.member_secret, name)


@aiohttp_jinja2.template("cluster_history.html")
async def history_page(request: web.Request) -> dict[str, Any]:
    """The log view across members: every member's part in ownership order, the
    ownership and handover notes in between, a page at a time back to the oldest rotated
    file; `?q=` searches every member's last `lines` lines."""
    name, lines, query = _history_request(request)
    if query:
        history = await gather_history(request, name, lines)
    else:
        history = await history_page_lines(request, name, lines)
    ident = identity(request)
    base = f"/consoles/{quote(name, safe='')}/history"
    older_url, newer_url = _paging_urls(request, base, lines, history.older)
    return {"title": f"{name} history", "user": ident.user if ident else None,
            "csrf_token": ident.session.csrf_token if ident and ident.session else "",
            "login_required": request.app[auth_key].login_required,
            "console_name": name, "query": query, "lines": [
                (line, "event-mark" if line.startswith("[-- solgate") else "")
                for line in _matching(history, query)],
            "members": history.members, "missing": history.missing, "limit": lines,
            "paged": "before" in request.query and not query,
            "older_url": older_url if not query else None,
            "newer_url": newer_url if not query else None,
            "newest_url": f"{base}?{urlencode({'lines': lines})}",
            "search_all_url": "/search?" + urlencode({"q": query, "console": name,
                                                      "since": ""}) if query else None,
            "too_deep": history.too_deep}


MAX_TRAIL = 64  # newer pages a history page remembers for its "Newer" link


def _paging_urls(request: web.Request, base: str, lines: int,
                 older: str | None) -> tuple[str | None, str | None]:
    """The history page's "Older" and "Newer" links.

    A cursor counts back from the end of an epoch, so the page after a page cannot be
    named from the page alone once it crosses into a newer epoch. Each "Older" link
    therefore carries the cursors of the pages it came from (`trail`, "n" for the
    newest page, at most `MAX_TRAIL`), and "Newer" goes back along them; a page opened
    without a trail steps forward within its epoch only."""
    before = request.query.get("before", "")
    trail = [c for c in request.query.get("trail", "").split(",") if c][-MAX_TRAIL:]
    if any(c != "n" and not re.fullmatch(r"\d+\.\d+", c) for c in trail):
        trail = []  # not one this page wrote: no way back along it

    def url(**query: str | int) -> str:
        return f"{base}?{urlencode({**query, 'lines': lines})}"

    older_url = None
    if older:
        older_url = url(before=older, trail=",".join([*trail, before or "n"][-MAX_TRAIL:]))
    newer_url = None
    if before and trail:
        last, rest = trail[-1], trail[:-1]
        newer_url = url() if last == "n" else \
            url(before=last, **({"trail": ",".join(rest)} if rest else {}))
    elif before:
        cursor = _parse_cursor(before)
        if cursor is not None and cursor[1] >= lines:
            newer_url = url(before=f"{cursor[0]}.{cursor[1] - lines}")
    return older_url, newer_url


async def cluster_status(request: web.Request) -> web.Response:
    """Members, leases, consoles per member and recent moves, as this member sees them."""
    require_identity(request)
    return web.json_response(request.app[cluster_key].status())


class ClusterCollector(Collector):
    """Membership and lease health at scrape time (plain reads of the member's counters)."""

    def __init__(self, member: ClusterMember) -> None:
        self.member = member

    def collect(self) -> Iterator[Metric]:
        from solgate.cluster.shell import RENEW_BUCKETS

        m = self.member
        core = m.core
        yield GaugeMetricFamily("solgate_cluster_members",
                                "Live cluster members (member keys in etcd) seen by this member.",
                                value=len(core.members))
        yield GaugeMetricFamily("solgate_cluster_consoles_owned",
                                "Consoles this member owns and runs.", value=len(core.running))
        yield GaugeMetricFamily("solgate_cluster_fenced",
                                "1 while this member has stopped all SOL because it cannot "
                                "prove its etcd lease.", value=1 if core.fenced else 0)
        yield CounterMetricFamily("solgate_console_moves",
                                  "Consoles this member took over from another member.",
                                  value=core.moves)
        yield CounterMetricFamily("solgate_cluster_fences",
                                  "Times this member fenced itself.", value=m.fences)
        yield CounterMetricFamily("solgate_cluster_lease_renew_failures",
                                  "Lease renewals that failed or timed out.",
                                  value=m.renew_failures)
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*RENEW_BUCKETS, float("inf")), m.renew_latency_buckets,
                            strict=True):
            total += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
        yield HistogramMetricFamily("solgate_cluster_lease_renew_seconds",
                                    "Time for etcd to answer a lease renewal.",
                                    buckets=buckets, sum_value=m.renew_latency_sum)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def redirect_to_owner(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Send a request for a console another member runs to that member."""
    name = request.match_info.get("name")
    if name is None or request.app[manager_key].get(name) is not None:
        return await handler(request)
    member = request.app[cluster_key]
    console = member.manager.config.consoles.get(name)
    url = member.owner_url(name)
    ident = identity(request)
    if console is None or url is None or ident is None or not ident.user.can_view(
            console.name, console.tags):
        return await handler(request)
    raise web.HTTPTemporaryRedirect(url.rstrip("/") + request.path_qs)


def setup_cluster_routes(app: web.Application, member: ClusterMember) -> None:
    from solgate.cluster.fleet import Fleet, fleet_middleware, peer_middleware
    from solgate.cluster.follow import setup_follow
    from solgate.web.middleware import auth_middleware
    from solgate.web.ws import console_ws

    app[cluster_key] = member
    # Member-to-member reads carry the member secret, not a user login: served just
    # before the login check (after the security headers and request timeouts).
    app.middlewares.insert(app.middlewares.index(auth_middleware), peer_middleware(member))
    app.middlewares.append(redirect_to_owner)
    fleet = app[fleet_key] = Fleet(member)
    app[peer_logs_key] = fleet  # the search page searches every member
    app.middlewares.append(fleet_middleware(member, fleet))
    app.router.add_get("/api/cluster/peer/ws/{name}", console_ws)  # see peer_middleware
    setup_follow(app)
    app.router.add_get("/consoles/{console}/history", history_page)
    app.router.add_get("/api/cluster/history/{console}", history_api)
    aiohttp_jinja2.get_env(app).globals["cluster_member"] = member.name

    async def close_fleet(_app: web.Application) -> None:
        await fleet.close()

    app.on_cleanup.append(close_fleet)
    app.router.add_get("/api/cluster", cluster_status)
    app.router.add_get("/api/cluster/logs/{console}", local_log)
    registry, _ = registry_for(app)
    registry.register(ClusterCollector(member))
