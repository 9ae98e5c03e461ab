"""A small typed etcd v3 client over etcd's JSON gateway (`/v3/...`), through aiohttp.

Why the gateway: every etcd v3 server (3.3+) serves its gRPC API as JSON over HTTP too,
and solgate already depends on aiohttp. A gRPC client (`aetcd`) would add grpcio, a large
compiled dependency, for a handful of unary calls a second. What the gateway lacks, a
bidirectional keepalive stream, does not matter here: one `lease/keepalive` POST renews
once, which is all a renewal loop needs. Docs: docs/cluster.md.

Only what the cluster needs: grant, keepalive, revoke, put, range (one key or a prefix),
delete and `txn` (compare-and-swap). Keys and values are base64 in JSON and 64-bit numbers
come back as strings; this module hides both. Every call is bounded by `timeout` and tries
the next endpoint when one cannot be reached or has no leader (HTTP 503), so a dead etcd
member costs one timeout, not a hang; a lease renewal does not wait that long for a silent
node (`keepalive(hedge_after=...)`). Errors are `EtcdError` (a `SolgateError`) and say
what to check.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from solgate.errors import SolgateError

LEASE_NOT_FOUND = 5  # gRPC NOT_FOUND, etcd's "requested lease not found"


class EtcdError(SolgateError):
    """etcd could not be reached or refused a request; the message names endpoint and fix."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailable(EtcdError):
    """No endpoint answered within the time limit."""


class _NodeUnavailable(EtcdError):
    """One endpoint answered HTTP 503 (no leader, shutting down): ask the next one."""


_NODE_FAILURES = (aiohttp.ClientError, TimeoutError, OSError, _NodeUnavailable)


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it; `create_revision` is the console's epoch for owner keys."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class TxnResult:
    """`succeeded`, the store revision after the txn, and the kvs of any range ops run."""

    succeeded: bool
    revision: int
    kvs: tuple[KeyValue, ...]


