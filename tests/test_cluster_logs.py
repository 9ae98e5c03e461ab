"""One console's log across members, as an operator reads it: two `solgate serve` members,
a real etcd, `solgate sim`, a real ssh client.

`solgate tail -f` started on gw1 keeps following a console while it moves to gw2 (the
handover notes, then gw2's output) and back after gw2 dies; an ssh session through gw1's
gateway is logged on gw2 with the client's address and the gateway member; the search
on gw1 finds lines in gw2's log, labelled with the member, and names gw2 when it does
not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import solgate.ssh  # noqa: F401 - first: it silences asyncssh's DSA deprecation warning
from solgate.cluster.core import score
from tests.cluster_helpers import (
    Etcd,
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

asyncssh = pytest.importorskip("asyncssh")
pytestmark = pytest.mark.timeout(120)
CONSOLES = 4


def _in_order(text: str, parts: list[str]) -> bool:
    at = 0
    for part in parts:
        at = text.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


def _get(url: str) -> tuple[bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:  # noqa: S310 - loopback
            return bytes(r.read()), dict(r.headers)
    except urllib.error.HTTPError as exc:
        exc.close()  # its socket, for a test that expects the error
        raise


def _search(url: str, query: str) -> dict:
    with urllib.request.urlopen(url + "api/search?" + urllib.parse.urlencode(
            {"q": query, "since": "1h"}), timeout=20) as r:  # noqa: S310 - loopback
        return dict(json.loads(r.read()))


async def _ssh_type(port: int, key: asyncssh.SSHKey, console: str, command: str,
                    answer: str) -> None:
    """alice picks `console` from gw1's ssh menu (gw2 runs it), types, leaves."""
    async with asyncssh.connect("127.0.0.1", port, username="alice", client_keys=[key],
                                known_hosts=None, agent_path=None, config=[]) as conn:
        menu = await conn.create_process(term_type="xterm", term_size=(80, 24),
                                         encoding=None)
        await _expect(menu, b"(q quits): ")
        menu.stdin.write(console.encode() + b"\r")
        await _expect(menu, b"runs on member gw2; connected through gw1")
        menu.stdin.write(f"\r{command}\r".encode())
        await _expect(menu, answer.encode())
        menu.stdin.write(b"\r~.")
        await _expect(menu, f"left {console}".encode())
        menu.stdin.write(b"q\r")
        await asyncio.wait_for(menu.wait_closed(), 10)


async def _expect(process: asyncssh.SSHClientProcess, needle: bytes) -> bytes:
    seen = b""
    try:
        async with asyncio.timeout(10):
            while needle not in seen:
                data = await process.stdout.read(4096)
                if not data:
                    raise AssertionError(f"EOF before {needle!r}: {seen[-600:]!r}")
                seen += data
    except TimeoutError:
        raise AssertionError(f"no {needle!r} in 10 s: {seen[-600:]!r}") from None
    return seen


