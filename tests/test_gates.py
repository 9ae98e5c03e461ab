"""Code gates run with the tests, so CI refuses what the style rules refuse."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)


def test_ruff_is_clean():
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_protocol_core_type_checks_strictly():
    """The sans-I/O IPMI layer is where a wrong type becomes a wrong byte."""
    pytest.importorskip("mypy")
    result = _run(sys.executable, "-m", "mypy", "--strict", "solgate/ipmi")
    assert result.returncode == 0, result.stdout + result.stderr


# Modules not yet held to mypy --strict, each with what stands in the way. Keep it short
# (empty now: every module is strict).
NOT_YET_STRICT: frozenset[str] = frozenset()


def test_the_whole_package_type_checks_strictly():
    """Every module but those listed above; their own errors are silenced, not others'."""
    pytest.importorskip("mypy")
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "solgate").rglob("*.py"))
    checked = [f for f in files if f not in NOT_YET_STRICT]
    assert len(checked) > 40  # the package, not an empty list
    result = _run(sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                  *checked)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ipmi_layer_does_no_io_and_knows_no_upper_layer():
    """ARCHITECTURE.md: only transport.py and its socket pool touch asyncio or sockets;
    ipmi/ imports nothing above it; no clock or sleep in a core."""
    forbidden = ("import asyncio", "import socket", "time.time(", "time.monotonic(",
                 "time.sleep(", "from solgate.console", "from solgate.web",
                 "from solgate.config", "from solgate.sim")
    for path in sorted((ROOT / "solgate" / "ipmi").glob("*.py")):
        if path.name in ("transport.py", "udp_pool.py"):
            continue
        text = path.read_text()
        for needle in forbidden:
            assert needle not in text, f"{path.name} contains {needle!r}"


# Import loops still in the house, each a pair that names the other; docs/architecture.md
# says what would undo them. Keep it short: a new loop fails the test below.
KNOWN_IMPORT_LOOPS = frozenset({
    frozenset({"solgate.console.attachment", "solgate.console.hub"}),
    frozenset({"solgate.sim.bmc", "solgate.sim.bmc_commands", "solgate.sim.bmc_sol"}),
})


def _import_graph() -> dict[str, set[str]]:
    """Module -> the solgate modules it imports anywhere (in functions and for typing too)."""
    import ast

    modules: dict[str, Path] = {}
    for path in (ROOT / "solgate").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def test_no_new_import_loops():
    """A loop means one floor imports from a floor above it (docs/architecture.md)."""
    graph = _import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops: list[frozenset[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                loops.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    new = [sorted(loop) for loop in loops if loop not in KNOWN_IMPORT_LOOPS]
    assert not new, f"import loops: {new}"


def test_the_config_packages_helpers_stay_inside_it():
    """Other layers read a table's dataclass (solgate.config.server, ...) or a neutral
    reader (solgate.units, solgate.addresses), never the config's value checks or its
    line-placing errors."""
    private = {"solgate.config.checks", "solgate.config.source"}
    graph = _import_graph()
    outside = {name: sorted(targets & private) for name, targets in graph.items()
               if not name.startswith("solgate.config") and targets & private}
    assert outside == {}
