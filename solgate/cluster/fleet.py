"""The whole fleet on any member: console list and events gathered from the other members.

A member runs only the consoles it owns, yet an operator opening any member's console list
or events wants every console. Each member answers `/api/cluster/peer/consoles` and
`/api/cluster/peer/events` for the members (a shared `member_secret` from `[cluster]`, in
the `X-Solgate-Member-Secret` header, compared in constant time; never logged); a member
asked for `/api/consoles` or `/api/events` adds what the others answer, filtered by the
asking user's rights here (every member has the same users and consoles).

Why ask the members and not keep the states in etcd: the states change all the time
(output ages, viewers, SOL up/down), and 10,000 consoles' states written to etcd would
load the store every member needs for its lease; etcd keeps every revision until
compaction. Asking costs only when someone looks: one GET per other member, bounded by
`PEER_TIMEOUT`, shared by every request within `CACHE_SECONDS`, about 200 bytes a console
(2 MB for 10,000, once a second at most, whatever the number of browsers). Ownership comes
from etcd as before, so a member that does not answer still shows its consoles, marked
"owner unreachable".
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import aiohttp
from aiohttp import web

from solgate.cluster.peer import AS_USER_HEADER, SECRET_HEADER, error_text
from solgate.console.epochs import EPOCH_HEADER, Part
from solgate.console.events import read_events, record_time
from solgate.users import LOCAL_USER
from solgate.web.keys import auth_key, data_dir_key
from solgate.web.middleware import IDENTITY, Identity, identity
from solgate.web.model import console_json

if TYPE_CHECKING:
    from solgate.cluster.shell import ClusterMember
    from solgate.console.logwindow import Window

logger = logging.getLogger("solgate.cluster")
T = TypeVar("T")
PEER_TIMEOUT = 1.5  # seconds for one member's answer; a slow member must not stall a page
CACHE_SECONDS = 1.0
HISTORY_TIMEOUT = 5.0  # a log is bigger than a state list: up to 16 MiB from each member
WINDOW_TIMEOUT = 30.0  # a window may be a 32 MiB recording's worth
MAX_PEER_EVENTS = 5_000
DEFAULT_HISTORY_LINES = 2_000
MAX_HISTORY_LINES = 100_000
MAX_HISTORY_BYTES = 16 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Fetched = dict[str, list[dict[str, Any]] | None]  # member -> its answer, None: no answer


def peer_allowed(request: web.Request, member: ClusterMember) -> bool:
    secret = member.cluster.member_secret
    given = request.headers.get(SECRET_HEADER, "")
    return bool(secret) and hmac.compare_digest(given.encode(), secret.encode())


def peer_middleware(member: ClusterMember) -> Any:
    """Serve the member-to-member reads before the user login check (they carry the
    member secret instead); every other request passes through untouched."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/cluster/peer/"):
            return await handler(request)
        if not peer_allowed(request, member):
            return web.json_response({"error": "wrong or missing member secret; give "
                                               "every member the same [cluster] "
                                               "member_secret_file"}, status=403)
        if request.path == "/api/cluster/peer/consoles":
            now = time.time()
            return web.json_response({"member": member.name, "now": now, "consoles": [
                console_json(c, now=now, detail=True) for c in member.manager.consoles()]})
        if request.path == "/api/cluster/peer/events":
            return web.json_response({"member": member.name,
                                      "events": await local_events(request)})
        if request.path.startswith("/api/cluster/peer/ws/") \
                or request.path == "/api/cluster/peer/search":
            # Another member acting for a user it authenticated: its ssh gateway attaching
            # them, or its search page searching this member's logs with their rights.
            from solgate.cluster.sshproxy import proxied_via
            from solgate.web.forensics import peer_search_answer
            from solgate.web.ws import ATTACH_VIA, console_ws

            auth = request.app[auth_key]
            as_user = request.headers.get(AS_USER_HEADER, "")
            user = auth.users.get(as_user) or (LOCAL_USER if not auth.login_required
                                               else None)
            if user is None:
                return web.json_response({"error": f"no user {as_user!r} on {member.name}; "
                                                   "give every member the same users"},
                                         status=403)
            request[IDENTITY] = Identity(user, "proxy")
            if request.path == "/api/cluster/peer/search":
                return web.json_response({"member": member.name,
                                          **await peer_search_answer(request, user)})
            request[ATTACH_VIA] = proxied_via(request.headers)
            return await console_ws(request)
        if request.path.startswith("/api/cluster/peer/bundles/"):
            from solgate.console.bundle import read_bundle
            from solgate.errors import SolgateError

            try:
                bundle = await asyncio.to_thread(read_bundle, request.app[data_dir_key],
                                                 request.path.rsplit("/", 1)[1])
            except SolgateError:
                raise web.HTTPNotFound(text="no such panic bundle here") from None
            return web.json_response(bundle)
        if request.path.startswith("/api/cluster/peer/follow/"):
            from solgate.cluster.follow import serve_follow

            return await serve_follow(request, member, request.path.rsplit("/", 1)[1])
        if request.path.startswith("/api/cluster/peer/window/"):
            return await _serve_window(request, member, request.path.rsplit("/", 1)[1])
        if request.path == "/api/cluster/peer/grep":
            return web.json_response(await _serve_grep(request, member))
        if request.path.startswith("/api/cluster/peer/logs/"):
            name = request.path.rsplit("/", 1)[1]
            if name not in member.manager.config.consoles:
                raise web.HTTPNotFound(text=f"no console named {name!r}")
            if request.query.get("whole") == "1":
                from solgate.cluster.download import stream_whole_log

                return await stream_whole_log(
                    request, member.manager.log_path(name))
            try:
                through = int(request.query["through"]) if "through" in request.query \
                    else None
            except ValueError:
                raise web.HTTPBadRequest(text="through must be an epoch number") from None
            from solgate.console.logpart import TooDeep

            try:
                data = await read_local_log(member, name, request.query.get("lines", ""),
                                            through)
            except TooDeep as exc:
                return web.json_response({"error": str(exc)}, status=413)
            return web.Response(body=data.data, content_type="application/octet-stream",
                                headers={EPOCH_HEADER: str(data.epoch)})
        raise web.HTTPNotFound()

    return middleware


