"""Console output through the worker: logged at once, panics found from batched output."""

from __future__ import annotations

import asyncio

from solgate.config import parse_config
from solgate.console.events import EventLog, read_events
from solgate.console.hub import Hub
from solgate.console.log import ConsoleLog
from solgate.console.panic import PanicDetector
from solgate.console.worker import PANIC_BATCH, ConsoleWorker


async def test_a_panic_after_a_flood_is_reported_with_context_and_every_byte_logged_once(
    tmp_path,
):
    config = parse_config("[consoles.web01]\nhost = '127.0.0.1'\npassword = 'pw'\n",
                          "<test>", base_dir=tmp_path)
    events = EventLog(tmp_path / "events.jsonl")
    log = ConsoleLog(tmp_path / "web01.log")
    worker = ConsoleWorker(config.consoles["web01"], hub=Hub("web01"), log=log, events=events,
                           panic=PanicDetector(quiet_seconds=3.0),
                           setup_slots=asyncio.Semaphore(1))
    lines = 3 * PANIC_BATCH // 18  # several batches' worth
    flood = [b"boot line %05d ok\r\n" % i for i in range(lines)]
    panic = b"Kernel panic - not syncing: test\r\n"
    try:
        for chunk in [*flood, panic]:
            worker._on_output(chunk)
        assert sum(map(len, flood)) > 2 * PANIC_BATCH
        logged = (tmp_path / "web01.log").read_bytes()
        assert logged == b"".join(flood) + panic  # on disk before the detector saw it all
        last = worker.last_output
        assert last is not None
        worker.flush_panics(last + 1.0)  # the tick feeds what waited; the incident opens
        assert worker.panic_count == 0
        worker.flush_panics(last + 4.0)  # quiet for quiet_seconds: reported
        assert worker.panic_count == 1
        events.flush()
        [event] = [e for e in read_events(tmp_path / "events.jsonl") if e["kind"] == "panic"]
        assert event["message"] == "Kernel panic - not syncing: test"
        last_line = f"boot line {lines - 1:05d} ok"
        assert event["context"][-2:] == [last_line, "Kernel panic - not syncing: test"]
        logged = (tmp_path / "web01.log").read_bytes()
        assert all(logged.count(line) == 1 for line in flood)
        assert b"PANIC (critical): Kernel panic - not syncing: test" in logged
    finally:
        for task in list(worker._bundle_tasks):
            task.cancel()
        log.close()
        events.close()
