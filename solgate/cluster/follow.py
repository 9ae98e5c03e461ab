"""`solgate tail -f` in a cluster: follow one console's history wherever it runs.

A console's log grows on the member that runs it, so following it means reading from its
owner, and from the next owner after a move. Each member serves what it logs for a
console as a stream (`GET /api/cluster/peer/follow/NAME`, member secret): first the last
`lines` lines, or, with `epoch=E`, its piece of epoch E from its ownership note on, then
every byte appended, across rotations. The stream ends by itself once the
console has left the member (handed over, stopped, taken by another) and the member has
read its log to the end, so the handover note is the stream's last line.

The follower (`follow_history`, run by `solgate tail -f` on a member) asks etcd who owns
the console (the owner key: member and epoch), streams from that member's advertise URL
and watches the owner key once a second. When the stream ends or the epoch changes, it
connects to the new owner with `epoch=` the new owner's epoch, so the output goes on
with the new owner's note and its output; pieces of members that held the console in
between (two moves within a second) are fetched and printed first. What it cannot
show (a member that died before its last bytes reached the follower) it names on stderr:
those bytes are in that member's log, and `solgate cluster log NAME` shows them once the
member is back.

Why a stream from the owner rather than polling the merged history: the history is the
last N lines of every member, merged; polling it cannot tell new lines from old ones
that repeat, and costs every member a read per poll. The stream is one open file and
one connection on the owner only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp
from aiohttp import web

from solgate.cluster.etcd import EtcdError
from solgate.console.epochs import (
    EPOCH_HEADER,
    OWNS,
    Part,
    merge_logs,
    merged_lines,
    split_by_epoch,
)
from solgate.logtools import FOLLOW_INTERVAL, LogFollower, log_path

if TYPE_CHECKING:
    from solgate.cluster.etcd import EtcdClient
    from solgate.cluster.shell import ClusterMember
    from solgate.config import Config

logger = logging.getLogger("solgate.cluster")

HEAD_HEADER = "X-Solgate-Head-Bytes"  # how many bytes of the stream are the head
MAX_FOLLOWERS = 64  # open follow streams per member; more get 503
MAX_HEAD_LINES = 100_000
MAX_HEAD_BYTES = 16 * 1024 * 1024
AFTER_WINDOW = 4 * 1024 * 1024  # how far back the new owner looks for its note
GONE_GRACE = 1.0  # seconds the console must be elsewhere before the stream ends
MOVE_GRACE = 3.0  # seconds the follower waits for the old owner's stream to end
OWNER_POLL = 1.0
QUIET = 3.0  # seconds without an owner before the follower says so

follow_stop_key: web.AppKey[asyncio.Event] = web.AppKey("cluster_follow_stop")
followers_key: web.AppKey[set[object]] = web.AppKey("cluster_followers")


# --- the member's side -----------------------------------------------------------------------


def runs_here(member: ClusterMember, name: str) -> bool:
    """Whether this member runs `name` or owns it in etcd as far as it knows."""
    owner = member.core.owners.get(name)
    return (member.manager.get(name) is not None
            or (owner is not None and owner.member == member.name))


def start_bytes(follower: LogFollower, lines: int, epoch: int | None) -> Part:
    """What the stream begins with: the last `lines` lines and the epoch they start in,
    or with `epoch`, this member's piece of that epoch, from its ownership note on."""
    if epoch is None:
        head = follower.before(lines, max_bytes=MAX_HEAD_BYTES)
        if not head or OWNS.match(head):
            return Part(head)
        context = follower.before(1 << 30, max_bytes=len(head) + AFTER_WINDOW)
        notes = list(OWNS.finditer(context, 0, len(context) - len(head)))
        return Part(head, int(notes[-1].group("epoch")) if notes else 0)
    window = follower.before(1 << 30, max_bytes=AFTER_WINDOW)
    for m in OWNS.finditer(window):
        if int(m.group("epoch")) >= epoch:
            return Part(window[m.start():])
    return Part(b"")  # its note is not written yet: it comes in the stream


