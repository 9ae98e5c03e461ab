"""Any member shows the whole fleet: two `solgate serve` members, a real etcd, `solgate sim`.

What an operator relies on: the console list (`/api/consoles`, which the list page polls)
and events on either member name every console with its state and owner, the members'
read of each other needs the shared secret, and a member that dies does not make its
consoles vanish from the list: they show as "owner unreachable" until another member
takes them.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import solgate.ssh  # noqa: F401 - first: it silences asyncssh's DSA deprecation warning
from tests.cluster_helpers import (
    MEMBER_SECRET,
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
pytestmark = pytest.mark.timeout(90)
CONSOLES = 10


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback
        return bytes(r.read())


def _in_order(text: str, parts: list[str]) -> bool:
    at = 0
    for part in parts:
        at = text.find(part, at)
        if at < 0:
            return False
    return True


def _browser_sees_the_fleet(url: str, moved: str) -> None:
    """gw1's console list shows gw2's console with its member; its history page on gw1
    shows the handover."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("SOLGATE_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        return  # the rest of the test still counts; test_web_browser.py skips likewise
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            page.goto(url)
            row = page.locator(f'tr[data-name="{moved}"]')
            sync_api.expect(row).to_contain_text("on gw2")
            sync_api.expect(row.locator("td.state-good")).to_have_count(1)
            sync_api.expect(page.locator("#summary")).to_contain_text(
                f"{CONSOLES} of {CONSOLES} shown")
            page.goto(f"{url}consoles/{moved}/history")
            sync_api.expect(page.locator("pre.log")).to_contain_text(
                "gw1 hands the console over to gw2")
        finally:
            browser.close()


async def _ssh_types_on_the_owner(port: int, key: asyncssh.SSHKey, console: str) -> None:
    async with asyncssh.connect("127.0.0.1", port, username="alice", client_keys=[key],
                                known_hosts=None, agent_path=None, config=[]) as conn:
        menu = await conn.create_process(term_type="xterm", term_size=(80, 24),
                                         encoding=None)
        seen = await _expect(menu, b"(q quits): ")
        assert f"{console}  on gw2".encode() in seen, seen  # the menu lists the fleet
        menu.stdin.write(console.encode() + b"\r")
        await _expect(menu, b"runs on member gw2; connected through gw1")
        menu.stdin.write(b"\recho hello-through-gw1\r")
        await _expect(menu, b"\nhello-through-gw1")  # the host's answer, not the echo
        menu.stdin.write(b"\r~.")
        await _expect(menu, f"left {console}".encode())
        menu.stdin.write(b"q\r")
        await asyncio.wait_for(menu.wait_closed(), 10)


async def _expect(process: asyncssh.SSHClientProcess, needle: bytes,
                  timeout: float = 10.0) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            data = await process.stdout.read(4096)
            if not data:
                raise AssertionError(f"EOF before {needle!r}: {seen[-600:]!r}")
            seen += data
    return seen


