"""Security paths of the web front end that users rely on, end to end.

A viewer cannot act on a console by any route (escapes, control messages, REST); web
actions by an operator or an admin land in `events.jsonl` and the console log with the
user's name, against the real engine and simulated BMCs; `[server] tls_cert/tls_key`
serves HTTPS with a `Secure` session cookie.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from web_fakes import TOKENS, StaticConsoles, login, make_app, start_client

from solgate.config import Config, parse_config
from solgate.console.manager import ConsoleManager
from solgate.daemon import run_server
from solgate.sim.bmc import SimBmcConfig
from solgate.sim.fleet import SimFleet
from solgate.sim.host import SimHost
from solgate.users import hash_api_token, hash_password
from tests.engine_helpers import wait_for

OPERATOR_TOKEN = "sgt_operator-real-stack-token"
ADMIN_TOKEN = "sgt_admin-real-stack-token"
ADMIN_PASSWORD = "admin-tls-pw"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- a viewer never writes ------------------------------------------------------------------


@pytest.fixture
def manager(tmp_path: Path) -> StaticConsoles:
    m = StaticConsoles(tmp_path)
    m.add("web01", echo=True)
    return m


@pytest.fixture
async def client(tmp_path: Path, manager: StaticConsoles):
    c = await start_client(make_app(tmp_path, manager))
    yield c
    await c.close()


async def until_pong(ws: aiohttp.ClientWebSocketResponse) -> list[dict]:
    """Every text message before the answer to a ping: the server has read all before it."""
    await ws.send_str(json.dumps({"type": "ping"}))
    seen: list[dict] = []
    for _ in range(50):
        msg = await ws.receive(timeout=2)
        if msg.type == aiohttp.WSMsgType.TEXT:
            message = json.loads(msg.data)
            if message["type"] == "pong":
                return seen
            seen.append(message)
    raise AssertionError("no pong")


async def test_viewer_escapes_and_control_messages_change_nothing(client, manager) -> None:
    console = manager.get("web01")
    await login(client, "victor")
    ws = await client.ws_connect("/ws/consoles/web01")
    try:
        await until_pong(ws)  # the greeting
        # Every escape that acts, at a line start (each leaves the input at a line start).
        await ws.send_bytes(b"~B")
        await ws.send_bytes(b"~D")
        await ws.send_bytes(b"~w")
        await ws.send_bytes(b"\r~B~D~w")
        for control in (
            {"type": "break"},
            {"type": "sysrq", "key": "b"},
            {"type": "take-write"},
            {"type": "deactivate"},
        ):
            await ws.send_str(json.dumps(control))
        errors = [m["message"] for m in await until_pong(ws) if m["type"] == "error"]
        # ~B ~D ~w, then "\r" (refused) and the three again, then four control messages.
        assert len(errors) == 3 + 4 + 4, errors
        assert all("read-only" in e for e in errors[:-1]), errors
        assert "unknown control message" in errors[-1]  # "deactivate" is not a message
        assert manager.actions == []
        assert console.inputs == []
        assert console.hub.writer is None
        # Still attached, still watching.
        console.hub.publish(b"still here")
        for _ in range(10):
            msg = await ws.receive(timeout=2)
            if msg.type == aiohttp.WSMsgType.BINARY:
                assert b"still here" in msg.data
                break
        else:
            raise AssertionError("no output after the refused actions")
    finally:
        await ws.close()


async def test_an_operators_escapes_do_act(client, manager) -> None:
    """The same bytes from an operator do reach the engine, so the test above can fail."""
    await login(client, "oscar")
    ws = await client.ws_connect("/ws/consoles/web01")
    try:
        await until_pong(ws)
        await ws.send_bytes(b"~B~D")
        await until_pong(ws)
        assert manager.actions == [("break", "web01", "oscar"), ("deactivate", "web01", "oscar")]
    finally:
        await ws.close()


@pytest.mark.parametrize("action", ["break", "deactivate"])
async def test_viewer_rest_actions_are_403_by_session_and_by_token(
    client, manager, action: str
) -> None:
    url = f"/api/consoles/web01/{action}"
    resp = await client.post(url, headers=bearer(TOKENS["victor"]))
    assert resp.status == 403
    assert "may only watch" in (await resp.json())["error"]
    csrf = await login(client, "victor")
    resp = await client.post(url, headers={"X-CSRF-Token": csrf})
    assert resp.status == 403
    resp = await client.post(url, data={"csrf_token": csrf})
    assert resp.status == 403
    resp = await client.post(
        "/api/consoles/web01/power", json={"action": "cycle"}, headers={"X-CSRF-Token": csrf}
    )
    assert resp.status == 403
    assert manager.actions == []
    # The same request by an admin is carried out.
    resp = await client.post(url, headers=bearer(TOKENS["alice"]))
    assert resp.status == 200
    assert manager.actions == [(action, "web01", "alice")]


# --- the real engine: actions are logged with the user --------------------------------------


def stack_config(data_dir: Path, names: list[str], ports: list[int]) -> Config:
    lines = [
        f'data_dir = "{data_dir}"',
        "[server]",
        'listen = "127.0.0.1:0"',
        'auth = "login"',
        "[defaults]",
        'username = "admin"',
        'password = "password"',
        "cipher_suites = [17, 3]",
        'reconnect_max = "2s"',
        "[users.oscar]",
        'role = "operator"',
        f'api_tokens = ["{hash_api_token(OPERATOR_TOKEN)}"]',
        "[users.alice]",
        'role = "admin"',
        f'api_tokens = ["{hash_api_token(ADMIN_TOKEN)}"]',
    ]
    for name, port in zip(names, ports, strict=True):
        lines += [f"[consoles.{name}]", 'host = "127.0.0.1"', f"port = {port}"]
    return parse_config("\n".join(lines), "<security-paths test>")


@contextlib.asynccontextmanager
async def running_server(config: Config) -> AsyncIterator[tuple[ConsoleManager, str]]:
    """`run_server` on port 0 until the block ends."""
    shutdown = asyncio.Event()
    ready: asyncio.Future[tuple[ConsoleManager, str | None]] = (
        asyncio.get_running_loop().create_future()
    )
    server = asyncio.create_task(
        run_server(
            config, shutdown=shutdown, on_ready=lambda m, url, ssh: ready.set_result((m, url))
        )
    )
    try:
        done, _ = await asyncio.wait(
            {server, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED
        )
        if server in done:
            server.result()  # raises what stopped it
        assert ready in done, "run_server did not become ready"
        manager, url = ready.result()
        assert url is not None
        yield manager, url.rstrip("/")
    finally:
        shutdown.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(server, 15)


def read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_web_break_and_deactivate_are_logged_with_the_user(tmp_path: Path) -> None:
    fleet = SimFleet(
        1,
        base_port=0,
        config_factory=lambda i, name: SimBmcConfig(
            name=name, host=SimHost(name, seed=i, powered=True)
        ),
    )
    await fleet.start()
    try:
        name = fleet.bmcs[0].name
        config = stack_config(tmp_path, [name], fleet.ports)
        async with running_server(config) as (manager, url), aiohttp.ClientSession() as http:
            worker = manager.get(name)
            assert worker is not None
            await wait_for(lambda: worker.state == "active", timeout=10)

            resp = await http.post(
                f"{url}/api/consoles/{name}/break", headers=bearer(OPERATOR_TOKEN)
            )
            assert resp.status == 200, await resp.text()
            resp = await http.post(
                f"{url}/api/consoles/{name}/deactivate", headers=bearer(ADMIN_TOKEN)
            )
            assert resp.status == 200, await resp.text()

            events_path = tmp_path / "events.jsonl"

            def acted() -> list[tuple[str, str]]:
                return [
                    (e["kind"], e["user"])
                    for e in read_events(events_path)
                    if e.get("console") == name and e["kind"] in ("break", "deactivate")
                ]

            await wait_for(
                lambda: acted() == [("break", "oscar"), ("deactivate", "alice")], timeout=5
            )
            log_text = worker.log_path.read_text(errors="replace")
            assert re.search(r"\[-- solgate [^\]]*: serial BREAK sent by oscar --\]", log_text)
            assert re.search(
                r"\[-- solgate [^\]]*: forced deactivate and reconnect by alice --\]", log_text
            )
            # The deactivated console comes back by itself.
            await wait_for(lambda: worker.state == "active", timeout=10)
    finally:
        await fleet.stop()


# --- TLS -------------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_serves_https_with_a_secure_session_cookie(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = parse_config(
        "\n".join(
            [
                f'data_dir = "{tmp_path}"',
                "[server]",
                'listen = "127.0.0.1:0"',
                'auth = "login"',
                f'tls_cert = "{cert}"',
                f'tls_key = "{key}"',
                "[users.alice]",
                'role = "admin"',
                f'password_hash = "{hash_password(ADMIN_PASSWORD, n=16, r=1, p=1)}"',
            ]
        ),
        "<tls test>",
    )
    trust = ssl.create_default_context(cafile=str(cert))
    async with running_server(config) as (_manager, url):
        assert url.startswith("https://127.0.0.1:")
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address host
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            page = await http.get(f"{url}/login", ssl=trust)
            assert page.status == 200
            login_csrf = re.search(r'name="login_csrf" value="([^"]+)"', await page.text())
            assert login_csrf
            form_cookie = page.cookies["solgate_login"]
            assert form_cookie["secure"]
            resp = await http.post(
                f"{url}/login",
                ssl=trust,
                allow_redirects=False,
                data={
                    "username": "alice",
                    "password": ADMIN_PASSWORD,
                    "login_csrf": login_csrf.group(1),
                    "next": "/",
                },
            )
            assert resp.status == 302, await resp.text()
            session = resp.cookies["solgate_session"]
            assert session["secure"]
            assert session["httponly"]
            assert session["samesite"] == "Strict"
            # The session works over HTTPS.
            home = await http.get(f"{url}/api/consoles", ssl=trust)
            assert home.status == 200
        # Plain HTTP to the same port gets no page.
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):
                await http.get(url.replace("https://", "http://") + "/login")
