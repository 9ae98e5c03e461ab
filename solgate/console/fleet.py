"""Fleet actions: one action on many consoles, paced, bounded, recorded.

Theory of operation
-------------------
The caller (the REST API) has already resolved a selection and checked the user's
rights: it hands `FleetRunner.run` the names to act on and the names it refused (with
the reason). Refused consoles are reported and never touched. The rest run through two
limits, so 2,000 power cycles never hit a BMC network at once:

* a concurrency limit (`concurrency` actions in flight at once), and
* a rate limit (`Pacer`: action starts at least 1/`rate` seconds apart, over the run).

Each action reuses the single-console operation of the engine (`power`, `send_break`,
`deactivate`); input to the host (a SysRq letter after its BREAK, a broadcast line)
goes through the console's hub with the write lock taken for that input only and given
back to whoever held it (`lend_write`, `type_lent`). The console takes typed bytes only
as far as its SOL send buffer has room, so input is offered again, every
`ROOM_POLL` seconds, until all of it was taken or `broadcast_wait` seconds have passed;
a console that took less is an "error" that says how much it took, never a silent "done"
with the text cut short. Every touched console gets one "fleet" record
(its log and events.jsonl) naming the user, the selection and the outcome; the run ends
with one summary record in events.jsonl. Outcomes are "done", "refused" (never
touched) or "error" (the BMC or the console said no: the message says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from solgate.console.power import POWER_ACTIONS
from solgate.errors import SolgateError

if TYPE_CHECKING:
    from solgate.console.attachment import Attachment
    from solgate.console.hub import Hub

__all__ = ["ACTIONS", "FleetAction", "FleetError", "FleetRunner", "Outcome", "Pacer",
           "lend_write", "parse_action", "type_lent"]

ACTIONS = ("power", "break", "sysrq", "deactivate", "broadcast")
SYSRQ_KEYS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz")
MAX_BROADCAST = 256  # bytes: a command line, not a file transfer
ACTION_TIMEOUT = 30.0  # seconds one console's action may take before it counts as failed
SYSRQ_GAP = 0.2  # seconds between a BREAK and its SysRq letter (Linux allows 5)
BROADCAST_WAIT = 5.0  # seconds typed input may wait for room in a console's send buffer
ROOM_POLL = 0.05  # seconds between offers of what a console has not taken yet


class FleetError(SolgateError):
    """A fleet request that cannot run as asked; the message says what to change."""


@dataclass(frozen=True, slots=True)
class FleetAction:
    """What to do to each console: `kind` (one of ACTIONS) and its argument."""

    kind: str
    arg: str = ""

    @property
    def needs_power(self) -> bool:
        """Changing chassis power needs the admin role; everything else needs write."""
        return self.kind == "power" and self.arg != "status"

    @property
    def touches(self) -> bool:
        """False only for power status, which reads."""
        return not (self.kind == "power" and self.arg == "status")

    def describe(self) -> str:
        if self.kind == "power":
            return f"power {self.arg}"
        if self.kind == "sysrq":
            return f"BREAK + SysRq {self.arg}"
        if self.kind == "break":
            return "serial BREAK"
        if self.kind == "deactivate":
            return "forced deactivate + reconnect"
        return f"broadcast {self.arg!r}"


def parse_action(kind: str, args: Mapping[str, Any] | None = None) -> FleetAction:
    """Check an action and its argument: `power` {"power": "cycle"}, `sysrq` {"key": "s"},
    `broadcast` {"text": "...", "line": true}; `break` and `deactivate` take none."""
    args = args or {}
    if kind == "power":
        what = str(args.get("power", ""))
        if what not in POWER_ACTIONS:
            raise FleetError(f"power needs one of {', '.join(POWER_ACTIONS)}, "
                             f"not {what!r}")
        return FleetAction("power", what)
    if kind == "sysrq":
        key = str(args.get("key", ""))
        if len(key) != 1 or key not in SYSRQ_KEYS:
            raise FleetError(f"sysrq needs one SysRq letter or digit (such as s, u, b), "
                             f"not {key!r}")
        return FleetAction("sysrq", key)
    if kind in ("break", "deactivate"):
        return FleetAction(kind)
    if kind == "broadcast":
        text = args.get("text", "")
        if not isinstance(text, str) or not text:
            raise FleetError("broadcast needs the text to type")
        if args.get("line"):
            text += "\r"
        if len(text.encode()) > MAX_BROADCAST:
            raise FleetError(f"broadcast text is {len(text.encode())} bytes; at most "
                             f"{MAX_BROADCAST}")
        return FleetAction("broadcast", text)
    raise FleetError(f"unknown fleet action {kind!r}; use one of {', '.join(ACTIONS)}")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One console's result: status "done", "refused" or "error", and what happened."""

    console: str
    status: str
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


