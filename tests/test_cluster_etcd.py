"""Several `solgate serve` members share a `solgate sim` fleet through a real etcd.

Short leases (3 s) keep these tests quick; what they check is what an operator relies
on: every console runs exactly once, a dead member's consoles come back on the others
within lease_ttl + 10 s, a member cut off from etcd stops its SOL sessions before its
lease expires, and a joining member takes about its share and nothing else moves.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from solgate.console.log import format_time
from tests.cluster_helpers import (
    Etcd,
    MemberProc,
    TcpProxy,
    env,
    etcd_server,  # noqa: F401 - the `etcd` fixture
    free_port,
    member_config,
    member_ready,
    sim_fleet,
    solgate,
    start_member,
    stop,
    wait_until,
)
from tests.engine_helpers import ThreadedFleet, sim_factory

pytestmark = pytest.mark.timeout(120)
CONSOLES = 60
LEASE_TTL = 3.0


def _running(members: list[MemberProc]) -> Counter[str]:
    """How many members run each console (active SOL)."""
    return Counter(c for m in members for c in m.active())


def _settled(members: list[MemberProc], etcd: Etcd, prefix: str, expected: set[str]) -> bool:
    """Every console active exactly once, on the member etcd names as its owner."""
    running = {m.name: m.active() for m in members}
    owners = etcd.owners(prefix)
    counts = Counter(c for names in running.values() for c in names)
    return (set(counts) == expected and max(counts.values()) == 1
            and all(owners.get(c) == m for m, names in running.items() for c in names))


def _balanced(members: list[MemberProc], etcd: Etcd, prefix: str, expected: set[str],
              lo: int, hi: int) -> bool:
    """Settled, and every member owns between `lo` and `hi` consoles (handovers done)."""
    if not _settled(members, etcd, prefix, expected):
        return False
    counts = Counter(etcd.owners(prefix).values())
    return all(lo <= counts[m.name] <= hi for m in members)


class _Refuse(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _no_redirect(url: str) -> tuple[int, str | None]:
    """Status and Location of a GET, without following a redirect."""
    try:
        with urllib.request.build_opener(_Refuse).open(url, timeout=5) as r:
            return r.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location")


def _browser_types_through(via: MemberProc, owner: MemberProc, console: str) -> None:
    """A browser opens `console` on `via`, lands on its owner, sees output and types."""
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
            page.goto(f"{via.url}consoles/{console}")
            assert page.url == f"{owner.url}consoles/{console}"
            sync_api.expect(page.locator("#conn")).to_have_text("live")
            page.locator(".xterm").click()
            page.keyboard.type("echo typed-through-the-cluster")
            page.keyboard.press("Enter")
            # The host's echo of the typed line, then its answer on a line of its own.
            sync_api.expect(page.locator(".xterm-rows")).to_contain_text(
                "echo typed-through-the-cluster")
            path = owner.workdir / "data" / "logs" / f"{console}.log"
            wait_until(lambda: b"\ntyped-through-the-cluster" in path.read_bytes(), 10,
                       "the host's answer in the owner's log")
        finally:
            browser.close()


CTTY_WRAPPER = (  # the child makes the pty its controlling terminal, then becomes solgate
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'solgate.cli', *sys.argv[1:]])\n"
)


def _terminal_types_through(via: MemberProc, owner: MemberProc, console: str) -> None:
    """`solgate console --server <via>` follows the redirect to the owner and types."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", CTTY_WRAPPER, "console", "--server",
                             via.url, console], stdin=slave, stdout=slave, stderr=slave,
                            env=env(), start_new_session=True)
    os.close(slave)
    seen = bytearray()

    def read_until(marker: bytes) -> None:
        def got() -> bool:
            while select.select([master], [], [], 0.05)[0]:
                try:
                    seen.extend(os.read(master, 65536))
                except OSError:
                    break
            return marker in seen
        wait_until(got, 10, f"{marker!r} from solgate console (saw {bytes(seen[-300:])!r})")

    try:
        read_until(f"[solgate: {console} as local, read-write;".encode())
        os.write(master, b"echo via-the-terminal\r")
        path = owner.workdir / "data" / "logs" / f"{console}.log"
        wait_until(lambda: b"\nvia-the-terminal" in path.read_bytes(), 10,
                   "the host's answer in the owner's log")
        os.write(master, b"\r~.")
        assert proc.wait(10) == 0
    finally:
        stop(proc)
        os.close(master)


