"""Two members against a real 3-node etcd: a leader change, and the loss of quorum.

etcd restarts every lease's TTL when its leader changes, and answers no renewal while a
leader is being elected (1 to 3 s after the leader dies) or while quorum is lost. What an
operator relies on, checked here on `solgate sim` BMCs with a 6 s lease:

- a leader change (graceful transfer, or `kill -9` of the leader) costs no console its
  member: no console moves, no BMC ever has its SOL taken from a live session, and a
  member whose etcd node died or went silent renews through another and keeps its lease
  (a member may fence when the election outlasts its margin, and then resumes at once);
- losing quorum (2 of 3 nodes down) fences every member within 2/3 of the lease TTL of
  the last renewal etcd answered (every BMC's SOL released), and when quorum is back
  every console is active again on the member that had it, each on one member.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from solgate.cluster.core import Member, place
from tests.cluster_helpers import (
    MemberProc,
    env,
    member_config,
    member_ready,
    solgate,
    stop,
    wait_until,
)
from tests.engine_helpers import ThreadedFleet, sim_factory
from tests.etcd_cluster import EtcdCluster
from tests.etcd_cluster import etcd_cluster as etcd_cluster  # the `etcd3` fixture

pytestmark = pytest.mark.timeout(150)
CONSOLES = 12
LEASE_TTL = 6.0
FENCE_AFTER = LEASE_TTL * 2 / 3
# etcd's leader steps down 1 to 2 election timeouts (1 s by default) after it lost its
# quorum, and renews leases until then; its successor extends them by as much.
STEP_DOWN = 2.0
SESSION_LIVE = 3.0  # a BMC session that sent a packet this recently belongs to a live console


@dataclass
class Steal:
    """A BMC deactivated one session's SOL for another session."""

    console: str
    idle: float  # seconds since the displaced session last sent the BMC anything


@dataclass
class Watch:
    """What the test sees while etcd is disrupted: steals at the BMCs and, sampled from
    the members' own APIs, any console that two members ran at the same moment."""

    steals: list[Steal] = field(default_factory=list)
    doubled: set[str] = field(default_factory=set)
    dark: set[str] = field(default_factory=set)  # consoles seen active on no member
    samples: int = 0

    def live_steals(self) -> list[Steal]:
        return [s for s in self.steals if s.idle < SESSION_LIVE]


def _hook_steals(sim: ThreadedFleet, watch: Watch) -> None:
    def hook(handle: Any) -> None:
        core = handle.core
        original = core.steal_sol
        timeout = core.config.session_timeout

        def steal_sol(by_sidc: int, now: float) -> None:
            old = core.sol.owner
            if old not in (None, by_sidc):
                session = core.sessions.get(old)
                idle = now - (session.expires - timeout) if session is not None else 1e9
                watch.steals.append(Steal(handle.name, idle))
            original(by_sidc, now)

        core.steal_sol = steal_sol

    sim.call(lambda: [hook(h) for h in sim.fleet.bmcs])


@contextmanager
def _sampling(members: list[MemberProc], watch: Watch,
              expected: set[str]) -> Iterator[None]:
    """Every 0.2 s, the consoles each member runs: one on two members at once, or on
    none, is recorded."""
    done = threading.Event()

    def run() -> None:
        while not done.wait(0.2):
            try:
                running = Counter(c for m in members for c in m.active())
            except OSError:
                continue
            watch.samples += 1
            watch.doubled |= {c for c, n in running.items() if n > 1}
            watch.dark |= expected - set(running)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)


def _start(tmp: Path, endpoints: dict[str, list[str]], consoles: list[tuple[str, int]],
           prefix: str) -> list[MemberProc]:
    procs = []
    for name, urls in endpoints.items():
        workdir = tmp / name
        workdir.mkdir()
        config = member_config(workdir, name, urls, consoles, prefix=prefix,
                               lease_ttl=f"{LEASE_TTL:g}s")
        with (workdir / "stderr").open("w") as stderr:
            procs.append((name, subprocess.Popen(
                solgate("-v", "serve", "-c", str(config), "--event-loop", "asyncio"),
                stdout=subprocess.DEVNULL, stderr=stderr, env=env(), cwd=workdir)))
    return [member_ready(tmp, n, p) for n, p in procs]


def _settled(members: list[MemberProc], expected: set[str]) -> bool:
    """Every console active, each on exactly one member."""
    try:
        counts = Counter(c for m in members for c in m.active())
    except OSError:
        return False
    return set(counts) == expected and max(counts.values()) == 1


def _placement_settled(members: list[MemberProc],
                       expected: set[str]) -> dict[str, set[str]] | None:
    """The consoles each member runs, once every console is active on the member
    rendezvous hashing gives it (so no handover is left to make), else None. A member
    that joins after the other's settle time gets its share by handover, one console at
    a time: "every console active on one member" is true between two of them."""
    try:
        active = {m.name: m.active() for m in members}
        live = [Member(x["name"], 0, x["weight"])
                for x in members[0].api("api/cluster")["members"]]
    except OSError:
        return None
    if {m.name for m in live} != set(active):
        return None
    wanted: dict[str, set[str]] = {name: set() for name in active}
    for console in expected:
        wanted[str(place(console, live))].add(console)
    return active if active == wanted else None


