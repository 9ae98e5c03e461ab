"""Build the optional C speedup for the per-packet RMCP+ path (solgate/ipmi/_speedups.c).

Everything else is in pyproject.toml. The extension is `optional`: on a machine without a
C compiler, Python headers or OpenSSL's headers (Debian: gcc, python3-dev, libssl-dev),
the build prints a warning and solgate runs its pure-Python reference path, which
`solgate serve` names on its ready line. `SOLGATE_NO_EXTENSION=1` skips the build.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

ext_modules = []
if not os.environ.get("SOLGATE_NO_EXTENSION"):
    ext_modules.append(Extension(
        "solgate.ipmi._speedups",
        sources=["solgate/ipmi/_speedups.c"],
        libraries=["crypto"],
        extra_compile_args=["-O2", "-Wall"],
        optional=True,
    ))

setup(ext_modules=ext_modules)
