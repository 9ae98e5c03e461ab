"""CPU per SOL datagram through the whole console path, in this process, in microseconds.

    python bench/datagram_path.py [--packets 20000] [--chars 255] [--rounds 5]

`bench/per_packet.py` times the IPMI layer's calls one by one; this times what one
datagram from the BMC costs from the shared socket's `datagram_received` to the ACK handed
to the socket and the bytes in the log, the panic detector, the ring and one live viewer:
the path `bench/throughput.py` charges, without the kernel, the loop's wake-ups and the
WebSocket client. A real `ConsoleManager` connects to an in-process simulated BMC and
activates SOL; then the session's port is swapped for one that counts ACKs, and datagrams
sealed with the session's keys (text lines, `--chars` characters each) are handed to the
socket's protocol directly. The loop turns once every `--batch` datagrams, so the hub's
flushes run as they would. Compare runs of two checkouts (or SOLGATE_NATIVE=0) on the same
machine minutes apart; the figure is the median of `--rounds`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, write_result  # noqa: E402

from solgate.config import parse_config  # noqa: E402
from solgate.console.manager import ConsoleManager  # noqa: E402
from solgate.ipmi import crypto, fastpath  # noqa: E402
from solgate.ipmi.codec import PayloadType  # noqa: E402
from solgate.sim.bmc import SimBmcConfig  # noqa: E402
from solgate.sim.fleet import SimFleet  # noqa: E402
from solgate.sim.host import SimHost  # noqa: E402


class _CountingPort:
    """Stands in for the session's share of the UDP socket: counts what would be sent.
    The compiled fast path sends through `fast_sendto` and is routed by the real port."""

    def __init__(self, real: Any) -> None:
        self.sent = 0
        self.bytes = 0
        self._real = real

    def sendto(self, data: bytes) -> None:
        self.sent += 1
        self.bytes += len(data)

    def fast_sendto(self) -> tuple[Any, Any]:
        return self._sendto_addr, None

    def _sendto_addr(self, data: bytes, addr: Any) -> None:
        self.sendto(data)

    def set_fast(self, fast: Any) -> None:
        self._real.set_fast(fast)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


class _Sink:
    """A live viewer that takes every write (the WebSocket frame building is not timed)."""

    def __init__(self) -> None:
        self.bytes = 0

    def ready(self) -> bool:
        return True

    def write(self, data: bytes) -> bool:
        self.bytes += len(data)
        return True


def _text(chars: int, count: int) -> list[bytes]:
    """`count` chunks of console text, lines of 60-80 characters ending in CR LF."""
    line_no, stream = 0, bytearray()
    while len(stream) < chars * count:
        line_no += 1
        body = f"[{line_no:8d}.000000] flood line {line_no:08d} " + "x" * (line_no % 21)
        stream += body.encode() + b"\r\n"
    return [bytes(stream[i * chars:(i + 1) * chars]) for i in range(count)]


async def _run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    host = SimHost("bench01", baud=10_000_000, seed=1, powered=True, boot_log=False)
    fleet = SimFleet(1, base_port=0,
                     config_factory=lambda _i, name: SimBmcConfig(name=name, host=host))
    await fleet.start()
    port = fleet.bmcs[0].port
    config = parse_config(
        f'data_dir = "{data_dir}"\n[server]\nlisten = "127.0.0.1:0"\n'
        f'[defaults]\nusername = "admin"\npassword = "password"\n'
        f'cipher_suites = [{args.suite}]\nkeepalive_interval = "600s"\n'
        'session_timeout = "1200s"\n'
        f'[consoles.bench01]\nhost = "127.0.0.1"\nport = {port}\n',
        "<bench>", base_dir=data_dir)
    manager = ConsoleManager(config)
    await manager.start()
    try:
        worker = manager.get("bench01")
        assert worker is not None
        deadline = time.monotonic() + 30
        while worker.state != "active":
            if time.monotonic() > deadline:
                raise RuntimeError(f"console not active: {worker.state} {worker.state_detail}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        await fleet.stop()  # from here on only our datagrams reach the session
        client = worker._client  # noqa: SLF001 - a benchmark reaches in
        assert client is not None
        session = client.session
        protector = session.protector
        assert protector is not None
        stream = worker._stream  # noqa: SLF001
        assert stream is not None
        fast = fastpath.available()  # the worker makes it at the first SOL datagram
        client.detach_fast_path()  # the state below is read from the Python objects
        real_port = client._transport  # noqa: SLF001
        shared, addr = real_port._shared, real_port._address  # type: ignore[union-attr]  # noqa: SLF001
        counting = _CountingPort(real_port)
        client._transport = counting  # type: ignore[assignment]  # noqa: SLF001
        sink = _Sink()
        attachment = worker.hub.attach("bench", can_write=False)
        attachment.set_sink(sink)
        reader = asyncio.get_running_loop().create_task(_drain(attachment))
        await asyncio.sleep(0.05)
        window = session._window  # noqa: SLF001
        seq = (window.highest or 0) + 1
        sol_seq = stream._rx_seq  # noqa: SLF001
        if fast:  # armed again, now sending through the counting port
            client.attach_fast_path(stream, worker._on_output)  # noqa: SLF001
        chunks = _text(args.chars, args.packets)
        rounds: list[float] = []
        logged0 = worker.log.bytes_written
        for _ in range(args.rounds):
            datagrams = []
            for chunk in chunks:
                sol_seq = sol_seq % 15 + 1
                payload = bytes((sol_seq, 0, 0, 0)) + chunk
                datagrams.append(protector.seal(PayloadType.SOL, session.console_session_id,
                                                seq, payload))
                seq += 1
            sent0 = counting.sent
            receive = shared.datagram_received
            t0 = time.process_time()
            for i in range(0, len(datagrams), args.batch):
                for d in datagrams[i:i + args.batch]:
                    receive(d, addr)
                await asyncio.sleep(0)
            t1 = time.process_time()
            rounds.append((t1 - t0) / len(datagrams) * 1e6)
            if counting.sent - sent0 != len(datagrams):
                raise RuntimeError(f"{counting.sent - sent0} ACKs for {len(datagrams)} packets")
        await asyncio.sleep(0.1)
        total = args.chars * args.packets * args.rounds
        logged = worker.log.bytes_written - logged0
        reader.cancel()
        fast_path = client.fastpath
        return {"us_per_datagram": rounds, "logged": logged, "expected": total,
                "viewer": sink.bytes, "packet_path": crypto.packet_path(),
                "fast_path_packets": fast_path.handled if fast_path is not None else 0}
    finally:
        await manager.stop()
        await fleet.stop()


async def _drain(attachment: Any) -> None:
    while True:
        await attachment.get()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--chars", type=int, default=255)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4,
                        help="datagrams per loop turn (4)")
    parser.add_argument("--suite", type=int, default=17)
    parser.add_argument("--name", default="datagram_path")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="solgate-bench-") as tmp:
        result = asyncio.run(_run(args, Path(tmp)))
    us = result["us_per_datagram"]
    print(f"one SOL datagram, {args.chars} characters, suite {args.suite}, "
          f"packet path {result['packet_path']}, "
          f"{result['fast_path_packets']} through the compiled fast path")
    print_table(["median us", "min us", "rounds", "logged ok", "viewer ok"],
                [[round(statistics.median(us), 2), round(min(us), 2), len(us),
                  result["logged"] >= result["expected"], result["viewer"] >= result["expected"]]])
    path = write_result(args.name, {**result, "chars": args.chars, "suite": args.suite,
                                    "median_us": round(statistics.median(us), 2)})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
