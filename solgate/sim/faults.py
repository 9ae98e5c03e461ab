"""Fault injection for the simulated BMC, as a wrapper so the BMC core stays clean.

Theory of operation
-------------------
`FaultyBmc` has the same sans-I/O interface as `SimBmc` (`receive_datagram`,
`handle_timeout`, `datagrams_to_send`, `next_deadline`) and sits between the fleet's
sockets and the core. Every datagram crossing it, inbound or outbound, passes a `_Link`
that may drop, corrupt (flip one bit), duplicate, delay (hold up to `max_delay` seconds)
or reorder it (hold it until the next datagram in the same direction has passed, or
`REORDER_HOLD` seconds), each with its own rate. All randomness comes from one
`random.Random` seeded from `FaultConfig.seed` and the BMC's index, and is drawn in a
fixed order per datagram, so a run with the same inputs and seed repeats exactly.

Behaviour faults are knobs the core exposes, applied here from the mutable `FaultConfig`
on every input, so a test may flip them at runtime: `refuse_logins` (RAKP2 status 0x0D),
`stop_acking_sol` (SOL packets ignored: no ACK, no delivery), `ignore_commands` (a busy
BMC whose command handler is starved: in-session IPMI requests go unanswered while SOL
keeps flowing), `max_sessions`, and
`phantom_sol_owner` (SOL held by a session that does not exist on the wire; applied when
it changes, so a Deactivate Payload really frees it). `restart()` makes the BMC forget
every session, as a BMC reboot would.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from solgate.sim.bmc_session import Address

if TYPE_CHECKING:
    from solgate.sim.bmc import SimBmc

REORDER_HOLD = 0.05  # seconds a reordered datagram waits for a successor before leaving
Item = tuple[bytes, Address]


@dataclass
class LinkFaults:
    """Rates (0..1) of what happens to each datagram in one direction."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    corrupt: float = 0.0
    max_delay: float = 0.3  # seconds; a delayed datagram waits uniform(0, max_delay)

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "delay", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault rate {name}={value} is not between 0 and 1")
        if self.max_delay < 0:
            raise ValueError("max_delay must not be negative")

    @property
    def active(self) -> bool:
        return bool(self.drop or self.duplicate or self.reorder or self.delay or self.corrupt)


@dataclass
class FaultConfig:
    """What can go wrong with one simulated BMC. Mutable: tests may change it at runtime."""

    seed: int = 0
    inbound: LinkFaults = field(default_factory=LinkFaults)
    outbound: LinkFaults = field(default_factory=LinkFaults)
    refuse_logins: bool = False
    phantom_sol_owner: bool = False
    stop_acking_sol: bool = False
    ignore_commands: bool = False
    max_sessions: int | None = None  # None: the BMC config's own limit

    @classmethod
    def symmetric(cls, *, drop: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0,
                  delay: float = 0.0, corrupt: float = 0.0, max_delay: float = 0.3,
                  seed: int = 0) -> FaultConfig:
        """The same network faults in both directions."""

        def link() -> LinkFaults:
            return LinkFaults(drop, duplicate, reorder, delay, corrupt, max_delay)

        return cls(seed=seed, inbound=link(), outbound=link())


