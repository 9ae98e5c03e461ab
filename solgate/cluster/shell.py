"""The asyncio shell around `ClusterCore`: etcd calls, timers, and the console manager's hands.

One task runs the core: it sleeps until `next_deadline()` (or until a result wakes it),
calls `handle_timeout(loop.time())`, and turns each action into a task: etcd calls go
through `EtcdClient` (each bounded by the renew interval), console actions go to the
`ConsoleManager` (`run_console` / `stop_console`), one at a time per console so a stop and a
start of the same console never overlap. Results go back into the core with `loop.time()`.

Keys (all under `prefix`):

    members/<name>    {"advertise", "version", "digest", "load", "weight"}   on the lease
    owners/<console>  {"member", "since"}; create_revision = the console's epoch, on the lease
    moves/<console>   the last move: {"from", "to", "epoch", "at", "last_output", ...}

A fence stops every SOL session at once (each stop bounded by a third of the TTL);
SIGTERM stops them with their logs flushed, records each release under moves/, then
revokes the lease, which deletes the member's keys in one step so the others take over at
their next poll instead of after the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from solgate import __version__
from solgate.cluster.core import (
    Acquire,
    Action,
    ClusterCore,
    Fence,
    GrantLease,
    Handover,
    Member,
    Owner,
    Poll,
    PutMember,
    RenewLease,
    StartConsole,
    StopConsole,
)
from solgate.cluster.etcd import (
    EtcdClient,
    EtcdError,
    KeyValue,
    cmp_absent,
    cmp_create_revision,
    op_delete,
    op_get,
    op_put,
)
from solgate.config.cluster import ClusterConfig, digest

if TYPE_CHECKING:
    from solgate.config import Config
    from solgate.console.manager import ConsoleManager

logger = logging.getLogger("solgate.cluster")
POLL_INTERVAL = 1.0  # seconds between reads of the member and owner keys
RENEW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STARTUP_TIMEOUT = 5.0
ACQUIRE_BATCH = 50  # consoles per create-if-absent txn (2 ops each; etcd allows 128 ops)
KV_CONCURRENCY = 4  # etcd KV calls in flight at once (acquires, handovers, checks)
# A renewal that one etcd node has not answered within this fraction of the renew interval
# goes to the next node too: a node that went silent (power loss) must not use up the
# margin before the fence (one renew interval), or members fence while a quorum answers.
RENEW_HEDGE = 0.25
START_BATCH = ACQUIRE_BATCH  # consoles started as one task (log files created in a thread)
OWNER_CHECK_BATCH = 100  # ownership checks read in one txn (etcd allows 128 ops)


def etcd_client(cluster: ClusterConfig, timeout: float) -> EtcdClient:
    """An `EtcdClient` with the `[cluster]` TLS files and user."""
    context: ssl.SSLContext | None = None
    if cluster.etcd_ca or cluster.etcd_cert or any(u.startswith("https:") for u in cluster.etcd):
        context = ssl.create_default_context(
            cafile=str(cluster.etcd_ca) if cluster.etcd_ca else None)
        if cluster.etcd_cert and cluster.etcd_key:
            context.load_cert_chain(str(cluster.etcd_cert), str(cluster.etcd_key))
    return EtcdClient(cluster.etcd, timeout=timeout, ssl_context=context,
                      user=cluster.etcd_user, password=cluster.etcd_password)


def _settle(batch: list[tuple[str, list[asyncio.Future[KeyValue | None]]]],
            exc: BaseException) -> None:
    """Fail the ownership checks of `batch` that are still waiting."""
    for _, futures in batch:
        for future in futures:
            if not future.done():
                future.set_exception(exc)


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class ClusterMember:
    """This process's membership: keeps the lease, owns consoles, fences itself."""

    def __init__(self, config: Config, manager: ConsoleManager) -> None:
        cluster = config.cluster
        if cluster is None:
            raise ValueError("ClusterMember needs a [cluster] table")
        self.cluster = cluster
        self.manager = manager
        self.name = cluster.name
        self.prefix = cluster.prefix
        self.advertise = cluster.advertise
        self.digest = digest(cluster, config.consoles)
        self._config = config
        # Two connection pools: the lease's renewals never queue behind a burst of
        # acquisitions (5,000 consoles freed at once), or the member would fence itself.
        self.lease_client = etcd_client(cluster, timeout=cluster.renew_interval)
        self.client = etcd_client(cluster, timeout=cluster.renew_interval)
        self._kv_slots = asyncio.Semaphore(KV_CONCURRENCY)
        self._acquired_at: dict[str, float] = {}
        self._pending_moves: dict[str, dict[str, Any]] = {}
        self._member_lock = asyncio.Lock()
        self._moves_writer: asyncio.Task[None] | None = None
        # Ownership checks asked at the same time (thousands in a takeover) share a txn.
        self._owner_checks: dict[str, list[asyncio.Future[KeyValue | None]]] = {}
        self._owner_checker: asyncio.Task[None] | None = None
        self.core = ClusterCore(cluster.name, lease_ttl=cluster.lease_ttl,
                                renew_interval=cluster.renew_interval,
                                poll_interval=POLL_INTERVAL, weight=cluster.weight,
                                settle=2 * POLL_INTERVAL,
                                consoles=list(config.consoles))
        manager.steal_check = self.still_owner
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._console_ops: dict[str, asyncio.Task[None]] = {}
        self._start_turn = asyncio.Lock()
        self._digest_warned: set[tuple[str, str]] = set()
        self.moves_kv: dict[str, dict[str, Any]] = {}
        self.epochs: dict[str, int] = {}
        # For /metrics and `solgate cluster status`.
        self.renew_latency_buckets = [0] * (len(RENEW_BUCKETS) + 1)
        self.renew_latency_sum = 0.0
        self.renew_latency_count = 0
        self.renew_failures = 0
        self.fences = 0
        self.last_renew_latency: float | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Grant the lease now, so an unreachable etcd is one clear error at start."""
        loop = self._loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            lease = await asyncio.wait_for(self.lease_client.grant(self.core_ttl),
                                           STARTUP_TIMEOUT)
        except (EtcdError, TimeoutError) as exc:
            await self.lease_client.close()
            await self.client.close()
            why = str(exc) if isinstance(exc, EtcdError) else (
                f"etcd at {', '.join(self.cluster.etcd)} did not answer within "
                f"{STARTUP_TIMEOUT:g}s; check [cluster] etcd and that etcd runs")
            raise EtcdError(f"[cluster] cannot join: {why}") from None
        self.core.start(sent)
        self.core.next_action()  # the GrantLease already done above
        self.core.lease_granted(lease.id, sent_at=sent, now=loop.time())
        logger.warning("cluster member %s joined through etcd %s (lease %x, TTL %ds)",
                       self.name, self.lease_client.endpoint, lease.id, lease.ttl)
        self._task = loop.create_task(self._run(), name="cluster")
        self._task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """The loop that renews the lease and fences must not die quietly: if it fails,
        stop every SOL session now (fail safe: a member that cannot fence must not run)."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        logger.critical("cluster: the membership loop failed (%r); stopping every SOL "
                        "session. Restart solgate serve", exc)
        self.core.abandon(f"membership loop failed: {exc!r}")
        self._dispatch()
        self.fence_all(self.core.fence_reason)  # even if the core had fenced already:
        # stop whatever runs

    @property
    def core_ttl(self) -> int:
        return max(1, round(self.cluster.lease_ttl))

    async def stop(self) -> None:
        """SIGTERM: stop SOL with logs flushed, record the releases, revoke the lease."""
        self.core.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        owned = dict(self.core.running)
        lasts = await asyncio.gather(*(self.manager.stop_console(
            c, f"cluster: {self.name} shutting down, releasing the console (epoch {e})")
            for c, e in owned.items()), return_exceptions=True)
        lease = self.core.lease
        if lease is not None:
            now = time.time()
            ops = [op_put(self._key("moves", c), json.dumps({
                "from": self.name, "epoch": e, "released_at": now, "why": "shutdown",
                "last_output": last if isinstance(last, float) else None}).encode())
                for (c, e), last in zip(owned.items(), lasts, strict=True)]
            with contextlib.suppress(EtcdError, TimeoutError):
                for i in range(0, len(ops), 100):  # etcd allows 128 operations per txn
                    await self.client.txn([], ops[i:i + 100])
            with contextlib.suppress(EtcdError, TimeoutError):
                await self.lease_client.revoke(lease)
        await self.client.close()
        await self.lease_client.close()

    def reload(self, config: Config) -> None:
        """A new configuration: new consoles get placed, removed ones stop."""
        self._config = config
        if config.cluster is not None:
            self.digest = digest(config.cluster, config.consoles)
            if replace(config.cluster, etcd_password="") != replace(self.cluster,
                                                                    etcd_password=""):
                logger.warning("cluster: [cluster] changed in the configuration; the new "
                               "settings take effect when solgate serve restarts")
            if self.core.lease is not None:  # publish the new digest
                self._start(self._etcd_action(PutMember(self.core.lease)), "cluster:PutMember")
        removed = {c: e for c, e in self.core.running.items() if c not in config.consoles}
        self.core.set_consoles(list(config.consoles), self._now())
        self._dispatch()
        for console, epoch in removed.items():  # after the StopConsole queued above
            self._start(self._release_removed(console, epoch), f"cluster:release:{console}")

    async def _release_removed(self, console: str, epoch: int) -> None:
        previous = self._console_ops.get(console)
        if previous is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await previous
        key = self._key("owners", console)
        with contextlib.suppress(EtcdError, TimeoutError):
            await self.client.txn([cmp_create_revision(key, epoch)], [op_delete(key)])

    # --- the loop ----------------------------------------------------------------------------

    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    async def _run(self) -> None:
        while True:
            self._dispatch()
            deadline = self.core.next_deadline()
            self._wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - self._now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self.core.handle_timeout(self._now())

    def _dispatch(self) -> None:
        acquire: list[Acquire] = []
        starts: list[StartConsole] = []
        while (action := self.core.next_action()) is not None:
            if isinstance(action, Acquire):
                acquire.append(action)
            elif isinstance(action, StartConsole):
                starts.append(action)
            else:
                self._spawn(action)
        for i in range(0, len(acquire), ACQUIRE_BATCH):
            batch = acquire[i:i + ACQUIRE_BATCH]
            self._start(self._acquire_batch(batch), "cluster:acquire")
        for i in range(0, len(starts), START_BATCH):
            self._start_batch(starts[i:i + START_BATCH])
        self._wake.set()

    def _start_batch(self, batch: list[StartConsole]) -> None:
        """Start consoles won together (an acquire txn's worth) as one operation of each:
        their log files are created in a thread meanwhile, and the loop runs the
        handshakes of the consoles started before while the next batch is prepared."""
        previous = [self._console_ops.get(a.console) for a in batch]
        task = self._start(self._start_consoles(batch, previous),
                           f"cluster:start:{batch[0].console}")
        for action in batch:
            self._console_ops[action.console] = task
        task.add_done_callback(lambda t: self._forget_ops([a.console for a in batch], t))

    def _forget_ops(self, consoles: list[str], task: asyncio.Task[None]) -> None:
        for console in consoles:
            if self._console_ops.get(console) is task:
                del self._console_ops[console]

    async def _start_consoles(self, batch: list[StartConsole],
                              previous: list[asyncio.Task[None] | None]) -> None:
        for before in previous:
            if before is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await before
        await self.manager.prepare_logs([a.console for a in batch
                                         if self.core.running.get(a.console) == a.epoch])
        # One batch at a time, in order: the loop reads the sockets between two batches,
        # so the consoles started first get through their handshakes while the rest of
        # a failover's thousands are still being started.
        async with self._start_turn:
            for action in batch:
                self._start_console(action)

    def _spawn(self, action: Action) -> None:
        match action:
            case Fence(reason=reason):
                self.fences += 1
                logger.error("cluster: %s fences itself, stopping every SOL session: %s",
                             self.name, reason)
                self.fence_all(reason)
            case StartConsole(console=c) | StopConsole(console=c) | Handover(console=c):
                previous = self._console_ops.get(c)
                self._console_op(c, self._console_action(action, previous))
            case _:
                self._start(self._etcd_action(action), f"cluster:{type(action).__name__}")

    def _console_op(self, console: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as the console's latest operation: the next one waits for it."""
        task = self._start(coro, f"cluster:{console}")
        self._console_ops[console] = task
        task.add_done_callback(
            lambda t: self._console_ops.pop(console, None)
            if self._console_ops.get(console) is t else None)

    def _start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _done(self, feed: Callable[[], None]) -> None:
        feed()
        self._dispatch()

    # --- etcd actions ------------------------------------------------------------------------

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}{kind}/{name}"

    async def _etcd_action(self, action: Action) -> None:
        now = self._now
        match action:
            case GrantLease(ttl=ttl):
                sent = now()
                try:
                    lease = await self.lease_client.grant(ttl)
                except (EtcdError, TimeoutError) as exc:
                    logger.warning("cluster: lease grant failed: %s", exc)
                    self._done(lambda: self.core.grant_failed(now()))
                    return
                logger.warning("cluster member %s has a new lease %x", self.name, lease.id)
                self._done(lambda: self.core.lease_granted(lease.id, sent, now()))
            case RenewLease(lease=lease):
                sent = now()
                try:
                    ttl = await self.lease_client.keepalive(
                        lease, hedge_after=self.cluster.renew_interval * RENEW_HEDGE)
                except (EtcdError, TimeoutError) as exc:
                    self.renew_failures += 1
                    logger.warning("cluster: lease renewal failed: %s", exc)
                    self._done(lambda: self.core.renew_failed(now()))
                    return
                self._observe_renewal(now() - sent)
                self._done(lambda: self.core.renewed(ttl, now()))
            case PutMember(lease=lease):
                try:
                    async with self._member_lock:  # one at a time: the latest values win
                        info = {"advertise": self.advertise, "version": __version__,
                                "digest": self.digest, "load": len(self.core.running),
                                "weight": self.cluster.weight}
                        await self.client.put(self._key("members", self.name),
                                              json.dumps(info).encode(), lease)
                except (EtcdError, TimeoutError) as exc:
                    logger.warning("cluster: cannot write the member key: %s", exc)
                    await asyncio.sleep(0.5)
                    self._done(lambda: self.core.member_put_failed(now()))
            case Poll(owners=with_owners):
                try:  # members and owners as of one revision; moves are read on demand
                    async with self._kv_slots:
                        kvs, rev = await self.client.range(self._key("members"), prefix=True)
                        drains, _ = await self.client.range(self._key("drain"), prefix=True,
                                                            revision=rev)
                        if with_owners:
                            owned, _ = await self.client.range(self._key("owners"),
                                                               prefix=True, revision=rev)
                            kvs += owned
                except (EtcdError, TimeoutError) as exc:
                    logger.info("cluster: poll failed: %s", exc)
                    self._done(lambda: self.core.poll_failed(now()))
                    return
                members, owners = self._parse(kvs)
                draining = {kv.key[len(self._key("drain")):] for kv in drains}
                if self.name in draining and self.name not in self.core.draining:
                    logger.warning("cluster: %s is being drained: handing its consoles over",
                                   self.name)
                seen = owners if with_owners else None
                self._done(lambda: self.core.polled(members, seen, now(), draining))

    def _parse(self, kvs: list[KeyValue]) -> tuple[dict[str, Member], dict[str, Owner]]:
        members: dict[str, Member] = {}
        owners: dict[str, Owner] = {}
        for kv in kvs:
            kind, _, name = kv.key[len(self.prefix):].partition("/")
            value = _json(kv.value)
            if kind == "members":
                weight = value.get("weight", 1.0)
                members[name] = Member(
                    name, kv.lease, weight=float(weight) if isinstance(weight, int | float)
                    else 1.0, advertise=str(value.get("advertise", "")),
                    digest=str(value.get("digest", "")), version=str(value.get("version", "")),
                    load=int(value.get("load", 0) or 0))
            elif kind == "owners":
                owners[name] = Owner(name, str(value.get("member", "?")), kv.lease,
                                     kv.create_revision)
        for m in members.values():
            if m.digest and m.digest != self.digest and (m.name, m.digest) not in \
                    self._digest_warned:
                self._digest_warned.add((m.name, m.digest))
                logger.error("cluster: member %s runs a different configuration (digest %s, "
                             "ours %s): consoles may be placed on a member that does not have "
                             "them; give every member the same solgate.toml", m.name, m.digest,
                             self.digest)
        return members, owners

    async def _acquire_batch(self, batch: list[Acquire]) -> None:
        """One txn creates every owner key of the batch if none exists (the usual case
        after a member died: all its consoles are free at once); otherwise one each."""
        if len(batch) == 1:
            await self._acquire(batch[0].console, batch[0].lease)
            return
        lease = batch[0].lease
        value = json.dumps({"member": self.name, "since": time.time()}).encode()
        keys = [self._key("owners", a.console) for a in batch]
        try:
            async with self._kv_slots:
                result = await self.client.txn(
                    [cmp_absent(k) for k in keys],
                    [op_put(k, value, lease) for k in keys]
                    + [op_get(self._key("moves", a.console)) for a in batch])
        except (EtcdError, TimeoutError) as exc:
            logger.warning("cluster: acquiring %d consoles failed: %s", len(batch), exc)
            for a in batch:
                self.core.acquire_failed(a.console, self._now())
            self._dispatch()
            return
        if not result.succeeded:  # some were taken meanwhile: find out which, one by one
            await asyncio.gather(*(self._acquire(a.console, a.lease) for a in batch))
            return
        moves_prefix = self._key("moves")
        for kv in result.kvs:
            self.moves_kv[kv.key[len(moves_prefix):]] = _json(kv.value)
        now = self._now()
        for a in batch:
            self._acquired_at[a.console] = now
        for a in batch:
            self.core.acquired(a.console, True,
                               Owner(a.console, self.name, lease, result.revision), now)
        self._dispatch()

    async def _acquire(self, console: str, lease: int) -> None:
        key = self._key("owners", console)
        value = json.dumps({"member": self.name, "since": time.time()}).encode()
        try:
            async with self._kv_slots:
                result = await self.client.txn(
                    [cmp_absent(key)],
                    [op_put(key, value, lease), op_get(self._key("moves", console))],
                    [op_get(key)])
        except (EtcdError, TimeoutError) as exc:
            logger.warning("cluster: acquiring %s failed: %s", console, exc)
            self._done(lambda: self.core.acquire_failed(console, self._now()))
            return
        owner: Owner | None
        if result.succeeded:
            owner = Owner(console, self.name, lease, result.revision)
            self._acquired_at[console] = self._now()
            if result.kvs:
                self.moves_kv[console] = _json(result.kvs[0].value)
        else:
            kv = result.kvs[0] if result.kvs else None
            owner = None if kv is None else Owner(console, str(_json(kv.value).get(
                "member", "?")), kv.lease, kv.create_revision)
        self._done(lambda: self.core.acquired(console, result.succeeded, owner, self._now()))

    # --- console actions ---------------------------------------------------------------------

    async def _console_action(self, action: Action,
                              previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await previous
        match action:
            case StartConsole():
                self._start_console(action)
            case StopConsole(console=c, reason=reason):
                await self.manager.stop_console(
                    c, f"cluster: {self.name} stops the console: {reason}")
                self.epochs.pop(c, None)
            case Handover(console=c, epoch=epoch, to=to):
                await self._handover(c, epoch, to)

    def _start_console(self, action: StartConsole) -> None:
        """Open SOL and log now; the log's first note says who owns it since when."""
        match action:
            case StartConsole(console=c, epoch=epoch, took_from=took_from,
                              unowned_for=unowned_for):
                if self.core.running.get(c) != epoch:
                    return  # fenced or moved on since the action was queued
                move = self.moves_kv.pop(c, {})  # as read by our acquire txn, used once
                if took_from is None and move.get("from") not in (None, self.name) \
                        and move.get("to") is None:  # released (shutdown), not yet taken
                    took_from = str(move["from"])
                note = self._start_note(epoch, took_from, unowned_for, move)
                self.epochs[c] = epoch
                # Its previous owner did not release it (its lease expired): that member's
                # SOL session is stale, and the worker deactivates it before activating.
                released = move.get("from") == took_from and move.get("released_at")
                stale_from = took_from if took_from is not None and not released else None
                if took_from is not None:
                    self._record_move(c, epoch, took_from, move)
                if not self.manager.run_console(c, note, take_over_from=stale_from):
                    logger.error("cluster: console %s is owned here but not in this member's "
                                 "configuration", c)
                else:
                    logger.info("%s: %s", c, note)

    def _start_note(self, epoch: int, took_from: str | None, unowned_for: float | None,
                    move: dict[str, Any]) -> str:
        note = f"cluster: {self.name} owns the console (epoch {epoch})"
        if took_from is None:
            return note
        note += f", taken over from {took_from}"
        last = move.get("last_output") if move.get("from") == took_from else None
        released = move.get("released_at") if move.get("from") == took_from else None
        if isinstance(last, int | float):
            note += f"; gap since {took_from}'s last byte: {time.time() - last:.1f}s"
        elif isinstance(released, int | float):
            note += f" (released {time.time() - released:.1f}s ago)"
        elif unowned_for is not None:
            note += (f" after its lease expired (last seen owning it {unowned_for:.1f}s ago; "
                     f"its last byte is in {took_from}'s log)")
        return note

    def _record_move(self, console: str, epoch: int, took_from: str,
                     prior: dict[str, Any]) -> None:
        """Queue `moves/<console>`; written in batches (a failover moves thousands)."""
        planned = prior.get("from") == took_from and prior.get("released_at")
        self._pending_moves[console] = {
            **(prior if planned else {}), "from": took_from, "to": self.name, "epoch": epoch,
            "at": time.time(), "why": prior.get("why", "released") if planned
            else "lease expired"}
        if self._moves_writer is None or self._moves_writer.done():
            self._moves_writer = self._start(self._write_moves(), "cluster:moves")

    async def _write_moves(self) -> None:
        while self._pending_moves:
            await asyncio.sleep(0.2)  # gather a burst into few transactions
            batch = list(self._pending_moves.items())[:100]  # etcd: 128 ops per txn
            for console, _ in batch:
                del self._pending_moves[console]
            with contextlib.suppress(EtcdError, TimeoutError):
                async with self._kv_slots:
                    await self.client.txn([], [op_put(self._key("moves", c),
                                                      json.dumps(r).encode())
                                               for c, r in batch])

    async def _handover(self, console: str, epoch: int, to: str) -> None:
        last = await self.manager.stop_console(
            console, f"cluster: {self.name} hands the console over to {to} (epoch {epoch})")
        self.epochs.pop(console, None)
        key = self._key("owners", console)
        record = {"from": self.name, "to": to, "epoch": epoch, "released_at": time.time(),
                  "last_output": last, "why": "rebalance"}
        with contextlib.suppress(EtcdError, TimeoutError):
            async with self._kv_slots:
                await self.client.txn([cmp_create_revision(key, epoch)],
                                      [op_put(self._key("moves", console),
                                              json.dumps(record).encode()),
                                       op_delete(key)])
        self._done(lambda: self.core.handed_over(console, self._now()))

    def owner_url(self, console: str) -> str | None:
        """The advertise URL of the member that runs `console`, when it is not this one."""
        owner = self.core.owners.get(console)
        if owner is None or owner.member == self.name:
            return None
        member = self.core.members.get(owner.member)
        return member.advertise or None if member is not None else None

    def set_advertise(self, url: str) -> None:
        """No `advertise` configured: publish the URL the web server actually listens on."""
        self.advertise = url
        lease = self.core.lease
        if lease is not None:
            self._start(self._etcd_action(PutMember(lease)), "cluster:PutMember")

    async def still_owner(self, console: str) -> bool:
        """Asked by a worker before it deactivates another session: is the console still
        ours in etcd, with the epoch we started it under, and are we not fenced?"""
        lease, epoch = self.core.lease, self.epochs.get(console)
        if self.core.fenced or lease is None or epoch is None:
            return False
        won = self._acquired_at.get(console)
        if won is not None and self._now() - won < self.cluster.renew_interval \
                and self.core.running.get(console) == epoch:
            return True  # won moments ago and not fenced since: etcd would say the same
        try:
            kv = await self._owner_kv(console)
        except (EtcdError, TimeoutError):
            return False
        ours = kv is not None and kv.lease == lease and kv.create_revision == epoch
        if not ours:
            logger.warning("cluster: %s: SOL is held by another session and the console is "
                           "no longer ours in etcd; not deactivating it", console)
        return ours

    async def _owner_kv(self, console: str) -> KeyValue | None:
        """The console's owner key as etcd has it now. Checks asked meanwhile (a takeover
        asks thousands within seconds) are read together, up to 100 in one txn."""
        future: asyncio.Future[KeyValue | None] = asyncio.get_running_loop().create_future()
        self._owner_checks.setdefault(console, []).append(future)
        if self._owner_checker is None or self._owner_checker.done():
            self._owner_checker = self._start(self._read_owner_checks(), "cluster:checks")
        return await future

    async def _read_owner_checks(self) -> None:
        batch: list[tuple[str, list[asyncio.Future[KeyValue | None]]]] = []
        try:
            while self._owner_checks:
                batch = list(self._owner_checks.items())[:OWNER_CHECK_BATCH]
                for console, _ in batch:
                    del self._owner_checks[console]
                keys = [self._key("owners", c) for c, _ in batch]
                try:
                    async with self._kv_slots:
                        result = await self.client.txn([], [op_get(k) for k in keys])
                except (EtcdError, TimeoutError) as exc:
                    _settle(batch, exc)
                    continue
                found = {kv.key: kv for kv in result.kvs}
                for (_, futures), key in zip(batch, keys, strict=True):
                    for future in futures:
                        if not future.done():
                            future.set_result(found.get(key))
        finally:  # cancelled (stopping): nobody waits forever
            stopping = EtcdError("cluster member stopping")
            _settle(batch, stopping)
            _settle(list(self._owner_checks.items()), stopping)
            self._owner_checks.clear()

    def fence_all(self, reason: str) -> None:
        """Stop every SOL session now, each stop bounded by a third of the TTL. Each stop
        becomes its console's latest operation without waiting for the one before, so it
        starts at once, and a console resumed when a renewal succeeds again opens SOL only
        after its fenced session is off the BMC (and its log closed)."""
        timeout = max(0.5, self.cluster.lease_ttl / 3)
        for console in [w.name for w in self.manager.consoles()]:
            self._console_op(console, self._fence_stop(console, reason, timeout))

    async def _fence_stop(self, console: str, reason: str, timeout: float) -> None:
        try:
            await self.manager.stop_console(console, f"cluster: {self.name} fenced: {reason}",
                                            timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - the other consoles still get stopped
            logger.error("cluster: %s: stopping SOL while fencing failed: %r", console, exc)

    def _observe_renewal(self, seconds: float) -> None:
        self.last_renew_latency = seconds
        self.renew_latency_sum += seconds
        self.renew_latency_count += 1
        for i, bound in enumerate(RENEW_BUCKETS):
            if seconds <= bound:
                self.renew_latency_buckets[i] += 1
                break
        else:
            self.renew_latency_buckets[-1] += 1

    # --- what /api/cluster shows -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        core = self.core
        per_member: dict[str, int] = {}
        for owner in core.owners.values():
            per_member[owner.member] = per_member.get(owner.member, 0) + 1
        return {
            "name": self.name, "prefix": self.prefix, "etcd": list(self.cluster.etcd),
            "etcd_endpoint": self.lease_client.endpoint,  # the node the lease renews through
            "lease": f"{core.lease:x}" if core.lease else None,
            "lease_ttl": self.cluster.lease_ttl, "fenced": core.fenced,
            "draining": sorted(core.draining),
            "fence_reason": core.fence_reason, "digest": self.digest,
            "last_renew_latency": self.last_renew_latency,
            "members": [{"name": m.name, "advertise": m.advertise, "version": m.version,
                         "digest": m.digest, "same_config": m.digest == self.digest,
                         "weight": m.weight, "lease": f"{m.lease:x}",
                         "consoles": per_member.get(m.name, 0)}
                        for m in sorted(core.members.values(), key=lambda m: m.name)],
            "consoles": {"configured": len(core.consoles), "owned": len(core.owners),
                         "here": len(core.running)},
            "moves_taken_here": core.moves,
            # Where every console runs, for tools that need the whole fleet.
            "owners": {c: {"member": o.member, "epoch": o.epoch,
                           "url": (core.members[o.member].advertise
                                   if o.member in core.members else "")}
                       for c, o in sorted(core.owners.items())},
        }