def _epoch_seconds(request: web.Request, key: str) -> float | None:
    text = request.query.get(key, "")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{key} must be epoch seconds") from None


async def _serve_window(request: web.Request, member: ClusterMember,
                        name: str) -> web.StreamResponse:
    """This member's log of `name` between `from` and `to` (epoch seconds), with
    `context` bytes before, and its time marks (`solgate.console.logwindow`)."""
    from solgate.console.logwindow import WindowTooBig, read_window

    if name not in member.manager.config.consoles:
        raise web.HTTPNotFound(text=f"no console named {name!r}")
    t1, t2 = _epoch_seconds(request, "from"), _epoch_seconds(request, "to")
    if t1 is None or t2 is None:
        raise web.HTTPBadRequest(text="give from and to")
    try:
        context = max(0, min(int(request.query.get("context", "0")), MAX_HISTORY_BYTES))
    except ValueError:
        raise web.HTTPBadRequest(text="context must be a number of bytes") from None
    path = member.manager.log_path(name)
    try:
        window = await asyncio.to_thread(read_window, path, t1, t2, context)
    except WindowTooBig as exc:
        return web.json_response({"error": f"{member.name}: {exc}"}, status=413)
    return web.Response(body=window.encode(), content_type="application/octet-stream")


MAX_PEER_GREP_BUDGET = 120.0


async def _serve_grep(request: web.Request, member: ClusterMember) -> dict[str, Any]:
    """`solgate grep` on another member: the same search over this member's logs of
    every console (whoever runs it now), as the command would run it here."""
    import re

    from solgate.forensics import console_names, grep_logs

    try:
        pattern = re.compile(request.query.get("pattern", ""),
                             re.IGNORECASE if request.query.get("ignore_case") == "1" else 0)
        limit = max(1, min(int(request.query.get("limit", "100")), MAX_PEER_EVENTS))
        budget = max(0.1, min(float(request.query.get("budget", "10")),
                              MAX_PEER_GREP_BUDGET))
    except (re.error, ValueError) as exc:
        raise web.HTTPBadRequest(text=f"bad grep parameters: {exc}") from None
    logs = member.manager.data_dir / "logs"
    names = console_names(logs, member.manager.config, request.query.get("console") or None,
                          request.query.get("tag") or None)
    transport = request.transport

    def gone() -> bool:
        return transport is None or transport.is_closing()

    result = await asyncio.to_thread(
        grep_logs, [(n, logs / f"{n}.log") for n in names], pattern,
        since=_epoch_seconds(request, "since"), until=_epoch_seconds(request, "until"),
        limit=limit, budget=budget, cancelled=gone)
    return {"member": member.name, "stopped": result.stopped,
            "hits": [{"console": h.console, "t": h.time, "line": h.line}
                     for h in result.hits]}


