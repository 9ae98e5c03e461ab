"""Single sign-on through a reverse proxy: `[server] proxy_user_header` and `trusted_proxies`.

The proxy authenticates the user and names them in a header; solgate believes the
header only on connections from the proxy's addresses, applies that user's role and
access lists from `[users]`, and keeps CSRF protection for the browser behind it.
The test client connects from 127.0.0.1, which is the proxy when trusted_proxies
holds it, and an arbitrary client when it does not.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest
from web_fakes import TOKENS, StaticConsoles, csrf_token, make_config, start_client

from solgate.config import parse_config
from solgate.errors import ConfigError
from solgate.web.app import create_app

HEADER = "X-Remote-User"


@pytest.fixture
def manager(tmp_path: Path) -> StaticConsoles:
    m = StaticConsoles(tmp_path)
    m.add("web01", tags=("rack1",))
    m.add("web02", tags=("rack2",))
    m.add("db01", tags=("rack1",))
    return m


async def proxied_client(tmp_path: Path, manager: StaticConsoles, proxies: list[str]):
    """A client of an app built from config alone (as `serve` builds it)."""
    config = make_config(tmp_path)
    server = dataclasses.replace(
        config.server, proxy_user_header=HEADER,
        trusted_proxies=tuple(ipaddress.ip_network(p) for p in proxies))
    return await start_client(create_app(dataclasses.replace(config, server=server), manager))


def as_user(name: str, **more: str) -> dict[str, str]:
    return {HEADER: name, **more}


async def test_the_proxys_user_gets_their_role_and_access_list(tmp_path, manager) -> None:
    client = await proxied_client(tmp_path, manager, ["127.0.0.1"])
    try:
        resp = await client.get("/api/consoles", headers=as_user("rita"))  # consoles = web*
        assert resp.status == 200
        assert [c["name"] for c in (await resp.json())["consoles"]] == ["web01", "web02"]
        assert (await client.get("/api/consoles/db01", headers=as_user("rita"))).status == 404
        # A viewer named by the proxy still cannot act.
        resp = await client.post("/api/consoles/web01/break", headers=as_user("victor"))
        assert resp.status == 403
        # An admin named by the proxy can, from a script (no Origin, no cookie).
        resp = await client.post("/api/consoles/web01/break", headers=as_user("alice"))
        assert resp.status == 200
        assert manager.actions == [("break", "web01", "alice")]
        # Pages open without a login form.
        page = await client.get("/", headers=as_user("alice"), allow_redirects=False)
        assert page.status == 200
    finally:
        await client.close()


async def test_the_header_from_an_untrusted_address_is_ignored(tmp_path, manager) -> None:
    client = await proxied_client(tmp_path, manager, ["10.9.9.9", "192.0.2.0/24"])
    try:
        resp = await client.get("/api/consoles", headers=as_user("alice"))
        assert resp.status == 401
        resp = await client.post("/api/consoles/web01/break", headers=as_user("alice"))
        assert resp.status == 401
        page = await client.get("/", headers=as_user("alice"), allow_redirects=False)
        assert page.status == 302
        assert page.headers["Location"].startswith("/login")
        assert manager.actions == []
    finally:
        await client.close()


async def test_a_user_unknown_to_solgate_is_refused_with_the_fix(tmp_path, manager) -> None:
    client = await proxied_client(tmp_path, manager, ["127.0.0.0/8"])
    try:
        resp = await client.get("/api/consoles", headers=as_user("mallory"))
        assert resp.status == 403
        assert "[users.NAME]" in (await resp.json())["error"]
        # Without the header the proxy's connection is an ordinary anonymous client.
        assert (await client.get("/api/consoles")).status == 401
    finally:
        await client.close()


async def test_a_cross_site_post_through_the_proxy_needs_the_csrf_token(
        tmp_path, manager) -> None:
    client = await proxied_client(tmp_path, manager, ["127.0.0.1"])
    try:
        resp = await client.post("/api/consoles/web01/break",
                                 headers=as_user("alice", Origin="http://evil.example"))
        assert resp.status == 403
        assert manager.actions == []
        # The page gives the browser a session for the proxy's user and its token.
        page = await client.get("/", headers=as_user("alice"))
        assert page.status == 200
        csrf = await csrf_token_as(client, "alice")
        resp = await client.post("/api/consoles/web01/break",
                                 headers=as_user("alice", Origin="http://evil.example"))
        assert resp.status == 403, "a session without its CSRF token must not act"
        resp = await client.post("/api/consoles/web01/break",
                                 headers=as_user("alice", **{"X-CSRF-Token": csrf}))
        assert resp.status == 200
        assert manager.actions == [("break", "web01", "alice")]
    finally:
        await client.close()


async def csrf_token_as(client, user: str) -> str:
    client.session.headers[HEADER] = user
    try:
        return await csrf_token(client)
    finally:
        del client.session.headers[HEADER]


async def test_when_the_proxy_names_someone_else_the_old_session_ends(tmp_path, manager) -> None:
    client = await proxied_client(tmp_path, manager, ["127.0.0.1"])
    try:
        alice_csrf = await csrf_token_as(client, "alice")
        resp = await client.get("/api/consoles/web01", headers=as_user("oscar"))
        assert resp.status == 200
        assert (await resp.json())["can_power"] is False  # oscar is an operator
        # alice's session (and CSRF token) no longer acts, even if the header says alice.
        resp = await client.post("/api/consoles/web01/power", json={"action": "off"},
                                 headers=as_user("alice", **{"X-CSRF-Token": alice_csrf,
                                                             "Origin": "http://x"}))
        assert resp.status == 403
        assert manager.actions == []
    finally:
        await client.close()


async def test_a_bearer_token_wins_over_the_header(tmp_path, manager) -> None:
    client = await proxied_client(tmp_path, manager, ["127.0.0.1"])
    try:
        resp = await client.post(
            "/api/consoles/web01/break",
            headers=as_user("alice", Authorization=f"Bearer {TOKENS['victor']}"))
        assert resp.status == 403  # victor, a viewer
        assert manager.actions == []
    finally:
        await client.close()


def server_config(text: str):
    return parse_config(f"[server]\n{text}\n", "solgate.toml").server


def test_config_reads_the_header_and_networks() -> None:
    server = server_config('listen = "0.0.0.0:8080"\nproxy_user_header = "X-Remote-User"\n'
                           'trusted_proxies = ["10.0.0.5", "10.1.0.0/16", "::1"]')
    assert server.proxy_user_header == "X-Remote-User"
    assert [str(n) for n in server.trusted_proxies] == ["10.0.0.5/32", "10.1.0.0/16",
                                                       "::1/128"]


def test_trusted_proxies_alone_are_for_forwarded_headers() -> None:
    server = server_config('trusted_proxies = ["10.0.0.5"]')
    assert (server.proxy_user_header, [str(n) for n in server.trusted_proxies]) == (
        "", ["10.0.0.5/32"])


@pytest.mark.parametrize(("text", "message"), [
    ('proxy_user_header = "X-Remote-User"', "set without trusted_proxies"),
    ('proxy_user_header = "Cookie"\ntrusted_proxies = ["10.0.0.5"]', "its own meaning"),
    ('proxy_user_header = "X User"\ntrusted_proxies = ["10.0.0.5"]', "not an HTTP header"),
    ('proxy_user_header = "X-User"\ntrusted_proxies = ["proxy.example"]',
     "names are not resolved"),
    ('proxy_user_header = "X-User"\ntrusted_proxies = []', "the list is empty"),
    ('auth = "none"\nproxy_user_header = "X-User"\ntrusted_proxies = ["127.0.0.1"]',
     'needs auth = "login"'),
])
def test_config_mistakes_are_one_line_with_the_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        server_config(text)
    assert "\n" not in str(caught.value)
