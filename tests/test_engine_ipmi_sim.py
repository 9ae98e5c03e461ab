"""The console engine against OpenIPMI's ipmi_sim: an independent BMC's SOL, end to end.

A `ConsoleManager` holds SOL to ipmi_sim (cipher suite 3: ipmi_sim has no SHA-256) over
real UDP; the test is the host's serial port (a TCP socket ipmi_sim connects to). What
the host writes must land in `<data_dir>/logs/<name>.log` once, whole and in order, and
what an operator types must reach the host. Skipped without ipmi_sim.

ipmi_sim resends an unacknowledged packet about once a second. Mid-flood its packets are
already full (255 bytes), so a stall of solgate's loop brings plain duplicates. A packet
sent with a few bytes is resent under the same sequence number with whatever the host
wrote since (up to 255 bytes), yet ipmi_sim acts on the first, shorter ACK and sends the
overlap again as a new packet (quirk 11 of ipmi_sim-notes.md). Both must leave every
byte in the log exactly once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from solgate.sim.flood import flood_bytes, verify_flood
from tests.engine_helpers import (
    engine_config,
    event_lines,
    log_bytes,
    running_manager,
    wait_active,
    wait_for,
)
from tests.ipmi_sim import ipmi_sim_fixture  # noqa: F401 - provides the `ipmi_sim` fixture

pytestmark = pytest.mark.timeout(180)

FLOOD = 1_000_000


def console_config(tmp_path: Path, port: int):
    return engine_config(
        tmp_path,
        {"bmc": port},
        cipher_suites=[3],
        retransmit_timeout="500ms",
        keepalive_interval="5s",
        session_timeout="30s",
    )


def logged_output(worker) -> bytes:
    """The console log after its "SOL up" line: the host's bytes as solgate kept them."""
    data = log_bytes(worker)
    marker = b" --]\r\n"
    return data[data.index(marker) + len(marker) :]


async def write_host_output(ipmi_sim, data: bytes, chunk: int = 16384) -> None:
    """The host prints `data`, as fast as ipmi_sim takes it (TCP back-pressure)."""
    for start in range(0, len(data), chunk):
        await ipmi_sim.serial.write(data[start : start + chunk])


async def test_a_megabyte_from_the_host_is_logged_exactly_once(tmp_path, ipmi_sim) -> None:
    async with running_manager(console_config(tmp_path, ipmi_sim.port)) as manager:
        worker = manager.get("bmc")
        await wait_active(worker, timeout=15)
        flood = flood_bytes(FLOOD)
        started = time.monotonic()
        writer = asyncio.create_task(write_host_output(ipmi_sim, flood))
        try:
            await wait_for(
                lambda: len(logged_output(worker)) >= FLOOD,
                150,
                "1 MB of host output in the console log",
            )
        finally:
            writer.cancel()
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.5)  # anything duplicated would arrive after the end
        got = logged_output(worker)
        ok, detail = verify_flood(got, FLOOD)
        assert ok, f"the log differs from what the host wrote: {detail}"
        assert event_lines(log_bytes(worker)) == ["SOL up (cipher suite 3)"], (
            "the SOL session dropped during the transfer"
        )
        assert worker.state == "active"
        print(f"1 MB through ipmi_sim in {elapsed:.1f} s")


async def test_typed_input_reaches_the_host_and_output_follows(tmp_path, ipmi_sim) -> None:
    async with running_manager(console_config(tmp_path, ipmi_sim.port)) as manager:
        worker = manager.get("bmc")
        await wait_active(worker, timeout=15)
        writer = worker.hub.attach("operator", can_write=True)
        try:
            line = ("echo " + "".join(chr(0x61 + i % 26) for i in range(400)) + "\r").encode()
            assert writer.send(line)
            received = await ipmi_sim.serial.read_until(line, timeout=15)
            assert received.endswith(line)
            assert received.count(line) == 1
            # The host answers; the answer is logged after the operator's keystrokes.
            await ipmi_sim.serial.write(b"answer from the host\r\n")
            await wait_for(
                lambda: logged_output(worker).endswith(b"answer from the host\r\n"),
                10,
                "the host's answer in the log",
            )
        finally:
            writer.detach()
        assert [t for t in event_lines(log_bytes(worker)) if t.startswith("SOL")] == [
            "SOL up (cipher suite 3)"
        ]


async def test_retransmissions_during_a_stall_mid_flood_are_logged_once(tmp_path, ipmi_sim) -> None:
    """solgate's loop stalls for 1.5 s mid-flood: ipmi_sim resends its unacknowledged
    (full, 255-byte) packet under the same sequence number; every byte is logged once."""
    size = 300_000
    async with running_manager(console_config(tmp_path, ipmi_sim.port)) as manager:
        worker = manager.get("bmc")
        await wait_active(worker, timeout=15)
        duplicates_before = worker.sol_counters()["duplicates"]
        flood = flood_bytes(size)
        writer = asyncio.create_task(write_host_output(ipmi_sim, flood))
        try:
            await wait_for(
                lambda: len(logged_output(worker)) >= 50_000, 30, "the flood to be under way"
            )
            time.sleep(1.5)  # noqa: ASYNC251 - the point: solgate's own loop stops
            await wait_for(
                lambda: len(logged_output(worker)) >= size, 60, "the whole flood in the log"
            )
        finally:
            writer.cancel()
        await asyncio.sleep(0.5)
        ok, detail = verify_flood(logged_output(worker), size)
        assert ok, f"the log differs from what the host wrote: {detail}"
        assert worker.state == "active"
        # ipmi_sim did retransmit into the stall (so the test exercised that path).
        assert worker.sol_counters()["duplicates"] > duplicates_before


async def test_a_retransmission_that_grew_is_logged_once(tmp_path, ipmi_sim) -> None:
    """A short packet goes unacknowledged while the host writes more: ipmi_sim resends the
    same sequence number with the new bytes added. The log must hold each byte once."""
    async with running_manager(console_config(tmp_path, ipmi_sim.port)) as manager:
        worker = manager.get("bmc")
        await wait_active(worker, timeout=15)
        await ipmi_sim.serial.write(b"login: ")
        await wait_for(lambda: logged_output(worker) == b"login: ", 10, "the first output")
        duplicates_before = worker.sol_counters()["duplicates"]
        first = b"root\r\n"
        more = b"".join(b"Last login: line %02d of the motd\r\n" % i for i in range(6))
        # solgate's loop stops; the stream writes below still reach ipmi_sim at once
        # (an idle asyncio transport sends synchronously). ipmi_sim sends `first` on
        # its own, then resends it about 1 s later with `more` appended.
        serial = ipmi_sim.serial.writer
        serial.write(first)
        time.sleep(0.2)  # noqa: ASYNC251 - the point: solgate's own loop stops
        serial.write(more)
        time.sleep(1.3)  # noqa: ASYNC251
        expected = b"login: " + first + more
        await wait_for(
            lambda: len(logged_output(worker)) >= len(expected), 10, "the host's output in the log"
        )
        await asyncio.sleep(1.0)  # a repeat of the grown bytes would come after this
        if worker.sol_counters()["duplicates"] == duplicates_before:
            pytest.fail("ipmi_sim did not resend during the stall: the test proved nothing")
        got = logged_output(worker)
        assert got == expected, f"the host wrote {expected!r}, the log holds {got!r}"
        assert worker.state == "active"
