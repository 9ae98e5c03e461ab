"""Live attachments lose what their user lost, at once, against the real server stack.

`run_server` with the real engine in front of simulated BMCs, a browser-like WebSocket
(session cookie), `solgate console`-like WebSockets (bearer tokens) and asyncssh
sessions through the gateway. A logout ends that session's WebSockets; a reload that
demotes a user downgrades its live attachments to read-only (lock released, a notice
saying why), and one that deletes a token or an ssh key ends what it opened. The
console log says so. The reload itself is asked for with `solgate reload` in a shell
that lacks the BMC password's variable, and its verdict is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

asyncssh = pytest.importorskip("asyncssh")

from solgate.config import Config, load_config  # noqa: E402
from solgate.console.manager import ConsoleManager  # noqa: E402
from solgate.daemon import run_server  # noqa: E402
from solgate.sim.bmc import SimBmcConfig  # noqa: E402
from solgate.sim.fleet import SimFleet  # noqa: E402
from solgate.sim.host import SimHost  # noqa: E402
from solgate.users import hash_api_token, hash_password  # noqa: E402
from tests.engine_helpers import wait_for  # noqa: E402
from tests.terminal_helpers import PtyChild, Shell, client_env, free_port  # noqa: E402

PASSWORD = "oscar-revocation-pw"
OSCAR_TOKEN = "sgt_oscar-revocation-token"
TINA_TOKEN = "sgt_tina-revocation-token"
BMC_PW_ENV = "SOLGATE_TEST_REVOCATION_BMC_PW"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Stack:
    url: str
    manager: ConsoleManager
    name: str
    config_path: Path
    ssh_port: int
    keys: dict[str, Any]

    @property
    def log_path(self) -> Path:
        return Path(self.manager.data_dir) / "logs" / f"{self.name}.log"

    def write_config(self, users: str) -> None:
        text = self.config_path.read_text()
        head = text.split("# users\n")[0]
        self.config_path.write_text(head + "# users\n" + users)


def users_text(keys: dict[str, Any], *, oscar_role: str = "operator", tina_token: bool = True,
               kim_key: bool = True) -> str:
    def public(name: str) -> str:
        return keys[name].export_public_key().decode().strip()

    tina_tokens = f'["{hash_api_token(TINA_TOKEN)}"]' if tina_token else "[]"
    kim_keys = f'["{public("kim")}"]' if kim_key else "[]"
    return "\n".join([
        "[users.oscar]",
        f'password_hash = "{hash_password(PASSWORD, n=16, r=1, p=1)}"',
        f'role = "{oscar_role}"',
        f'api_tokens = ["{hash_api_token(OSCAR_TOKEN)}"]',
        f'ssh_keys = ["{public("oscar")}"]',
        "[users.tina]",
        'role = "operator"',
        f"api_tokens = {tina_tokens}",
        "[users.kim]",
        'role = "operator"',
        f"ssh_keys = {kim_keys}",
        "",
    ])


@contextlib.asynccontextmanager
async def running_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                        ) -> AsyncIterator[Stack]:
    """One simulated host at its prompt; `run_server` reloading from a file on SIGHUP."""
    monkeypatch.setenv(BMC_PW_ENV, "password")
    fleet = SimFleet(1, base_port=0, config_factory=lambda i, name: SimBmcConfig(
        name=name, host=SimHost(name, seed=i, powered=True)))
    await fleet.start()
    keys = {n: asyncssh.generate_private_key("ssh-ed25519") for n in ("oscar", "kim")}
    name = fleet.bmcs[0].name
    ssh_port = free_port()
    path = tmp_path / "solgate.toml"
    path.write_text("\n".join([
        'data_dir = "data"',
        "[server]", 'listen = "127.0.0.1:0"', 'auth = "login"',
        "[ssh]", f'listen = "127.0.0.1:{ssh_port}"',
        "[defaults]", 'username = "admin"', f'password_env = "{BMC_PW_ENV}"',
        "cipher_suites = [17, 3]",
        f"[consoles.{name}]", 'host = "127.0.0.1"', f"port = {fleet.ports[0]}",
        "# users", users_text(keys)]))
    shutdown = asyncio.Event()
    ready: asyncio.Future[tuple[ConsoleManager, str | None]] = (
        asyncio.get_running_loop().create_future())

    def reload_config() -> Config:
        return load_config(path)

    server = asyncio.create_task(run_server(
        load_config(path), shutdown=shutdown, reload_config=reload_config,
        on_ready=lambda m, url, ssh: ready.set_result((m, url))))
    try:
        done, _ = await asyncio.wait({server, ready}, timeout=15,
                                     return_when=asyncio.FIRST_COMPLETED)
        if server in done:
            server.result()
        manager, url = ready.result()
        assert url is not None
        if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
            pytest.skip("run_server could not install its SIGHUP handler here")
        await wait_for(lambda: all(c.state == "active" for c in manager.consoles()), 15,
                       "the console to become active")
        yield Stack(url.rstrip("/"), manager, name, path, ssh_port, keys)
    finally:
        shutdown.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(server, 15)
        await fleet.stop()


async def next_json(ws: aiohttp.ClientWebSocketResponse, kind: str,
                    timeout: float = 10.0) -> dict:
    """The next control message of `kind`; console bytes and other messages are skipped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.1, deadline - loop.time()))
        if msg.type == aiohttp.WSMsgType.TEXT:
            message = json.loads(msg.data)
            if message["type"] == kind:
                return message
        elif msg.type != aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"socket ended ({msg.type}, {ws.close_code}) before {kind}")


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict, int | None]:
    """The `closed` message, then the code of the close frame that follows it."""
    closed = await next_json(ws, "closed")
    for _ in range(20):
        msg = await ws.receive(timeout=5)
        if msg.type == aiohttp.WSMsgType.CLOSE:
            return closed, msg.data
    raise AssertionError("no close frame after the closed message")


