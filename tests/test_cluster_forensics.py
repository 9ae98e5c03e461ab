"""The morning-after questions in a cluster: two `solgate serve` members, a real etcd,
`solgate sim`.

A console boots while gw1 runs it, then moves to gw2. The screen at a moment before the
move, asked through any member (web) or on gw2 (`solgate screen`), shows what gw1
logged; a recording across the move has both members' notes; `solgate grep` on gw1
finds gw2's lines, each with its member; the history page steps back and forward. A
member that does not answer is named, and what the others have is still printed.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from solgate.cluster.core import score
from solgate.console.log import format_time
from tests.cluster_helpers import (
    Etcd,
    MemberProc,
    env,
    etcd_server,  # noqa: F401 - the `etcd` fixture
    free_port,
    member_ready,
    sim_fleet,
    solgate,
    start_member,
    stop,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)
CONSOLES = 4


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - loopback
        return bytes(r.read())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(solgate(*args), capture_output=True, text=True, env=env(),
                          timeout=60, check=False)


def _log(member: MemberProc, console: str) -> bytes:
    path = member.workdir / "data" / "logs" / f"{console}.log"
    return path.read_bytes() if path.exists() else b""


def _pre(html: str) -> str:
    found = re.search(r'<pre class="log">(.*?)</pre>', html, re.S)
    assert found, html[-2000:]
    return found.group(1)


def test_screen_export_grep_and_history_span_members(etcd: Etcd, tmp_path: Path) -> None:
    prefix = "/cluster-forensics/"
    with sim_fleet(tmp_path, CONSOLES) as sim:
        names = {n for n, _ in sim.consoles}
        moving = sorted(n for n in names if score("gw2", n) > score("gw1", n))
        assert moving, "no console that gw2 wins; change CONSOLES"
        console = moving[0]
        procs = {"gw1": start_member(tmp_path, "gw1", etcd.url, sim.consoles, prefix=prefix)}
        try:
            gw1 = member_ready(tmp_path, "gw1", procs["gw1"])
            wait_until(lambda: gw1.active() == names, 30, "gw1 running every console")
            gw1_config = str(gw1.workdir / "solgate.toml")

            # The host reboots while gw1 runs it: its boot ends with this line.
            banner = f"{console} ttyS0"
            request = urllib.request.Request(
                gw1.url + f"api/consoles/{console}/power", method="POST",
                data=json.dumps({"action": "reset"}).encode(),
                headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 - loopback
            wait_until(lambda: banner.encode() in _log(gw1, console), 20,
                       "the boot banner in gw1's log")
            time.sleep(0.3)
            before_move = time.time()
            time.sleep(0.3)

            # gw2 joins and takes the console.
            procs["gw2"] = start_member(tmp_path, "gw2", etcd.url, sim.consoles,
                                        prefix=prefix)
            gw2 = member_ready(tmp_path, "gw2", procs["gw2"])
            wait_until(lambda: console in gw2.active() and console not in gw1.active(), 40,
                       f"gw2 running {console}")
            wait_until(lambda: gw1.api("api/cluster")["owners"].get(console, {}).get(
                "member") == "gw2", 10, f"gw1 seeing gw2 own {console}")
            gw2_config = str(gw2.workdir / "solgate.toml")
            assert banner.encode() not in _log(gw2, console)  # only gw1 logged the boot

            # The screen before the move, asked through gw1: the page is gw2's (the owner),
            # and shows what gw1 logged.
            at = format_time(before_move, millis=True)
            page = _get(gw1.url + f"consoles/{console}/screen?"
                        + urllib.parse.urlencode({"at": at})).decode()
            assert banner in page, page[-3000:]
            assert "missing-member" not in page
            # On gw2's disk: `solgate screen` shows the same picture, `--local` not.
            shown = _cli("screen", console, "--at", at, "-c", gw2_config)
            assert shown.returncode == 0, shown.stderr
            assert banner in shown.stdout, shown.stdout
            local = _cli("screen", console, "--at", at, "-c", gw2_config, "--local")
            assert banner not in local.stdout, local.stdout

            # A recording across the move: gw1's boot, both members' notes as markers.
            since = format_time(before_move - 30, millis=True)
            cast = _cli("export", console, "--from", since, "-o", "-", "-c", gw2_config)
            assert cast.returncode == 0, cast.stderr
            events = [json.loads(line) for line in cast.stdout.splitlines()[1:]]
            markers = [e[2] for e in events if e[1] == "m"]
            assert any("gw1 hands the console over to gw2" in m for m in markers), markers
            assert any(re.search(r"gw2 owns the console \(epoch \d+\)", m) for m in markers)
            assert banner in "".join(e[2] for e in events if e[1] == "o")
            web_cast = _get(gw1.url + f"api/consoles/{console}/cast?"
                            + urllib.parse.urlencode({"from": since, "to": "now"})).decode()
            assert "gw1 hands the console over to gw2" in web_cast

            # `solgate grep` on gw1: gw2's lines too, each labelled with its member.
            found = _cli("grep", "owns the console", "--console", console, "-c", gw1_config)
            assert found.returncode == 0, found.stderr
            assert f"{console} (gw1): " in found.stdout, found.stdout
            assert f"{console} (gw2): " in found.stdout, found.stdout
            hits = [json.loads(line) for line in _cli(
                "grep", "taken over from gw1", "--json", "-c", gw1_config).stdout.splitlines()]
            assert {(h["console"], h["member"]) for h in hits} >= {(console, "gw2")}

            # The history page: two pages back, then "Newer" twice, back to the newest.
            base = gw1.url + f"consoles/{console}/history?lines=3"
            pages = [_get(base).decode()]
            for _ in range(2):
                older = re.search(r'href="([^"]+)" rel="prev" id="older"', pages[-1])
                assert older, pages[-1][-2000:]
                pages.append(_get(gw1.url + older.group(1).replace("&amp;", "&")
                                  .lstrip("/")).decode())
            assert len({_pre(p) for p in pages}) == 3
            for want in (pages[1], pages[0]):
                newer = re.search(r'href="([^"]+)" rel="next" id="newer"', pages[-1])
                assert newer, pages[-1][-2000:]
                pages.append(_get(gw1.url + newer.group(1).replace("&amp;", "&")
                                  .lstrip("/")).decode())
                assert _pre(pages[-1]) == _pre(want)
            assert 'id="newer"' not in pages[-1]

            # A member that etcd lists does not answer (one that does not win the
            # console from gw2, so gw2 keeps it): the screen page names it and still
            # shows what gw1 logged; the recording names it in a header.
            silent = next(f"gw{n}" for n in range(9, 99)
                          if score(f"gw{n}", console) < score("gw2", console))
            dead = f"http://127.0.0.1:{free_port()}"
            etcd.call("kv/put", {
                "key": base64.b64encode(f"{prefix}members/{silent}".encode()).decode(),
                "value": base64.b64encode(json.dumps({"advertise": dead}).encode()).decode()})
            wait_until(lambda: silent in {m["name"] for m in gw2.api("api/cluster")["members"]},
                       10, f"gw2 seeing {silent}")
            page = _get(gw1.url + f"consoles/{console}/screen?"
                        + urllib.parse.urlencode({"at": at})).decode()
            assert f"Not in this picture: member {silent}: it did not answer" in page
            assert banner in page
            with urllib.request.urlopen(gw1.url + f"api/consoles/{console}/cast?"  # noqa: S310
                                        + urllib.parse.urlencode({"from": since}),
                                        timeout=30) as r:
                assert silent in r.headers["X-Solgate-Missing"]

            # Both members stop. What gw1's disk holds is still printed, the silent
            # member named, exit status 2.
            for p in procs.values():
                stop(p)
            found = _cli("grep", "owns the console", "--console", console, "-c", gw1_config)
            assert found.returncode == 2, found.stderr
            assert f"{console} (gw1): " in found.stdout
            assert f"member {silent}: it did not answer at {dead}" in found.stderr
            assert "the search is incomplete" in found.stderr
            shown = _cli("screen", console, "--at", at, "-c", gw1_config)
            assert shown.returncode == 2, shown.stderr
            assert banner in shown.stdout
            assert f"member {silent}" in shown.stderr
            assert "incomplete" in shown.stderr
        finally:
            for p in procs.values():
                stop(p)
