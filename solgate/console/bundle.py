"""The panic bundle: one file per incident with what the console showed and what the
BMC recorded, so the morning after starts with everything in one place.

Theory of operation
-------------------
When a panic incident closes, the worker writes its event (with a `bundle` ID, so the
webhook and the events page can point at it at once) and starts `collect_bundle`. That
waits `DELAY` seconds (the OS's IPMI driver sends its "OS Critical Stop" event while
panicking, and the BMC takes a moment to log it), then gathers:

* the BMC's System Event Log entries from `SEL_BEFORE` seconds before the panic to
  `SEL_AFTER` after it, by the BMC's clock; if none fall in that window (BMC clocks are
  often wrong) the newest `SEL_FALLBACK` entries instead, and says so;
* the chassis status (power, last power event, faults);
* the screen at the panic, rebuilt from the log (`replay.screen_at`), and the log's
  last `LOG_LINES` lines up to the panic, cleaned of escape sequences;

and writes `<data_dir>/bundles/<ID>.json` (next to events.jsonl) atomically, keeping
the newest `MAX_BUNDLES`. Each part
that fails (the BMC does not answer, has no SEL, the log is unreadable) is replaced by
its error, so a bundle is always written. The SEL is read over the console's own
session, newest first by record ID when the BMC numbers its records consecutively, and
forwards from the first record otherwise, at most `MAX_SEL_READS` requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from solgate.console.log import format_time
from solgate.console.logindex import Timeline
from solgate.console.logread import iter_log_files
from solgate.console.replay import host_read, plain_text, screen_at
from solgate.errors import ConfigError, SolgateError
from solgate.ipmi import sel
from solgate.ipmi.codec import IpmiMessage
from solgate.ipmi.commands import Request

__all__ = ["bundle_id", "bundle_path", "collect_bundle", "format_bundle", "read_bundle",
           "read_sel"]

_LOG = logging.getLogger(__name__)

DELAY = 3.0
SEL_BEFORE = 600.0
SEL_AFTER = 120.0
SEL_FALLBACK = 10
MAX_SEL_READS = 256
LOG_LINES = 60
BUNDLES_DIR = "bundles"
MAX_BUNDLES = 1000
"""Bundles kept in all (the oldest are removed beyond it, so a panic loop cannot fill
the disk); each is a few KB."""
# A session that ended meanwhile raises one of these; the bundle says so and goes on.
_BMC_FAILURES = (SolgateError, TimeoutError, OSError, ValueError, RuntimeError)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,150}")


class Requester(Protocol):
    """What reading the SEL needs from an `IpmiClient`."""

    async def request(self, netfn: int, cmd: int, data: bytes = b"") -> IpmiMessage: ...


def bundle_id(console: str, t: float) -> str:
    """`web01-20261206T031207Z`: unique per console and second, sortable, a file name."""
    return f"{console}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(t))}"


def bundle_path(data_dir: Path, ident: str) -> Path:
    if not _ID.fullmatch(ident) or ".." in ident:
        raise ConfigError(f"{ident!r} is not a bundle ID; copy it from `solgate events` "
                          "(the bundle field of a panic)")
    return Path(data_dir) / BUNDLES_DIR / f"{ident}.json"


async def _call(client: Requester, req: Request, label: str) -> IpmiMessage:
    return await client.request(req.netfn, req.cmd, req.data)


async def read_sel(client: Requester, label: str, *, since: float | None = None,
                   max_reads: int = MAX_SEL_READS) -> list[sel.SelEntry]:
    """SEL entries, oldest first: those at or after `since` (BMC clock), or all of them."""
    info = sel.parse_sel_info(await _call(client, sel.get_sel_info(), label), label)
    if info.entries == 0:
        return []
    try:
        reservation = sel.parse_reserve_sel(await _call(client, sel.reserve_sel(), label), label)
    except SolgateError:
        reservation = 0  # some BMCs do not support it; whole-record reads do not need it
    reads = 0

    async def get(record_id: int) -> tuple[int, sel.SelEntry] | None:
        nonlocal reads
        reads += 1
        msg = await _call(client, sel.get_sel_entry(reservation, record_id), label)
        if msg.completion_code == 0xCB:  # not present
            return None
        return sel.parse_sel_entry(msg, label)

    # Newest first while the IDs are consecutive (most BMCs): stops at `since`.
    newest: list[sel.SelEntry] = []
    last = await get(sel.LAST_ENTRY)
    if last is None:
        return []
    entry = last[1]
    newest.append(entry)
    consecutive = True
    while (reads < max_reads and entry.record_id > 1 and len(newest) < info.entries
           and (since is None or entry.timestamp >= since)):
        got = await get(entry.record_id - 1)
        if got is None:
            consecutive = False
            break
        entry = got[1]
        newest.append(entry)
    if consecutive:
        newest.reverse()
        return [e for e in newest if since is None or e.timestamp >= since]
    # Otherwise forwards from the first record.
    out: list[sel.SelEntry] = []
    record_id = sel.FIRST_ENTRY
    while reads < max_reads:
        got = await get(record_id)
        if got is None:
            break
        next_id, entry = got
        out.append(entry)
        if next_id in (sel.LAST_ENTRY, record_id):
            break
        record_id = next_id
    return [e for e in out if since is None or e.timestamp >= since]


def _screen_and_log(log_path: Path, at: float) -> dict[str, Any]:
    """The screen at the panic and the log's last lines up to it (blocking file I/O)."""
    timeline = Timeline.around(iter_log_files(log_path), at, at)
    shown = screen_at(timeline, at)
    end = timeline.offset_at(at)
    tail = host_read(timeline, max(0, end - 64 * 1024), end)
    lines = [plain_text(line) for line in tail.split(b"\n")][-LOG_LINES:]
    return {"screen": [row.rstrip() for row in shown.screen.display],
            "screen_note": shown.header(log_path.stem), "log": lines,
            "log_until": format_time(at, millis=True)}


