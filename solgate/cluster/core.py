"""Membership, console ownership and self-fencing, as a sans-I/O core (no clock, no etcd).

Theory of operation
-------------------
Each member holds one etcd lease. Its member key `<prefix>members/<name>` and the owner
keys `<prefix>owners/<console>` of the consoles it runs are bound to that lease, so when
the member stops renewing, etcd deletes them all at once and the others see the consoles
free. An owner key is created in a transaction only if absent; its `create_revision` is
the console's *epoch*: it grows with every change of owner, so logs stamped with it sort
owners apart.

The core is driven like the IPMI cores (STYLE items 1 and 9): the caller feeds it results
(`lease_granted`, `renewed`, `polled`, `acquired`, ...) with the monotonic `now`, calls
`handle_timeout(now)` at `next_deadline()`, and pulls `Action`s from `next_action()`:
`GrantLease`, `RenewLease`, `PutMember`, `Poll`, `Acquire`, `StartConsole`,
`StopConsole`, `Handover` and `Fence`. It never touches etcd, a socket or a clock.

Placement is rendezvous (highest random weight) hashing over the live members: each
console goes to the member with the highest `score(member, console)`, weighted. A member
joining or leaving changes the winner for about 1/N of the consoles and no others. A
member only *acquires* consoles it wins that nobody owns; a console owned by a live member
that no longer wins it is handed over by its owner (stop SOL, flush the log, delete the
key), at most `max_handovers` at a time, so a returning member gets its share back
without a storm.

Fencing: a BMC cannot check a fencing token, so a member fences itself. Invariant: a
member runs SOL only while `now - last_ok_sent < fence_after` (2/3 of the lease TTL),
where `last_ok_sent` is when the last *successful* renewal (or the grant) was sent. etcd
restarted the lease's TTL no earlier than that send, so the lease (and every owner key on
it) lives at least until `last_ok_sent + ttl`: the member has stopped SOL a third of the
TTL before any other member can win its consoles. A lost lease (keepalive answers TTL 0)
fences at once.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from solgate.errors import LocalProtocolError

FENCE_FRACTION = 2 / 3
MAX_HANDOVERS = 1  # planned handovers in flight at once (a joining member gets its share)
DRAIN_HANDOVERS = 8  # ... while an operator drains this member (`solgate cluster drain`)
RETRY_DELAY = 0.5  # seconds before a failed grant/renewal/poll is tried again
LOAD_REFRESH = 10.0  # seconds between rewrites of the member key when its load changed
# Seconds between reads of every owner key once placement has settled. While it has not
# (a member joined or left, handovers under way, consoles free) they are read every poll;
# a change in the member list, where a dead member shows first, triggers a read at once.
OWNERS_REFRESH = 10.0


# --------------------------------------------------------------------------- what etcd holds


@dataclass(frozen=True, slots=True)
class Member:
    """A live member, as read from its member key."""

    name: str
    lease: int
    weight: float = 1.0
    advertise: str = ""
    digest: str = ""
    version: str = ""
    load: int = 0


@dataclass(frozen=True, slots=True)
class Owner:
    """Who owns a console: the member, its lease, and the epoch (the key's create_revision)."""

    console: str
    member: str
    lease: int
    epoch: int


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class GrantLease:
    ttl: int


@dataclass(frozen=True, slots=True)
class RenewLease:
    lease: int


@dataclass(frozen=True, slots=True)
class PutMember:
    lease: int


@dataclass(frozen=True, slots=True)
class Poll:
    """Read the member and drain keys, and the owner keys too when `owners`."""

    owners: bool = True


@dataclass(frozen=True, slots=True)
class Acquire:
    console: str
    lease: int


@dataclass(frozen=True, slots=True)
class StartConsole:
    """Open SOL and log now. `took_from` is the previous owner (None: first owner or us)."""

    console: str
    epoch: int
    took_from: str | None = None
    unowned_for: float | None = None  # seconds since the previous owner was last seen


@dataclass(frozen=True, slots=True)
class StopConsole:
    console: str
    reason: str


@dataclass(frozen=True, slots=True)
class Handover:
    """Stop SOL, flush the log, then delete the owner key if it still has this epoch."""

    console: str
    epoch: int
    to: str


@dataclass(frozen=True, slots=True)
class Fence:
    """Stop every SOL session now: this member can no longer prove it holds its lease."""

    reason: str


Action = (GrantLease | RenewLease | PutMember | Poll | Acquire | StartConsole | StopConsole
          | Handover | Fence)


# --------------------------------------------------------------------------- placement


def score(member: str, console: str, weight: float = 1.0) -> float:
    """Weighted rendezvous score: the member with the highest score owns the console.

    `-weight / ln(u)` with `u` uniform in (0, 1) from a hash of both names: a member with
    twice the weight wins about twice as many consoles, and the order for one console
    does not depend on which other members exist.
    """
    digest = hashlib.blake2b(f"{member}\0{console}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)
    return -weight / math.log(u)


def place(console: str, members: Iterable[Member]) -> str | None:
    """The member that should own `console`, or None when there is no live member."""
    best: tuple[float, str] | None = None
    for m in members:
        s = (score(m.name, console, m.weight), m.name)
        if best is None or s > best:
            best = s
    return best[1] if best else None


# --------------------------------------------------------------------------- the core


@dataclass
class _Seen:
    member: str
    epoch: int
    at: float


@dataclass
class ClusterCore:
    """One member's view and decisions; see the module docstring for the rules."""

    name: str
    lease_ttl: float
    renew_interval: float
    poll_interval: float = 1.0
    weight: float = 1.0
    max_handovers: int = MAX_HANDOVERS
    # Seconds after the first lease before acquiring free consoles: members started
    # together see each other first, instead of the first one taking everything and
    # handing most of it over a moment later.
    settle: float = 0.0
    consoles: list[str] = field(default_factory=list)

    lease: int | None = None
    fenced: bool = True  # until the first lease is granted
    fence_reason: str = "no lease yet"
    last_ok_sent: float | None = None
    members: dict[str, Member] = field(default_factory=dict)
    owners: dict[str, Owner] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)  # console -> epoch
    draining: frozenset[str] = frozenset()  # members an operator is draining

    def __post_init__(self) -> None:
        if not 0 < self.renew_interval < self.lease_ttl * FENCE_FRACTION:
            raise LocalProtocolError(f"renew interval {self.renew_interval}s must be shorter "
                                     f"than 2/3 of the lease TTL {self.lease_ttl}s")
        self._actions: deque[Action] = deque()
        self._acquiring: set[str] = set()
        self._handing_over: set[str] = set()
        self._seen: dict[str, _Seen] = {}
        self._grant_at: float | None = None
        self._granting = False
        self._renew_at: float | None = None
        self._renew_sent: float | None = None
        self._poll_at: float | None = None
        self._polling = False
        self._owners_at: float | None = None  # when the owner keys were last read
        self._settled = False  # every console with its placement's winner, nothing in flight
        self._stopping = False
        self._settle_until: float | None = None
        self._member_put_at = -LOAD_REFRESH
        self.moves = 0  # consoles this member took from another member

    @property
    def fence_after(self) -> float:
        return self.lease_ttl * FENCE_FRACTION

    # --- outputs -----------------------------------------------------------------------

    def next_action(self) -> Action | None:
        return self._actions.popleft() if self._actions else None

    def next_deadline(self) -> float | None:
        """When `handle_timeout` has something to do (the same conditions, so a deadline
        always moves once it is handled)."""
        leased = self.lease is not None
        times = [t for t in (self._grant_at if not self._granting and not leased else None,
                             self._renew_at if self._renew_sent is None and leased else None,
                             self._poll_at if not self._polling and leased else None)
                 if t is not None]
        if not self.fenced and self.last_ok_sent is not None:
            times.append(self.last_ok_sent + self.fence_after)
        return min(times) if times else None

    # --- inputs ------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self._grant_at = now
        self.handle_timeout(now)

    def stop(self) -> None:
        """SIGTERM: take no more consoles; the shell stops SOL and revokes the lease."""
        self._stopping = True
        self._grant_at = self._renew_at = self._poll_at = None

    def abandon(self, reason: str) -> None:
        """The shell cannot keep the lease loop running: fence for good (fail safe)."""
        if not self.fenced:
            self._fence(reason)
        self.fence_reason = reason
        self.stop()

    def set_consoles(self, names: Iterable[str], now: float) -> None:
        """The configured consoles (after a reload): removed ones stop, new ones get placed."""
        self.consoles = list(names)
        wanted = set(self.consoles)
        for console in [c for c in self.running if c not in wanted]:
            del self.running[console]
            self._actions.append(StopConsole(console, "removed from the configuration"))
        self._poll_at = now
        self._settled = False

    def handle_timeout(self, now: float) -> None:
        if self._stopping:
            return
        if (not self.fenced and self.last_ok_sent is not None
                and now >= self.last_ok_sent + self.fence_after):  # next_deadline's sum
            self._fence(f"no lease renewal confirmed for {now - self.last_ok_sent:.1f}s "
                        f"(fencing after {self.fence_after:.1f}s, lease TTL "
                        f"{self.lease_ttl:g}s)")
        if self.lease is None and not self._granting and self._grant_at is not None \
                and now >= self._grant_at:
            self._granting = True
            self._grant_at = None
            self._actions.append(GrantLease(max(1, round(self.lease_ttl))))
        if self.lease is not None and self._renew_sent is None and self._renew_at is not None \
                and now >= self._renew_at:
            self._renew_sent = now
            self._actions.append(RenewLease(self.lease))
        if self.lease is not None and not self._polling and self._poll_at is not None \
                and now >= self._poll_at:
            self._polling = True
            owners = (not self._settled or self._owners_at is None
                      or now - self._owners_at >= OWNERS_REFRESH)
            self._actions.append(Poll(owners))

    def lease_granted(self, lease: int, sent_at: float, now: float) -> None:
        self._granting = False
        if self._settle_until is None:
            self._settle_until = now + self.settle
        self.lease = lease
        self.last_ok_sent = sent_at
        self._renew_at = sent_at + self.renew_interval
        self._renew_sent = None
        self._unfence()
        self._actions.append(PutMember(lease))
        self._poll_at = now
        self.handle_timeout(now)

    def grant_failed(self, now: float) -> None:
        self._granting = False
        self._grant_at = now + RETRY_DELAY

    def renewed(self, ttl: int, now: float) -> None:
        """A keepalive answered: `ttl` > 0 renewed the lease, 0 means etcd lost it."""
        sent = self._renew_sent
        if sent is None:
            raise LocalProtocolError("renewed() without a RenewLease in flight")
        self._renew_sent = None
        if ttl <= 0:
            self._lease_lost(now)
            self.handle_timeout(now)
            return
        self.last_ok_sent = sent
        self._renew_at = sent + self.renew_interval
        if self.fenced and not self._stopping:
            self._unfence()
            self._poll_at = now  # resume the consoles still ours
            self._settled = False
        self.handle_timeout(now)

    def renew_failed(self, now: float) -> None:
        self._renew_sent = None
        self._renew_at = now + min(RETRY_DELAY, self.renew_interval)
        self.handle_timeout(now)

    def member_put_failed(self, now: float) -> None:
        if self.lease is not None:
            self._actions.append(PutMember(self.lease))

    def poll_failed(self, now: float) -> None:
        self._polling = False
        self._poll_at = now + RETRY_DELAY

    def polled(self, members: Mapping[str, Member], owners: Mapping[str, Owner] | None,
               now: float, draining: Iterable[str] = ()) -> None:
        """A consistent read of the member, owner and drain keys (one revision); `owners`
        is None when the poll read only members and drains (`Poll(owners=False)`)."""
        self._polling = False
        self._poll_at = now + self.poll_interval
        changed = ({n: m.lease for n, m in members.items()}
                   != {n: m.lease for n, m in self.members.items()}
                   or frozenset(draining) != self.draining)
        self.members = dict(members)
        self.draining = frozenset(draining)
        if owners is None:
            if changed:  # someone joined, left or died, or a drain changed: look now
                self._settled = False
                self._poll_at = now
        else:
            self.owners = dict(owners)
            self._owners_at = now
            if not self._stopping:
                self._place(now)
        me = self.members.get(self.name)
        if self.lease is not None and not self.fenced and (
                me is None or (me.load != len(self.running)
                               and now - self._member_put_at >= LOAD_REFRESH)):
            self._member_put_at = now  # our key went missing, or its load is stale
            self._actions.append(PutMember(self.lease))

    def acquired(self, console: str, won: bool, owner: Owner | None, now: float) -> None:
        """The create-if-absent txn's answer: `owner` is the key as it is now."""
        self._acquiring.discard(console)
        if owner is not None:
            self.owners[console] = owner
        if not won or owner is None or self.running.get(console) == owner.epoch:
            return  # lost, or a poll already showed it ours and started it
        if self.fenced or self._stopping or owner.lease != self.lease:
            return  # the lease is not trusted: leave it, it expires or resumes on renewal
        seen = self._seen.pop(console, None)
        took_from = seen.member if seen is not None and seen.member != self.name else None
        if took_from is not None:
            self.moves += 1
        self.running[console] = owner.epoch
        self._actions.append(StartConsole(console, owner.epoch, took_from,
                                          now - seen.at if seen is not None else None))

    def acquire_failed(self, console: str, now: float) -> None:
        self._acquiring.discard(console)

    def handed_over(self, console: str, now: float) -> None:
        self._handing_over.discard(console)
        self.owners.pop(console, None)
        self._poll_at = now
        self._settled = False

    # --- internals ---------------------------------------------------------------------

    def _unfence(self) -> None:
        self.fenced = False
        self.fence_reason = ""

    def _fence(self, reason: str) -> None:
        self.fenced = True
        self.fence_reason = reason
        self.running.clear()
        self._acquiring.clear()
        self._handing_over.clear()
        self._actions.append(Fence(reason))

    def _lease_lost(self, now: float) -> None:
        self._fence("etcd no longer knows this member's lease (expired)")
        self.lease = None
        self._renew_at = self._poll_at = None
        self._grant_at = now

    def _place(self, now: float) -> None:
        live = list(self.members.values())
        if not self.fenced and self.name not in self.members and self.lease is not None:
            live.append(Member(self.name, self.lease, self.weight))
        # Drained members get nothing, unless every member is drained (then the drain is
        # ignored: running consoles somewhere beats running them nowhere).
        live = [m for m in live if m.name not in self.draining] or live
        handovers = DRAIN_HANDOVERS if self.name in self.draining else self.max_handovers
        settled = self._settle_until is not None and now >= self._settle_until
        in_place = True  # every console owned by its winner (then owners are read rarely)
        for console in self.consoles:
            owner = self.owners.get(console)
            best = place(console, live)
            in_place = in_place and owner is not None and owner.member == best
            if owner is None:
                if console in self.running and console not in self._handing_over:
                    del self.running[console]
                    self._actions.append(StopConsole(console, "its owner key was deleted"))
                if best == self.name and not self.fenced and console not in self._acquiring \
                        and self.lease is not None and settled:
                    self._acquiring.add(console)
                    self._actions.append(Acquire(console, self.lease))
                continue
            if owner.member == self.name and owner.lease == self.lease:
                if console in self._handing_over or console in self._acquiring or self.fenced:
                    continue
                if console not in self.running:
                    self.running[console] = owner.epoch
                    self._actions.append(StartConsole(console, owner.epoch))
                elif best is not None and best != self.name \
                        and len(self._handing_over) < handovers:
                    self._handing_over.add(console)
                    del self.running[console]
                    self._actions.append(Handover(console, owner.epoch, best))
                continue
            self._seen[console] = _Seen(owner.member, owner.epoch, now)
            if console in self.running:
                del self.running[console]
                self._actions.append(StopConsole(console, f"now owned by {owner.member} "
                                                 f"(epoch {owner.epoch})"))
        self._settled = (settled and in_place and not self.fenced and not self._acquiring
                         and not self._handing_over)