def test_tail_follows_a_console_across_moves_and_search_spans_members(
        etcd: Etcd, tmp_path: Path) -> None:
    prefix = "/cluster-logs/"
    with sim_fleet(tmp_path, CONSOLES) as sim:
        names = {n for n, _ in sim.consoles}
        moving = sorted(n for n in names if score("gw2", n) > score("gw1", n))
        assert moving, "no console that gw2 wins; change CONSOLES"
        console = moving[0]
        key = asyncssh.generate_private_key("ssh-ed25519")
        users = ('[users.alice]\nrole = "operator"\n'
                 f'ssh_keys = ["{key.export_public_key().decode().strip()}"]\n')
        ssh_port = free_port()
        procs = {"gw1": start_member(tmp_path, "gw1", etcd.url, sim.consoles, prefix=prefix,
                                     extra=f'[ssh]\nlisten = "127.0.0.1:{ssh_port}"\n\n'
                                     + users)}
        tail = None
        out, err = tmp_path / "tail.out", tmp_path / "tail.err"
        try:
            gw1 = member_ready(tmp_path, "gw1", procs["gw1"])
            wait_until(lambda: gw1.active() == names, 30, "gw1 running every console")

            # An operator on gw1 follows the console, which gw1 runs for now.
            with out.open("wb") as stdout, err.open("wb") as stderr:
                tail = subprocess.Popen(solgate("tail", "-f", console, "-n", "20", "-c",
                                                str(gw1.workdir / "solgate.toml")),
                                        stdout=stdout, stderr=stderr, env=env())
            wait_until(lambda: b"gw1 owns the console (epoch " in out.read_bytes(), 15,
                       "the history's head from the follower")

            # gw2 joins and takes the console: the follow goes on on gw2.
            procs["gw2"] = start_member(tmp_path, "gw2", etcd.url, sim.consoles,
                                        prefix=prefix, extra=users)
            gw2 = member_ready(tmp_path, "gw2", procs["gw2"])
            wait_until(lambda: console in gw2.active() and console not in gw1.active(), 40,
                       f"gw2 running {console}")
            wait_until(lambda: gw1.api("api/cluster")["owners"].get(console, {}).get(
                "member") == "gw2", 10, f"gw1 seeing gw2 own {console}")
            asyncio.run(_ssh_type(ssh_port, key, console, "echo typed-after-the-move",
                                  "\ntyped-after-the-move"))
            wait_until(lambda: b"\ntyped-after-the-move" in out.read_bytes(), 10,
                       "gw2's output in the follow on gw1")
            followed = out.read_text(errors="replace")
            assert _in_order(followed, [
                "gw1 owns the console (epoch ", "gw1 hands the console over to gw2",
                "gw2 owns the console (epoch ", "taken over from gw1",
                "alice attached over ssh", "\ntyped-after-the-move"]), followed[-3000:]
            assert followed.count("gw2 owns the console (epoch ") == 1, followed[-3000:]

            # gw2 logged who came through gw1's gateway, from where: not gw1's address.
            gw2_log = (gw2.workdir / "data" / "logs" / f"{console}.log").read_text(
                errors="replace")
            assert re.search(r"alice attached over ssh from 127\.0\.0\.1:\d+ through member "
                             r"gw1 \(read-write\)", gw2_log), gw2_log[-2000:]

            # The search on gw1 finds gw2's lines (labelled gw2) and gw1's own older
            # lines of the console it no longer runs (labelled gw1).
            found = _search(gw1.url, "typed-after-the-move")
            assert {(h["console"], h["member"]) for h in found["hits"]} == {(console, "gw2")}
            assert found["missing"] == []
            found = _search(gw1.url, "hands the console over to gw2")
            assert (console, "gw1") in {(h["console"], h["member"]) for h in found["hits"]}
            page = _get(gw1.url + "search?q=typed-after-the-move")[0].decode()
            assert '<td class="member">gw2</td>' in page

            # The streams and searches members give each other need the member secret.
            for path in (f"api/cluster/peer/follow/{console}", "api/cluster/peer/search?q=x"):
                with pytest.raises(urllib.error.HTTPError) as refused:
                    _get(gw2.url + path)
                assert refused.value.code == 403

            # The history on gw1, paged back three lines at a time to the start: every
            # member's part once, in order, nothing lost or repeated between pages.
            whole = _get(gw1.url + f"api/cluster/history/{console}?lines=100000")[0]
            # What the follow printed is the history's end, byte for byte: nothing lost
            # or repeated across the move.
            wait_until(lambda: whole.endswith(out.read_bytes()), 5,
                       "the follow to be the end of the history")
            pages, before = [], None
            for _ in range(100):
                query = {"lines": "3", **({"before": before} if before else {})}
                page, headers = _get(gw1.url + f"api/cluster/history/{console}?"
                                     + urllib.parse.urlencode(query))
                pages.append(page)
                before = headers["X-Solgate-Older"]
                if not before:
                    break
            assert len(pages) > 3
            assert b"".join(reversed(pages)) == whole
            # "Download all of it": every member's whole log, merged as it streams.
            download, headers = _get(gw1.url + f"api/cluster/history/{console}?whole=1")
            assert download == whole
            assert headers["X-Solgate-Members"] == "gw1,gw2"
            html = _get(gw1.url + f"consoles/{console}/history?lines=3")[0].decode()
            older = re.search(r'href="([^"]+)" rel="prev" id="older"', html)
            assert older, html
            html = _get(gw1.url + older.group(1).replace("&amp;", "&").lstrip("/"))[0].decode()
            assert 'id="newest"' in html

            # The host panics while gw2 runs it: gw1's events show the panic, recorded
            # by gw2, and its panic bundle opens on gw1.
            asyncio.run(_ssh_type(ssh_port, key, console, "panic", "Kernel panic"))

            def panic_on_gw2() -> dict | None:
                events = json.loads(_get(gw1.url + f"api/events?console={console}"
                                                   "&kind=panic")[0])["events"]
                return next((e for e in events if e.get("bundle")), None)
            event = wait_until(panic_on_gw2, 20, "the panic, with its bundle, on gw1")
            assert isinstance(event, dict)
            assert event["member"] == "gw2"

            def bundle_on_gw1() -> dict | None:  # written a few seconds after the panic
                with contextlib.suppress(urllib.error.HTTPError):
                    return dict(json.loads(_get(gw1.url + f"api/bundles/{event['bundle']}")[0]))
                return None
            bundle = wait_until(bundle_on_gw1, 20, "the panic bundle through gw1")
            assert isinstance(bundle, dict)
            assert bundle["console"] == console
            assert any("Kernel panic" in line for line in bundle["log"])

            # gw2 dies. Until its lease expires the search names it; then gw1 takes the
            # console back and the follow goes on with gw1's takeover note.
            stop(gw2.proc, signal.SIGKILL)
            found = _search(gw1.url, "typed-after-the-move")
            assert found["missing"] == ["gw2"], found
            page = _get(gw1.url + "search?q=typed-after-the-move")[0].decode()
            assert "member gw2 did not answer" in page
            download, headers = _get(gw1.url + f"api/cluster/history/{console}?whole=1")
            assert headers["X-Solgate-Missing"] == "gw2"
            assert download.endswith(f"[-- solgate: member gw2 did not answer: its part of "
                                     f"{console}'s history is missing from this download "
                                     "--]\r\n".encode())
            wait_until(lambda: re.search(rb"gw1 owns the console \(epoch \d+\), taken over "
                                         rb"from gw2", out.read_bytes()), 20,
                       "gw1's takeover note in the follow")
            assert b"lost the stream from gw2 before it gave up" in err.read_bytes()
            assert tail.poll() is None, err.read_text()

            # gw1 stops (SIGTERM) while the follow streams from it: it does not wait for
            # the follower, and the follower says its stream ended early.
            stop(gw1.proc, timeout=15)
            assert gw1.proc.returncode == 0, gw1.stderr.read_text()[-2000:]
            wait_until(lambda: b"lost the stream from gw1" in err.read_bytes(), 10,
                       "the follower noticing gw1 stopped")
            assert tail.poll() is None, err.read_text()
        finally:
            if tail is not None:
                stop(tail, signal.SIGINT)
            for p in procs.values():
                stop(p)
