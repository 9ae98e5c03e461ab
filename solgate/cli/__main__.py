"""`python -m solgate.cli`: the `solgate` command without its installed script."""
from __future__ import annotations

import sys

from solgate.cli import main

sys.exit(main())
