"""Pages, static files, log and events API, health and metrics of the web app."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from web_fakes import TOKENS, StaticConsoles, login, make_app, start_client

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def manager(tmp_path: Path) -> StaticConsoles:
    m = StaticConsoles(tmp_path)
    m.add("web01", tags=("rack1",), last_output=1.0)
    m.add("db01", state="auth-failed",
          state_detail="BMC 10.0.0.9:623 rejected the password for user 'admin'",
          panic_count=2)
    return m


@pytest.fixture
async def client(tmp_path: Path, manager: StaticConsoles):
    c = await start_client(make_app(tmp_path, manager))
    yield c
    await c.close()


ALICE = {"Authorization": f"Bearer {TOKENS['alice']}"}


async def test_vendored_xterm_is_served_from_our_own_host(client) -> None:
    for path, kind in (("/static/vendor/xterm/xterm.js", "javascript"),
                       ("/static/vendor/xterm/xterm.css", "text/css"),
                       ("/static/vendor/addon-fit/addon-fit.js", "javascript"),
                       ("/static/vendor/addon-search/addon-search.js", "javascript"),
                       ("/static/vendor/addon-web-links/addon-web-links.js", "javascript"),
                       ("/static/console.js", "javascript")):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert kind in resp.headers["Content-Type"], path
    versions = (REPO / "static" / "vendor" / "VERSIONS").read_text()
    assert "@xterm/xterm" in versions
    for pkg in ("xterm", "addon-fit", "addon-search", "addon-web-links"):
        assert (REPO / "static" / "vendor" / pkg / "LICENSE").exists()


async def test_console_page_loads_nothing_from_other_hosts(client) -> None:
    await login(client, "alice")
    resp = await client.get("/consoles/web01")
    assert resp.status == 200
    html = await resp.text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/vendor/xterm/xterm.js" in refs
    assert all(ref.startswith("/") and not ref.startswith("//") for ref in refs), refs
    assert 'data-can-power="true"' in html
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_console_page_hides_actions_a_viewer_cannot_use(client) -> None:
    await login(client, "victor")
    html = await (await client.get("/consoles/web01")).text()
    assert 'id="break"' not in html
    assert 'id="power"' not in html
    assert 'data-can-write="false"' in html


async def test_list_page_and_api_say_state_in_words(client) -> None:
    await login(client, "oscar")
    assert (await client.get("/")).status == 200
    body = await (await client.get("/api/consoles")).json()
    db = {c["name"]: c for c in body["consoles"]}["db01"]
    assert db["state_words"] == "BMC rejected the login"
    assert db["healthy"] is False
    assert db["panic_count"] == 2
    assert db["last_output_age"] is None
    assert db["can_write"] is True
    assert db["can_power"] is False
    web = {c["name"]: c for c in body["consoles"]}["web01"]
    assert web["last_output_age"] > 0


async def test_log_tail_and_download(client, manager, tmp_path) -> None:
    log = manager.get("web01").log_path
    log.parent.mkdir(parents=True)
    log.write_bytes(b"one\r\ntwo\r\n\x1b[1mthree\x1b[0m\r\n")
    resp = await client.get("/api/consoles/web01/log?tail=2", headers=ALICE)
    assert resp.status == 200
    assert await resp.read() == b"two\r\n\x1b[1mthree\x1b[0m\r\n"
    resp = await client.get("/api/consoles/web01/log", headers=ALICE)
    assert resp.headers["Content-Disposition"] == 'attachment; filename="web01.log"'
    assert await resp.read() == log.read_bytes()
    assert (await client.get("/api/consoles/web01/log?tail=x", headers=ALICE)).status == 400
    assert (await client.get("/api/consoles/db01/log", headers=ALICE)).status == 404
    await login(client, "alice")
    page = await (await client.get("/consoles/web01/log")).text()
    assert "three" in page
    assert "\x1b" not in page


async def test_log_tail_reaches_into_the_rotated_file(client, manager) -> None:
    """Just after a rotation the current file is nearly empty; the tail still has lines."""
    log = manager.get("web01").log_path
    log.parent.mkdir(parents=True)
    log.with_name(log.name + ".1").write_bytes(b"older\nold\n")
    log.write_bytes(b"new\n")
    resp = await client.get("/api/consoles/web01/log?tail=2", headers=ALICE)
    assert await resp.read() == b"old\nnew\n"


async def test_events_are_newest_first_and_filtered_by_acl(client, tmp_path) -> None:
    records = [
        {"time": "2026-01-01T00:00:00+00:00", "console": "web01", "kind": "sol-up"},
        {"time": "2026-01-01T00:01:00+00:00", "console": "db01", "kind": "panic",
         "line": "Kernel panic - not syncing"},
        "torn line {",
        {"time": "2026-01-01T00:02:00+00:00", "console": "web01", "kind": "panic"},
        {"time": "2026-01-01T00:03:00+00:00", "console": None, "kind": "daemon-start"},
    ]
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")

    body = await (await client.get("/api/events", headers=ALICE)).json()
    assert [(e["console"], e["kind"]) for e in body["events"]] == [
        (None, "daemon-start"), ("web01", "panic"), ("db01", "panic"), ("web01", "sol-up")]
    body = await (await client.get("/api/events?kind=panic&limit=1", headers=ALICE)).json()
    assert [(e["console"], e["kind"]) for e in body["events"]] == [("web01", "panic")]
    body = await (await client.get("/api/events?console=db01", headers=ALICE)).json()
    assert [e["console"] for e in body["events"]] == ["db01"]

    await login(client, "rita")  # consoles = ["web*"], not an admin
    body = await (await client.get("/api/events")).json()
    assert [(e["console"], e["kind"]) for e in body["events"]] == [
        ("web01", "panic"), ("web01", "sol-up")]
    assert (await client.get("/events")).status == 200


async def test_healthz_needs_no_login_and_names_no_console(client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body == {"status": "ok", "consoles": 2, "states": {"active": 1, "auth-failed": 1}}


async def test_metrics_in_prometheus_text_format(client) -> None:
    assert (await client.get("/metrics")).status == 401
    resp = await client.get("/metrics", headers=ALICE)
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert 'solgate_consoles{state="auth-failed"} 1.0' in text
    assert "solgate_panics_total 2.0" in text
    assert 'solgate_console_panics_total{console="db01"} 2.0' in text
    assert "# TYPE solgate_viewers gauge" in text
