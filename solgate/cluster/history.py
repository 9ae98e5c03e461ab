"""A console's history across a cluster: what the other members logged, read with the
member secret, merged with this member's own log in ownership order (`solgate tail`)."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from solgate.config import Config


async def member_histories(config: Config, console: str,
                           lines: int) -> tuple[dict[str, bytes], list[str]]:
    """What the *other* live members logged for `console`, read with the member secret
    (`/api/cluster/peer/logs/NAME`), and the members that did not answer."""
    import aiohttp

    from solgate.cluster.fleet import SECRET_HEADER
    from solgate.cluster.shell import etcd_client

    cluster = config.cluster
    assert cluster is not None
    async with etcd_client(cluster, timeout=3.0) as client:
        kvs, _ = await client.range(f"{cluster.prefix}members/", prefix=True)
    urls: dict[str, str] = {}
    for kv in kvs:
        with contextlib.suppress(ValueError, AttributeError):
            urls[kv.key.rsplit("/", 1)[1]] = str(json.loads(kv.value).get("advertise", ""))
    urls.pop(cluster.name, None)  # this member's part is read from disk
    logs: dict[str, bytes] = {}
    missing: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                     headers={SECRET_HEADER: cluster.member_secret}) as http:
        for member, url in sorted(urls.items()):
            where = f"{url.rstrip('/')}/api/cluster/peer/logs/{quote(console, safe='')}"
            try:
                async with http.get(where, params={"lines": str(lines)},
                                    allow_redirects=False) as resp:
                    if resp.status == 200:
                        logs[member] = await resp.read()
                        continue
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            missing.append(member)
    return logs, missing


def cluster_tail(config: Config, name: str, local: bytes, lines: int) -> bytes:
    """`solgate tail` on a member: the console's last `lines` lines across every member,
    in ownership order. Members that cannot be asked are named on stderr."""
    import asyncio

    from solgate.cluster.etcd import EtcdError
    from solgate.cluster.merge import merge_logs

    cluster = config.cluster
    assert cluster is not None
    try:
        logs, missing = asyncio.run(member_histories(config, name, max(lines, 1)))
    except (EtcdError, OSError, TimeoutError) as exc:
        print(f"solgate: cannot ask the other cluster members ({exc}); showing only what "
              f"{cluster.name} logged", file=sys.stderr)
        return local
    for member in missing:
        print(f"solgate: member {member} did not answer; its part of {name}'s history is "
              "missing", file=sys.stderr)
    merged = merge_logs({cluster.name: local, **logs})
    kept = merged.splitlines(keepends=True)
    return b"".join(kept[-lines:]) if lines > 0 else b""
