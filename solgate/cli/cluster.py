"""`solgate cluster status`: the cluster as etcd holds it, read straight from etcd.

It needs no running member: it reads the same `[cluster]` table and asks etcd, so it also
works when every member is down (it then says so) or fenced.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import quote

from solgate.cli.config import add_config_argument, config_from_args
from solgate.errors import ConfigError


def register(subparsers: Any) -> None:
    """Add `cluster status|drain|undrain|log` to the `solgate` command."""
    cluster = subparsers.add_parser(
        "cluster", help="look at a cluster of solgate members sharing one fleet through etcd",
        description="Commands for the [cluster] table: members, leases, who owns what.")
    sub = cluster.add_subparsers(dest="cluster_command", metavar="COMMAND")
    status = sub.add_parser(
        "status", help="members, their leases, consoles per member, moves in the last hour",
        description="Reads etcd (the [cluster] etcd endpoints of the configuration) and "
                    "prints every live member, the time left on its lease, how many consoles "
                    "it owns, consoles nobody owns, and the moves of the last hour.")
    add_config_argument(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=_status_command)
    for name, text in (("drain", "move every console off member NAME (before maintenance); "
                        "it keeps running but gets no consoles until `undrain`"),
                       ("undrain", "let member NAME take its share of consoles again")):
        cmd = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        add_config_argument(cmd)
        cmd.add_argument("member", metavar="NAME", help="the member's [cluster] name")
        cmd.set_defaults(handler=_drain_command, drain=name == "drain")
    log = sub.add_parser(
        "log", help="one console's log from every live member, in ownership order",
        description="Fetches what each live member logged for the console (over its "
                    "advertise URL, with the token of `solgate console`) and prints one "
                    "history, ordered by the ownership epochs the members noted.")
    add_config_argument(log)
    log.add_argument("console", metavar="NAME")
    log.add_argument("--lines", type=int, default=10_000, metavar="N",
                     help="at most this many lines from each member (10000)")
    log.add_argument("--token-file", metavar="FILE",
                     help="bearer token file (default: $SOLGATE_TOKEN or "
                          "~/.config/solgate/token)")
    log.set_defaults(handler=_log_command)
    cluster.set_defaults(handler=lambda _args: cluster.print_help() or 2)


async def _drain_command(args: argparse.Namespace) -> int:
    """Write or delete `<prefix>drain/<NAME>`; every member sees it at its next poll."""
    from solgate.cluster.shell import etcd_client

    config = config_from_args(args)
    cluster = config.cluster
    if cluster is None:
        raise ConfigError(f"{config.source} has no [cluster] table")
    key = f"{cluster.prefix}drain/{args.member}"
    async with etcd_client(cluster, timeout=3.0) as client:
        if args.drain:
            await client.put(key, json.dumps({"at": time.time()}).encode())
            print(f"solgate: draining {args.member}: its consoles move to the other members, "
                  "8 at a time (`solgate cluster status` shows the progress)")
        else:
            await client.delete(key)
            print(f"solgate: {args.member} takes its share of consoles again")
    return 0


async def _log_command(args: argparse.Namespace) -> int:
    import aiohttp

    from solgate.cluster.shell import etcd_client
    from solgate.console.epochs import EPOCH_HEADER, Part, merge_logs
    from solgate.terminal import read_token

    config = config_from_args(args)
    cluster = config.cluster
    if cluster is None:
        raise ConfigError(f"{config.source} has no [cluster] table")
    async with etcd_client(cluster, timeout=3.0) as client:
        kvs, _ = await client.range(f"{cluster.prefix}members/", prefix=True)
    urls: dict[str, str] = {}
    for kv in kvs:
        with contextlib.suppress(ValueError):
            urls[kv.key.rsplit("/", 1)[1]] = str(json.loads(kv.value).get("advertise", ""))
    token = read_token(args.token_file, os.environ)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    logs: dict[str, Part] = {}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
        for member, url in sorted(urls.items()):
            if not url:
                print(f"solgate: member {member} publishes no advertise URL; its part is "
                      "missing", file=sys.stderr)
                continue
            where = f"{url.rstrip('/')}/api/cluster/logs/{quote(args.console, safe='')}"
            try:
                async with http.get(where, params={"lines": str(args.lines)},
                                    allow_redirects=False) as resp:
                    if resp.status != 200:
                        print(f"solgate: member {member} answered HTTP {resp.status}; its "
                              "part is missing", file=sys.stderr)
                        continue
                    logs[member] = Part(await resp.read(),
                                        int(resp.headers.get(EPOCH_HEADER) or 0))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                print(f"solgate: member {member} at {url} unreachable ({exc}); its part is "
                      "missing", file=sys.stderr)
    sys.stdout.buffer.write(merge_logs(logs))
    sys.stdout.flush()
    return 0


async def _status_command(args: argparse.Namespace) -> int:
    from solgate.cluster.shell import etcd_client
    from solgate.config.cluster import digest

    config = config_from_args(args)
    cluster = config.cluster
    if cluster is None:
        raise ConfigError(f"{config.source} has no [cluster] table; this solgate runs every "
                          "console itself")
    ours = digest(cluster, config.consoles)
    async with etcd_client(cluster, timeout=3.0) as client:
        kvs, revision = await client.range(cluster.prefix, prefix=True)
        members: dict[str, dict[str, Any]] = {}
        owners: dict[str, str] = {}
        moves: dict[str, dict[str, Any]] = {}
        draining: set[str] = set()
        for kv in kvs:
            kind, _, name = kv.key[len(cluster.prefix):].partition("/")
            try:
                value = json.loads(kv.value)
            except ValueError:
                continue
            if kind == "members":
                members[name] = {**value, "lease": kv.lease}
            elif kind == "owners":
                owners[name] = str(value.get("member", "?"))
            elif kind == "moves":
                moves[name] = value
            elif kind == "drain":
                draining.add(name)
        for info in members.values():
            info["lease_left"] = await client.time_to_live(int(info["lease"]))
    per_member = Counter(owners.values())
    hour_ago = time.time() - 3600
    recent = {c: m for c, m in moves.items()
              if max(float(m.get("at") or 0), float(m.get("released_at") or 0)) > hour_ago}
    unowned = sorted(set(config.consoles) - set(owners))
    member_rows: dict[str, dict[str, Any]] = {
        n: {"advertise": i.get("advertise", ""), "version": i.get("version", ""),
            "lease": f"{int(i['lease']):x}", "lease_left": i["lease_left"],
            "consoles": per_member.get(n, 0), "same_config": i.get("digest") == ours,
            "draining": n in draining}
        for n, i in sorted(members.items())}
    report = {
        "etcd": list(cluster.etcd), "prefix": cluster.prefix, "revision": revision,
        "members": member_rows,
        "consoles": len(config.consoles), "owned": len(owners), "unowned": unowned,
        "moves_last_hour": len(recent), "draining": sorted(draining),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"etcd {', '.join(cluster.etcd)} prefix {cluster.prefix} (revision {revision})")
    if not members:
        print("no live members: every console is dark (is any solgate serve running?)")
    print(f"{'MEMBER':<20} {'CONSOLES':>8} {'LEASE LEFT':>10}  CONFIG  ADVERTISE")
    for name, info in member_rows.items():
        same = "same" if info["same_config"] else "DIFFERS"
        drained = " (draining)" if info["draining"] else ""
        print(f"{name:<20} {info['consoles']:>8} {info['lease_left']:>9}s  {same:<7} "
              f"{info['advertise'] or '-'}{drained}")
    print(f"consoles: {len(config.consoles)} configured, {len(owners)} owned, "
          f"{len(unowned)} unowned{': ' + ', '.join(unowned[:10]) if unowned else ''}"
          f"{' ...' if len(unowned) > 10 else ''}")
    print(f"moves in the last hour: {len(recent)}")
    for console, move in sorted(recent.items())[:20]:
        when = max(float(move.get("at") or 0), float(move.get("released_at") or 0))
        print(f"  {console}: {move.get('from', '?')} -> {move.get('to', '-')} "
              f"({move.get('why', '?')}, {time.strftime('%H:%M:%S', time.gmtime(when))}Z)")
    sys.stdout.flush()
    return 0
