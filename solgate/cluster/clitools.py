"""`solgate grep`, `solgate screen` and `solgate export` on a cluster member: every
member's logs, not only this one's disk.

The commands run where the configuration and the logs are, as `solgate tail` does: this
member's logs are read from disk, the other live members (their keys in etcd) are asked
with the member secret (`/api/cluster/peer/grep`, `/api/cluster/peer/window/NAME`), all
at once. A member that does not answer is named, and what the others have is still
given, said to be incomplete: the operator gets what can be had, and knows what is not
in it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from solgate.config import Config
    from solgate.console.logwindow import Window
    from solgate.forensics import Hit

ASK_TIMEOUT = 30.0  # seconds for one member's answer (a window may be 40 MiB)


@dataclass
class Gathered:
    """What the members answered, and why some did not."""

    answers: dict[str, bytes] = field(default_factory=dict)  # member -> its answer
    missing: dict[str, str] = field(default_factory=dict)  # member -> why it is missing


def ask_members(config: Config, path: str, params: dict[str, str],
                timeout: float = ASK_TIMEOUT) -> Gathered:
    """GET `path` from every other live member (member secret), at once. When etcd
    cannot say who the members are, that is the reason under the key "etcd"."""
    return asyncio.run(_ask(config, path, params, timeout))


async def _ask(config: Config, path: str, params: dict[str, str],
               timeout: float) -> Gathered:
    import aiohttp

    from solgate.cluster.etcd import EtcdError
    from solgate.cluster.history import member_urls
    from solgate.cluster.peer import SECRET_HEADER, error_text

    cluster = config.cluster
    assert cluster is not None
    gathered = Gathered()
    try:
        urls = await member_urls(config)
    except (EtcdError, OSError, TimeoutError) as exc:
        gathered.missing["etcd"] = (f"cannot ask etcd who the other members are ({exc}); "
                                    "only this member's logs were read")
        return gathered
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout),
                                     headers={SECRET_HEADER: cluster.member_secret}) as http:
        async def one(member: str, url: str) -> None:
            if not url:
                gathered.missing[member] = "it publishes no advertise URL"
                return
            try:
                async with http.get(url.rstrip("/") + path, params=params,
                                    allow_redirects=False) as resp:
                    body = await resp.read()
                    if resp.status == 200:
                        gathered.answers[member] = body
                        return
                    gathered.missing[member] = (f"it answered {resp.status} at {url}: "
                                                f"{error_text(body)}")
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                gathered.missing[member] = f"it did not answer at {url} ({exc or 'timeout'})"

        await asyncio.gather(*(one(m, u) for m, u in sorted(urls.items())))
    return gathered


def member_windows(config: Config, console: str, t1: float, t2: float,
                   context: int) -> tuple[dict[str, Window], dict[str, str]]:
    """This member's log of `console` between two times (from disk) and every other
    member's; and why a member's part is missing."""
    from pathlib import Path

    from solgate.console.logwindow import Window, WindowTooBig, read_window
    from solgate.logtools import log_path

    cluster = config.cluster
    assert cluster is not None
    windows: dict[str, Window] = {}
    gathered = ask_members(config, f"/api/cluster/peer/window/{quote(console, safe='')}",
                           {"from": repr(t1), "to": repr(t2), "context": str(context)})
    try:
        windows[cluster.name] = read_window(log_path(Path(config.data_dir), console), t1, t2,
                                            context)
    except WindowTooBig as exc:
        gathered.missing[cluster.name] = f"this member: {exc}"
    for member, body in gathered.answers.items():
        try:
            windows[member] = Window.decode(body)
        except (ValueError, TypeError, KeyError) as exc:
            gathered.missing[member] = f"its answer made no sense ({exc})"
    return windows, gathered.missing


def member_grep(config: Config, params: dict[str, str]) -> tuple[list[Hit], list[str],
                                                                  dict[str, str]]:
    """The other members' hits for `solgate grep` (`params` as the peer route takes
    them), why some stopped early, and the members that did not answer."""
    import json

    from solgate.forensics import Hit

    gathered = ask_members(config, "/api/cluster/peer/grep", params,
                           timeout=float(params.get("budget", "10")) + 5)
    hits: list[Hit] = []
    stopped: list[str] = []
    for member, body in gathered.answers.items():
        try:
            answer: dict[str, Any] = json.loads(body)
            for h in answer.get("hits") or ():
                t = h.get("t")
                hits.append(Hit(str(h["console"]), float(t) if isinstance(t, int | float)
                                else None, str(h.get("line", "")), member))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            gathered.missing[member] = f"its answer made no sense ({exc})"
            continue
        if answer.get("stopped"):
            stopped.append(f"{member}: {answer['stopped']}")
    return hits, stopped, gathered.missing
