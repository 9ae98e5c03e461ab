"""Per-packet cost of the IPMI layer, pure Python vs the compiled path, in microseconds.

    python bench/per_packet.py [--number 20000]

Times, in this process, the calls made once per SOL packet: `PacketProtector.unseal` of a
BMC's SOL packet (255 and 96 characters), `seal` of the 4-byte ACK, the replay window's
`accept`, and `SolStream.receive_payload` with its ACK. This is where the compiled path
(solgate/ipmi/_speedups.c) was aimed; the CPU per MB of a whole server is
bench/throughput.py. Writes bench/results/per_packet.json.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, write_result  # noqa: E402

from solgate.ipmi import crypto  # noqa: E402
from solgate.ipmi.crypto import CIPHER_SUITES, PacketProtector  # noqa: E402
from solgate.ipmi.replay import ReplayWindow  # noqa: E402
from solgate.ipmi.sol import SolStream  # noqa: E402


def per_call(fn, number: int) -> float:
    return round(min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--name", default="per_packet")
    args = parser.parse_args(argv)
    k1, k2 = bytes(range(32)), bytes(range(1, 33))
    paths = [False] + ([True] if crypto._native is not None else [])  # noqa: SLF001
    rows, results = [], []
    for suite in (3, 17):
        for chars in (255, 96):
            row: list[object] = [suite, chars]
            for native in paths:
                bmc = PacketProtector(CIPHER_SUITES[suite], k1, k2, native=native)
                cli = PacketProtector(CIPHER_SUITES[suite], k1, k2, native=native)
                wire = bmc.seal(1, 0x1234, 7, bytes((1, 0, 0, 0)) + b"x" * chars)
                unseal = per_call(lambda c=cli, w=wire: c.unseal(w), args.number)
                seal = per_call(lambda c=cli: c.seal(1, 0x99, 5, b"\x00\x01\xff\x00"),
                                args.number)
                results.append({"suite": suite, "chars": chars, "native": native,
                                "unseal_us": unseal, "seal_ack_us": seal})
                row += [unseal, seal]
            rows.append(row)
    window, seqs = ReplayWindow(), iter(range(1, 10**9))
    replay = per_call(lambda: window.accept(next(seqs)), args.number)
    stream = SolStream("console", max_chars=255, retry_interval=1.0, max_retries=10)
    state = [1]

    def receive() -> None:
        seq = state[0] = state[0] % 15 + 1
        stream.receive_payload(bytes((seq, 0, 0, 0)) + b"x" * 255, 0.0)
        stream.payloads_to_send()
        while stream.next_event() is not None:
            pass

    sol = per_call(receive, args.number)
    headers = ["suite", "chars", "unseal py", "seal ACK py"]
    if len(paths) > 1:
        headers += ["unseal native", "seal ACK native"]
    print(f"per-packet calls, microseconds (best of 3 x {args.number}); packet path now: "
          f"{crypto.packet_path()}")
    print_table(headers, rows)
    print(f"replay window accept: {replay} us; SolStream receive + ACK: {sol} us "
          "(both Python on either path)")
    path = write_result(args.name, {"results": results, "replay_accept_us": replay,
                                    "sol_receive_ack_us": sol})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