async def local_events(request: web.Request) -> list[dict[str, Any]]:
    """This member's events for `?console=` and `?kind=`, whichever consoles it runs now."""
    console = request.query.get("console") or None
    kinds = frozenset(k.strip() for k in request.query.get("kind", "").split(",") if k.strip())
    path = request.app[data_dir_key] / "events.jsonl"
    return await asyncio.to_thread(read_events, path, console=console, kinds=kinds,
                                   limit=MAX_PEER_EVENTS)


async def read_local_log(member: ClusterMember, name: str, lines: str,
                         through: int | None = None) -> Part:
    """The end of what this member logged for `name` (whoever runs it now), with the
    epoch it starts in; with `through`, the end of its pieces of that epoch or older
    (`history.read_part`)."""
    from solgate.console.logpart import read_part

    try:
        count = max(1, min(int(lines or DEFAULT_HISTORY_LINES), MAX_HISTORY_LINES))
    except ValueError:
        count = DEFAULT_HISTORY_LINES
    path = member.manager.log_path(name)
    return await asyncio.to_thread(read_part, path, count, through,
                                   max_bytes=MAX_HISTORY_BYTES)


class Fleet:
    """Reads the other members' consoles and events, with a short cache."""

    def __init__(self, member: ClusterMember) -> None:
        self.member = member
        self._session: aiohttp.ClientSession | None = None
        self._cache: tuple[float, Fetched] | None = None
        self._inflight: asyncio.Task[Fetched] | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT),
                headers={SECRET_HEADER: self.member.cluster.member_secret})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def peers(self) -> dict[str, str]:
        """Other live members and their advertise URLs."""
        core = self.member.core
        return {m.name: m.advertise for m in core.members.values()
                if m.name != self.member.name and m.advertise}

    async def _each_peer(self, ask: Callable[[str], Awaitable[T]]) -> dict[str, T]:
        """`ask(url)` of every other live member at once: member -> its answer."""
        peers = self.peers()
        answers = await asyncio.gather(*(ask(u) for u in peers.values()))
        return dict(zip(peers, answers, strict=True))

    async def _get(self, url: str, path: str, key: str,
                   params: dict[str, str] | None = None) -> list[dict[str, Any]] | None:
        try:
            async with self._client().get(url.rstrip("/") + path, params=params,
                                          allow_redirects=False) as resp:
                if resp.status != 200:
                    logger.warning("cluster: %s answered %d for %s", url, resp.status, path)
                    return None
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            logger.info("cluster: %s did not answer %s: %r", url, path, exc)
            return None
        items = body.get(key) if isinstance(body, dict) else None
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else None

    async def _gather(self, path: str, key: str,
                      params: dict[str, str] | None = None) -> Fetched:
        if not self.member.cluster.member_secret:
            return {}
        return await self._each_peer(lambda url: self._get(url, path, key, params))

    async def consoles(self) -> Fetched:
        """Every other member's consoles; one fetch shared by requests within a second."""
        now = time.monotonic()
        if self._cache is not None and now - self._cache[0] < CACHE_SECONDS:
            return self._cache[1]
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.get_running_loop().create_task(
                self._gather("/api/cluster/peer/consoles", "consoles"))
        fetched = await asyncio.shield(self._inflight)
        self._cache = (time.monotonic(), fetched)
        return fetched

    async def events(self, params: dict[str, str]) -> Fetched:
        return await self._gather("/api/cluster/peer/events", "events", params)

    @property
    def member_name(self) -> str:
        return self.member.name

    def local_logs(self) -> list[tuple[str, tuple[str, ...], Path]]:
        """Every configured console's log on this member's disk, run here or not."""
        manager = self.member.manager
        return [(name, tuple(c.tags), manager.log_path(name))
                for name, c in self.member.manager.config.consoles.items()]

    async def search(self, params: Mapping[str, str],
                     user: str) -> dict[str, dict[str, Any] | None]:
        """The same search on every other live member as `user` (`/api/cluster/peer/
        search`); None for a member that did not answer in time."""
        if not self.member.cluster.member_secret:
            return {}
        from solgate.web.forensics import SEARCH_BUDGET

        async def one(url: str) -> dict[str, Any] | None:
            try:
                async with self._client().get(
                        url.rstrip("/") + "/api/cluster/peer/search", params=dict(params),
                        headers={AS_USER_HEADER: user}, allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=SEARCH_BUDGET + 3)) as resp:
                    body = await resp.json() if resp.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                logger.info("cluster: %s did not answer a search: %r", url, exc)
                return None
            return body if isinstance(body, dict) else None
        return await self._each_peer(one)

    async def bundle(self, ident: str) -> dict[str, Any] | None:
        """The panic bundle `ident` from the first other member that has it."""
        if not self.member.cluster.member_secret:
            return None
        path = f"/api/cluster/peer/bundles/{quote(ident, safe='')}"

        async def one(url: str) -> dict[str, Any] | None:
            try:
                async with self._client().get(url.rstrip("/") + path,
                                              allow_redirects=False) as resp:
                    body = await resp.json() if resp.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return None
            return body if isinstance(body, dict) else None
        for found in (await self._each_peer(one)).values():
            if found is not None:
                return found
        return None

    async def windows(self, console: str, t1: float, t2: float,
                      context: int) -> tuple[dict[str, Window], dict[str, str]]:
        """This member's log of `console` between two times and every other live
        member's (`solgate.console.logwindow`), and why a member's part is missing."""
        from solgate.console.logwindow import Window, WindowTooBig, read_window

        path = self.member.manager.log_path(console)
        found: dict[str, Window] = {}
        missing: dict[str, str] = {}

        async def here() -> None:
            try:
                found[self.member.name] = await asyncio.to_thread(read_window, path, t1, t2,
                                                                  context)
            except WindowTooBig as exc:
                missing[self.member.name] = str(exc)

        params = {"from": repr(t1), "to": repr(t2), "context": str(context)}
        peers = self.peers() if self.member.cluster.member_secret else {}

        async def one(member: str, url: str) -> None:
            where = f"{url.rstrip('/')}/api/cluster/peer/window/{quote(console, safe='')}"
            try:
                async with self._client().get(
                        where, params=params, allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=WINDOW_TIMEOUT)) as resp:
                    if resp.status == 200:
                        found[member] = Window.decode(await resp.read())
                        return
                    why = error_text(await resp.read())
                    missing[member] = f"it answered {resp.status}: {why}"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                logger.info("cluster: %s did not answer %s: %r", url, where, exc)
                missing[member] = "it did not answer"
        await asyncio.gather(here(), *(one(m, u) for m, u in peers.items()))
        return found, missing

    async def logs(self, console: str, lines: int,
                   through: int | None = None) -> dict[str, Part | None]:
        """What every other member logged for `console` (None: it did not answer); with
        `through`, up to the end of that epoch."""
        if not self.member.cluster.member_secret:
            return {}

        async def one(url: str) -> Part | None:
            path = f"/api/cluster/peer/logs/{quote(console, safe='')}"
            try:
                async with self._client().get(
                        url.rstrip("/") + path, params={
                            "lines": str(lines),
                            **({"through": str(through)} if through is not None else {})},
                        allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=HISTORY_TIMEOUT)) as resp:
                    if resp.status != 200:
                        return None
                    return Part(await resp.read(), int(resp.headers.get(EPOCH_HEADER) or 0))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                logger.info("cluster: %s did not answer %s: %r", url, path, exc)
                return None
        return await self._each_peer(one)


