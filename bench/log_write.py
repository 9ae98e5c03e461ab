"""The console log's own cost: CPU per MB of `ConsoleLog.write`, with and without the index.

    python bench/log_write.py [--mb 10] [--rounds 3]

Writes 255-byte chunks (a full SOL packet: two 120-character lines and a partial one)
to a log in a temporary directory, alternating `index=False` and `index=True`, and
prints the process CPU time per MB of each. Only the log path is measured; the whole
console path is `throughput.py`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from solgate.console.log import ConsoleLog  # noqa: E402

CHUNK = (b"x" * 120 + b"\r\n") * 2 + b"y" * 11


def run(n: int, *, index: bool) -> float:
    """CPU milliseconds per MB of writing `n` chunks."""
    with tempfile.TemporaryDirectory() as d:
        log = ConsoleLog(Path(d) / "a.log", max_bytes=1 << 40, index=index)
        t = time.process_time()
        for _ in range(n):
            log.write(CHUNK)
        dt = time.process_time() - t
        log.close()
    return dt / (n * len(CHUNK) / 1e6) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    n = int(args.mb * 1e6 / len(CHUNK))
    for rnd in range(args.rounds):
        for index in (False, True):
            print(f"round {rnd} index={index}: {run(n, index=index):.2f} ms CPU per MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