async def log_in(http: aiohttp.ClientSession, url: str) -> str:
    """Log oscar in; returns the session's CSRF token."""
    page = await http.get(f"{url}/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', await page.text())
    assert token
    resp = await http.post(f"{url}/login", allow_redirects=False, data={
        "username": "oscar", "password": PASSWORD, "login_csrf": token.group(1), "next": "/"})
    assert resp.status == 302, await resp.text()
    home = await http.get(f"{url}/")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', await home.text())
    assert csrf, "no CSRF token on the console list"
    return csrf.group(1)


async def ssh_shell(stack: Stack, user: str) -> tuple[Any, Shell]:
    conn = await asyncssh.connect(
        "127.0.0.1", stack.ssh_port, username=f"{user}:{stack.name}",
        client_keys=[stack.keys[user]], known_hosts=None, agent_path=None, config=[])
    process = await conn.create_process(term_type="xterm", term_size=(80, 24), encoding=None)
    return conn, Shell(process)


async def test_logout_ends_that_sessions_websocket(tmp_path: Path, monkeypatch) -> None:
    async with running_stack(tmp_path, monkeypatch) as stack:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            csrf = await log_in(http, stack.url)
            ws = await http.ws_connect(f"{stack.url}/ws/consoles/{stack.name}")
            hello = await next_json(ws, "hello")
            assert hello["can_write"] is True
            hub = stack.manager.get(stack.name).hub
            await wait_for(lambda: hub.writer == "oscar", 5, "oscar to hold the lock")

            resp = await http.post(f"{stack.url}/logout", allow_redirects=False,
                                   headers={"X-CSRF-Token": csrf})
            assert resp.status == 302

            closed, code = await closed_with(ws)
            assert closed["reason"] == "logged out"
            assert closed.get("revoked") is True
            assert code == 4003  # the page stops instead of reconnecting
            assert hub.viewers == 0
            assert hub.writer is None
            # Nothing typed after the logout can reach the console.
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await ws.send_bytes(b"echo after-logout\r")
            stack.manager.events.flush()
            await wait_for(lambda: b"oscar detached (access revoked: logged out)"
                           in stack.log_path.read_bytes(), 5, "the console log line")
            # The cookie is gone from the server too: a new socket is refused.
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{stack.url}/ws/consoles/{stack.name}")
            assert refused.value.status == 401


async def test_reload_downgrades_and_ends_live_attachments(tmp_path: Path, monkeypatch) -> None:
    async with running_stack(tmp_path, monkeypatch) as stack:
        hub = stack.manager.get(stack.name).hub
        ws_url = f"{stack.url}/ws/consoles/{stack.name}"
        async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {OSCAR_TOKEN}"}) as oscar_http, \
                aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {TINA_TOKEN}"}) as tina_http:
            oscar_ws = await oscar_http.ws_connect(ws_url)
            assert (await next_json(oscar_ws, "hello"))["can_write"] is True
            await wait_for(lambda: hub.writer == "oscar", 5, "oscar to hold the lock")
            tina_ws = await tina_http.ws_connect(ws_url)
            await next_json(tina_ws, "hello")
            oscar_conn, oscar_sh = await ssh_shell(stack, "oscar")
            kim_conn, kim_sh = await ssh_shell(stack, "kim")
            try:
                await oscar_sh.expect(b"oscar, ")
                await kim_sh.expect(b"kim, ")
                await wait_for(lambda: hub.viewers == 4, 5, "four attachments")

                # oscar becomes a viewer, tina's token and kim's key are deleted: SIGHUP.
                stack.write_config(users_text(stack.keys, oscar_role="viewer",
                                              tina_token=False, kim_key=False))
                os.kill(os.getpid(), signal.SIGHUP)

                # oscar's WebSocket: told why, lock released, typing and BREAK refused.
                access = await next_json(oscar_ws, "access")
                assert access == {"type": "access", "can_write": False,
                                  "reason": f"oscar is now a viewer on {stack.name}"}
                assert hub.writer is None
                await oscar_ws.send_bytes(b"echo still-typing\r")
                assert "read-only" in (await next_json(oscar_ws, "error"))["message"]
                await oscar_ws.send_str(json.dumps({"type": "break"}))
                assert "cannot send BREAK" in (await next_json(oscar_ws, "error"))["message"]
                await oscar_ws.send_str(json.dumps({"type": "take-write"}))
                await next_json(oscar_ws, "error")
                assert hub.writer is None

                # tina's token is gone: her socket is closed with the reason.
                closed, code = await closed_with(tina_ws)
                assert closed["reason"] == "its API token was deleted"
                assert code == 4003

                # oscar's ssh session is read-only now, and says so.
                await oscar_sh.expect(b"read-only now: oscar is now a viewer")
                oscar_sh.type(b"~B")
                await oscar_sh.expect(b"read-only: your role cannot send BREAK")
                # kim's key is gone: the ssh session ends with the reason.
                await kim_sh.expect(b"access revoked: the ssh key")
                await asyncio.wait_for(kim_sh.process.wait_closed(), 10)
                assert kim_sh.process.exit_status == 1
                await wait_for(lambda: sorted(a.user for a in hub.attachments)
                               == ["oscar", "oscar"], 5, "only oscar's two attachments")
                assert not any(a.can_write for a in hub.attachments)

                text = stack.log_path.read_bytes()
                assert text.count(b"oscar is now read-only (oscar is now a viewer on") == 2
                assert b"tina detached (access revoked: its API token was deleted)" in text
                assert b"kim detached (access revoked: the ssh key" in text
                breaks = [e for e in map(json.loads, (Path(stack.manager.data_dir)
                                                      / "events.jsonl").read_text().splitlines())
                          if e["kind"] == "break"]
                assert breaks == []
            finally:
                oscar_conn.close()
                kim_conn.close()