def _status(url: str, secret: str | None) -> int:
    req = urllib.request.Request(url, headers={"X-Solgate-Member-Secret": secret}
                                 if secret is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_any_member_lists_every_console_with_state_and_owner(etcd: Etcd,
                                                             tmp_path: Path) -> None:
    prefix = "/fleet-view/"
    with sim_fleet(tmp_path, CONSOLES) as sim:
        names = {n for n, _ in sim.consoles}
        key = asyncssh.generate_private_key("ssh-ed25519")
        users = ('[users.alice]\nrole = "operator"\n'
                 f'ssh_keys = ["{key.export_public_key().decode().strip()}"]\n')
        ssh_port = free_port()
        procs = {"gw1": start_member(tmp_path, "gw1", etcd.url, sim.consoles, prefix=prefix,
                                     extra=f'[ssh]\nlisten = "127.0.0.1:{ssh_port}"\n\n'
                                     + users)}
        try:
            gw1 = member_ready(tmp_path, "gw1", procs["gw1"])
            assert re.search(r"solgate: member gw1 of the cluster, owns \d+ of 10 consoles",
                             gw1.stderr.read_text())
            wait_until(lambda: gw1.active() == names, 30, "gw1 running every console")
            procs["gw2"] = start_member(tmp_path, "gw2", etcd.url, sim.consoles, prefix=prefix,
                                        extra=users)
            gw2 = member_ready(tmp_path, "gw2", procs["gw2"])
            wait_until(lambda: gw2.active() and gw1.active() | gw2.active() == names
                       and not gw1.active() & gw2.active(), 40, "gw2 taking its share")
            owners = etcd.owners(prefix)

            # A console gw1 handed over to gw2: its whole history, from either member.
            moved = sorted(gw2.active())[0]
            notes = ["gw1 owns the console (epoch ", "gw1 hands the console over to gw2",
                     "gw2 owns the console (epoch "]
            for m in (gw1, gw2):
                text = _get(m.url + f"api/cluster/history/{moved}").decode(errors="replace")
                assert _in_order(text, notes), text[-3000:]
                page = _get(m.url + f"consoles/{moved}/history").decode()
                assert _in_order(page, notes)
            found = _get(gw2.url + f"api/cluster/history/{moved}?q=hands+the+console")
            assert found.decode().count("\n") == 1
            tail = subprocess.run(solgate("tail", moved, "-n", "500", "-c",
                                          str(gw2.workdir / "solgate.toml")),
                                  capture_output=True, env=env(), timeout=30, check=True)
            assert _in_order(tail.stdout.decode(errors="replace"), notes), tail.stderr

            # gw1's ssh gateway proxies a console gw2 runs: alice types, the host answers.
            # The menu lists owners as gw1 last read them (a second or two after a handover).
            wait_until(lambda: gw1.api("api/cluster")["owners"].get(moved, {})
                       .get("member") == "gw2", 15, f"gw1 to read that gw2 owns {moved}")
            asyncio.run(_ssh_types_on_the_owner(ssh_port, key, moved))
            assert b"hello-through-gw1" in (gw2.workdir / "data" / "logs"
                                            / f"{moved}.log").read_bytes()

            # Either member: every console, its owner, and the state its owner reports.
            for m in (gw1, gw2):
                fleet = {c["name"]: c for c in m.api("api/consoles")["consoles"]}
                assert set(fleet) == names
                assert {n: c["member"] for n, c in fleet.items()} == owners
                assert {c["state"] for c in fleet.values()} == {"active"}

            _browser_sees_the_fleet(gw1.url, moved)

            # Events from every member, marked with it: the moved console's SOL came up
            # on gw1 first, then on gw2.
            for m in (gw1, gw2):
                events = m.api(f"api/events?console={moved}&kind=sol-up")["events"]
                assert {e["member"] for e in events} == {"gw1", "gw2"}, events

            # The member-to-member read needs the shared secret.
            peer = gw1.url + "api/cluster/peer/consoles"
            assert _status(peer, None) == 403
            assert _status(peer, "x" * 40) == 403
            assert _status(peer, MEMBER_SECRET) == 200

            # gw2 dies: its consoles stay in gw1's list, marked, until gw1 takes them.
            lost = gw2.active()
            stop(gw2.proc, signal.SIGKILL)

            def unreachable_shown() -> bool:
                fleet = {c["name"]: c for c in gw1.api("api/consoles")["consoles"]}
                assert set(fleet) == names, "a console vanished from the list"
                return all(fleet[n]["state"] == "owner-unreachable"
                           and fleet[n]["member"] == "gw2" for n in lost)
            wait_until(unreachable_shown, 5, "gw2's consoles shown as owner unreachable",
                       step=0.05)
            wait_until(lambda: gw1.active() == names, 20, "gw1 running every console")
        finally:
            for p in procs.values():
                stop(p)