def _chassis_json(status: Any) -> dict[str, Any]:
    return {"power": "on" if status.power_on else "off",
            "last_power_event": status.last_power_event,
            "faults": [n for n in ("power_overload", "interlock", "power_fault",
                                   "control_fault", "drive_fault", "fan_fault")
                       if getattr(status, n)],
            "restore_policy": str(status.restore_policy)}


async def collect_bundle(*, ident: str, console: str, record: dict[str, Any],
                         panic_time: float, client: Callable[[], Any], log_path: Path,
                         data_dir: Path, delay: float | None = None) -> Path:
    """Gather and write one panic bundle (see the module docstring); returns its path.

    `client()` gives the console's IPMI session at collection time (None if it has none).
    """
    await asyncio.sleep(DELAY if delay is None else delay)
    session = client()
    bundle: dict[str, Any] = {"id": ident, "console": console,
                              "panic_time": format_time(panic_time, millis=True),
                              "event": record, "collected": format_time(time.time())}
    label = getattr(getattr(session, "target", None), "label", console)
    if session is None:
        bundle["sel_error"] = bundle["chassis_error"] = (
            "no IPMI session to the BMC at the time (the console was not connected)")
    else:
        try:
            entries = await read_sel(session, label, since=panic_time - SEL_BEFORE)
            window = [e for e in entries if e.timestamp <= panic_time + SEL_AFTER]
            if not window:
                everything = await read_sel(session, label)
                window = everything[-SEL_FALLBACK:]
                if window:
                    bundle["sel_note"] = (
                        f"no entry within {SEL_BEFORE:g} s before the panic by the BMC's "
                        f"clock; these are the newest {len(window)} (check the BMC's clock)")
            bundle["sel"] = [e.to_json() for e in window]
            for item in bundle["sel"]:
                item["time"] = format_time(item["timestamp"])
        except _BMC_FAILURES as exc:
            bundle["sel_error"] = f"reading the SEL failed: {exc}"
        try:
            bundle["chassis"] = _chassis_json(await session.chassis_status())
        except _BMC_FAILURES as exc:
            bundle["chassis_error"] = f"Get Chassis Status failed: {exc}"
    try:
        bundle.update(await asyncio.to_thread(_screen_and_log, log_path, panic_time))
    except (OSError, SolgateError) as exc:
        bundle["screen_error"] = f"reading the log failed: {exc}"
    path = bundle_path(data_dir, ident)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(bundle, ensure_ascii=False, indent=1) + "\n")
        os.replace(tmp, path)
        _prune(path.parent)
    except OSError as exc:
        _LOG.warning("panic bundle %s could not be written: %s", path, exc)
    return path


def _prune(directory: Path, keep: int | None = None) -> None:
    """Remove the oldest bundles beyond MAX_BUNDLES."""
    keep = MAX_BUNDLES if keep is None else keep
    bundles = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
    for old in bundles[: max(0, len(bundles) - keep)]:
        old.unlink(missing_ok=True)


def read_bundle(data_dir: Path, ident: str) -> dict[str, Any]:
    path = bundle_path(data_dir, ident)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no panic bundle {ident!r} at {path}; it is written a few "
                          "seconds after the panic (check the ID and -c/--data-dir)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"panic bundle {path} cannot be read: {exc}") from None
    return data


def format_bundle(bundle: dict[str, Any]) -> str:
    """The bundle for a person: headline, BMC records, chassis, screen, log."""
    out = [f"panic bundle {bundle.get('id')}: console {bundle.get('console')} at "
           f"{bundle.get('panic_time')}"]
    event = bundle.get("event") or {}
    if event.get("message"):
        out.append(f"  {event.get('severity', '')}: {event['message']}")
    out.append("")
    out.append("BMC event log (SEL):")
    if "sel_error" in bundle:
        out.append(f"  {bundle['sel_error']}")
    if bundle.get("sel_note"):
        out.append(f"  ({bundle['sel_note']})")
    for e in bundle.get("sel") or []:
        when = e.get("time") or e.get("timestamp", "?")
        out.append(f"  #{e.get('id', '?')!s:<5} {when}  {e.get('words', '')}")
    if not bundle.get("sel") and "sel_error" not in bundle:
        out.append("  (no entries)")
    out.append("")
    chassis = bundle.get("chassis")
    if chassis:
        faults = ", ".join(chassis.get("faults") or ()) or "none"
        out.append(f"chassis: power {chassis.get('power')}, last power event "
                   f"0x{int(chassis.get('last_power_event') or 0):02x}, faults: {faults}")
    else:
        out.append(f"chassis: {bundle.get('chassis_error', 'unknown')}")
    out.append("")
    if "screen" in bundle:
        out.append(f"screen at the panic ({bundle.get('screen_note', '')}):")
        out.extend(f"  |{row}" for row in bundle["screen"])
        out.append("")
        out.append(f"last log lines up to {bundle.get('log_until')}:")
        out.extend(f"  {line}" for line in bundle.get("log") or [])
    else:
        out.append(bundle.get("screen_error", "no screen"))
    return "\n".join(out)
