"""The ssh gateway of one member reaching a console another member runs.

A member runs only the consoles it owns, but an operator ssh-ing to any member should get
any console. The gateway that does not run the console opens the owner's console
WebSocket at `/api/cluster/peer/ws/NAME` with the shared member secret and the name of the
user the gateway authenticated (`X-Solgate-As-User`); the owner attaches that user with
that user's rights, as if a trusted proxy had signed them in, and parses the escapes
(`~.`, `~B`, `~w`, ...) itself, so they behave as on a local console. The gateway also
names the ssh client's address and itself (`X-Solgate-Peer-Address`,
`X-Solgate-Via-Member`), so the owner's log and events say "alice attached over ssh from
192.0.2.7:50122 through member gw1", not the gateway's address; the owner believes these
headers only with the member secret, as it does the user's name. The member secret
is therefore as strong as an admin login on every member: keep its file readable by the
solgate user only.

Without a member secret the gateway cannot vouch for anyone; it says which member runs the
console instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import aiohttp

from solgate.cluster.peer import (
    AS_USER_HEADER,
    PEER_ADDRESS_HEADER,
    SECRET_HEADER,
    VIA_MEMBER_HEADER,
)
from solgate.console.notices import TERM_LEAVE, TERM_PREPARE

if TYPE_CHECKING:
    from solgate.cluster.shell import ClusterMember

log = logging.getLogger("solgate.ssh")
CONNECT_TIMEOUT = 5.0
DETACHED = 4000  # the owner closes with this when the user typed `~.`


class _RemoteAttachment:
    """What the ssh session holds while proxied: resizes go to the owner, and a revoked
    user (a reload on this member) closes the proxied socket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.hub = self
        self._tasks: set[asyncio.Task[Any]] = set()

    def _send(self, message: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self.ws.send_str(json.dumps(message)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def resize(self, cols: int, rows: int) -> None:
        self._send({"type": "resize", "cols": cols, "rows": rows})

    def revoke(self, _attachment: object, _why: str) -> None:
        task = asyncio.ensure_future(self.ws.close())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@dataclass(frozen=True, slots=True)
class RemoteConsole:
    """A console another member runs, as the ssh menu lists it."""

    name: str
    tags: tuple[str, ...]
    state: str
    state_detail: str = ""


def proxied_via(headers: Any) -> str:
    """How a user proxied by another member's ssh gateway came, from that member's
    headers (already authenticated by the member secret), cleaned for the log."""
    address = "".join(ch for ch in str(headers.get(PEER_ADDRESS_HEADER, ""))[:64]
                      if ch.isalnum() or ch in ".:[]%-") or "an unknown address"
    via = "".join(ch for ch in str(headers.get(VIA_MEMBER_HEADER, ""))[:64]
                  if ch.isalnum() or ch in "._-") or "another member"
    return f"over ssh from {address} through member {via}"


def remote_consoles(member: ClusterMember, user: Any, local: set[str]) -> list[RemoteConsole]:
    """The consoles `user` may see that run on other members (or on none yet)."""
    out = []
    for name, console in member.manager.config.consoles.items():
        if name in local or not user.can_view(name, console.tags):
            continue
        owner = member.core.owners.get(name)
        state = f"on {owner.member}" if owner is not None else "not running on any member"
        out.append(RemoteConsole(name, tuple(console.tags), state))
    return out


def owner_of(member: ClusterMember, name: str) -> str | None:
    owner = member.core.owners.get(name)
    return owner.member if owner is not None and owner.member != member.name else None


async def attach_remote(session: Any, member: ClusterMember,
                        name: str) -> tuple[int, bool] | None:
    """Attach the ssh `session` to `name` on the member that runs it; None when no other
    member runs a console of that name that this user may see."""
    console = member.manager.config.consoles.get(name)
    owner = owner_of(member, name)
    url = member.owner_url(name)
    if console is None or owner is None or url is None \
            or not session.user.can_view(console.name, console.tags):
        return None
    if not member.cluster.member_secret:
        host = urlsplit(url).hostname or url
        await session.note(f"{name} runs on member {owner}: ssh to {host} for it (set "
                           "[cluster] member_secret_file to reach it through any member)")
        return 1, False
    headers = {SECRET_HEADER: member.cluster.member_secret,
               AS_USER_HEADER: session.user.name, PEER_ADDRESS_HEADER: session.peer,
               VIA_MEMBER_HEADER: member.name}
    target = f"{url.rstrip('/')}/api/cluster/peer/ws/{quote(name, safe='')}"
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(
                target, params={"cols": str(session.cols), "rows": str(session.rows)},
                headers=headers, heartbeat=20.0, autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=CONNECT_TIMEOUT),
                max_msg_size=4 * 1024 * 1024)
        except (aiohttp.ClientError, TimeoutError) as exc:
            await session.note(f"{name} runs on member {owner}, which did not answer "
                               f"({exc.__class__.__name__}); try again in a moment")
            return 1, False
        log.info("ssh: %s attached to %s on member %s from %s", session.user.name, name,
                 owner, session.peer)
        await session.note(f"{name} runs on member {owner}; connected through {member.name}")
        attachment = _RemoteAttachment(ws)
        session.attachment = attachment
        pump = asyncio.ensure_future(_pump(session, ws, name))
        try:
            return await _keys(session, ws, pump, name)
        finally:
            session.attachment = None
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            await ws.close()


async def _keys(session: Any, ws: aiohttp.ClientWebSocketResponse,
                pump: asyncio.Future[None], name: str) -> tuple[int, bool]:
    """The user's keys to the owner until `~.`, EOF, or the owner ends the attachment."""
    while True:
        getter = asyncio.ensure_future(session.inq.get())
        await asyncio.wait({getter, pump}, return_when=asyncio.FIRST_COMPLETED)
        if session.ended:
            getter.cancel()
            return 1, True
        if not getter.done():
            getter.cancel()
            if ws.close_code == DETACHED:
                await session.write(TERM_LEAVE + f"\r\n[solgate: left {name}]\r\n".encode())
            return 0, False
        item = getter.result()
        if item is session.EOF:
            return 0, True
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            if item is session.BREAK:
                await ws.send_str(json.dumps({"type": "break"}))
            else:
                await ws.send_bytes(item)


async def _pump(session: Any, ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
    """The owner's output and notices to the ssh channel."""
    repaint = False
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            await session.write((TERM_PREPARE if repaint else b"") + msg.data)
            repaint = False
            continue
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        with contextlib.suppress(ValueError):
            message = json.loads(msg.data)
            kind = message.get("type")
            if kind == "snapshot":
                repaint = True
            elif kind == "error":
                await session.note(str(message.get("message", "")))
            elif kind == "write-lock":
                holder = message.get("holder")
                await session.note(f"{name}: {holder} holds the write lock" if holder
                                   else f"{name}: the write lock is free")
            elif kind == "state":
                await session.note(f"{name}: {message.get('state')}")
            elif kind == "access":
                await session.note(f"{name}: read-only now: {message.get('reason')}")
            elif kind == "closed" and message.get("reason") != "detached":
                await session.note(f"{name}: {message.get('reason')}")