@dataclass
class Moves:
    """Consoles moved so far (a handover at start-up is a move too): each member's count
    of consoles it took from another, and the `moves/` records in etcd, as of `at`."""

    taken: dict[str, int]
    records: dict[str, dict[str, Any]]
    at: float  # wall clock, as the members stamp their records

    @classmethod
    def now(cls, members: list[MemberProc], etcd3: EtcdCluster, prefix: str) -> Moves:
        at = time.time()
        return cls({m.name: m.api("api/cluster")["moves_taken_here"] for m in members},
                   {c: r[0] for c, r in etcd3.client().prefix(prefix + "moves/").items()}, at)

    def since(self, earlier: Moves) -> dict[str, dict[str, Any]]:
        """Records of a console released or taken after `earlier` (the taker completes
        its record of a start-up handover a moment after the console is active again,
        so a record that merely changed is not a new move)."""
        return {c: r for c, r in self.records.items()
                if max(r.get("released_at") or 0, r.get("at") or 0) >= earlier.at}


def _metric(member: MemberProc, name: str) -> float:
    with urllib.request.urlopen(member.url + "metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _sol_owners(sim: ThreadedFleet) -> int:
    """How many BMCs have SOL activated by some session."""
    return int(sim.call(lambda: sum(h.core.sol.owner is not None for h in sim.fleet.bmcs)))


def _fleet(sim: ThreadedFleet) -> tuple[list[tuple[str, int]], set[str]]:
    consoles = [(h.name, h.port) for h in sim.fleet.bmcs]
    return consoles, {name for name, _ in consoles}


def _assert_nothing_moved(members: list[MemberProc], leases: dict[str, Any],
                          placed: dict[str, set[str]], before: Moves, after: Moves,
                          watch: Watch) -> None:
    """Each member kept its lease and so the same consoles: nothing moved, no storm, no
    console on two members at once, no live SOL session taken over."""
    now_leases = {m.name: m.api("api/cluster")["lease"] for m in members}
    assert now_leases == leases, f"a member's lease changed: {leases} -> {now_leases}"
    now_placed = {m.name: m.active() for m in members}
    assert now_placed == placed, f"consoles active per member: {placed} -> {now_placed}"
    assert after.taken == before.taken, \
        f"consoles taken from another member: {before.taken} -> {after.taken}"
    assert not after.since(before), f"consoles recorded as moved: {after.since(before)}"
    assert watch.doubled == set(), f"consoles active on two members at once: {watch.doubled}"
    assert watch.live_steals() == [], f"SOL taken from a live session: {watch.live_steals()}"


def test_a_leader_change_moves_no_console(tmp_path: Path, etcd3: EtcdCluster) -> None:
    etcd3.heal()
    leader = etcd3.leader()
    f1, f2 = (n for n in etcd3.nodes if n is not leader)
    watch = Watch()
    with ThreadedFleet(CONSOLES, config_factory=sim_factory()) as sim:
        consoles, expected = _fleet(sim)
        _hook_steals(sim, watch)
        # a renews through today's leader first; b through f1, which leads next and dies.
        members = _start(tmp_path, {"a": [leader.url, f1.url, f2.url],
                                    "b": [f1.url, f2.url, leader.url]}, consoles, "/leader/")
        a, b = members
        try:
            placed = wait_until(lambda: _placement_settled(members, expected), 30,
                                f"{CONSOLES} consoles active, each on its member")
            assert isinstance(placed, dict)
            leases = {m.name: m.api("api/cluster")["lease"] for m in members}
            before = Moves.now(members, etcd3, "/leader/")
            with _sampling(members, watch, expected):
                # A graceful transfer (`etcdctl move-leader`): renewals carry on.
                etcd3.move_leader(f1)
                time.sleep(2 * LEASE_TTL / 3 + 1)  # past a fence deadline, two renewals
                assert {m.name: m.active() for m in members} == placed
                assert [_metric(m, "solgate_cluster_fences_total") for m in members] == [0, 0]

                # a's node stops answering (SIGSTOP, as a power loss looks to a client):
                # a renews through another node in time, no fence.
                assert a.api("api/cluster")["etcd_endpoint"] == leader.url
                etcd3.pause(leader)
                paused = time.monotonic()
                wait_until(lambda: a.api("api/cluster")["etcd_endpoint"] != leader.url,
                           LEASE_TTL, "a to renew through another etcd node")
                hung = time.monotonic() - paused
                time.sleep(1.0)
                etcd3.resume(leader)
                assert [_metric(m, "solgate_cluster_fences_total") for m in members] == [0, 0]
                assert watch.dark == set()

                # kill -9 of the leader, b's etcd endpoint: an election, b fails over.
                etcd3.heal()
                if etcd3.leader() is not f1:  # the resumed node may have called an election
                    etcd3.move_leader(f1)
                assert b.api("api/cluster")["etcd_endpoint"] == f1.url
                killed = time.monotonic()
                etcd3.kill(f1)
                etcd3.leader()
                elected = time.monotonic() - killed
                wait_until(lambda: b.api("api/cluster")["etcd_endpoint"] != f1.url, LEASE_TTL,
                           "b to renew through another etcd node")
                moved = time.monotonic() - killed
                wait_until(lambda: _settled(members, expected)
                           and not any(m.api("api/cluster")["fenced"] for m in members),
                           LEASE_TTL + 10, "every console active again after the kill")
                back = time.monotonic() - killed
                time.sleep(1.0)  # a late move or steal would show now
            fences = [_metric(m, "solgate_cluster_fences_total") for m in members]
            print(f"a's node hung: a renewed through another after {hung:.1f}s")
            print(f"leader killed: new leader after {elected:.1f}s, b renews through "
                  f"another node after {moved:.1f}s, every console active and no member "
                  f"fenced after {back:.1f}s; fences {fences}, {len(watch.dark)} consoles "
                  f"dark for a moment, {len(watch.steals)} SOL sessions displaced; "
                  f"{watch.samples} samples")
            if not any(fences):  # no fence: SOL never stopped
                assert watch.dark == set(), f"consoles dark for a moment: {watch.dark}"
            _assert_nothing_moved(members, leases, placed, before,
                                  Moves.now(members, etcd3, "/leader/"), watch)
            assert watch.samples > 20, f"only {watch.samples} samples of the members' consoles"
        finally:
            for m in members:
                stop(m.proc)


def test_quorum_loss_fences_every_member_and_quorum_back_places_every_console(
        tmp_path: Path, etcd3: EtcdCluster) -> None:
    etcd3.heal()
    watch = Watch()
    with ThreadedFleet(CONSOLES, config_factory=sim_factory()) as sim:
        consoles, expected = _fleet(sim)
        _hook_steals(sim, watch)
        urls = etcd3.urls
        members = _start(tmp_path, {"a": urls, "b": urls[1:] + urls[:1]}, consoles, "/quorum/")
        try:
            placed = wait_until(lambda: _placement_settled(members, expected), 30,
                                f"{CONSOLES} consoles active, each on its member")
            assert isinstance(placed, dict)
            leases = {m.name: m.api("api/cluster")["lease"] for m in members}
            before = Moves.now(members, etcd3, "/quorum/")
            with _sampling(members, watch, expected):
                # Kill both followers: the leader left alone keeps answering renewals
                # until it notices it lost its quorum (etcd's check-quorum, 1 to 2
                # election timeouts), the longer of the two ways to lose quorum.
                leader = etcd3.leader()
                gone = [n for n in etcd3.nodes if n is not leader]
                lost = time.monotonic()
                for node in gone:
                    etcd3.kill(node)
                fenced_at: dict[str, float] = {}

                def all_fenced() -> bool:
                    for m in members:
                        if m.name not in fenced_at and m.api("api/cluster")["fenced"]:
                            fenced_at[m.name] = time.monotonic() - lost
                    return len(fenced_at) == len(members)

                wait_until(all_fenced, FENCE_AFTER + STEP_DOWN + 2, "every member to fence",
                           step=0.05)
                wait_until(lambda: _sol_owners(sim) == 0, LEASE_TTL / 3 + 1,
                           "every BMC's SOL released", step=0.05)
                released = time.monotonic() - lost
                assert max(fenced_at.values()) <= FENCE_AFTER + STEP_DOWN + 0.5, fenced_at
                running = {m.name: m.active() for m in members}
                assert not any(running.values()), f"fenced members still run {running}"
                # Longer than the TTL without quorum: no leader, so no lease expires.
                time.sleep(max(0.0, lost + LEASE_TTL + 1 - time.monotonic()))
                assert _sol_owners(sim) == 0, f"{_sol_owners(sim)} BMCs have SOL active again"
                restored = time.monotonic()
                for node in gone:
                    etcd3.start(node)
                wait_until(lambda: _settled(members, expected), LEASE_TTL + 10,
                           "every console active again once quorum is back")
                back = time.monotonic() - restored
                time.sleep(1.0)
            print(f"quorum lost: fenced after {sorted(fenced_at.values())} s, SOL released "
                  f"after {released:.1f}s; quorum back: consoles active {back:.1f}s later; "
                  f"{len(watch.steals)} SOL sessions displaced")
            # The leases outlived the outage (no leader, no expiry): the same consoles came
            # back on the same members, nothing moved.
            _assert_nothing_moved(members, leases, placed, before,
                                  Moves.now(members, etcd3, "/quorum/"), watch)
        finally:
            for m in members:
                stop(m.proc)
