"""A console's history across a cluster, as `solgate tail` on a member reads it: what
every member logged, this member's from disk and the others' read with the member secret
(`/api/cluster/peer/logs/NAME`)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from solgate.config import Config
    from solgate.console.epochs import Part

async def member_urls(config: Config) -> dict[str, str]:
    """The other live members and their advertise URLs, from etcd (member keys)."""
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
    return urls


async def member_histories(config: Config, console: str, lines: int, *,
                           skip: str | None = None) -> tuple[dict[str, Part], list[str]]:
    """What every live member logged for `console` (the last `lines` lines each): this
    member's from disk, the others' read with the member secret
    (`/api/cluster/peer/logs/NAME`); and the members that did not answer. `skip` is a
    member not to ask (the follower reads the owner's part from its stream)."""
    import asyncio

    import aiohttp

    from solgate.cluster.peer import SECRET_HEADER
    from solgate.console.epochs import EPOCH_HEADER, Part
    from solgate.console.logpart import MAX_PART_BYTES, read_part
    from solgate.logtools import log_path

    cluster = config.cluster
    assert cluster is not None
    urls = await member_urls(config)
    logs: dict[str, Part] = {}
    if skip != cluster.name:
        logs[cluster.name] = await asyncio.to_thread(
            read_part, log_path(Path(config.data_dir), console), lines,
            max_bytes=MAX_PART_BYTES)
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
                        logs[member] = Part(await resp.read(),
                                            int(resp.headers.get(EPOCH_HEADER) or 0))
                        return
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            missing.append(member)

        await asyncio.gather(*(one(m, u) for m, u in sorted(urls.items())))
    return logs, sorted(missing)
