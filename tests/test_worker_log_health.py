"""A failing log disk is reported (events, hub state) and never stops console output."""

from __future__ import annotations

import asyncio
import errno
import os

from solgate.config import parse_config
from solgate.console import log as log_module
from solgate.console.attachment import Snapshot
from solgate.console.events import EventLog, read_events
from solgate.console.log import ConsoleLog
from solgate.console.panic import PanicDetector
from solgate.console.worker import ConsoleWorker


async def test_disk_full_is_reported_once_and_recovery_too(tmp_path, monkeypatch):
    config = parse_config("[consoles.web01]\nhost = '127.0.0.1'\npassword = 'pw'\n",
                          "<test>", base_dir=tmp_path)
    events = EventLog(tmp_path / "events.jsonl")
    log = ConsoleLog(tmp_path / "web01.log")
    worker = ConsoleWorker(config.consoles["web01"], log=log, events=events,
                           panic=PanicDetector(), setup_slots=asyncio.Semaphore(1))
    hub = worker.hub
    viewer = hub.attach("ops", can_write=False)
    real_write = os.write

    def full_disk(fd, data):
        if fd == log._fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(log_module.os, "write", full_disk)
    worker._on_output(b"line one\r\n")
    worker.check_log_health()
    worker.check_log_health()  # reported once, not every tick
    assert hub.state_detail.startswith("console log cannot be written (No space left")
    monkeypatch.setattr(log_module.os, "write", real_write)
    worker._on_output(b"line two\r\n")
    log.tick()
    worker.check_log_health()
    events.flush()
    kinds = [e["kind"] for e in read_events(tmp_path / "events.jsonl")]
    assert [k for k in kinds if k.startswith("log-")] == ["log-error", "log-ok"]
    logged = (tmp_path / "web01.log").read_bytes()
    assert logged.startswith(b"[-- solgate ")
    assert b": ops attached (read-only)" in logged.split(b"\r\n")[0]
    assert logged.split(b" --]\r\n", 1)[1] == b"line one\r\nline two\r\n"
    # The viewer saw the output while the disk was full.
    seen = b""
    while (item := viewer.get_nowait()) is not None:
        if isinstance(item, Snapshot):
            seen += item.data
        elif isinstance(item, bytes):
            seen += item
    assert b"line one" in seen
    assert b"line two" in seen
    log.close()
    events.close()