def _b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: str) -> str:
    """The `range_end` that selects every key starting with `prefix`."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return "\0"
    raw[-1] += 1
    return raw.decode("utf-8", errors="surrogateescape")


def _kv(item: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=base64.b64decode(item.get("key", "")).decode("utf-8", errors="replace"),
        value=base64.b64decode(item.get("value", "")),
        create_revision=int(item.get("create_revision", 0)),
        mod_revision=int(item.get("mod_revision", 0)),
        lease=int(item.get("lease", 0)),
    )


# Txn building blocks: plain dicts in the gateway's JSON shape.


def cmp_absent(key: str) -> dict[str, Any]:
    """Compare: `key` does not exist (its create_revision is 0)."""
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def cmp_create_revision(key: str, revision: int) -> dict[str, Any]:
    """Compare: `key` exists with this create_revision (the same owner epoch)."""
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL",
            "create_revision": str(revision)}


def op_put(key: str, value: bytes, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"requestPut": body}


def op_get(key: str) -> dict[str, Any]:
    return {"requestRange": {"key": _b64(key)}}


def op_delete(key: str) -> dict[str, Any]:
    return {"requestDeleteRange": {"key": _b64(key)}}


class EtcdClient:
    """Unary etcd v3 calls over HTTP/JSON, each bounded by `timeout` seconds."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 2.0,
                 ssl_context: ssl.SSLContext | None = None, user: str = "",
                 password: str = "") -> None:
        if not endpoints:
            raise EtcdError("no etcd endpoint given; set [cluster] etcd = [\"http://HOST:2379\"]")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._ssl = ssl_context
        self._user = user
        self._password = password  # never logged
        self._token: str | None = None
        self._current = 0
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def endpoint(self) -> str:
        """The endpoint the last call went to (the one that answered)."""
        return self.endpoints[self._current]

    # --- the API --------------------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        reply = await self.call("lease/grant", {"TTL": ttl})
        return Lease(id=int(reply["ID"]), ttl=int(reply.get("TTL", ttl)))

    async def keepalive(self, lease: int, *, hedge_after: float | None = None) -> int:
        """Renew `lease` once; its remaining TTL, 0 when etcd no longer knows it.

        With `hedge_after`, an endpoint silent for that long gets company: the renewal goes
        to the next endpoint too, and again every `hedge_after`, and the first answer
        counts (a renewal is idempotent). A node that stops answering without closing its
        connections (power loss, a stalled disk) then costs `hedge_after`, not the whole
        call timeout, which is as long as the member's margin before it fences."""
        reply = await self.call("lease/keepalive", {"ID": str(lease)}, hedge_after=hedge_after)
        result = reply.get("result", reply)
        if "error" in reply and not result:
            raise EtcdError(f"etcd {self.endpoint}: keepalive failed: {reply['error']}")
        return int(result.get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        try:
            await self.call("lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if exc.code != LEASE_NOT_FOUND:
                raise

    async def time_to_live(self, lease: int) -> int:
        """Seconds left on `lease` (-1 when etcd does not know it)."""
        reply = await self.call("lease/timetolive", {"ID": str(lease)})
        return int(reply.get("TTL", -1))

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        reply = await self.call("kv/put", op_put(key, value, lease)["requestPut"])
        return int(reply["header"]["revision"])

    async def get(self, key: str) -> KeyValue | None:
        kvs, _ = await self.range(key)
        return kvs[0] if kvs else None

    async def range(self, key: str, *, prefix: bool = False,
                    revision: int = 0) -> tuple[list[KeyValue], int]:
        """The keys at `key` (or under it with `prefix`), and the store revision read;
        `revision` reads as of that revision (two ranges, one consistent snapshot)."""
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key).encode("utf-8", "surrogateescape"))
        if revision:
            body["revision"] = str(revision)
        reply = await self.call("kv/range", body)
        return [_kv(i) for i in reply.get("kvs", [])], int(reply["header"]["revision"])

    async def delete(self, key: str) -> int:
        reply = await self.call("kv/deleterange", {"key": _b64(key)})
        return int(reply.get("deleted", 0))

    async def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                  failure: list[dict[str, Any]] | None = None) -> TxnResult:
        body = {"compare": compare, "success": success, "failure": failure or []}
        reply = await self.call("kv/txn", body)
        kvs: list[KeyValue] = []
        for resp in reply.get("responses", []):
            kvs.extend(_kv(i) for i in resp.get("response_range", {}).get("kvs", []))
        return TxnResult(succeeded=bool(reply.get("succeeded", False)),
                         revision=int(reply["header"]["revision"]), kvs=tuple(kvs))

    # --- transport ------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl else False,
                                               limit=16),
            )
        return self._session

    async def call(self, path: str, body: dict[str, Any], *,
                   hedge_after: float | None = None) -> dict[str, Any]:
        """POST `/v3/<path>`; when an endpoint cannot be reached, does not answer in time or
        cannot serve (HTTP 503: no leader), try the other endpoints once each. With
        `hedge_after` (idempotent calls only), the next endpoint (or, with one endpoint,
        the same one again) is asked as well once the current one has been silent that
        long, and the first answer wins."""
        if hedge_after is None:
            return await self._call_in_turn(path, body)
        return await self._call_hedged(path, body, hedge_after)

    async def _call_in_turn(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last: Exception | None = None
        for attempt in range(len(self.endpoints)):
            index = (self._current + attempt) % len(self.endpoints)
            try:
                reply = await self._post(self.endpoints[index], path, body)
            except _NODE_FAILURES as exc:
                last = exc
                continue
            self._current = index
            return reply
        raise self._unavailable(last)

    async def _call_hedged(self, path: str, body: dict[str, Any],
                           hedge_after: float) -> dict[str, Any]:
        """Ask the endpoints in turn, one more (round robin, again from the first when all
        were asked) each time `hedge_after` passes without an answer, and the next at once
        when one fails, until the first answer or `timeout`. Asking again matters during
        an election: etcd 3.4 parks a request that reached a node without a leader for a
        whole election timeout (1 s), while a fresh one is served once a leader exists."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        pending: dict[asyncio.Task[dict[str, Any]], int] = {}
        asked = 0
        last: Exception | None = None

        def ask_next() -> None:
            nonlocal asked
            index = (self._current + asked) % len(self.endpoints)
            asked += 1
            pending[asyncio.ensure_future(self._post(self.endpoints[index], path, body))] = index

        ask_next()
        try:
            while pending and (left := deadline - loop.time()) > 0:
                done, _ = await asyncio.wait(pending, timeout=min(hedge_after, left),
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:  # silent so far: ask another endpoint too
                    if loop.time() < deadline:
                        ask_next()
                    continue
                answer: tuple[int, dict[str, Any]] | None = None
                refusal: BaseException | None = None
                for task in done:
                    index = pending.pop(task)
                    exc = task.exception()
                    if exc is None:
                        answer = answer or (index, task.result())
                    elif isinstance(exc, _NODE_FAILURES):
                        last = exc
                        if asked < len(self.endpoints):  # first round: the next one at once
                            ask_next()
                    else:  # an answer (lease not found, denied): the same anywhere
                        refusal = exc
                if answer is not None:
                    self._current = answer[0]
                    return answer[1]
                if refusal is not None:
                    raise refusal
            if pending:
                last = TimeoutError()
        finally:
            for task in pending:
                task.cancel()
            # Collect them: an outcome never retrieved is logged from the garbage collector.
            await asyncio.gather(*pending, return_exceptions=True)
        raise self._unavailable(last)

    def _unavailable(self, last: Exception | None) -> EtcdUnavailable:
        where = ", ".join(self.endpoints)
        why = _describe(last)
        return EtcdUnavailable(f"etcd unreachable at {where} ({why}); check [cluster] etcd "
                               "and that etcd runs (etcdctl endpoint health)")

    async def _post(self, endpoint: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._user and self._token is None and path != "auth/authenticate":
            await self._authenticate(endpoint)
        if self._token:
            headers["Authorization"] = self._token
        async with self._client().post(f"{endpoint}/v3/{path}", data=json.dumps(body),
                                       headers=headers) as resp:
            text = await resp.text()
        try:
            reply = json.loads(text) if text else {}
        except ValueError:
            raise EtcdError(f"etcd {endpoint}: /v3/{path} answered HTTP {resp.status} with "
                            "something that is not JSON; is this an etcd client URL?") from None
        if not isinstance(reply, dict):
            raise EtcdError(f"etcd {endpoint}: /v3/{path}: unexpected reply")
        if resp.status >= 400 or ("error" in reply and "result" not in reply):
            code = reply.get("code")
            message = reply.get("message") or reply.get("error") or f"HTTP {resp.status}"
            if "token" in str(message) and self._user:
                self._token = None  # expired auth token: authenticate again next call
            if resp.status == 503:  # this node cannot serve now (no leader); another may
                raise _NodeUnavailable(f"etcd {endpoint}: /v3/{path}: {message}")
            raise EtcdError(f"etcd {endpoint}: /v3/{path}: {message}",
                            code=int(code) if isinstance(code, int) else None)
        return reply

    async def _authenticate(self, endpoint: str) -> None:
        reply = await self._post(endpoint, "auth/authenticate",
                                 {"name": self._user, "password": self._password})
        token = reply.get("token")
        if not isinstance(token, str):
            raise EtcdError(f"etcd {endpoint}: user {self._user!r} was not given a token; "
                            "check [cluster] user and its password")
        self._token = token


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "no endpoint"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, _NodeUnavailable):
        return str(exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return exc.os_error.strerror or str(exc.os_error)
    return str(exc) or type(exc).__name__
