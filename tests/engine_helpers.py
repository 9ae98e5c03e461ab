"""Helpers for the console engine's integration tests: real UDP to simulated BMCs.

- `sim_factory(...)`: a `SimFleet` config factory with a fast simulated host (high baud,
  short SOL accumulate interval) and tunable SOL retries and session timeout.
- `engine_config(tmp_path, {name: port}, ...)`: a parsed `Config` for those BMCs, with
  test-sized timers; keyword arguments override `[defaults]` keys (or per console).
- `running_manager(config)`: a started `ConsoleManager`, stopped (bounded) on exit.
- `wait_for(cond, timeout, what)`: a bounded poll; fails saying what it waited for (the
  one wait helper of the tests).
- `HostInput`: records every byte the simulated host receives on its serial port.
- `run_flood(...)`: types `flood N` and checks the console log byte for byte.
- `event_lines(data)`: the `[-- solgate ...: text --]` lines of a console log.
- `Wire`, `check_wire(tmp_path, wire)`: the whole no-loss check (boot log, flood, typed
  input, no reconnect) for one console over one (possibly faulty) wire.
- `ThreadedFleet`: a `SimFleet` on its own event loop in a thread, for tests that stall
  solgate's loop while the BMCs keep running.
- `running_stack(data_dir)`: `run_server` in front of a simulated fleet (`names()`, some
  `tagged` rack12) with admin, viewer and operator users, for fleet actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solgate.config import Config, parse_config
from solgate.console.manager import ConsoleManager
from solgate.console.notes import BREAK_MARK
from solgate.console.worker import ConsoleWorker
from solgate.daemon import run_server
from solgate.sim.bmc import SimBmcConfig
from solgate.sim.faults import FaultConfig
from solgate.sim.fleet import SimFleet
from solgate.sim.host import SimHost, verify_flood
from solgate.users import hash_api_token, hash_password

PASSWORD = "password"  # the simulator's default user admin/password
FAST_BAUD = 10_000_000  # 1 MB/s from the simulated UART, so floods take a second, not minutes

_EVENT_RE = re.compile(rb"\[-- solgate \S+: (.*?) --\]\r\n")


def prompt(name: str) -> bytes:
    """The simulated host's shell prompt."""
    return f"root@{name}:~# ".encode()


def sim_factory(
    *,
    baud: int = FAST_BAUD,
    powered: bool = True,
    boot_log: bool = True,
    boot_speed: float = 1.0,
    sol_retry_interval: float = 1.0,
    sol_retry_count: int = 4,
    session_timeout: float = 60.0,
    accumulate_interval: float = 0.002,
    seed: int = 0,
) -> Callable[[int, str], SimBmcConfig]:
    """A config factory for `SimFleet`: BMC `i` gets a host seeded `seed + i`.

    `powered=True` gives a host already idle at its prompt (no boot log); with
    `powered=False` pass `power_on=False` to the fleet and power it on in the test.
    """

    def factory(index: int, name: str) -> SimBmcConfig:
        host = SimHost(name, baud=baud, seed=seed + index, powered=powered,
                       boot_log=boot_log, boot_speed=boot_speed)
        return SimBmcConfig(
            name=name, host=host, sol_retry_interval=sol_retry_interval,
            sol_retry_count=sol_retry_count, session_timeout=session_timeout,
            accumulate_interval=accumulate_interval,
        )

    return factory


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


ENGINE_DEFAULTS: dict[str, object] = {
    "username": "admin",
    "password": PASSWORD,
    "cipher_suites": [17],
    "retransmit_timeout": "200ms",
    "max_tries": 10,
    "keepalive_interval": "2s",
    "session_timeout": "30s",
    "reconnect_max": "2s",
}


def engine_config(
    tmp_path: Path,
    consoles: dict[str, int],
    *,
    per_console: dict[str, dict[str, object]] | None = None,
    **defaults: object,
) -> Config:
    """A `Config` with one console per `{name: port}` on 127.0.0.1, data under tmp_path."""
    merged = dict(ENGINE_DEFAULTS)
    merged.update(defaults)
    lines = [f"data_dir = {_toml(tmp_path / 'data')}", "", "[server]",
             'listen = "127.0.0.1:0"', "", "[defaults]"]
    lines += [f"{key} = {_toml(value)}" for key, value in merged.items()]
    for name, port in consoles.items():
        lines += ["", f"[consoles.{name}]", 'host = "127.0.0.1"', f"port = {port}"]
        for key, value in (per_console or {}).get(name, {}).items():
            lines.append(f"{key} = {_toml(value)}")
    return parse_config("\n".join(lines) + "\n", "<test>", base_dir=tmp_path)


