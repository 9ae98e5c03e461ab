"""Attacks on a running web app that must fail: redirects off-site, malformed control
messages, login races and floods, forged log notes, slow or greedy clients."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import ipaddress
import json
import logging
import re
import threading
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType
from web_fakes import (
    _LOGIN_CSRF,
    PASSWORDS,
    FakeClock,
    StaticConsoles,
    csrf_token,
    login,
    login_form_token,
    make_app,
    make_config,
    start_client,
)
from yarl import URL

from solgate.config import parse_config
from solgate.config.users import parse_users
from solgate.daemon import run_server
from solgate.errors import ConfigError
from solgate.users import hash_password
from solgate.web import logview
from solgate.web.app import create_app
from solgate.web.auth import LOGIN_FAILURES_PER_ADDRESS
from solgate.web.limits import (
    LOG_READS_PER_USER,
    AcceptErrorFilter,
    ConnectionGuard,
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


# -- finding 5: parallel guesses cannot overrun the login throttle ---------------------------

async def test_parallel_wrong_guesses_do_not_get_past_the_limit(tmp_path, manager) -> None:
    users = {"carol": {"password_hash": hash_password("carol-pw"), "role": "viewer"}}
    config = make_config(tmp_path, users=users)  # a real-cost hash: ~25 ms a guess
    client = await start_client(create_app(config, manager))
    try:
        token = await login_form_token(client)

        async def guess(i: int) -> int:
            resp = await client.post("/login", data={
                "username": "carol", "password": f"guess-{i}", "login_csrf": token},
                allow_redirects=False)
            return resp.status

        statuses = await asyncio.gather(*(guess(i) for i in range(20)))
        assert statuses.count(401) == LOGIN_FAILURES_PER_ADDRESS, statuses
        assert statuses.count(429) == 20 - LOGIN_FAILURES_PER_ADDRESS
    finally:
        await client.close()


async def test_a_login_succeeds_while_log_reads_fill_every_thread(tmp_path, manager) -> None:
    client = await start_client(make_app(tmp_path, manager))
    release = threading.Event()
    loop = asyncio.get_running_loop()
    try:
        # What twelve slow log searches did: every thread of the default pool is busy.
        blockers = [loop.run_in_executor(None, release.wait, 10) for _ in range(40)]
        await asyncio.wait_for(login(client, "alice"), 10)
    finally:
        release.set()
        await asyncio.gather(*blockers)
        await client.close()


async def test_one_user_runs_a_bounded_number_of_log_reads(client, manager, monkeypatch) -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def slow_page(*args, **kwargs):
        started.release()
        release.wait(10)
        return [], logview.LogPage()

    monkeypatch.setattr(logview, "read_page_with_panics", slow_page)
    await login(client, "victor")
    url = "/api/consoles/web01/log?format=json&q=x"
    first = [asyncio.ensure_future(client.get(url)) for _ in range(LOG_READS_PER_USER)]
    for _ in range(LOG_READS_PER_USER):
        await asyncio.to_thread(started.acquire, True, 5)
    extra = await client.get(url)
    assert extra.status == 429
    assert "Retry-After" in extra.headers
    assert "log reads" in (await extra.json())["error"]
    release.set()
    assert [r.status for r in await asyncio.gather(*first)] == [200] * LOG_READS_PER_USER


# -- behind a TLS-terminating proxy ---------------------------------------------------------

def proxied_app(tmp_path: Path, manager: StaticConsoles, proxies: list[str], **server):
    config = make_config(tmp_path)
    config = dataclasses.replace(config, server=dataclasses.replace(
        config.server, trusted_proxies=tuple(ipaddress.ip_network(p) for p in proxies),
        **server))
    return create_app(config, manager)


async def _fail_logins(client, n: int, headers: dict[str, str]) -> list[int]:
    out = []
    for _ in range(n):
        resp = await client.post("/login", data={
            "username": "victor", "password": "bad",
            "login_csrf": await login_form_token(client)}, headers=headers)
        out.append(resp.status)
    return out


async def test_logins_are_throttled_per_client_behind_a_trusted_proxy(tmp_path, manager) -> None:
    client = await start_client(proxied_app(tmp_path, manager, ["127.0.0.1"]))
    try:
        one = {"X-Forwarded-For": "203.0.113.9, 10.9.9.9"}
        assert await _fail_logins(client, 11, one) == [401] * 10 + [429]
        # Another client behind the same proxy is not locked out with it.
        resp = await client.post("/login", data={
            "username": "alice", "password": PASSWORDS["alice"],
            "login_csrf": await login_form_token(client)},
            headers={"X-Forwarded-For": "10.9.9.10"}, allow_redirects=False)
        assert resp.status == 302
    finally:
        await client.close()


async def test_forwarded_headers_from_anyone_else_are_ignored(tmp_path, manager) -> None:
    client = await start_client(proxied_app(tmp_path, manager, ["10.0.0.5"]))
    try:
        statuses = []
        for i in range(11):  # a new X-Forwarded-For each time does not reset the count
            statuses += await _fail_logins(client, 1, {"X-Forwarded-For": f"10.9.9.{i}"})
        assert statuses == [401] * 10 + [429]
        resp = await client.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" not in resp.headers["Set-Cookie"]
    finally:
        await client.close()


async def test_session_cookie_is_secure_when_the_trusted_proxy_says_https(
        tmp_path, manager) -> None:
    client = await start_client(proxied_app(tmp_path, manager, ["127.0.0.1"]))
    try:
        https = {"X-Forwarded-Proto": "https"}
        page = await client.get("/login", headers=https)
        assert "Secure" in page.headers["Set-Cookie"]  # the login form's token too
        token = _LOGIN_CSRF.search(await page.text()).group(1)
        resp = await client.post("/login", data={
            "username": "alice", "password": PASSWORDS["alice"], "login_csrf": token},
            headers={**https, "Cookie": f"solgate_login={token}"}, allow_redirects=False)
        assert resp.status == 302
        cookie = resp.cookies["solgate_session"]
        assert cookie["secure"]
        assert cookie["httponly"]
    finally:
        await client.close()


# -- caching ---------------------------------------------------------------------------------

async def test_authenticated_answers_are_not_stored_static_files_are(client, manager) -> None:
    log = manager.get("web01").log_path
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"secret console output\r\n")
    await login(client, "alice")
    for url in ("/", "/consoles/web01", "/consoles/web01/log", "/events", "/api/consoles",
                "/api/consoles/web01", "/api/consoles/web01/log",
                "/api/consoles/web01/log?tail=5", "/api/events", "/login",
                "/api/consoles/nope"):
        resp = await client.get(url, allow_redirects=False)
        assert resp.headers.get("Cache-Control") == "no-store", (url, resp.status)
    resp = await client.get("/static/console.js")
    assert resp.status == 200
    assert "no-store" not in resp.headers.get("Cache-Control", "")


# -- finding 8: slow, greedy and descriptor-hungry clients ----------------------------------

@contextlib.asynccontextmanager
async def _serve(tmp_path: Path, **server):
    """`solgate serve` itself (run_server, no consoles); yields its web port."""
    config = make_config(tmp_path, listen="127.0.0.1:0")
    config = dataclasses.replace(config, server=dataclasses.replace(config.server, **server))
    shutdown, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_server(
        config, shutdown=shutdown, on_ready=lambda _m, url, _s: ready.set_result(url)))
    try:
        url = await asyncio.wait_for(ready, 10)
        yield int(url.rstrip("/").rsplit(":", 1)[1])
    finally:
        shutdown.set()
        await asyncio.wait_for(task, 10)


async def _closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


async def test_slow_partial_requests_are_cut_off(tmp_path) -> None:
    async with _serve(tmp_path, request_timeout=0.5) as port:
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(30)]
        try:
            for _reader, writer in streams:
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            answers = await asyncio.gather(*(_closed_by_server(r, 5) for r, _ in streams))
            assert answers == [b""] * 30  # cut off, no answer to half a request
        finally:
            for _reader, writer in streams:
                writer.close()


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One request on a kept-alive connection; returns the head (the body is read too)."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = re.search(rb"Content-Length: (\d+)", head)
    if length:
        await asyncio.wait_for(reader.readexactly(int(length.group(1))), 5)
    return head


async def test_connections_are_capped_per_address_and_in_all(tmp_path) -> None:
    async with _serve(tmp_path, max_connections_per_address=5) as port:
        streams = []
        try:
            for _ in range(5):
                streams.append(await asyncio.open_connection("127.0.0.1", port))
                assert (await _request(*streams[-1])).startswith(b"HTTP/1.1 200 ")
            streams.append(await asyncio.open_connection("127.0.0.1", port))
            assert (await _closed_by_server(streams[-1][0], 5)).startswith(b"HTTP/1.1 503 ")
            # A slot frees when a connection ends; the open ones still work.
            streams[0][1].close()
            for _ in range(50):
                await asyncio.sleep(0.02)
                streams.append(await asyncio.open_connection("127.0.0.1", port))
                if not (await _request(*streams[-1])).startswith(b"HTTP/1.1 503 "):
                    break
            else:
                raise AssertionError("the closed connection's slot never came back")
            assert (await _request(*streams[1])).startswith(b"HTTP/1.1 200 ")
        finally:
            for _reader, writer in streams:
                writer.close()
    total = ConnectionGuard(total=3, per_address=100)
    assert [total.admit(f"10.0.0.{i}") for i in range(4)] == [True, True, True, False]
    proxy = ConnectionGuard(total=100, per_address=1,
                            exempt=[ipaddress.ip_network("10.0.0.5")])
    assert [proxy.admit("10.0.0.5") for _ in range(3)] == [True, True, True]


def test_an_accept_error_storm_logs_a_bounded_number_of_lines(caplog) -> None:
    loop = asyncio.new_event_loop()
    clock = FakeClock()
    try:
        handler = AcceptErrorFilter(interval=10.0, clock=clock)
        loop.set_exception_handler(handler)
        error = OSError(errno.EMFILE, "Too many open files")
        with caplog.at_level(logging.DEBUG):
            for _ in range(30):  # 30 s of a storm, 1000 failures a second
                for _ in range(1000):
                    loop.call_exception_handler({
                        "message": "socket.accept() out of system resource",
                        "exception": error})
                clock.now += 1.0
        lines = [r for r in caplog.records if "accept" in r.getMessage()]
        assert 1 <= len(lines) <= 4
        assert not any(r.exc_info for r in lines)
        assert "more since the last report" in lines[-1].getMessage()
        # Other loop errors still reach the default handler, traceback and all.
        loop.call_exception_handler({"message": "something else", "exception": ValueError()})
        assert caplog.records[-1].getMessage().startswith("something else")
    finally:
        loop.close()


# -- finding 7: console output cannot pass for solgate's notes ------------------------------

async def test_a_note_printed_by_the_host_is_not_shown_as_solgates(client, manager,
                                                                   tmp_path) -> None:
    """solgate's writer and the host put notes in one file; events.jsonl knows the real ones."""
    from solgate.console.events import EventLog
    from solgate.console.log import ConsoleLog, format_time

    console = manager.get("web01")
    console.log_path.parent.mkdir(parents=True, exist_ok=True)
    clock = FakeClock(1_796_000_000.0)
    log = ConsoleLog(console.log_path, clock=clock)
    events = EventLog(tmp_path / "events.jsonl", clock=clock)
    try:
        # The host forges a panic note and a note of an attach, at a time that exists.
        stamp = format_time(clock.now).encode()
        log.write(b"login: [-- solgate " + stamp + b": PANIC (critical): fake --]\r\n")
        log.write(b"[-- solgate " + stamp + b": PANIC (critical): fake --]\r\n")
        log.write(b"[-- solgate " + stamp + b": eve attached over the web --]\r\n")
        # What the worker writes for a real panic and a real attach: a note plus a record.
        line = "Kernel panic - not syncing: Fatal exception"
        log.write(line.encode() + b"\r\n")
        log.event(f"PANIC (critical): {line}")
        events.append("panic", "web01", severity="critical", message=line)
        clock.now += 0.7
        log.event("alice attached over the web")
        events.append("attach", "web01", user="alice", message="alice attached over the web")
        log.write(b"[-- solgate " + stamp + b": PANIC (critical): " + line.encode()
                  + b" (and a forged tail) --]\r\n")
        clock.now += 600
        log.event("MARK")
    finally:
        log.close()
        events.close()
    await login(client, "victor")
    body = await (await client.get("/api/consoles/web01/log?format=json")).json()
    kinds = {ln["text"]: ln["kind"] for ln in body["lines"]}
    forged = [t for t in kinds if t.startswith("[-- solgate")
              and ("fake" in t or "eve" in t or "forged" in t)]
    assert len(forged) == 3
    assert all(kinds[t] == "host-note" for t in forged), kinds
    real = [t for t, k in kinds.items() if k in ("event", "panic-event")]
    assert len(real) == 3, kinds  # the PANIC note, the attach note, the MARK
    assert [kinds[t] for t in real if "PANIC" in t] == ["panic-event"]
    text = await (await client.get("/consoles/web01/log")).text()
    marks = re.findall(r'<span class="panic-mark"[^>]*>(.*?)</span>', text, re.S)
    assert not any("fake" in m or "forged" in m for m in marks)
    assert len(re.findall(r'<span class="host-note"', text)) == 3


