from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def load_fixture(relpath: str) -> dict:
    """Real ipmitool/ipmiconsole transcripts against ipmi_sim, beside the repository."""
    path = FIXTURES / relpath
    if not path.exists():
        pytest.skip(f"fixture {path} is not present")
    return json.loads(path.read_text())