class _Link:
    """One direction of a faulty wire: see the module docstring."""

    __slots__ = ("rng", "_held", "_count", "_reordered")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._held: list[tuple[float, int, Item]] = []
        self._count = 0
        self._reordered: tuple[float, Item] | None = None

    def push(self, item: Item, faults: LinkFaults, now: float) -> list[Item]:
        """What leaves now when `item` enters; the rest is held for `due`."""
        if not faults.active:
            return self._with_reordered([item])
        r = self.rng.random
        if r() < faults.drop:
            return []
        data, addr = item
        if r() < faults.corrupt and data:
            bit = self.rng.randrange(len(data) * 8)
            mangled = bytearray(data)
            mangled[bit // 8] ^= 1 << (bit % 8)
            item = (bytes(mangled), addr)
        copies = [item, item] if r() < faults.duplicate else [item]
        out = []
        for copy in copies:
            if r() < faults.delay:
                self._count += 1
                heapq.heappush(self._held, (now + r() * faults.max_delay, self._count, copy))
            elif self._reordered is None and r() < faults.reorder:
                self._reordered = (now + REORDER_HOLD, copy)
            else:
                out.append(copy)
        return self._with_reordered(out)

    @property
    def idle(self) -> bool:
        """Nothing held back: a datagram pushed now would leave as it is, alone."""
        return self._reordered is None and not self._held

    def _with_reordered(self, out: list[Item]) -> list[Item]:
        if out and self._reordered is not None:
            out.append(self._reordered[1])
            self._reordered = None
        return out

    def due(self, now: float) -> list[Item]:
        out = []
        while self._held and self._held[0][0] <= now:
            out.append(heapq.heappop(self._held)[2])
        if self._reordered is not None and self._reordered[0] <= now:
            out.append(self._reordered[1])
            self._reordered = None
        return out

    def next_deadline(self) -> float | None:
        deadline = self._held[0][0] if self._held else None
        if self._reordered is not None and (deadline is None or self._reordered[0] < deadline):
            deadline = self._reordered[0]
        return deadline


class FaultyBmc:
    """A `SimBmc` behind a faulty wire; same sans-I/O interface as the core."""

    __slots__ = ("core", "faults", "_in", "_out_link", "_out", "_phantom_applied")

    def __init__(self, core: SimBmc, faults: FaultConfig | None = None, *,
                 index: int = 0) -> None:
        self.core = core
        self.faults = faults if faults is not None else FaultConfig()
        rng = random.Random(f"{self.faults.seed}:{index}")  # noqa: S311 - repeatable, not secret
        self._in = _Link(rng)
        self._out_link = _Link(rng)
        self._out: list[Item] = []
        self._phantom_applied = False
        self._apply_behaviour()

    def _apply_behaviour(self) -> None:
        f, core = self.faults, self.core
        core.refuse_logins = f.refuse_logins
        core.stop_acking_sol = f.stop_acking_sol
        core.ignore_commands = f.ignore_commands
        core.max_sessions = (
            f.max_sessions if f.max_sessions is not None else core.config.max_sessions
        )
        if f.phantom_sol_owner != self._phantom_applied:
            self._phantom_applied = f.phantom_sol_owner
            core.set_phantom_sol_owner(f.phantom_sol_owner)

    def restart(self) -> None:
        """Forget every session (and the SOL owner), as a rebooting BMC would."""
        self.core.restart()
        self._phantom_applied = False
        self._apply_behaviour()

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._apply_behaviour()
        if self._in.idle and not self.faults.inbound.active:  # a clean wire: straight in
            self.core.receive_datagram(data, addr, now)
        else:
            for d, a in self._in.push((data, addr), self.faults.inbound, now):
                self.core.receive_datagram(d, a, now)
        self._collect(now)

    def handle_timeout(self, now: float) -> None:
        self._apply_behaviour()
        for d, a in self._in.due(now):
            self.core.receive_datagram(d, a, now)
        due = self.core.next_deadline()
        if due is not None and due <= now:
            self.core.handle_timeout(now)
        self._collect(now)
        self._out.extend(self._out_link.due(now))

    def _collect(self, now: float) -> None:
        outbound = self.faults.outbound
        if self._out_link.idle and not outbound.active:  # a clean wire: straight out
            self._out.extend(self.core.datagrams_to_send())
            return
        for item in self.core.datagrams_to_send():
            self._out.extend(self._out_link.push(item, outbound, now))

    def datagrams_to_send(self) -> list[Item]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        deadline = self.core.next_deadline()
        if self._in.idle and self._out_link.idle:
            return deadline
        for d in (self._in.next_deadline(), self._out_link.next_deadline()):
            if d is not None and (deadline is None or d < deadline):
                deadline = d
        return deadline
