"""What one user or one address may hold at once, below the app keys and the limits.

`UserSlots` counts a user's concurrent log reads (solgate.web.limits runs them);
`Network` and `in_networks` say whether a client address lies in configured networks
(trusted proxies, connection-limit exemptions). `solgate.web.keys` types its keys
with these, and `solgate.web.limits` uses the keys, so they live here, beneath both.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json as _json
from collections.abc import AsyncIterator, Iterable

from aiohttp import web

__all__ = ["LOG_READS_PER_USER", "Network", "TooBusy", "UserSlots", "in_networks"]

LOG_READS_PER_USER = 2

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def in_networks(peer: str | None, networks: Iterable[Network]) -> bool:
    """Whether `peer` (an IP address as text) lies in one of `networks`."""
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


class TooBusy(web.HTTPTooManyRequests):
    """A user already runs as many log reads as allowed."""


class UserSlots:
    """At most `limit` concurrent jobs per user; the next one is refused, not queued."""

    def __init__(self, limit: int = LOG_READS_PER_USER) -> None:
        self.limit = limit
        self._busy: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, user: str, *, json: bool = False) -> AsyncIterator[None]:
        """Run one job for `user`; 429 (as `{"error": ...}` with `json`) when at the limit."""
        if self._busy.get(user, 0) >= self.limit:
            message = (f"you already run {self.limit} log reads or searches; wait for them "
                       "to finish")
            if json:
                raise TooBusy(text=_json.dumps({"error": message}),
                              content_type="application/json", headers={"Retry-After": "2"})
            raise TooBusy(text=message, headers={"Retry-After": "2"})
        self._busy[user] = self._busy.get(user, 0) + 1
        try:
            yield
        finally:
            self._busy[user] -= 1
            if not self._busy[user]:
                del self._busy[user]