@contextlib.asynccontextmanager
async def running_manager(config: Config) -> AsyncIterator[ConsoleManager]:
    manager = ConsoleManager(config)
    await manager.start()
    try:
        yield manager
    finally:
        await asyncio.wait_for(manager.stop(), 15.0)


async def wait_for(cond: Callable[[], object], timeout: float = 2.0, what: str = "a condition",
                   interval: float = 0.02) -> None:
    """Poll `cond` until true; fail after `timeout` seconds naming `what`.

    The one polling helper of the tests, for a condition that real I/O or another task
    makes true (a test with a fake clock steps the clock instead)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_active(worker: ConsoleWorker, timeout: float = 10.0) -> None:
    await wait_for(lambda: worker.state == "active", timeout,
                   f"console {worker.name} to be active (is {worker.state}: "
                   f"{worker.state_detail})")


class HostInput:
    """Everything the simulated host received on its serial port, in order."""

    def __init__(self, host: SimHost) -> None:
        self.data = bytearray()
        original = host.write

        def write(data: bytes, now: float) -> None:
            self.data += data
            original(data, now)

        host.write = write  # type: ignore[method-assign]


class Watching:
    """A viewer's attachment read by a task, as a front end reads it: the console bytes
    it got, and everything else (`controls`: Lagged, Closed, state messages)."""

    def __init__(self, attachment: Any) -> None:
        self.attachment = attachment
        self.received: list[bytes] = []
        self.controls: list[object] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for item in self.attachment:
            if isinstance(item, bytes):
                self.received.append(item)
            else:
                self.controls.append(item)

    def flood_after(self, echo: bytes, size: int) -> bytes | None:
        """The `size` bytes the viewer got after the command's `echo`, once all came."""
        seen = b"".join(self.received)
        if echo not in seen:
            return None
        begin = seen.index(echo) + len(echo)
        return seen[begin:begin + size] if len(seen) >= begin + size else None

    async def close(self) -> None:
        self.attachment.detach()
        await asyncio.wait_for(self._task, 5)


def log_bytes(worker: ConsoleWorker) -> bytes:
    return worker.log_path.read_bytes()


def without_events(data: bytes) -> bytes:
    """A console log with solgate's own event lines (and the mark that ends a line a note
    had to interrupt) taken out: the host's bytes alone."""
    return _EVENT_RE.sub(b"", data).replace(BREAK_MARK + b"\r\n", b"")


def event_lines(data: bytes) -> list[str]:
    """The texts of the solgate event lines in a console log, in order."""
    return [m.group(1).decode("utf-8", "replace") for m in _EVENT_RE.finditer(data)]


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def events_path(config: Config) -> Path:
    return Path(config.data_dir) / "events.jsonl"


async def run_flood(worker: ConsoleWorker, host_name: str, size: int,
                    timeout: float) -> bytes:
    """Type `flood <size>`, wait for the prompt after it, and check the logged bytes.

    The flood must appear in the log once, whole, in order, followed directly by the
    prompt, with no event line (a reconnect) inside it. Returns the whole log.
    """
    start = len(log_bytes(worker))
    command = f"flood {size}\r".encode()
    worker.send_input(command)
    echo = f"flood {size}\r\n".encode()
    tail = prompt(host_name)

    def done() -> bool:
        data = log_bytes(worker)[start:]
        i = data.find(echo)
        return i >= 0 and len(data) >= i + len(echo) + size + len(tail) and data.endswith(tail)

    await wait_for(done, timeout,
                   f"{size} flood bytes in {worker.log_path.name} "
                   f"(have {len(log_bytes(worker)) - start} new bytes)")
    data = log_bytes(worker)
    new = data[start:]
    begin = new.find(echo) + len(echo)
    body = new[begin:begin + size]
    ok, detail = verify_flood(body, size)
    assert ok, f"flood in the log is wrong: {detail}"
    assert new[begin + size:] == tail, (
        f"after the flood the log holds {new[begin + size:begin + size + 200]!r}, "
        "not just the prompt"
    )
    return data


