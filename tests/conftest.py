from __future__ import annotations

import json
from pathlib import Path

# Copies of the project's shared transcripts (the JSON; the pcaps stay in shared/fixtures).
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_fixture(relpath: str) -> dict:
    """A real ipmitool/ipmiconsole transcript against ipmi_sim (see tests/fixtures/*/README.md)."""
    path = FIXTURES / relpath
    return json.loads(path.read_text())


# The slow tier: modules that drive a real browser, a pty, a lossy or delayed wire, a whole
# engine through many reconnects, or type-check the package. `python -m pytest -m "not slow"`
# runs the rest in well under a minute while developing; CI runs everything.
SLOW_MODULES = frozenset({
    "test_bench_smoke.py",
    "test_client_idle.py",
    "test_cluster_etcd.py",
    "test_cluster_etcd_quorum.py",
    "test_cluster_fleet.py",
    "test_cluster_logs.py",
    "test_engine_delay.py",
    "test_engine_faults.py",
    "test_engine_flow.py",
    "test_engine_ipmi_sim.py",
    "test_engine_lossy_keepalive.py",
    "test_engine_notes.py",
    "test_engine_recovery.py",
    "test_engine_session.py",
    "test_forensics.py",
    "test_fleet.py",
    "test_fuzz_decoders.py",
    "test_gates.py",
    "test_panic_bundle.py",
    "test_revocation.py",
    "test_sim_interop.py",
    "test_terminal.py",
    "test_terminal_escapes.py",
    "test_terminal_locks_and_tokens.py",
    "test_web_browser.py",
    "test_web_browser_forensics.py",
    "test_web_fleet_browser.py",
    "test_web_real_stack.py",
})


def pytest_collection_modifyitems(config: object, items: list) -> None:
    import pytest

    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    if hasattr(config, "workerinput"):
        # An xdist worker (pyproject's addopts): the long modules go out first, so the
        # short ones fill in at the end instead of one long module finishing alone. The
        # sort is stable: each module keeps its own order.
        items.sort(key=lambda item: item.path.name not in SLOW_MODULES)
