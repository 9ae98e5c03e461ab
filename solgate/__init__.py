"""solgate: a Serial-over-LAN console server for IPMI v2.0 BMCs."""

from __future__ import annotations

__version__ = "0.1.0"
