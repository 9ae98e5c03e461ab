"""Login, sessions, CSRF, bearer tokens, roles and console ACLs of the web app."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from web_fakes import (
    TOKENS,
    FakeClock,
    StaticConsoles,
    csrf_token,
    login,
    login_form_token,
    make_app,
    make_config,
    start_client,
)

from solgate import daemon
from solgate.config import Config
from solgate.config.users import parse_users
from solgate.errors import ConfigError
from solgate.users import Role, User, hash_password, verify_password
from solgate.web.app import create_app
from solgate.web.auth import (
    LOGIN_USER_MAX_WAIT,
    LOGIN_USER_SLOWDOWN,
    Authenticator,
    LoginError,
    LoginThrottled,
    SessionStore,
)
from solgate.web.keys import auth_key, config_key


@pytest.fixture
def manager(tmp_path: Path) -> StaticConsoles:
    m = StaticConsoles(tmp_path)
    m.add("web01", tags=("rack1",))
    m.add("web02", tags=("rack2",))
    m.add("db01", tags=("rack1",))
    return m


@pytest.fixture
async def client(tmp_path: Path, manager: StaticConsoles):
    c = await start_client(make_app(tmp_path, manager))
    yield c
    await c.close()


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


# -- passwords and users ---------------------------------------------------------


def test_password_hash_round_trip_and_salted() -> None:
    a = hash_password("s3cret", n=16, r=1, p=1)
    b = hash_password("s3cret", n=16, r=1, p=1)
    assert a.startswith("scrypt$16$1$1$")
    assert a != b  # random salt
    assert verify_password("s3cret", a)
    assert not verify_password("s3cret!", a)
    assert not verify_password("s3cret", "scrypt$garbage")


def test_an_unknown_user_costs_one_scrypt_of_the_default_cost(monkeypatch) -> None:
    """Timing must not tell a wrong user name from a wrong password."""
    from solgate import users as users_module

    costs = []
    real = users_module._scrypt

    def counting(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
        costs.append((n, r, p))
        return real(password, salt, n, r, p)

    monkeypatch.setattr(users_module, "_scrypt", counting)
    alice = User("alice", Role.VIEWER, hash_password("right"))
    costs.clear()
    assert not users_module.password_matches(None, "right")
    assert not users_module.password_matches(alice, "wrong")
    assert users_module.password_matches(alice, "right")
    default = (users_module.SCRYPT_N, users_module.SCRYPT_R, users_module.SCRYPT_P)
    assert costs == [default, default, default]


def test_users_config_errors_name_the_table_and_fix() -> None:
    with pytest.raises(ConfigError, match=r'\[users.bob\] role = "boss" is unknown'):
        parse_users({"bob": {"role": "boss"}})
    with pytest.raises(ConfigError, match=r"\[users.bob\] password_hash .*solgate passwd"):
        parse_users({"bob": {"password_hash": "plaintext"}})
    with pytest.raises(ConfigError, match=r"api_tokens holds hashes"):
        parse_users({"bob": {"api_tokens": ["sgt_raw_token"]}})
    with pytest.raises(ConfigError,
                       match=r'pasword: unknown setting; did you mean "password_hash"'):
        parse_users({"bob": {"pasword": "x"}})
    assert parse_users({"bob": {}})["bob"].role is Role.VIEWER


def test_forged_or_expired_session_cookie_is_rejected() -> None:
    clock = FakeClock()
    store = SessionStore(clock=clock, idle_timeout=60, max_age=3600)
    cookie, session = store.create("alice")
    assert store.lookup(cookie) is session
    sid = cookie.rpartition(".")[0]
    assert store.lookup(sid + ".forged") is None
    assert store.lookup(sid) is None
    clock.now += 61
    assert store.lookup(cookie) is None


def test_auth_none_refused_unless_loopback(tmp_path: Path, manager: StaticConsoles) -> None:
    config = make_config(tmp_path, auth="none", listen="0.0.0.0:8080")
    with pytest.raises(ConfigError, match="only allowed when listening on loopback"):
        create_app(config, manager)


# -- login ---------------------------------------------------------------------------


async def test_pages_redirect_to_login_and_api_says_401(client) -> None:
    resp = await client.get("/consoles/web01", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/login?next=/consoles/web01"
    resp = await client.get("/api/consoles")
    assert resp.status == 401
    assert "log in" in (await resp.json())["error"]


async def test_login_ok_sets_strict_httponly_cookie(client) -> None:
    page = await client.get("/login")
    assert page.status == 200
    token = (await page.text()).split('name="login_csrf" value="')[1].split('"')[0]
    resp = await client.post("/login", data={
        "username": "alice", "password": "alice-pw", "login_csrf": token, "next": "/events"},
        allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/events"
    set_cookie = resp.cookies["solgate_session"]
    assert set_cookie["httponly"]
    assert set_cookie["samesite"] == "Strict"
    assert not set_cookie["secure"]  # plain HTTP here; set under TLS
    resp = await client.get("/api/consoles")
    assert resp.status == 200
    names = [c["name"] for c in (await resp.json())["consoles"]]
    assert names == ["web01", "web02", "db01"]


async def test_login_with_wrong_password_fails_without_saying_why(client) -> None:
    for user in ("alice", "nobody"):
        resp = await client.post("/login", data={
            "username": user, "password": "wrong",
            "login_csrf": await login_form_token(client)}, allow_redirects=False)
        assert resp.status == 401
        assert "wrong user name or password" in await resp.text()
    assert (await client.get("/api/consoles")).status == 401


async def test_login_form_without_its_csrf_cookie_is_refused(client) -> None:
    resp = await client.post("/login", data={
        "username": "alice", "password": "alice-pw", "login_csrf": "guess"},
        allow_redirects=False)
    assert resp.status == 403
    assert (await client.get("/api/consoles")).status == 401


async def test_login_next_only_goes_to_local_paths(client) -> None:
    page = await client.get("/login?next=//evil.example/x")
    assert 'name="next" value="/"' in await page.text()


async def test_login_rate_limited_per_address_then_recovers(tmp_path, manager) -> None:
    clock = FakeClock()
    client = await start_client(make_app(tmp_path, manager, clock=clock))
    try:
        for _ in range(10):
            resp = await client.post("/login", data={
                "username": "victor", "password": "bad",
                "login_csrf": await login_form_token(client)})
            assert resp.status == 401
        # Blocked now, even with the right password and for another user.
        resp = await client.post("/login", data={
            "username": "alice", "password": "alice-pw",
            "login_csrf": await login_form_token(client)}, allow_redirects=False)
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) > 0
        assert "too many failed logins" in await resp.text()
        clock.now += 301
        await login(client, "alice")
    finally:
        await client.close()


async def test_a_guessed_user_is_slowed_down_not_locked_out(tmp_path, manager) -> None:
    clock, waits = FakeClock(), []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    config = make_config(tmp_path)
    authenticator = Authenticator(config.users, clock=clock, sleep=sleep)
    for i in range(10):
        with pytest.raises(LoginError):
            await authenticator.login("oscar", "bad", f"10.0.0.{i}")
    assert waits == []
    # Past the limit a guess for oscar waits its turn (one check per LOGIN_USER_SLOWDOWN),
    # but the password is still checked: oscar is slowed down, never locked out.
    with pytest.raises(LoginError):
        await authenticator.login("oscar", "bad", "10.0.0.20")
    assert (await authenticator.login("oscar", "oscar-pw", "10.0.1.1")).name == "oscar"
    assert waits == [LOGIN_USER_SLOWDOWN]
    # A queue of guesses longer than LOGIN_USER_MAX_WAIT is refused, not queued.
    for i in range(10):
        with pytest.raises(LoginError):
            await authenticator.login("otto", "bad", f"10.0.2.{i}")
    refused = 0
    for i in range(12):
        try:
            await authenticator.login("otto", "bad", f"10.0.3.{i}")
        except LoginThrottled:
            refused += 1
        except LoginError:
            pass
    assert refused == 12 - int(LOGIN_USER_MAX_WAIT / LOGIN_USER_SLOWDOWN) - 1
    assert (await authenticator.login("alice", "alice-pw", "10.0.1.1")).name == "alice"


async def test_logout_needs_csrf_and_ends_the_session(client) -> None:
    csrf = await login(client, "alice")
    resp = await client.post("/logout", allow_redirects=False)
    assert resp.status == 403
    resp = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert resp.status == 302
    assert (await client.get("/api/consoles")).status == 401


# -- CSRF ------------------------------------------------------------------------------


async def test_state_changing_request_needs_csrf_token(client, manager) -> None:
    csrf = await login(client, "oscar")
    resp = await client.post("/api/consoles/web01/break")
    assert resp.status == 403
    assert "CSRF" in (await resp.json())["error"]
    resp = await client.post("/api/consoles/web01/break", headers={"X-CSRF-Token": "nope"})
    assert resp.status == 403
    assert manager.actions == []
    resp = await client.post("/api/consoles/web01/break", headers={"X-CSRF-Token": csrf})
    assert resp.status == 200
    resp = await client.post("/api/consoles/web01/deactivate", data={"csrf_token": csrf})
    assert resp.status == 200
    assert manager.actions == [("break", "web01", "oscar"), ("deactivate", "web01", "oscar")]


# -- bearer tokens -------------------------------------------------------------------------


async def test_api_with_bearer_token(client, manager) -> None:
    resp = await client.get("/api/consoles/web01", headers=bearer("alice"))
    assert resp.status == 200
    body = await resp.json()
    assert body["name"] == "web01"
    assert body["state_words"] == "connected"
    # No CSRF token needed: a browser never sends this header by itself.
    resp = await client.post("/api/consoles/web01/power", json={"action": "cycle"},
                             headers=bearer("alice"))
    assert resp.status == 200
    assert (await resp.json())["result"] == "on"
    assert manager.actions == [("power", "web01", "cycle", "alice")]


async def test_bad_bearer_token_is_401_not_anonymous(client) -> None:
    resp = await client.get("/api/consoles", headers={"Authorization": "Bearer sgt_wrong"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


# -- roles and ACLs -------------------------------------------------------------------------


async def test_viewer_cannot_break_or_power(client, manager) -> None:
    resp = await client.post("/api/consoles/web01/break", headers=bearer("victor"))
    assert resp.status == 403
    resp = await client.post("/api/consoles/web01/power", json={"action": "off"},
                             headers=bearer("victor"))
    assert resp.status == 403
    assert manager.actions == []


async def test_power_changes_are_admin_only_status_is_for_operators(client, manager) -> None:
    csrf = await login(client, "oscar")
    h = {"X-CSRF-Token": csrf}
    resp = await client.post("/api/consoles/web01/power", json={"action": "off"}, headers=h)
    assert resp.status == 403
    assert "admin" in (await resp.json())["error"]
    resp = await client.post("/api/consoles/web01/power", json={"action": "status"}, headers=h)
    assert resp.status == 200
    resp = await client.post("/api/consoles/web01/power", json={"action": "explode"}, headers=h)
    assert resp.status == 400
    assert manager.actions == [("power", "web01", "status", "oscar")]


async def test_console_acl_hides_other_consoles(client, manager) -> None:
    await login(client, "rita")  # consoles = ["web*"]
    names = [c["name"] for c in (await (await client.get("/api/consoles")).json())["consoles"]]
    assert names == ["web01", "web02"]
    assert (await client.get("/api/consoles/db01")).status == 404
    assert (await client.get("/consoles/db01")).status == 404
    assert (await client.get("/api/consoles/db01/log?tail=5")).status == 404


async def test_tag_acl(tmp_path, manager) -> None:
    from solgate.users import User

    user = User("t", Role.OPERATOR, tags=("rack1",))
    assert [c.name for c in manager.consoles()
            if user.can_view(c.name, c.tags)] == ["web01", "db01"]
    nobody = User("n", Role.OPERATOR, consoles=())
    assert not any(nobody.can_view(c.name, c.tags) for c in manager.consoles())


async def test_engine_errors_become_readable_502(client, manager) -> None:
    from solgate.errors import BmcError

    manager.fail_with = BmcError("BMC 10.0.0.5:623 did not answer Chassis Control")
    resp = await client.post("/api/consoles/web01/break", headers=bearer("alice"))
    assert resp.status == 502
    assert (await resp.json())["error"].startswith("BMC 10.0.0.5:623 did not answer")


# -- auth = "none" -------------------------------------------------------------------------


async def test_auth_none_acts_as_local_admin_but_keeps_csrf(tmp_path, manager) -> None:
    client = await start_client(make_app(tmp_path, manager, auth="none"))
    try:
        resp = await client.get("/api/consoles/web01")
        assert resp.status == 200
        assert (await resp.json())["can_power"] is True
        # A script (no Origin, no cookie) may act.
        resp = await client.post("/api/consoles/web01/break")
        assert resp.status == 200
        # A cross-site browser post (Origin set, no session) may not.
        other = await start_client(make_app(tmp_path, manager, auth="none"))
        try:
            resp = await other.post("/api/consoles/web01/break",
                                    headers={"Origin": "http://evil.example"})
            assert resp.status == 401
        finally:
            await other.close()
        # The browser page gets a session and its CSRF token.
        csrf = await csrf_token(client)
        resp = await client.post("/api/consoles/web01/deactivate",
                                 headers={"X-CSRF-Token": csrf, "Origin": "http://x"})
        assert resp.status == 200
        assert manager.actions == [("break", "web01", "local"), ("deactivate", "web01", "local")]
    finally:
        await client.close()


async def test_auth_none_refuses_a_rebound_host_name(tmp_path, manager) -> None:
    """A hostile site that points its DNS name at 127.0.0.1 gets nothing, not a console."""
    client = await start_client(make_app(tmp_path, manager, auth="none"))
    try:
        rebound = {"Host": "evil.example:8080", "Origin": "http://evil.example:8080"}
        for method, path in [("GET", "/"), ("GET", "/api/consoles"),
                             ("POST", "/api/consoles/web01/break")]:
            resp = await client.request(method, path, headers=rebound, allow_redirects=False)
            assert resp.status == 403, (method, path)
            assert "loopback host name" in (await resp.json())["error"]
        resp = await client.get("/ws/consoles/web01", headers={
            **rebound, "Connection": "Upgrade", "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        assert resp.status == 403
        assert manager.actions == []
        # The same requests by a loopback name work.
        for host in ("localhost:8080", "127.0.0.1", "[::1]:8080"):
            resp = await client.get("/api/consoles", headers={"Host": host})
            assert resp.status == 200, host
    finally:
        await client.close()


async def test_login_mode_serves_any_host_name(client) -> None:
    """Behind a real name (TLS, a proxy), login mode answers to it: the check is auth=none's."""
    resp = await client.get("/api/consoles", headers={"Host": "console.example.org",
                                                      **bearer("alice")})
    assert resp.status == 200


