from __future__ import annotations

import json
from pathlib import Path

# Copies of the project's shared transcripts (the JSON; the pcaps stay in shared/fixtures).
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_fixture(relpath: str) -> dict:
    """A real ipmitool/ipmiconsole transcript against ipmi_sim (see tests/fixtures/*/README.md)."""
    path = FIXTURES / relpath
    return json.loads(path.read_text())
