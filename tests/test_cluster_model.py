"""Several cluster cores against an in-memory etcd model, on one fake clock, with random
partitions: no console ever runs on two members at once, and after the network heals
every console runs exactly once.

The model keeps etcd's rules that the safety argument rests on: a keepalive restarts the
lease's countdown when etcd *processes* it (after the request's delay), an expired lease
takes its keys with it, and a create-if-absent txn fails on an existing key. A member cut
off from etcd sees its requests fail after the call timeout, as the shell's bounded calls
do. Stopping SOL is taken as instant, so "running" is what the core says it runs.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from solgate.cluster.core import (
    OWNERS_REFRESH,
    Acquire,
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

TTL = 3.0
RENEW = 1.0
CONSOLES = [f"c{i:02d}" for i in range(20)]
NAMES = ("a", "b", "c")


@dataclass
class Etcd:
    rev: int = 0
    leases: dict[int, float] = field(default_factory=dict)  # id -> expires at
    members: dict[str, Member] = field(default_factory=dict)
    owners: dict[str, Owner] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    def expire(self, now: float) -> None:
        dead = {lease for lease, at in self.leases.items() if at <= now}
        for lease in dead:
            del self.leases[lease]
        self.members = {k: m for k, m in self.members.items() if m.lease not in dead}
        self.owners = {k: o for k, o in self.owners.items() if o.lease not in dead}


@dataclass(order=True)
class Event:
    at: float
    seq: int
    run: Callable[[], None] = field(compare=False)


class World:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.etcd = Etcd()
        self.now = 0.0
        self.queue: list[Event] = []
        self.seq = itertools.count()
        self.cut: set[str] = set()
        self.cores = {n: ClusterCore(n, lease_ttl=TTL, renew_interval=RENEW,
                                     poll_interval=0.5, settle=1.0, consoles=list(CONSOLES))
                      for n in NAMES}
        self.timers: dict[str, float] = {}
        self.owner_reads = 0

    def at(self, when: float, run: Callable[[], None]) -> None:
        heapq.heappush(self.queue, Event(when, next(self.seq), run))

    def check(self) -> None:
        for console in CONSOLES:
            holders = [n for n, c in self.cores.items() if console in c.running]
            assert len(holders) <= 1, f"t={self.now:.2f}: {console} runs on {holders}"

    def pump(self, name: str) -> None:
        core = self.cores[name]
        while (action := core.next_action()) is not None:
            self.act(name, action)
        deadline = core.next_deadline()
        if deadline is not None and self.timers.get(name) != deadline:
            self.timers[name] = deadline

            def fire(name: str = name, deadline: float = deadline) -> None:
                if self.timers.get(name) == deadline:
                    core = self.cores[name]
                    core.handle_timeout(self.now)
                    after = core.next_deadline()  # handled: it moves (no busy loop)
                    assert after is None or after > self.now, (name, after, self.now)
                    self.pump(name)
            self.at(max(deadline, self.now), fire)

    def request(self, name: str, server: Callable[[], Callable[[], None]],
                failed: Callable[[], None]) -> None:
        """Send now; etcd runs `server` after a delay and its answer (a callback) comes
        back after another; a cut-off member sees a failure at the call timeout."""
        there = self.rng.uniform(0.001, 0.3)
        back = self.rng.uniform(0.001, 0.3)
        sent = self.now

        def answer_failed() -> None:
            failed()
            self.pump(name)

        if name in self.cut:
            self.at(sent + RENEW, answer_failed)
            return

        def processed() -> None:
            self.etcd.expire(self.now)
            reply = server()
            if name in self.cut:
                self.at(sent + RENEW, answer_failed)
                return

            def answered() -> None:
                reply()
                self.pump(name)
            self.at(self.now + back, answered)
        self.at(sent + there, processed)

    def act(self, name: str, action: object) -> None:
        core, etcd = self.cores[name], self.etcd
        now = self.now
        match action:
            case GrantLease():
                def grant() -> Callable[[], None]:
                    lease = next(etcd.ids)
                    etcd.leases[lease] = self.now + TTL
                    return lambda: core.lease_granted(lease, now, self.now)
                self.request(name, grant, lambda: core.grant_failed(self.now))
            case RenewLease(lease=lease):
                def renew() -> Callable[[], None]:
                    ttl = 0
                    if lease in etcd.leases:
                        etcd.leases[lease] = self.now + TTL
                        ttl = int(TTL)
                    return lambda: core.renewed(ttl, self.now)
                self.request(name, renew, lambda: core.renew_failed(self.now))
            case PutMember(lease=lease):
                def put() -> Callable[[], None]:
                    if lease in etcd.leases:
                        etcd.members[name] = Member(name, lease)
                    return lambda: None
                self.request(name, put, lambda: core.member_put_failed(self.now))
            case Poll(owners=with_owners):
                def read() -> Callable[[], None]:
                    members = dict(etcd.members)
                    owners = dict(etcd.owners) if with_owners else None
                    self.owner_reads += with_owners
                    return lambda: core.polled(members, owners, self.now)
                self.request(name, read, lambda: core.poll_failed(self.now))
            case Acquire(console=console, lease=lease):
                def txn() -> Callable[[], None]:
                    won = console not in etcd.owners and lease in etcd.leases
                    if won:
                        etcd.rev += 1
                        etcd.owners[console] = Owner(console, name, lease, etcd.rev)
                    owner = etcd.owners.get(console)
                    return lambda: core.acquired(console, won, owner, self.now)
                self.request(name, txn, lambda: core.acquire_failed(console, self.now))
            case Handover(console=console, epoch=epoch):
                def delete() -> Callable[[], None]:
                    owner = etcd.owners.get(console)
                    if owner is not None and owner.epoch == epoch:
                        del etcd.owners[console]
                    return lambda: core.handed_over(console, self.now)
                self.request(name, delete, lambda: core.handed_over(console, self.now))
            case StartConsole() | StopConsole() | Fence():
                pass  # SOL starts and stops at once in this model

    def run(self, until: float, partitions: bool) -> None:
        steps = 0
        while self.queue and self.queue[0].at <= until:
            steps += 1
            assert steps < 500_000, "the model does not settle"
            event = heapq.heappop(self.queue)
            self.now = event.at
            event.run()
            self.check()
            if partitions and self.rng.random() < 0.01:
                who = self.rng.choice(NAMES)
                self.cut ^= {who}  # cut off, or reconnected


@pytest.mark.parametrize("seed", range(12))
def test_no_console_ever_runs_twice_and_all_run_once_after_healing(seed: int) -> None:
    world = World(seed)
    for i, name in enumerate(NAMES):
        world.at(0.3 * i, lambda name=name: (world.cores[name].start(world.now),
                                             world.pump(name)))
    world.run(60.0, partitions=True)
    world.cut.clear()
    world.run(90.0, partitions=False)
    running = sorted(c for core in world.cores.values() for c in core.running)
    assert running == CONSOLES
    per_member = [len(core.running) for core in world.cores.values()]
    assert min(per_member) >= 2, per_member  # everyone has a share again
    # Settled, the members read every owner key only about every OWNERS_REFRESH seconds.
    before = world.owner_reads
    world.run(150.0, partitions=False)
    assert world.owner_reads - before <= 3 * (60 / OWNERS_REFRESH + 2)