async def solgate_reload(stack: Stack) -> tuple[int, str, str]:
    """`solgate reload -c FILE` in a shell without the BMC password's variable."""
    env = {k: v for k, v in os.environ.items() if k != BMC_PW_ENV}
    env["PYTHONPATH"] = str(REPO)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "solgate.cli", "reload", "-c", str(stack.config_path),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_solgate_reload_needs_no_bmc_secret_and_prints_the_verdict(
        tmp_path: Path, monkeypatch) -> None:
    async with running_stack(tmp_path, monkeypatch) as stack:
        stack.write_config(users_text(stack.keys, oscar_role="admin"))
        status, out, err = await solgate_reload(stack)
        assert status == 0, err
        assert out == (f"solgate: pid {os.getpid()}: configuration reloaded: 0 added, "
                       "0 removed, 0 changed\n")
        assert err == ""  # no asyncssh warnings, no "SOLGATE_... is not set"

        stack.write_config('[users.oscar]\nrole = "boss"\n')
        status, out, err = await solgate_reload(stack)
        assert status == 1
        assert err.startswith(f"solgate: solgate serve (pid {os.getpid()}): reload refused, "
                              "keeping the running configuration: "), err
        assert 'role = "boss" is unknown' in err


async def test_solgate_console_is_told_and_stops_when_its_token_goes(
        tmp_path: Path, monkeypatch) -> None:
    """The terminal client on a real pty: demoted, it says so and stays; its token
    deleted, it says why and exits instead of reconnecting."""
    async with running_stack(tmp_path, monkeypatch) as stack:
        args = ["console", stack.name, "--server", stack.url]
        oscar = PtyChild(args, client_env(tmp_path, SOLGATE_TOKEN=OSCAR_TOKEN))
        tina: PtyChild | None = None
        try:
            # oscar attaches first and so holds the write lock; tina starts after.
            await oscar.expect(f"{stack.name} as oscar, read-write".encode())
            tina = PtyChild(args, client_env(tmp_path, SOLGATE_TOKEN=TINA_TOKEN))
            await tina.expect(f"{stack.name} as tina".encode())
            stack.write_config(users_text(stack.keys, oscar_role="viewer", tina_token=False))
            os.kill(os.getpid(), signal.SIGHUP)
            await oscar.expect(f"read-only now: oscar is now a viewer on {stack.name}".encode())
            await tina.expect(b"access revoked (its API token was deleted)")
            assert await tina.wait() == 1
            assert b"reconnecting" not in bytes(tina.buffer)
            oscar.type(b"\r~B")
            await oscar.expect(b"read-only")
            oscar.type(b"~.")
            assert await oscar.wait() == 0
        finally:
            oscar.close()
            if tina is not None:
                tina.close()
