"""Helpers for tests that need a simulated BMC: in memory with a fake clock, or on UDP.

- `make_bmc(...)`: a `SimBmc` with the default admin/password user, deterministic random.
- `Pair`: a client core and a BMC core joined in memory. `pump()` moves datagrams both
  ways (through optional `c2b` / `b2c` filters that drop, duplicate or reorder) and, when
  nothing is in flight, jumps the fake clock to the next deadline. Loops are bounded.
- `drop`, `duplicate`, `reorder`, `drop_first`: filters for `Pair`.
- `running_fleet(...)`: an async context manager that starts a `SimFleet` on free
  loopback ports (port 0) and stops it, for integration tests of other layers.
"""

from __future__ import annotations

import contextlib
import random as _random
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from solgate.ipmi.codec import Privilege
from solgate.ipmi.target import BmcTarget
from solgate.sim.bmc import SimBmc, SimBmcConfig

CLIENT_ADDR = ("127.0.0.1", 40000)
USERNAME = "admin"
PASSWORD = b"password"

Filter = Callable[[list[bytes]], list[bytes]]


def seeded_random(seed: int = 1) -> Callable[[int], bytes]:
    """A deterministic stand-in for os.urandom, so failures reproduce."""
    rng = _random.Random(seed)
    return lambda n: rng.randbytes(n)


def make_config(**overrides: Any) -> SimBmcConfig:
    values: dict[str, Any] = {"name": "bmc0"}
    values.update(overrides)
    return SimBmcConfig(**values)


def make_bmc(seed: int = 7, **overrides: Any) -> SimBmc:
    return SimBmc(make_config(**overrides), random=seeded_random(seed))


def make_target(port: int = 623, **overrides: Any) -> BmcTarget:
    values: dict[str, Any] = {
        "host": "127.0.0.1", "port": port, "username": USERNAME.encode(),
        "password": PASSWORD, "cipher_suites": (17,), "privilege": Privilege.ADMINISTRATOR,
    }
    values.update(overrides)
    return BmcTarget(**values)


def drop(indices: Iterable[int]) -> Filter:
    """Drop the n-th datagrams (0-based, counted over the life of the filter)."""
    wanted = set(indices)
    seen = 0

    def f(batch: list[bytes]) -> list[bytes]:
        nonlocal seen
        out = []
        for d in batch:
            if seen not in wanted:
                out.append(d)
            seen += 1
        return out

    return f


def drop_first(n: int) -> Filter:
    return drop(range(n))


def duplicate() -> Filter:
    return lambda batch: [d for d in batch for _ in (0, 1)]


def reorder() -> Filter:
    """Hold each datagram back until the next one has passed (pairs swap)."""
    held: list[bytes] = []

    def f(batch: list[bytes]) -> list[bytes]:
        out = []
        for d in batch:
            if held:
                out.extend([d, held.pop()])
            else:
                held.append(d)
        return out

    return f


_MAILBOXES: dict[int, tuple[Any, dict[tuple, list[bytes]]]] = {}


def take_datagrams(bmc: Any, addr: tuple) -> list[bytes]:
    """What `bmc` sent to `addr`; datagrams for other addresses wait for their own pair."""
    entry = _MAILBOXES.get(id(bmc))
    if entry is None or entry[0] is not bmc:
        entry = _MAILBOXES[id(bmc)] = (bmc, {})
    boxes = entry[1]
    for data, to in bmc.datagrams_to_send():
        boxes.setdefault(to, []).append(data)
    return boxes.pop(addr, [])


class Pair:
    """A client core (anything with the ClientSession I/O methods) and a BMC in memory.

    Several pairs may share one BMC; give each its own `addr`."""

    def __init__(self, client: Any, bmc: SimBmc, now: float = 0.0,
                 addr: tuple = CLIENT_ADDR) -> None:
        self.client = client
        self.bmc = bmc
        self.now = now
        self.addr = addr
        self.c2b: Filter | None = None
        self.b2c: Filter | None = None
        self.client_events: list[Any] = []

    def transfer(self) -> int:
        """Move every queued datagram once in each direction; how many were delivered."""
        moved = 0
        out = self.client.datagrams_to_send()
        if self.c2b is not None:
            out = self.c2b(out)
        for d in out:
            self.bmc.receive_datagram(d, self.addr, self.now)
            moved += 1
        back = take_datagrams(self.bmc, self.addr)
        if self.b2c is not None:
            back = self.b2c(back)
        for d in back:
            self.client.receive_datagram(d, self.now)
            moved += 1
        while (event := self.client.next_event()) is not None:
            self.client_events.append(event)
        return moved

    def advance(self) -> bool:
        """Jump to the earliest deadline and fire it; False when no timer runs."""
        deadlines = [d for d in (self.client.next_deadline(), self.bmc.next_deadline())
                     if d is not None]
        if not deadlines:
            return False
        self.now = max(self.now, min(deadlines))
        if (d := self.client.next_deadline()) is not None and d <= self.now:
            self.client.handle_timeout(self.now)
        if (d := self.bmc.next_deadline()) is not None and d <= self.now:
            self.bmc.handle_timeout(self.now)
        return True

    def pump(self, until: Callable[[], bool] | None = None, *, max_steps: int = 200,
             timers: bool = True) -> None:
        """Transfer until quiet (or `until()`), firing timers when nothing moves."""
        for _ in range(max_steps):
            if until is not None and until():
                return
            if self.transfer():
                continue
            if until is None and not timers:
                return
            if not timers or not self.advance():
                if until is None:
                    return
                raise AssertionError("nothing in flight and no timer, condition not met")
        if until is not None and not until():
            raise AssertionError(f"condition not met after {max_steps} steps")

    def events_of(self, kind: type) -> list[Any]:
        return [e for e in self.client_events if isinstance(e, kind)]


@contextlib.asynccontextmanager
async def running_fleet(count: int = 1, base_port: int = 0,
                        **kwargs: Any) -> AsyncIterator[Any]:
    """Start `count` simulated BMCs on free loopback ports; yields the `SimFleet`."""
    from solgate.sim.fleet import SimFleet

    fleet = SimFleet(count, base_port=base_port, **kwargs)
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()
