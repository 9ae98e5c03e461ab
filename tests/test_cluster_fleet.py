"""Any member shows the whole fleet: two `solgate serve` members, a real etcd, `solgate sim`.

What an operator relies on: the console list (`/api/consoles`, which the list page polls)
and events on either member name every console with its state and owner, the members'
read of each other needs the shared secret, and a member that dies does not make its
consoles vanish from the list: they show as "owner unreachable" until another member
takes them.
"""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.cluster_helpers import (
    MEMBER_SECRET,
    Etcd,
    etcd_server,  # noqa: F401 - the `etcd` fixture
    member_ready,
    sim_fleet,
    start_member,
    stop,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)
CONSOLES = 10


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
        procs = {n: start_member(tmp_path, n, etcd.url, sim.consoles, prefix=prefix)
                 for n in ("gw1", "gw2")}
        try:
            gw1, gw2 = (member_ready(tmp_path, n, p) for n, p in procs.items())
            wait_until(lambda: gw1.active() | gw2.active() == names
                       and not gw1.active() & gw2.active(), 40, "every console running once")
            assert gw2.active(), "placement gave gw2 nothing; the test needs both members"
            owners = etcd.owners(prefix)

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
