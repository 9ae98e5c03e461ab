"""A console's history across a cluster: what every member logged, this member's from
disk and the others' read with the member secret (`solgate tail`, `solgate.cluster.follow`)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from solgate.config import Config


async def member_histories(config: Config, console: str, lines: int, *,
                           skip: str | None = None) -> tuple[dict[str, bytes], list[str]]:
    """What every live member logged for `console` (the last `lines` lines each): this
    member's from disk, the others' read with the member secret
    (`/api/cluster/peer/logs/NAME`); and the members that did not answer. `skip` is a
    member not to ask (the follower reads the owner's part from its stream)."""
    import asyncio

    import aiohttp

    from solgate.cluster.fleet import SECRET_HEADER
    from solgate.cluster.shell import etcd_client
    from solgate.console.logread import read_tail
    from solgate.logtools import log_path

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
    if skip != cluster.name:
        logs[cluster.name] = b"".join(await asyncio.to_thread(
            read_tail, log_path(Path(config.data_dir), console), lines))
    urls.pop(skip or "", None)
    missing: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                     headers={SECRET_HEADER: cluster.member_secret}) as http:
        async def one(member: str, url: str) -> None:
            where = f"{url.rstrip('/')}/api/cluster/peer/logs/{quote(console, safe='')}"
            try:
                async with http.get(where, params={"lines": str(lines)},
                                    allow_redirects=False) as resp:
                    if resp.status == 200:
                        logs[member] = await resp.read()
                        return
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            missing.append(member)

        await asyncio.gather(*(one(m, u) for m, u in sorted(urls.items())))
    return logs, sorted(missing)