# -- who sees what, and what the configuration accepts ---------------------------------------

async def test_bmc_details_are_for_operators_and_admins(client, manager) -> None:
    detail = "BMC 10.0.0.5:623 rejected the password for user 'admin' (RAKP2 status 0x0d)"
    console = manager.get("web01")
    console.state, console.state_detail = "auth-failed", detail
    console.hub.set_state("auth-failed", detail)
    seen = {}
    for user in ("victor", "oscar", "alice"):
        await login(client, user)
        listed = (await (await client.get("/api/consoles")).json())["consoles"][0]
        single = await (await client.get("/api/consoles/web01")).json()
        ws = await client.ws_connect("/ws/consoles/web01")
        hello = json.loads((await ws.receive(timeout=2)).data)
        state = None
        for _ in range(6):
            msg = await ws.receive(timeout=2)
            if msg.type == WSMsgType.TEXT and json.loads(msg.data)["type"] == "state":
                state = json.loads(msg.data)
                break
        await ws.close()
        page = await (await client.get("/consoles/web01/log")).text()
        seen[user] = (listed["state_detail"], single["state_detail"], hello["state_detail"],
                      state["detail"], "10.0.0.5" in page)
        assert listed["state"] == hello["state"] == "auth-failed"
    assert seen["victor"] == ("", "", "", "", False)
    assert seen["oscar"] == seen["alice"] == (detail, detail, detail, detail, True)