def test_passwd_and_token_commands_print_config_lines(monkeypatch, capsys) -> None:
    import argparse
    import io

    from solgate.cli import web as cli
    from solgate.web.auth import Authenticator

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    monkeypatch.setattr("sys.stdin", io.StringIO("hunter2\n"))
    args = parser.parse_args(["passwd", "--stdin"])
    assert args.handler(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith('password_hash = "scrypt$')
    assert verify_password("hunter2", line.split('"')[1])
    args = parser.parse_args(["token"])
    assert args.handler(args) == 0
    out = capsys.readouterr()
    token = out.err.strip().rsplit(" ", 1)[1]
    digest = out.out.split('"')[1]
    auth = Authenticator(parse_users({"bot": {"api_tokens": [digest]}}))
    assert auth.user_for_token(token).name == "bot"


async def test_second_login_page_load_keeps_the_first_form_valid(client) -> None:
    first = await login_form_token(client)
    assert (await client.get("/favicon.ico", allow_redirects=False)).status == 204
    assert await login_form_token(client) == first  # e.g. a second tab
    resp = await client.post("/login", data={
        "username": "alice", "password": "alice-pw", "login_csrf": first,
        "next": "/events"}, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/events"


async def test_reload_applies_users_to_the_running_web_app(tmp_path, manager) -> None:
    """`solgate reload` revokes on the web too: a removed user, a changed password and a
    dropped token take effect without a restart; untouched users stay logged in."""
    app = make_app(tmp_path, manager)
    client = await start_client(app)
    try:
        cookies = {}
        for user in ("alice", "oscar", "otto"):
            client.session.cookie_jar.clear()
            await login(client, user)
            cookies[user] = dict(client.session.cookie_jar.filter_cookies(client.make_url("/")))
        users = dict(app[config_key].users)  # same hashes: same passwords
        del users["otto"]
        users["oscar"] = dataclasses.replace(
            users["oscar"], password_hash=hash_password("new-pw", n=16, r=1, p=1))
        users["alice"] = dataclasses.replace(users["alice"], api_token_hashes=frozenset())

        class Engine:
            async def reload(self, config):
                return {"added": [], "removed": [], "changed": []}

        new = dataclasses.replace(app[config_key], users=users)
        await daemon._reload(Engine(), lambda: new, app)

        async def status(user: str) -> int:
            client.session.cookie_jar.clear()
            client.session.cookie_jar.update_cookies(cookies[user])
            return (await client.get("/api/consoles")).status

        assert await status("alice") == 200
        assert await status("oscar") == 401
        assert await status("otto") == 401
        client.session.cookie_jar.clear()
        bearer = {"Authorization": f"Bearer {TOKENS['alice']}"}
        assert (await client.get("/api/consoles", headers=bearer)).status == 401
    finally:
        await client.close()


async def test_reload_with_bad_users_keeps_everything(tmp_path, manager) -> None:
    app = make_app(tmp_path, manager)
    reloaded = []

    class Engine:
        async def reload(self, config):
            reloaded.append(config)
            return {"added": [], "removed": [], "changed": []}

    def bad() -> Config:  # as load_config: the users are checked when the file is read
        return make_config(tmp_path, users={"eve": {"role": "emperor"}})

    await daemon._reload(Engine(), bad, app)
    assert reloaded == []
    assert "alice" in app[auth_key].users