def setup_follow(app: web.Application) -> None:
    app[follow_stop_key] = asyncio.Event()
    app[followers_key] = set()

    async def stop_followers(_app: web.Application) -> None:
        app[follow_stop_key].set()

    app.on_shutdown.append(stop_followers)


async def serve_follow(request: web.Request, member: ClusterMember,
                       name: str) -> web.StreamResponse:
    """`GET /api/cluster/peer/follow/NAME[?lines=N|?epoch=E]` (member secret)."""
    if name not in member.manager.config.consoles:
        raise web.HTTPNotFound(text=f"no console named {name!r}")
    followers = request.app[followers_key]
    if len(followers) >= MAX_FOLLOWERS:
        raise web.HTTPServiceUnavailable(text=f"{member.name} already serves "
                                              f"{MAX_FOLLOWERS} follows; try again later")
    try:
        lines = max(0, min(int(request.query.get("lines", "10")), MAX_HEAD_LINES))
        epoch = int(request.query["epoch"]) if "epoch" in request.query else None
    except ValueError:
        raise web.HTTPBadRequest(text="lines and epoch must be numbers") from None
    stop = request.app[follow_stop_key]
    path = member.manager.log_path(name)
    token = object()
    followers.add(token)
    follower = await asyncio.to_thread(LogFollower, path, from_end=True)
    try:
        head = await asyncio.to_thread(start_bytes, follower, lines, epoch)
        response = web.StreamResponse(headers={
            "Content-Type": "application/octet-stream", HEAD_HEADER: str(len(head.data)),
            EPOCH_HEADER: str(head.epoch), "X-Solgate-Member": member.name})
        await response.prepare(request)
        await response.write(head.data)
        gone_since: float | None = None
        while not stop.is_set():
            here = runs_here(member, name)  # before the read: a handover's note is
            data = await asyncio.to_thread(follower.poll)  # written before it moves
            if data:
                await response.write(data)
            now = time.monotonic()
            if here:
                gone_since = None
            elif gone_since is None:
                gone_since = now
            elif now - gone_since >= GONE_GRACE and not data:
                break  # moved on, and everything it logged here has been sent
            transport = request.transport
            if transport is None or transport.is_closing():
                return response
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FOLLOW_INTERVAL)
        if stop.is_set() and request.transport is not None:
            # Shutting down with the console still here: end without the chunked
            # terminator, so the follower knows this is not the end of this piece.
            request.transport.close()
            return response
        await response.write_eof()
        return response
    finally:
        follower.close()
        followers.discard(token)


# --- the follower's side ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Owner:
    member: str
    epoch: int
    url: str


async def current_owner(client: EtcdClient, prefix: str, name: str) -> Owner | None:
    """The console's owner key and that member's advertise URL, as etcd has them now."""
    kv = await client.get(f"{prefix}owners/{name}")
    if kv is None:
        return None
    with contextlib.suppress(ValueError, AttributeError):
        member = str(json.loads(kv.value).get("member", ""))
        info = await client.get(f"{prefix}members/{member}")
        url = str(json.loads(info.value).get("advertise", "")) if info is not None else ""
        return Owner(member, kv.create_revision, url)
    return None