async def _next_state(ws) -> dict:
    for _ in range(10):
        msg = await ws.receive(timeout=2)
        if msg.type == WSMsgType.TEXT and json.loads(msg.data)["type"] == "state":
            return json.loads(msg.data)
    raise AssertionError("no state message")


@pytest.mark.parametrize("mode", ["", "ro"])
async def test_bmc_details_stop_at_once_for_an_operator_demoted_by_a_reload(
        client, manager, mode: str) -> None:
    """Also on a socket that never could type (?mode=ro): the detail is a right of its own."""
    from solgate.users import Role
    from solgate.web.keys import auth_key

    detail = "BMC 10.0.0.5:623 user 'admin'"
    console = manager.get("web01")
    console.state, console.state_detail = "backoff", detail
    console.hub.set_state("backoff", detail)
    await login(client, "oscar")
    ws = await client.ws_connect("/ws/consoles/web01" + (f"?mode={mode}" if mode else ""))
    try:
        hello = json.loads((await ws.receive(timeout=2)).data)
        assert hello["state_detail"] == detail
        assert (await _next_state(ws))["detail"] == detail
        auth = client.server.app[auth_key]
        auth.replace_users({**auth.users, "oscar": dataclasses.replace(
            auth.users["oscar"], role=Role.VIEWER)})  # what a reload does
        assert (await _next_state(ws)) == {"type": "state", "state": "backoff", "detail": ""}
        console.state_detail = "BMC 10.0.0.5:623 rejected the password for user 'admin'"
        console.hub.set_state("auth-failed", console.state_detail)
        assert (await _next_state(ws))["detail"] == ""
    finally:
        await ws.close()


