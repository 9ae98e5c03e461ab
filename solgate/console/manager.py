"""Every configured console in one process: start, stop, reload, and the shared once-a-second tick.

The manager owns one `ConsoleWorker` per console plus what workers share: the events
file, the semaphore that caps concurrent session setups, and a single ticker that flushes
logs, writes marks and releases pending panic events for all consoles (one timer for
thousands of consoles, not one each). It is also what the web layer talks to
(`solgate.web.model.ConsoleManager`): listing consoles and running operator actions, each
recorded with the acting user.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import resource
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from solgate.config import Config
from solgate.config.consoles import ConsoleConfig
from solgate.console.events import EventLog
from solgate.console.hub import Hub
from solgate.console.log import ConsoleLog
from solgate.console.logindex import create_log_files
from solgate.console.panic import PanicDetector
from solgate.console.power import POWER_ACTIONS
from solgate.console.worker import ConsoleState, ConsoleWorker
from solgate.errors import ConfigError, SolgateError
from solgate.ipmi import udp_pool
from solgate.ipmi.transport import IpmiClient

logger = logging.getLogger("solgate.manager")

TICK_INTERVAL = 1.0
LOG_TICKS_PER_SECOND = 1000
# Each healthy log's housekeeping (two stat calls to follow an external rename, marks,
# size rotation) runs about this often; SIGHUP reopens at once after a logrotate. A log
# whose disk failed is retried every tick.
LOG_TICK_PERIOD = 5.0


class ConsoleManager:
    """Runs the workers of one `Config`; `reload()` applies a new one without touching the rest."""

    def __init__(self, config: Config, *, clustered: bool = False) -> None:
        self.config = config
        # In a cluster the workers run only for the consoles this member owns: the cluster
        # shell calls `run_console` / `stop_console` (solgate/cluster/shell.py).
        self.clustered = clustered
        self.steal_check: Callable[[str], Awaitable[bool]] | None = None
        self.data_dir = Path(config.data_dir)
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.events = EventLog(self.data_dir / "events.jsonl")
        self.setup_slots = asyncio.Semaphore(config.server.setup_concurrency)
        self._workers: dict[str, ConsoleWorker] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the workers' (and sockets')
        # One thread creates the log files of consoles won in a failover: more would
        # only queue on the directory's lock in the kernel, spinning.
        self._file_maker: concurrent.futures.ThreadPoolExecutor | None = None
        self.started_at = time.time()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        raise_file_limit(self.config.consoles.values())
        if not self.clustered:
            for console in self.config.consoles.values():
                self._start_worker(console)
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="ticker")

    async def stop(self) -> None:
        """Deactivate SOL and close every session so each BMC is free for others."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        workers = list(self._workers.values())
        self._workers.clear()
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        for w in workers:
            w.hub.close("solgate stopped")
        self.events.close()
        if self._file_maker is not None:
            self._file_maker.shutdown(wait=False)

    async def reload(self, config: Config) -> dict[str, list[str]]:
        """Start added consoles, stop removed ones, restart changed ones; leave the rest alone."""
        old, new = self.config.consoles, config.consoles
        added = [n for n in new if n not in old]
        removed = [n for n in old if n not in new]
        changed = [n for n in new if n in old and new[n] != old[n]]
        self.config = config
        kept_hubs: dict[str, Hub] = {}
        for name in removed + changed:
            worker = self._workers.pop(name, None)
            if worker is None:
                continue
            await worker.stop()
            if name in removed:
                worker.hub.close("console removed from the configuration")
            else:
                kept_hubs[name] = worker.hub  # viewers stay attached across the restart
        for name in changed:
            if name in kept_hubs or not self.clustered:
                self._start_worker(new[name], hub=kept_hubs.get(name))
        for name in added if not self.clustered else ():  # the cluster places new ones
            self._start_worker(new[name])
        for w in self._workers.values():
            w.log.reopen()
        self.events.reopen()
        summary = {"added": added, "removed": removed, "changed": changed}
        logger.info("reloaded configuration: %s", summary)
        return summary

    def log_path(self, name: str) -> Path:
        """Where this server keeps the log of console `name` (in a cluster, whether it
        runs the console now or not)."""
        return self.data_dir / "logs" / f"{name}.log"

    async def prepare_logs(self, names: Sequence[str]) -> None:
        """Create the log files (and index sidecars) of consoles about to run here that
        have no worker yet, in a thread: a failover creates thousands, and `run_console`
        then only opens them."""
        logs = [(self.log_path(console.name), console.log_index) for name in names
                if (console := self.config.consoles.get(name)) is not None
                and name not in self._workers]
        if logs:
            if self._file_maker is None:
                self._file_maker = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="solgate-log-files")
            await asyncio.get_running_loop().run_in_executor(self._file_maker,
                                                             create_log_files, logs)

    def _start_worker(self, console: ConsoleConfig, hub: Hub | None = None,
                      take_over_from: str | None = None) -> ConsoleWorker:
        log = ConsoleLog(
            self.log_path(console.name),
            max_bytes=console.log_max,
            keep=console.log_keep,
            timestamps=console.log_timestamps,
            index=console.log_index,
            mark_interval=console.mark,
            schedule=asyncio.get_running_loop().call_later,  # held event lines come due
        )
        worker = ConsoleWorker(
            console,
            log=log,
            events=self.events,
            panic=PanicDetector(console.panic_patterns),
            setup_slots=self.setup_slots,
            steal_check=self.steal_check,
            hub=hub,  # kept across a reload: its viewers stay attached
        )
        self._workers[console.name] = worker
        if take_over_from is not None:
            worker.take_over(take_over_from)
        worker.start()
        return worker

    # --- the cluster's hands: run only what this member owns -------------------------------

    def run_console(self, name: str, note: str, take_over_from: str | None = None) -> bool:
        """Open SOL and start logging now (this member just won the console); `note` goes
        first into its log and the events file. `take_over_from`: the member whose lease
        expired holding it (its SOL session is stale: deactivate it first). False when the
        console is not configured."""
        console = self.config.consoles.get(name)
        if console is None:
            return False
        worker = self._workers.get(name)
        if worker is None:
            worker = self._start_worker(console, take_over_from=take_over_from)
        elif take_over_from is not None:
            worker.take_over(take_over_from)
        worker.record("cluster", note)
        return True

    async def stop_console(self, name: str, note: str, timeout: float = 5.0) -> float | None:
        """Stop SOL (deactivating it), flush and close the log; the last output's wall time."""
        worker = self._workers.pop(name, None)
        if worker is None:
            return None
        worker.record("cluster", note)
        await worker.stop(timeout)
        worker.hub.close(note)
        self.events.flush()
        return worker.last_output

    async def _tick(self) -> None:
        turn = 0
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            now = time.time()
            # A log's housekeeping (rename check = two stat calls, marks) runs round robin,
            # each log every LOG_TICK_PERIOD and at most LOG_TICKS_PER_SECOND logs a tick:
            # 1,000 idle consoles cost 400 stat calls a second instead of 2,000, and 10,000
            # get it every 10 s. Logs with a disk error are retried every tick.
            spread = max(round(LOG_TICK_PERIOD / TICK_INTERVAL),
                         -(-len(self._workers) // LOG_TICKS_PER_SECOND))
            turn = (turn + 1) % spread
            idle_timeout = self.config.server.client_idle_timeout
            for i, worker in enumerate(self._workers.values()):
                log = worker.log
                if i % spread == turn or log.error is not None:
                    log.tick()
                if idle_timeout > 0 and worker.hub.viewers:
                    worker.hub.expire_idle(idle_timeout)
                worker.check_log_health()
                worker.flush_panics(now)
            self.events.flush()

    # --- what the web and the CLI see ----------------------------------------------------

    def consoles(self) -> Sequence[ConsoleWorker]:
        return list(self._workers.values())

    def get(self, name: str) -> ConsoleWorker | None:
        return self._workers.get(name)

    def _require(self, name: str) -> ConsoleWorker:
        worker = self._workers.get(name)
        if worker is None:
            raise ConfigError(f"no console named {name!r} in {self.config.source}")
        return worker

    async def send_break(self, name: str, user: str) -> None:
        worker = self._require(name)
        if not worker.send_break(user):
            raise SolgateError(f"console {name} is {worker.state}: a BREAK needs an active SOL "
                               "session")

    async def deactivate(self, name: str, user: str) -> None:
        self._require(name).reconnect(force_deactivate=True, user=user)

    async def power(self, name: str, action: str, user: str) -> str:
        """Chassis control over a separate short session, so SOL is never disturbed."""
        worker = self._require(name)
        if action not in POWER_ACTIONS:
            raise SolgateError(f"unknown power action {action!r}; use one of "
                               f"{', '.join(POWER_ACTIONS)}")
        async with await IpmiClient.connect(worker.console.target()) as client:
            if action != "status":
                await client.chassis_control(action)
                worker.record("power", f"power {action} by {user or 'unknown'}",
                              user=user, action=action)
                return f"power {action} requested"
            status = await client.chassis_status()
        return "on" if status.power_on else "off"

    def record(self, name: str | None, kind: str, message: str, **fields: Any) -> None:
        """An audit record: in the console's log and events.jsonl (None: events.jsonl only)."""
        worker = self._workers.get(name) if name is not None else None
        if worker is not None:
            worker.record(kind, message, **fields)
        else:
            self.events.append(kind, name, message=message, **fields)

    def udp_counters(self) -> dict[str, int]:
        """The shared UDP sockets' counters (udp_pool.COUNTERS), over every console."""
        if self._loop is None:
            return dict.fromkeys(udp_pool.COUNTERS, 0)
        return udp_pool.counters(self._loop)

    def counts_by_state(self) -> dict[str, int]:
        counts = dict.fromkeys((str(s) for s in ConsoleState), 0)
        for w in self._workers.values():
            counts[str(w.state)] += 1
        return counts


def files_needed(consoles: Collection[ConsoleConfig]) -> int:
    """Open files for `consoles`: one log each and its time index where one is kept, a
    UDP socket per 64 sessions, and headroom for viewers, the events file and the web."""
    files = sum(2 if console.log_index else 1 for console in consoles)
    return files + len(consoles) // 64 + 1024


def raise_file_limit(configured: Collection[ConsoleConfig]) -> tuple[int, int]:
    """Lift the soft open-files limit toward the hard one; say clearly when that is not
    enough, rather than letting consoles fail one by one with "Too many open files"."""
    needed, consoles = files_needed(configured), len(configured)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft, hard
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < needed:
        logger.error(
            "%d consoles need about %d open files but the limit is %d (hard limit %d); "
            "consoles beyond it will fail with 'Too many open files'. Raise the limit: "
            "LimitNOFILE=%d in the systemd unit, or `ulimit -n %d` before solgate serve "
            "(a console with log_index = false needs one file instead of two)",
            consoles, needed, soft, hard, needed, needed)
    return soft, hard