class ThreadedFleet:
    """A `SimFleet` running on its own event loop in a daemon thread.

    The BMCs keep answering, retransmitting and timing out while the test's loop (which
    runs solgate) is stalled. Touch the fleet only through `call`.
    """

    def __init__(self, count: int, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="sim-fleet")
        self.fleet = SimFleet(count, base_port=0, **kwargs)

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the fleet's loop and return its result."""

        async def run() -> Any:
            return fn(*args)

        return self._run(run())

    def __enter__(self) -> ThreadedFleet:
        self._thread.start()
        self._run(self.fleet.start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._run(self.fleet.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10.0)
            self._loop.close()


# --- one console on one (possibly faulty) wire: boot log, flood, typing -------------------

BOOT_SPEED = 10.0  # the simulated host's ~5 s boot script in ~0.5 s


@dataclass(frozen=True)
class Wire:
    """A wire to test over: its faults, the flood size, and timers tuned for it."""

    faults: FaultConfig | None
    flood: int
    sim: dict[str, Any] = field(default_factory=dict)  # SimBmcConfig overrides
    console: dict[str, object] = field(default_factory=dict)  # [defaults] overrides
    timeout: float = 20.0
    typed: int = 600  # characters typed in one line: 19 SOL packets, the sequence wraps


def expected_boot(name: str, seed: int, at: float) -> bytes:
    """What a twin of the simulated host prints when powered on at `at`, up to its prompt."""
    twin = SimHost(name, baud=FAST_BAUD, seed=seed, boot_speed=BOOT_SPEED)
    twin.power_on(at)
    return twin.read(at + 3600.0, max_bytes=1 << 30)


async def check_wire(tmp_path: Path, wire: Wire) -> None:
    """A console over `wire`: active; boot log, flood and typed line all exact; no drop."""
    factory = sim_factory(powered=False, boot_speed=BOOT_SPEED, **wire.sim)
    async with SimFleet(1, base_port=0, config_factory=factory, faults=wire.faults,
                        power_on=False) as fleet:
        bmc = fleet.bmcs[0]
        host = bmc.host
        assert host is not None
        config = engine_config(tmp_path, {"node": bmc.port}, **wire.console)
        async with running_manager(config) as manager:
            worker = manager.get("node")
            assert worker is not None
            await wait_active(worker, timeout=wire.timeout)
            reconnects = worker.reconnects  # a handshake lost on a lossy wire is retried

            # The boot log, from power on to the prompt, exactly as the host printed it.
            at = asyncio.get_running_loop().time()
            host.power_on(at)
            fleet.poke(bmc)
            boot = expected_boot(host.name, 0, at)
            await wait_for(lambda: log_bytes(worker).endswith(prompt(host.name)),
                           wire.timeout, "the boot log to reach the prompt")
            log = log_bytes(worker)
            up = log.index(b" --]\r\n") + len(b" --]\r\n")  # just after the "SOL up" line
            assert event_lines(log[:up]) == ["SOL up (cipher suite 17)"]
            assert log[up:] == boot, "the boot log differs from what the host printed"

            # Console output: a flood, checked byte for byte.
            await run_flood(worker, host.name, wire.flood, wire.timeout)

            # Keyboard input through the hub's writer attachment reaches the host intact.
            typed = HostInput(host)
            writer = worker.hub.attach("operator", can_write=True)
            try:
                word = "".join(chr(0x41 + (i * 7) % 26) for i in range(wire.typed))
                line = f"echo {word}\r".encode()
                assert writer.send(line)
                reply = f"echo {word}\r\n{word}\r\n".encode() + prompt(host.name)
                # The attach note waits for the prompt line to end, so it lands after
                # the echoed line: compare the console bytes without solgate's notes.
                await wait_for(lambda: without_events(log_bytes(worker)).endswith(reply),
                               wire.timeout, "the typed line's echo and output in the log")
                assert bytes(typed.data) == line
            finally:
                writer.detach()

            sol_lines = [t for t in event_lines(log_bytes(worker)) if t.startswith("SOL ")]
            assert sol_lines == ["SOL up (cipher suite 17)"], (
                "the SOL session dropped or was re-established during the test"
            )
            assert worker.state == "active"
            assert worker.reconnects == reconnects


# --- the fleet stack: run_server in front of simulated BMCs, some tagged rack12 -------------

FLEET_COUNT = 50  # consoles n00..n49; `tagged` puts 20 of them in rack12
RATE = 10  # power actions a second; 20 cycles then take at least 1.9 s
TOKENS = {"root": "sgt_fleet-admin", "vera": "sgt_fleet-viewer", "olga": "sgt_fleet-operator"}
ROOT_PASSWORD = "root-fleet-pw"  # noqa: S105 - a test user's password


def names(count: int = FLEET_COUNT) -> list[str]:
    return [f"n{i:02d}" for i in range(count)]


def tagged(name: str) -> bool:
    return int(name[1:]) % 5 < 2  # 20 of 50, interleaved with the others


def fleet_config(data_dir: Path, ports: list[int]) -> Config:
    rack = [n for n in names(len(ports)) if tagged(n)]
    lines = [
        f'data_dir = "{data_dir}"',
        "[server]", 'listen = "127.0.0.1:0"', 'auth = "login"',
        f"fleet_rate = {RATE}", "fleet_concurrency = 8", "fleet_confirm_over = 10",
        "[defaults]", 'username = "admin"', 'password = "password"',
        "cipher_suites = [17]", 'reconnect_max = "2s"',
        "[users.root]", 'role = "admin"',
        f'password_hash = "{hash_password(ROOT_PASSWORD, n=16, r=1, p=1)}"',
        f'api_tokens = ["{hash_api_token(TOKENS["root"])}"]',
        "[users.vera]", 'role = "viewer"', f'api_tokens = ["{hash_api_token(TOKENS["vera"])}"]',
        "[users.olga]", 'role = "operator"', f"consoles = {json.dumps(rack[:5])}",
        f'api_tokens = ["{hash_api_token(TOKENS["olga"])}"]',
    ]
    for name, port in zip(names(len(ports)), ports, strict=True):
        tags = '["rack12"]' if tagged(name) else '["rack13"]'
        lines += [f"[consoles.{name}]", 'host = "127.0.0.1"', f"port = {port}",
                  f"tags = {tags}"]
    return parse_config("\n".join(lines), "<fleet test>")


@dataclass
class Stack:
    url: str
    manager: ConsoleManager
    fleet: SimFleet
    inputs: dict[str, HostInput]
    cycles: list[tuple[str, float]]  # (host, simulator time) of every power cycle

    def host(self, name: str) -> Any:
        return next(h.host for h in self.fleet.bmcs if h.name == name)


@contextlib.asynccontextmanager
async def running_stack(data_dir: Path, count: int = FLEET_COUNT) -> AsyncIterator[Stack]:
    fleet = SimFleet(count, base_port=0, config_factory=_factory())
    await fleet.start()
    inputs = {h.name: HostInput(h.host) for h in fleet.bmcs}
    cycles: list[tuple[str, float]] = []
    for handle in fleet.bmcs:
        host = handle.host
        original = host.power_cycle

        def cycle(now: float, _name: str = handle.name, _orig: Any = original) -> None:
            cycles.append((_name, now))
            _orig(now)

        host.power_cycle = cycle
    shutdown = asyncio.Event()
    ready: asyncio.Future[tuple[ConsoleManager, str | None]] = (
        asyncio.get_running_loop().create_future())
    config = fleet_config(data_dir, fleet.ports)
    server = asyncio.create_task(run_server(
        config, shutdown=shutdown, on_ready=lambda m, url, ssh: ready.set_result((m, url))))
    try:
        done, _ = await asyncio.wait({server, ready}, timeout=20,
                                     return_when=asyncio.FIRST_COMPLETED)
        assert ready in done, "run_server did not become ready"
        manager, url = ready.result()
        assert url is not None
        yield Stack(url.rstrip("/"), manager, fleet, inputs, cycles)
    finally:
        shutdown.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(server, 20)
        await fleet.stop()


def _factory() -> Any:
    base = sim_factory(boot_speed=10.0)
    return lambda index, _name: base(index, names()[index])