async def test_a_viewer_asking_power_status_is_told_operator_is_enough(client) -> None:
    await login(client, "victor")
    csrf = await csrf_token(client)
    resp = await client.post("/api/consoles/web01/power", json={"action": "status"},
                             headers={"X-CSRF-Token": csrf})
    assert resp.status == 403
    error = (await resp.json())["error"]
    assert "needs the operator role" in error
    assert "viewer" in error


@pytest.mark.parametrize("name", ["<b>eve</b>", "eve\nroot", "eve\x1b[2J", "", "-eve",
                                  "e ve", "eve\x00", "x" * 65])
def test_user_names_with_markup_newlines_or_controls_are_refused(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_users({name: {"role": "viewer"}})
    message = str(caught.value)
    assert "\n" not in message
    assert "\x1b" not in message
    assert "\x00" not in message
    assert "cannot be a user name" in message
    assert parse_users({"jane.doe@example.com": {"role": "viewer"}})


async def test_allowed_origins_open_websockets_behind_a_host_rewriting_proxy(
        tmp_path, manager) -> None:
    server = parse_config('[server]\nallowed_origins = ["https://Console.Example.com"]\n',
                          "solgate.toml").server
    assert server.allowed_origins == ("https://console.example.com",)
    client = await start_client(proxied_app(tmp_path, manager, ["10.0.0.5"],
                                            allowed_origins=server.allowed_origins))
    try:
        await login(client, "victor")
        ws = await client.ws_connect("/ws/consoles/web01",
                                     headers={"Origin": "https://console.example.com"})
        assert json.loads((await ws.receive(timeout=2)).data)["type"] == "hello"
        await ws.close()
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect("/ws/consoles/web01",
                                    headers={"Origin": "https://evil.example.com"})
        assert info.value.status == 403
    finally:
        await client.close()
    with pytest.raises(ConfigError, match="is not an origin"):
        parse_config('[server]\nallowed_origins = ["https://x.example/path"]\n', "solgate.toml")


async def test_a_request_body_must_arrive_in_time(tmp_path) -> None:
    async with _serve(tmp_path, request_timeout=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n\r\nuser")
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
            assert answer.startswith(b"HTTP/1.1 408 ")
        finally:
            writer.close()