class ClusterFollow:
    """One `solgate tail -f NAME` across members (see the module docstring)."""

    def __init__(self, config: Config, name: str, write: Callable[[bytes], None],
                 warn: Callable[[str], None]) -> None:
        assert config.cluster is not None
        self.config = config
        self.cluster = config.cluster
        self.name = name
        self._write = write
        self._warn = warn
        self._said = ""
        self._ends_line = True

    def write(self, data: bytes) -> None:
        if data:
            self._write(data)
            self._ends_line = data.endswith(b"\n")

    def new_piece(self) -> None:
        """Start the next member's piece on a line of its own, as the history does (the
        last one may have stopped mid-line)."""
        if not self._ends_line:
            self.write(b"\r\n")

    def warn(self, text: str) -> None:
        """Say `text` on stderr, once while it stays the same (a member that stays down
        is named once, not every second)."""
        if text != self._said:
            self._warn(text)
            self._said = text

    async def run(self, lines: int, *, follow: bool = True) -> None:
        from solgate.cluster.peer import SECRET_HEADER
        from solgate.cluster.shell import etcd_client

        async with etcd_client(self.cluster, timeout=3.0) as client, \
                aiohttp.ClientSession(headers={SECRET_HEADER: self.cluster.member_secret},
                                      timeout=aiohttp.ClientTimeout(
                                          total=None, sock_connect=5)) as http:
            self.etcd, self.http = client, http
            owner = await current_owner(client, self.cluster.prefix, self.name)  # etcd
            # answers, or this raises: then `solgate tail` shows this member's log alone
            resp = None
            if follow and owner is not None and owner.url:
                resp = await self._open(owner, lines=lines)
            if resp is not None and owner is not None:
                await self._print_head(resp, owner, lines)
                printed = owner.epoch  # the epoch whose piece is being printed
            else:  # not following, or nobody to follow yet: what every member logged
                printed = await self._print_histories(lines)
            if not follow:
                return
            between_done = 0
            while True:
                if resp is not None and owner is not None \
                        and not await self._stream(resp, printed):
                    self.warn(f"lost the stream from {owner.member} before it gave up "
                              f"{self.name} (it stopped, or the connection broke); what it "
                              f"logged after the last line shown is in its log (solgate "
                              f"cluster log {self.name} shows it once {owner.member} is "
                              "back)")
                owner = await self._wait_owner(printed)
                if owner.epoch == printed:
                    resp = await self._open(owner, lines=0)  # same owner: reconnected
                    continue
                if between_done != owner.epoch:
                    await self._print_between(printed, owner.epoch)
                    between_done = owner.epoch
                resp = await self._open(owner, epoch=owner.epoch)
                if resp is not None:
                    printed = owner.epoch
                    self.new_piece()

    async def _wait_owner(self, following: int | None) -> Owner:
        """The owner now. While nobody owns the console, or the owner being followed
        does not answer (it died; its lease has not expired yet), wait, saying so once."""
        unowned_since: float | None = None
        while True:
            owner = None
            with contextlib.suppress(EtcdError, TimeoutError, OSError):
                owner = await current_owner(self.etcd, self.cluster.prefix, self.name)
            now = time.monotonic()
            unowned_since = (unowned_since or now) if owner is None else None
            if owner is None:
                why = f"no member runs {self.name} now; waiting for one to take it"
            elif not owner.url:
                why = f"{owner.member} runs {self.name} but has no advertise URL"
            elif owner.epoch != following or await self._answers(owner):
                return owner
            else:
                why = (f"{owner.member} runs {self.name} but does not answer; waiting for "
                       "it, or for another member to take the console")
            # A handover leaves the console unowned for a moment: only a longer wait,
            # or an owner that does not answer, is worth a line.
            if unowned_since is None or now - unowned_since >= QUIET:
                self.warn(why)
            await asyncio.sleep(OWNER_POLL)

    async def _answers(self, owner: Owner) -> bool:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self.http.get(owner.url.rstrip("/") + "/api/cluster/peer/consoles",
                                     timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return resp.status == 200
        return False

    async def _open(self, owner: Owner, *, lines: int = 0,
                    epoch: int | None = None) -> aiohttp.ClientResponse | None:
        url = f"{owner.url.rstrip('/')}/api/cluster/peer/follow/{quote(self.name, safe='')}"
        params = {"lines": str(lines)} if epoch is None else {"epoch": str(epoch)}
        try:
            resp = await self.http.get(url, params=params, allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.warn(f"{owner.member} (which runs {self.name}) did not answer: {exc}")
            await asyncio.sleep(OWNER_POLL)
            return None
        if resp.status != 200:
            self.warn(f"{owner.member} answered {resp.status}: {(await resp.text())[:200]}")
            resp.release()
            await asyncio.sleep(OWNER_POLL)
            return None
        return resp

    async def _histories(self, lines: int, skip: str | None = None) -> dict[str, Part]:
        """Every member's last `lines` lines (`member_histories`), with a warning for each
        member that did not answer."""
        from solgate.cluster.history import member_histories

        logs, missing = await member_histories(self.config, self.name, lines, skip=skip)
        for member in missing:
            self.warn(f"member {member} did not answer; its part of {self.name}'s "
                      "history is missing")
        return logs

    async def _print_histories(self, lines: int) -> int:
        """The last `lines` lines of the history from what every member answers; the
        newest epoch in them (pieces up to it are printed)."""
        merged = merged_lines(await self._histories(max(lines, 1)))
        if lines > 0:
            self.write(b"".join(line for _, line in merged[-lines:]))
        return max((epoch for epoch, _ in merged), default=0)

    async def _print_head(self, resp: aiohttp.ClientResponse, owner: Owner,
                          lines: int) -> None:
        """The last `lines` lines of the history: the owner's head merged with what
        the other members logged (each read whole, newest `lines` lines)."""
        size = int(resp.headers.get(HEAD_HEADER, "0") or 0)
        head = Part(await resp.content.readexactly(size) if size else b"",
                    int(resp.headers.get(EPOCH_HEADER, "0") or 0))
        if lines <= 0:
            return
        logs = await self._histories(lines, skip=owner.member)
        logs[owner.member] = head
        kept = merge_logs(logs).splitlines(keepends=True)
        self.write(b"".join(kept[-lines:]))

    async def _print_between(self, printed: int, epoch: int) -> None:
        """Pieces of members that held the console between the epoch printed last and
        the new owner's (a console moved twice before the follower looked)."""
        from solgate.cluster.history import member_histories

        logs, _ = await member_histories(self.config, self.name, 2000)
        pieces = sorted((p for m, part in logs.items()
                         for p in split_by_epoch(m, part.data, part.epoch)
                         if printed < p[0] < epoch),
                        key=lambda p: (p[0], p[1], p[2]))
        for _, _, _, piece in pieces:
            self.new_piece()
            self.write(piece)

    async def _stream(self, resp: aiohttp.ClientResponse, epoch: int) -> bool:
        """Copy the stream out until it ends, or until etcd names a new owner and the
        old one's stream has had `MOVE_GRACE` to finish; True when it ended cleanly."""
        moved_at: float | None = None
        reader = asyncio.ensure_future(resp.content.readany())
        try:
            while True:
                done, _ = await asyncio.wait({reader}, timeout=OWNER_POLL)
                if reader in done:
                    try:
                        data = reader.result()
                    except (aiohttp.ClientError, ConnectionError):
                        return False
                    if not data:
                        return True
                    self.write(data)
                    reader = asyncio.ensure_future(resp.content.readany())
                    continue
                now = time.monotonic()
                if moved_at is None:
                    owner = None
                    with contextlib.suppress(EtcdError, TimeoutError, OSError):
                        owner = await current_owner(self.etcd, self.cluster.prefix,
                                                    self.name)
                    if owner is not None and owner.epoch != epoch:
                        moved_at = now
                elif now - moved_at >= MOVE_GRACE:
                    return False
        finally:
            reader.cancel()
            resp.close()


def follow_history(config: Config, name: str, lines: int, *, follow: bool,
                   write: Callable[[bytes], None], warn: Callable[[str], None]) -> None:
    """`solgate tail [-f] NAME` on a cluster member: until Ctrl-C (or, without
    `follow`, once the history's last `lines` lines are out)."""
    log_path(config.data_dir, name)  # refuses a name that is not a file name
    asyncio.run(ClusterFollow(config, name, write, warn).run(lines, follow=follow))
