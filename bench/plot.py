"""Plots for docs/benchmarks.md from bench/results/*.json (needs matplotlib).

    pip install matplotlib    # or: pip install -e .[bench]
    python bench/plot.py

Writes docs/bench-idle.png (CPU and memory against console count), docs/bench-echo.png
(echo round-trip distribution, solgate vs ipmitool) and docs/bench-cpu-per-mb.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idle = load("idle_scale")
    if idle:
        rs = idle["results"]
        n = [r["consoles"] for r in rs]
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        loop = "uvloop" if idle.get("uvloop") else "serve's default loop"
        a.plot(n, [r["cpu_pct"] for r in rs], "o-", label=idle.get("event_loop", loop))
        uv = load("idle_scale_uvloop")
        if uv:
            a.plot([r["consoles"] for r in uv["results"]],
                   [r["cpu_pct"] for r in uv["results"]], "s", label="uvloop")
        a.axhline(25, color="red", ls="--", lw=1, label="target (25%)")
        a.set_xlabel("active SOL consoles, idle")
        a.set_ylabel("solgate CPU, % of one core")
        a.set_title("CPU at rest (keepalives every ~20 s)")
        a.legend()
        a.grid(alpha=0.3)
        b.plot(n, [r["rss_mb"] for r in rs], "o-", label="RSS")
        base = idle["baseline"]["rss_mb"]
        b.plot(n, [base + 100 * c / 1024 for c in n], "r--", lw=1,
               label="target (100 KB/console)")
        b.set_xlabel("active SOL consoles, idle")
        b.set_ylabel("solgate RSS, MB")
        b.set_title("Memory")
        b.legend()
        b.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(DOCS / "bench-idle.png", dpi=100)
        plt.close(fig)

    echo = load("echo_latency")
    if echo:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, label in (("solgate_ms", "solgate (WebSocket)"),
                           ("ipmitool_ms", "ipmitool (pty)")):
            xs = sorted(echo[key])
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)
        ax.set_xlabel("keystroke echo round trip, ms")
        ax.set_ylabel("fraction of keystrokes")
        ax.set_title(f"Echo round trip, cipher suite {echo['suite']}")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(DOCS / "bench-echo.png", dpi=100)
        plt.close(fig)

    tp = load("throughput")
    if tp:
        uv = load("throughput_uvloop")
        labels, values, colors = [], [], []
        for s in tp["summary"]:
            labels.append(f"{s['client']}\nsuite {s['suite']}")
            values.append(s["cpu_s_per_mb"])
            colors.append("tab:blue" if s["client"] == "solgate" else "tab:gray")
        for s in (uv or {}).get("summary", []):
            labels.append(f"solgate uvloop\nsuite {s['suite']}")
            values.append(s["cpu_s_per_mb"])
            colors.append("tab:green")
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.bar(range(len(values)), values, color=colors)
        ax.set_xticks(range(len(values)), labels, fontsize=8)
        ax.set_ylabel("CPU seconds per MB of console output")
        ax.set_title("Flood: client CPU per MB (solgate logs + 1 viewer)")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(DOCS / "bench-cpu-per-mb.png", dpi=100)
        plt.close(fig)
    print("wrote", ", ".join(p.name for p in sorted(DOCS.glob("bench-*.png"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
