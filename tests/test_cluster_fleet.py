"""Any member shows the whole fleet: two `solgate serve` members, a real etcd, `solgate sim`.

What an operator relies on: the console list (`/api/consoles`, which the list page polls)
and events on either member name every console with its state and owner, the members'
read of each other needs the shared secret, and a member that dies does not make its
consoles vanish from the list: they show as "owner unreachable" until another member
takes them.
"""

from __future__ import annotations

import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.cluster_helpers import (
    MEMBER_SECRET,
    Etcd,
    env,
    etcd_server,  # noqa: F401 - the `etcd` fixture
    member_ready,
    sim_fleet,
    solgate,
    start_member,
    stop,
    wait_until,
)

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
        procs = {"gw1": start_member(tmp_path, "gw1", etcd.url, sim.consoles, prefix=prefix)}
        try:
            gw1 = member_ready(tmp_path, "gw1", procs["gw1"])
            wait_until(lambda: gw1.active() == names, 30, "gw1 running every console")
            procs["gw2"] = start_member(tmp_path, "gw2", etcd.url, sim.consoles, prefix=prefix)
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

            # Either member: every console, its owner, and the state its owner reports.
            for m in (gw1, gw2):
                fleet = {c["name"]: c for c in m.api("api/consoles")["consoles"]}
                assert set(fleet) == names
                assert {n: c["member"] for n, c in fleet.items()} == owners
                assert {c["state"] for c in fleet.values()} == {"active"}

            # Events from the other member, marked with it.
            events = gw1.api("api/events?limit=1000")["events"]
            assert any(e.get("member") == "gw2" and e.get("console") in gw2.active()
                       and e.get("kind") == "sol-up" for e in events)

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