class Pacer:
    """Spaces action starts at least 1/rate seconds apart (sans-I/O: the caller's clock)."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise FleetError("the fleet rate must be above 0 actions per second")
        self.interval = 1.0 / rate
        self._next: float | None = None

    def reserve(self, now: float) -> float:
        """The time at which the next action may start (now or later); books that slot."""
        start = now if self._next is None else max(now, self._next)
        self._next = start + self.interval
        return start


class Engine(Protocol):
    """The single-console operations a fleet action reuses (the engine's manager has them)."""

    def get(self, name: str) -> Any: ...

    async def send_break(self, name: str, user: str) -> None: ...

    async def deactivate(self, name: str, user: str) -> None: ...

    async def power(self, name: str, action: str, user: str) -> str: ...

    def record(self, name: str | None, kind: str, message: str, **fields: object) -> None: ...


@contextlib.contextmanager
def _lent_lock(hub: Hub, user: str) -> Iterator[Attachment | None]:
    """The write lock for `user` (None if refused), given back to its holder afterwards.

    The previous holder (if any, and still allowed to write) gets the lock back at once.
    """
    holder = next((a for a in hub.attachments if a.is_writer), None)
    attachment = hub.attach(user, can_write=True, via="for a fleet action")
    try:
        yield attachment if hub.take_write(attachment) else None
    finally:
        attachment.detach()
        if holder is not None:
            hub.give_back_write(holder, user)


def lend_write(hub: Hub, user: str, data: bytes) -> bool:
    """Type `data` on a console as `user`: take the write lock for it, then give it back."""
    with _lent_lock(hub, user) as attachment:
        return attachment is not None and attachment.send(data)


async def type_lent(hub: Hub, user: str, data: bytes, taken: Callable[[], int], *,
                    wait: float = BROADCAST_WAIT,
                    alive: Callable[[], bool] = lambda: True) -> int:
    """Type `data` as `user` with the write lock lent for it; return how many bytes the
    console took. `taken()` counts the bytes the console has taken (its `bytes_out`):
    what it did not take for want of room in its send buffer is offered again until all
    is taken, `wait` seconds have passed or `alive()` says the console cannot take any."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    done = 0
    with _lent_lock(hub, user) as attachment:
        while attachment is not None and done < len(data):
            before = taken()
            if not attachment.send(data[done:]):
                break  # the lock was taken from us, or the console went away
            done += max(0, min(taken() - before, len(data) - done))
            if done >= len(data) or loop.time() >= deadline or not alive():
                break
            await asyncio.sleep(ROOM_POLL)
    return done


ProgressCallback = Callable[[Outcome, int, int], None]


class FleetRunner:
    """Runs one fleet action over resolved consoles under the concurrency and rate limits."""

    def __init__(self, engine: Engine, *, concurrency: int, rate: float,
                 clock: Callable[[], float] = time.monotonic,
                 timeout: float = ACTION_TIMEOUT,
                 broadcast_wait: float = BROADCAST_WAIT) -> None:
        self.engine = engine
        self.concurrency = max(1, concurrency)
        self.rate = rate
        self.clock = clock
        self.timeout = timeout
        self.broadcast_wait = broadcast_wait
        self.on_progress: ProgressCallback | None = None  # (outcome, finished, total)

    async def run(self, action: FleetAction, targets: Sequence[str],
                  refused: Mapping[str, str], *, user: str, selection: str,
                  unseen: int = 0) -> dict[str, Any]:
        """Act on `targets`; report `refused` untouched. Returns results and a summary.

        `unseen` counts selected consoles the user may not even see: refused, unnamed.
        """
        run_id = secrets.token_hex(4)
        total = len(targets) + len(refused) + unseen
        on_progress = self.on_progress
        results: list[Outcome] = [Outcome(n, "refused", why) for n, why in refused.items()]
        done_count = unseen  # never touched, never named: counted as finished

        def progress(outcome: Outcome) -> None:
            nonlocal done_count
            done_count += 1
            if on_progress is not None:
                on_progress(outcome, done_count, total)

        for outcome in results:
            progress(outcome)
        pacer = Pacer(self.rate)
        slots = asyncio.Semaphore(self.concurrency)
        context = {"user": user, "selection": selection, "action": action.describe(),
                   "run": run_id, "consoles": total}

        async def one(name: str) -> Outcome:
            async with slots:
                start = pacer.reserve(self.clock())
                delay = start - self.clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                outcome = await self._act(action, name, user)
            if action.touches or outcome.status != "done":
                message = (f"fleet {action.describe()} by {user or 'unknown'} (selection "
                           f"{selection}; {total} consoles): {outcome.status}"
                           f"{': ' + outcome.detail if outcome.detail else ''}")
                try:
                    self.engine.record(name, "fleet", message, outcome=outcome.status,
                                       **context)
                except Exception as exc:  # noqa: BLE001 - the action happened; say so
                    outcome = Outcome(name, outcome.status,
                                      f"{outcome.detail} (not recorded: {exc})".strip())
            progress(outcome)
            return outcome

        results += await asyncio.gather(*(one(n) for n in targets))
        counts = Counter(o.status for o in results)
        summary = {"total": total, "done": counts["done"],
                   "refused": counts["refused"] + unseen, "unseen": unseen,
                   "error": counts["error"]}
        self.engine.record(
            None, "fleet",
            f"fleet {action.describe()} by {user or 'unknown'} (selection {selection}): "
            f"{summary['done']} done, {summary['refused']} refused, "
            f"{summary['error']} failed of {total}", **context, **{
                k: v for k, v in summary.items() if k != "total"})
        order = {name: i for i, name in enumerate(targets)}
        results.sort(key=lambda o: (o.status == "done", order.get(o.console, -1), o.console))
        return {"run": run_id, "action": action.describe(), "summary": summary,
                "results": [o.to_json() for o in results]}

    async def _act(self, action: FleetAction, name: str, user: str) -> Outcome:
        try:
            detail = await asyncio.wait_for(self._do(action, name, user), self.timeout)
        except TimeoutError:
            return Outcome(name, "error", f"no answer within {self.timeout:g} s")
        except SolgateError as exc:
            return Outcome(name, "error", str(exc))
        except OSError as exc:
            return Outcome(name, "error", f"network error: {exc.strerror or exc}")
        return Outcome(name, "done", detail)

    async def _do(self, action: FleetAction, name: str, user: str) -> str:
        engine = self.engine
        if action.kind == "power":
            result = await engine.power(name, action.arg, user)
            return result if action.arg == "status" else ""
        if action.kind == "break":
            await engine.send_break(name, user)
            return ""
        if action.kind == "deactivate":
            await engine.deactivate(name, user)
            return "reconnecting"
        console = engine.get(name)
        if console is None:
            raise FleetError(f"console {name} is gone (removed by a reload)")
        if action.kind == "sysrq":
            await engine.send_break(name, user)
            await asyncio.sleep(SYSRQ_GAP)
            data = action.arg.encode()
        else:
            data = action.arg.encode()
            if console.state != "active":
                raise FleetError(f"console {name} is {console.state}: typing needs an active "
                                 "SOL session")
        took = await type_lent(console.hub, user, data, lambda: int(console.bytes_out),
                               wait=self.broadcast_wait,
                               alive=lambda: console.state == "active")
        if took < len(data):
            why = ("its SOL send buffer stayed full, or another user took the write lock"
                   if console.state == "active" else f"it is {console.state} now")
            raise FleetError(f"console {name} took {took} of {len(data)} bytes within "
                             f"{self.broadcast_wait:g} s ({why}); the rest was not sent")
        return ""