def _missing_row(name: str, tags: tuple[str, ...], owner: str | None,
                 reachable: bool, now: float) -> dict[str, Any]:
    """A console no member reported: its owner is down or slow, or nobody owns it yet."""
    state = "unowned" if owner is None else "unknown" if reachable else "owner-unreachable"
    words = (f"owner {owner} unreachable" if not reachable else f"unknown (on {owner})") \
        if owner is not None else "not running on any member yet"
    return {"name": name, "tags": list(tags), "state": state, "state_words": words,
            "state_detail": "", "state_since": now, "state_age": 0.0, "last_output": None,
            "last_output_age": None, "panic_count": 0, "viewers": 0, "writer": None,
            "healthy": False, "member": owner}


def fleet_middleware(member: ClusterMember, fleet: Fleet) -> Any:
    """Add the other members' consoles to `/api/consoles` and their events to
    `/api/events` (the list and events pages poll these)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if request.path not in ("/api/consoles", "/api/events") \
                or not isinstance(response, web.Response) or response.status != 200 \
                or request.method != "GET" or not isinstance(response.body, bytes) \
                or request.query.get("local") == "1":  # ?local=1: this member's only
            return response
        ident = identity(request)
        if ident is None:
            return response
        body = json.loads(response.body)
        if request.path == "/api/consoles":
            body["consoles"] = await _fleet_consoles(request, member, fleet, body["consoles"])
        else:
            # This member's own events are re-read: the handler drops those of consoles
            # it no longer runs, which belong in the fleet's history too.
            body["events"] = await _fleet_events(request, member, fleet,
                                                 await local_events(request))
        body["cluster"] = {"member": member.name,
                           "unreachable": sorted(n for n, v in (fleet._cache or (0, {}))[1]
                                                 .items() if v is None)}
        return web.json_response(body, headers={
            k: v for k, v in response.headers.items()
            if k.lower() not in ("content-type", "content-length")})

    return middleware


async def _fleet_consoles(request: web.Request, member: ClusterMember, fleet: Fleet,
                          local: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ident = identity(request)
    assert ident is not None
    user = ident.user
    configured = member.manager.config.consoles
    for row in local:
        row["member"] = member.name
    seen = {row["name"] for row in local}
    fetched = await fleet.consoles()
    now = time.time()
    reported: dict[str, dict[str, Any]] = {}
    for name, rows in fetched.items():
        for row in rows or ():
            if isinstance(row.get("name"), str):
                reported[row["name"]] = {**row, "member": name}
    out = list(local)
    visible = [c for n, c in configured.items()
               if n not in seen and user.can_view(c.name, c.tags)]
    for console in visible:
        name = console.name
        owner = member.core.owners.get(name)
        found = reported.get(name)
        if found is not None and (owner is None or owner.member == found["member"]):
            row = found
            if not user.sees_bmc_details:
                row["state_detail"] = ""
            row["can_write"] = user.can_write(name, console.tags)
            row["can_power"] = user.can_power(name, console.tags)
            out.append(row)
            continue
        owner_name = owner.member if owner is not None else None
        reachable = owner_name is not None and fetched.get(owner_name) is not None
        if owner_name is not None and not member.cluster.member_secret:
            reachable = True  # not asked: no secret to ask with
        out.append({**_missing_row(name, console.tags, owner_name, reachable, now),
                    "can_write": user.can_write(name, console.tags),
                    "can_power": user.can_power(name, console.tags)})
    out.sort(key=lambda r: str(r["name"]))
    return out


async def _fleet_events(request: web.Request, member: ClusterMember, fleet: Fleet,
                        local: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ident = identity(request)
    assert ident is not None
    user = ident.user
    params = {k: request.query[k] for k in ("console", "kind") if k in request.query}
    fetched = await fleet.events(params)
    configured = member.manager.config.consoles
    try:
        limit = min(MAX_PEER_EVENTS, max(1, int(request.query.get("limit", "200"))))
    except ValueError:
        limit = 200
    merged = []
    for peer, events in [(member.name, local), *fetched.items()]:
        for event in events or ():
            name = event.get("console")
            if name is None:
                if not user.is_admin:
                    continue
            else:
                console = configured.get(str(name))
                if console is None or not user.can_view(console.name, console.tags):
                    continue
            merged.append({**event, "member": peer})
    with contextlib.suppress(TypeError):
        merged.sort(key=lambda e: record_time(e) or 0.0, reverse=True)
    return merged[:limit]
