"""POST /api/fleet at the web layer: CSRF, roles, access lists, confirmation, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from web_fakes import StaticConsoles, login, make_app, start_client


@pytest.fixture
async def setup(tmp_path: Path):
    manager = StaticConsoles(tmp_path)
    for i in range(12):
        manager.add(f"web{i:02d}" if i < 6 else f"db{i:02d}", tags=("rack12",))
    client = await start_client(make_app(tmp_path, manager))
    try:
        yield client, manager
    finally:
        await client.close()


CYCLE = {"selection": {"tags": ["rack12"]}, "action": "power", "args": {"power": "cycle"}}


async def test_a_browser_session_needs_the_csrf_token(setup) -> None:
    client, manager = setup
    csrf = await login(client, "alice")
    resp = await client.post("/api/fleet", json={**CYCLE, "confirm_count": 12})
    assert resp.status == 403
    resp = await client.post("/api/fleet", json={**CYCLE, "confirm_count": 12},
                             headers={"X-CSRF-Token": csrf})
    assert resp.status == 200
    body = await resp.json()
    assert body["summary"] == {"total": 12, "done": 12, "refused": 0, "unseen": 0, "error": 0}
    assert sorted(a[1] for a in manager.actions) == sorted(c.name for c in manager.consoles())


async def test_above_the_threshold_the_count_must_be_confirmed(setup) -> None:
    client, manager = setup
    csrf = await login(client, "alice")
    headers = {"X-CSRF-Token": csrf}
    resp = await client.post("/api/fleet", json=CYCLE, headers=headers)
    assert resp.status == 409
    assert (await resp.json())["confirm_needed"] == 12
    resp = await client.post("/api/fleet", json={**CYCLE, "dry_run": True}, headers=headers)
    assert len((await resp.json())["would_touch"]) == 12
    # Ten or fewer go without a count.
    resp = await client.post("/api/fleet", json={**CYCLE, "selection": {"filter": "db"}},
                             headers=headers)
    assert resp.status == 200
    assert len(manager.actions) == 6
    assert manager.records[-1][0] is None  # the run's summary record


async def test_operator_power_is_refused_and_unseen_consoles_stay_unnamed(setup) -> None:
    client, manager = setup
    csrf = await login(client, "oscar")  # an operator: may type, may not power
    resp = await client.post("/api/fleet", json={**CYCLE, "confirm_count": 12},
                             headers={"X-CSRF-Token": csrf})
    body = await resp.json()
    assert {r["status"] for r in body["results"]} == {"refused"}
    assert "needs the admin role" in body["results"][0]["detail"]
    assert manager.actions == []
    await client.post("/logout", data={"csrf_token": csrf})
    csrf = await login(client, "rita")  # an operator who may see web* only
    resp = await client.post("/api/fleet", json={
        "selection": {"tags": ["rack12"]}, "action": "break"}, headers={"X-CSRF-Token": csrf})
    body = await resp.json()
    assert body["summary"]["done"] == 6
    assert body["summary"]["unseen"] == 6
    assert all(r["console"].startswith("web") for r in body["results"])
    assert sorted(a[1] for a in manager.actions) == [f"web{i:02d}" for i in range(6)]


@pytest.mark.parametrize(("body", "message"), [
    ({"selection": {}, "action": "break"}, "selection is empty"),
    ({"selection": {"filter": "nosuch"}, "action": "break"}, "matches no console"),
    ({"selection": {"tags": ["rack12"]}, "action": "explode"}, "unknown fleet action"),
    ({"selection": {"bogus": 1}, "action": "break"}, "unknown selection key"),
])
async def test_bad_requests_say_what_to_fix(setup, body: dict, message: str) -> None:
    client, manager = setup
    csrf = await login(client, "alice")
    resp = await client.post("/api/fleet", json=body, headers={"X-CSRF-Token": csrf})
    assert resp.status == 400
    assert message in (await resp.json())["error"]
    assert manager.actions == []