def _start(tmp: Path, names: list[str], url: str, consoles: list[tuple[str, int]],
           prefix: str) -> list[MemberProc]:
    procs = [(n, start_member(tmp, n, url, consoles, prefix=prefix)) for n in names]
    return [member_ready(tmp, n, p) for n, p in procs]


def test_etcd_unreachable_at_start_is_one_clear_line(tmp_path: Path) -> None:
    config = member_config(tmp_path, "a", f"http://127.0.0.1:{free_port()}",
                           [("web01", 623)], prefix="/x/")
    result = subprocess.run(solgate("serve", "-c", str(config), "--event-loop", "asyncio"),
                            capture_output=True, text=True, timeout=30,
                            env={**env(), "SOLGATE_SIM_PASSWORD": "pw"},
                            check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("solgate: [cluster] cannot join: etcd unreachable at "
                               "http://127.0.0.1:"), lines[0]
    assert "check [cluster] etcd" in lines[0]


def test_three_members_share_the_fleet_and_a_killed_one_is_replaced(
        tmp_path: Path, etcd: Etcd) -> None:
    prefix = "/kill/"
    # The simulator in this process (its own thread and loop), so the test sees every
    # forced deactivate a BMC performs and can make the hosts print.
    with ThreadedFleet(CONSOLES, config_factory=sim_factory()) as sim:
        fleet = sim.fleet
        consoles = [(h.name, h.port) for h in fleet.bmcs]
        expected = {name for name, _ in consoles}
        steals: list[str] = []  # consoles whose SOL a BMC took from one session for another

        def record_steals(handle: Any) -> None:
            core = handle.core
            original = core.steal_sol

            def steal_sol(by_sidc: int, now: float) -> None:
                if core.sol.owner not in (None, by_sidc):
                    steals.append(handle.name)
                original(by_sidc, now)

            core.steal_sol = steal_sol

        sim.call(lambda: [record_steals(h) for h in fleet.bmcs])
        members = _start(tmp_path, ["a", "b", "c"], etcd.url, consoles, prefix)
        try:
            wait_until(lambda: _balanced(members, etcd, prefix, expected, 15, 25), 40,
                       "60 consoles active exactly once, 15-25 on each member")
            per_member = Counter(etcd.owners(prefix).values())
            assert sorted(per_member) == ["a", "b", "c"]
            assert all(15 <= n <= 25 for n in per_member.values()), per_member

            # What an operator looks at: /api/cluster, /metrics, `solgate cluster status`.
            def fresh_view() -> dict | None:  # b's view comes from its last poll (1 s)
                view = members[1].api("api/cluster")
                return view if len(view["owners"]) == CONSOLES else None

            view = wait_until(fresh_view, 5, "b's view of the whole fleet")
            assert isinstance(view, dict)
            assert [m["name"] for m in view["members"]] == ["a", "b", "c"]
            assert view["fenced"] is False
            assert view["consoles"]["here"] == per_member["b"]
            assert {o["url"] for o in view["owners"].values()} == {m.url for m in members}
            with urllib.request.urlopen(members[1].url + "metrics", timeout=5) as r:  # noqa: S310
                metrics = r.read().decode()
            assert "solgate_cluster_members 3.0" in metrics
            assert "solgate_cluster_lease_renew_seconds_count" in metrics
            status = subprocess.run(
                solgate("cluster", "status", "--json", "-c", str(tmp_path / "a" / "solgate.toml")),
                capture_output=True, text=True, timeout=30, env=env(), check=True)
            report = json.loads(status.stdout)
            assert {n: m["consoles"] for n, m in report["members"].items()} == per_member
            assert report["unowned"] == []
            assert steals == []  # placement and handovers never took SOL from a session

            # Any member answers for any console: b redirects to the owner's web server.
            elsewhere = next(x for x, o in etcd.owners(prefix).items() if o == "c")
            for path in (f"consoles/{elsewhere}", f"api/consoles/{elsewhere}?x=1"):
                status_code, location = _no_redirect(members[1].url + path)
                assert (status_code, location) == (307, members[2].url + path)
            assert _no_redirect(members[1].url + "consoles/nonesuch")[0] == 404
            _browser_types_through(members[1], members[2], elsewhere)
            _terminal_types_through(members[1], members[2], elsewhere)

            victim = members[0]
            theirs = victim.active()
            killed, killed_at = time.monotonic(), format_time(time.time(), millis=True)
            stop(victim.proc, signal.SIGKILL)
            survivors = members[1:]
            wait_until(lambda: _settled(survivors, etcd, prefix, expected), LEASE_TTL + 10,
                       f"{victim.name}'s consoles active on the others")
            took = time.monotonic() - killed
            moved = {c: o for c, o in etcd.owners(prefix).items() if c in theirs}
            assert set(moved.values()) <= {"b", "c"}
            # The new owner's log names the previous one.
            owner = moved[min(moved)]
            log = (tmp_path / owner / "data" / "logs" / f"{min(moved)}.log").read_bytes()
            assert b"taken over from a after its lease expired" in log
            print(f"takeover of {len(theirs)} consoles after kill -9: {took:.1f}s")
            # The BMCs saw the dead member's stale sessions displaced (still there: the
            # simulated BMCs expire sessions after 60 s), once each, and nothing else, by
            # the takeover's deactivate-first (not by a failed activation and a steal).
            assert set(steals) == theirs
            assert max(Counter(steals).values()) == 1
            notes = [n for m in survivors
                     for line in (m.workdir / "data" / "events.jsonl").read_text().splitlines()
                     if (n := json.loads(line))["time"] >= killed_at]
            # The survivor says whose session it forced off, in the "SOL up" note.
            deactivated = [n for n in notes if n["kind"] in ("sol-up", "deactivate")
                           and "stale session" in n["message"]]
            assert {n["console"] for n in deactivated} == set(steals), (deactivated, steals)
            assert {n["message"].partition("; ")[2] for n in deactivated} <= {
                "SOL was held by a's stale session; forced deactivate (takeover)"}
            # No survivor lost SOL on any console: nobody deactivated a live member.
            assert not [n for n in notes if n["kind"] == "sol-down"]

            # Host output after the takeover is in the merged logs (all members) once.
            def say(handle: Any) -> None:
                assert handle.host is not None
                handle.host.write(f"echo AFTER {handle.name}\r".encode(),
                                  asyncio.get_running_loop().time())
                fleet.poke(handle)

            sim.call(lambda: [say(h) for h in fleet.bmcs if h.name in theirs])

            def merged(console: str) -> bytes:
                return b"".join((tmp_path / m / "data" / "logs" / f"{console}.log").read_bytes()
                                for m in "abc"
                                if (tmp_path / m / "data" / "logs" / f"{console}.log").exists())

            wait_until(lambda: all(f"\nAFTER {c}".encode() in merged(c) for c in theirs), 10,
                       "the hosts' output in the new owners' logs")
            assert all(merged(c).count(f"\nAFTER {c}".encode()) == 1 for c in theirs)

            # Draining b (maintenance) moves all its consoles to c; undrain gives them back.
            config = str(tmp_path / "b" / "solgate.toml")
            on_b = {c for c, o in etcd.owners(prefix).items() if o == "b"}
            subprocess.run(solgate("cluster", "drain", "b", "-c", config), env=env(),
                           check=True, capture_output=True, timeout=30)
            wait_until(lambda: _settled(survivors[1:], etcd, prefix, expected), 30,
                       "every console on c while b is drained")
            assert not survivors[0].active()
            assert survivors[0].api("api/cluster")["draining"] == ["b"]
            subprocess.run(solgate("cluster", "undrain", "b", "-c", config), env=env(),
                           check=True, capture_output=True, timeout=30)
            wait_until(lambda: _balanced(survivors, etcd, prefix, expected, 20, 40), 40,
                       "b to take its share again")

            # `solgate cluster log` puts b's, c's and b's pieces of one console in order.
            back = sorted(on_b & {c for c, o in etcd.owners(prefix).items() if o == "b"})[0]
            merged = subprocess.run(solgate("cluster", "log", back, "-c", config), env=env(),
                                    check=True, capture_output=True, timeout=30).stdout
            owners = re.findall(rb"cluster: (\w) owns the console \(epoch (\d+)\)", merged)
            assert [m for m, _ in owners][-3:] == [b"b", b"c", b"b"], owners
            epochs = [int(e) for _, e in owners]
            assert epochs == sorted(epochs)
        finally:
            for m in members:
                stop(m.proc)


def test_cut_off_member_fences_before_its_lease_expires_and_a_fourth_takes_its_share(
        tmp_path: Path, etcd: Etcd) -> None:
    prefix = "/fence/"
    proxy = TcpProxy(int(etcd.url.rsplit(":", 1)[1]))
    proxy.restore()
    with sim_fleet(tmp_path, CONSOLES) as sim:
        expected = {name for name, _ in sim.consoles}
        members = _start(tmp_path, ["a", "b"], etcd.url, sim.consoles, prefix)
        members += _start(tmp_path, ["c"], f"http://127.0.0.1:{proxy.port}", sim.consoles,
                          prefix)
        try:
            wait_until(lambda: _balanced(members, etcd, prefix, expected, 15, 25), 40,
                       "60 consoles active exactly once, 15-25 on each member")
            c = members[2]
            held = {k: v for k, v in etcd.prefix(prefix).items()
                    if k.startswith("owners/") and v[0]["member"] == "c"}
            assert held
            proxy.cut()
            # c stops all its SOL sessions while etcd still holds its lease and keys.
            wait_until(lambda: not c.active(), LEASE_TTL, "c to fence itself", step=0.05)
            still = etcd.owners(prefix)
            assert all(still.get(k.split("/", 1)[1]) == "c" for k in held), \
                "c fenced only after its lease had expired"
            # The others take c's consoles once its lease expires, never two at a time.
            wait_until(lambda: _settled(members[:2], etcd, prefix, expected), LEASE_TTL + 10,
                       "c's consoles active on a and b")
            assert max(_running(members).values()) == 1

            # c comes back and gets its share again, one planned handover at a time.
            proxy.restore()
            wait_until(lambda: _settled(members, etcd, prefix, expected)
                       and Counter(etcd.owners(prefix).values())["c"] == len(held), 40,
                       "c to get its share back")

            # A fourth member joins: about a quarter moves, all to it; the rest stay put.
            before = etcd.owners(prefix)
            since = {name: info["state_since"] for m in members
                     for name, info in m.consoles().items()}
            members += _start(tmp_path, ["d"], etcd.url, sim.consoles, prefix)
            wait_until(lambda: _settled(members, etcd, prefix, expected)
                       and members[3].active(), 40, "d to take its share")
            time.sleep(1.5)  # let any further handover show up
            assert _settled(members, etcd, prefix, expected)
            after = etcd.owners(prefix)
            moved = [k for k in after if after[k] != before[k]]
            assert {after[k] for k in moved} == {"d"}
            assert 8 <= len(moved) <= 22, len(moved)
            for m in members[:3]:
                for name, info in m.consoles().items():
                    assert info["state_since"] == since[name], f"{name} restarted on {m.name}"

            # SIGTERM: d flushes and releases at once (lease revoked), no TTL to wait out.
            d = members.pop()
            gone = sorted(d.active())
            stop(d.proc)
            assert d.proc.returncode == 0
            log = (tmp_path / "d" / "data" / "logs" / f"{gone[0]}.log").read_bytes()
            assert b"cluster: d shutting down, releasing the console" in log
            wait_until(lambda: _settled(members, etcd, prefix, expected), LEASE_TTL + 5,
                       "d's consoles back on a, b and c")
            owner = etcd.owners(prefix)[gone[0]]
            log = (tmp_path / owner / "data" / "logs" / f"{gone[0]}.log").read_bytes()
            assert b"taken over from d" in log
        finally:
            proxy.cut()
            for m in members:
                stop(m.proc)
