"""Attacks on a running web app that must fail: redirects off-site, malformed control
messages, login races and floods, forged log notes, slow or greedy clients."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType
from yarl import URL
from web_fakes import (
    PASSWORDS,
    StaticConsoles,
    login,
    login_form_token,
    make_app,
    start_client,
)


@pytest.fixture
def manager(tmp_path: Path) -> StaticConsoles:
    m = StaticConsoles(tmp_path)
    m.add("web01")
    return m


@pytest.fixture
async def client(tmp_path: Path, manager: StaticConsoles):
    c = await start_client(make_app(tmp_path, manager))
    yield c
    await c.close()


# -- finding 2: the page after login is on this server ---------------------------------------

OFF_SITE = [
    "/\t/evil.example/phish", "/\r/evil.example/phish", "/\n/evil.example/phish",
    "/\t\t/evil.example", "//evil.example/phish", "/\\evil.example/phish",
    "\\\\evil.example", "https://evil.example/", "https:evil.example", "javascript:alert(1)",
    " //evil.example", "/ /evil.example", "/\x00/evil.example", "/\x7f/evil.example",
]


@pytest.mark.parametrize("target", OFF_SITE)
async def test_login_never_redirects_off_site(client, target: str) -> None:
    page = await client.get("/login", params={"next": target})
    assert 'name="next" value="/"' in await page.text()
    resp = await client.post("/login", data={
        "username": "alice", "password": PASSWORDS["alice"],
        "login_csrf": await login_form_token(client), "next": target,
    }, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/"


async def test_login_keeps_a_local_next_with_its_query(client) -> None:
    resp = await client.get("/consoles/web01/log?q=oops&lines=5", allow_redirects=False)
    assert resp.status == 302
    next_path = "/consoles/web01/log?q=oops&lines=5"
    location = URL(resp.headers["Location"])
    assert (location.path, location.query["next"]) == ("/login", next_path)
    resp = await client.post("/login", data={
        "username": "alice", "password": PASSWORDS["alice"],
        "login_csrf": await login_form_token(client), "next": next_path,
    }, allow_redirects=False)
    assert resp.headers["Location"] == next_path


# -- finding 6: malformed control messages keep the socket open ------------------------------

async def _open(client) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect("/ws/consoles/web01")
    for _ in range(4):  # hello, snapshot marker, screen, write-lock
        await ws.receive(timeout=2)
    return ws


MALFORMED = [
    '{"type":"resize","cols":1e400,"rows":5}',
    '{"type":"resize","cols":-1e400,"rows":5}',
    '{"type":"resize","cols":NaN,"rows":5}',
    '{"type":"resize","cols":Infinity,"rows":5}',
    '{"type":"resize","cols":"80","rows":5}',
    '{"type":"resize","cols":true,"rows":5}',
    '{"type":"resize","cols":80.5,"rows":5}',
    '{"type":"resize","cols":[80],"rows":5}',
    '{"type":"resize","cols":{"a":1},"rows":5}',
    '{"type":"resize","cols":80}',
    '{"type":"resize"}',
    '{"type":"sysrq"}',
    '{"type":"sysrq","key":5}',
    '{"type":"sysrq","key":"ab"}',
    '{"type":5}',
    '{"type":null}',
    '{"type":["resize"]}',
    '{"cols":80}',
    '{"type":"explode"}',
    "[1, 2]",
    '"resize"',
    "1e400",
    "not json",
    "",
    "[" * 2000 + "]" * 2000,
    "[" * 30_000 + "]" * 30_000,
    '{"type":"resize","cols":' + "9" * 5000 + ',"rows":5}',
]


async def test_malformed_control_messages_get_an_error_and_the_socket_lives(
        client, manager, caplog) -> None:
    await login(client, "victor")
    ws = await _open(client)
    with caplog.at_level(logging.DEBUG):
        for text in MALFORMED:
            await ws.send_str(text)
            msg = await ws.receive(timeout=2)
            assert msg.type == WSMsgType.TEXT, (text[:60], msg)
            assert json.loads(msg.data)["type"] == "error", text[:60]
        await ws.send_str('{"type":"ping"}')
        assert json.loads((await ws.receive(timeout=2)).data) == {"type": "pong"}
    assert not ws.closed
    await ws.close()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_huge_or_negative_sizes_are_clamped_not_refused(client, manager) -> None:
    await login(client, "victor")
    ws = await _open(client)
    hub = manager.get("web01").hub
    for cols, rows, want in ((10**30, 10**30, (1000, 500)), (-5, -5, (10, 2)),
                             (132.0, 43, (132, 43))):
        await ws.send_str(json.dumps({"type": "resize", "cols": cols, "rows": rows,
                                      "extra": "ignored"}))
        await ws.send_str('{"type":"ping"}')
        assert json.loads((await ws.receive(timeout=2)).data) == {"type": "pong"}
        (attachment,) = hub.attachments
        assert (attachment.cols, attachment.rows) == want
    await ws.close()
