"""An in-memory stand-in for the console engine, for the web tests.

`StaticConsoles` satisfies `solgate.web.model.ConsoleManager` around real `Hub`
objects: nothing about the hub or the web is faked, only the part that would talk to
a BMC.  It records every action and every keystroke the hub let through, and can echo
input back like a shell does.  It stands in for the engine until that lands.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from solgate.config import Config
from solgate.config.server import ServerConfig
from solgate.config.users import parse_users
from solgate.console.hub import Hub
from solgate.errors import SolgateError
from solgate.users import hash_api_token, hash_password
from solgate.web.app import create_app
from solgate.web.auth import Authenticator


@dataclass
class StaticConsole:
    """A console in memory, the `HubConsole` of its hub: keeps what is typed, may echo it."""

    name: str
    log_path: Path
    tags: tuple[str, ...] = ()
    state: str = "active"
    state_detail: str = ""
    state_since: float = field(default_factory=time.time)
    last_output: float | None = None
    panic_count: int = 0
    inputs: list[bytes] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0
    reconnects: int = 0
    log: DiskHealth = field(default_factory=lambda: DiskHealth())
    echo: bool = False
    queue_bytes: int = 256 * 1024
    hub: Hub = field(init=False)

    def __post_init__(self) -> None:
        self.hub = Hub(self.name, queue_bytes=self.queue_bytes, console=self)

    def send_input(self, data: bytes) -> None:
        self.inputs.append(data)
        if self.echo:
            self.hub.publish(data.replace(b"\r", b"\r\n"))

    def viewer_event(self, kind: str, user: str, message: str) -> None:
        pass

    def sol_counters(self) -> dict[str, int]:
        return {}

    def datagram_drops(self) -> dict[str, int]:
        return {}


@dataclass
class DiskHealth:
    """A log or events file that never failed."""

    write_errors: int = 0
    bytes_lost: int = 0
    records_dropped: int = 0
    error: str | None = None


class StaticConsoles:
    """Consoles that exist in memory only; actions are recorded, not sent anywhere."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._consoles: dict[str, StaticConsole] = {}
        self.actions: list[tuple[str, ...]] = []
        self.fail_with: SolgateError | None = None
        self.power_state = "on"
        self.records: list[tuple[str | None, str, str]] = []
        self.events = DiskHealth()
        self.udp: dict[str, int] = {}

    def add(self, name: str, *, tags: tuple[str, ...] = (), echo: bool = False,
            queue_bytes: int = 256 * 1024, **attrs: Any) -> StaticConsole:
        console = StaticConsole(name=name, tags=tags, echo=echo, queue_bytes=queue_bytes,
                                log_path=self.data_dir / "logs" / f"{name}.log", **attrs)
        self._consoles[name] = console
        return console

    def consoles(self) -> list[StaticConsole]:
        return list(self._consoles.values())

    def get(self, name: str) -> StaticConsole | None:
        return self._consoles.get(name)

    def counts_by_state(self) -> dict[str, int]:
        return {}

    def udp_counters(self) -> dict[str, int]:
        return dict(self.udp)

    def _act(self, *action: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.actions.append(action)

    async def send_break(self, name: str, user: str) -> None:
        self._act("break", name, user)

    async def deactivate(self, name: str, user: str) -> None:
        self._act("deactivate", name, user)

    async def power(self, name: str, action: str, user: str) -> str:
        self._act("power", name, action, user)
        if action in ("on", "cycle", "reset"):
            self.power_state = "on"
        elif action == "off":
            self.power_state = "off"
        return self.power_state

    def record(self, name: str | None, kind: str, message: str, **fields: object) -> None:
        self.records.append((name, kind, message))


# Cheap hashes: the tests check the logic, not scrypt's cost.
PASSWORDS = {"alice": "alice-pw", "victor": "victor-pw", "oscar": "oscar-pw",
             "otto": "otto-pw", "rita": "rita-pw"}
TOKENS = {"alice": "sgt_alice-token", "victor": "sgt_victor-token"}


def users_raw() -> dict[str, Any]:
    def h(user: str) -> str:
        return hash_password(PASSWORDS[user], n=16, r=1, p=1)

    return {
        "alice": {"password_hash": h("alice"), "role": "admin",
                  "api_tokens": [hash_api_token(TOKENS["alice"])]},
        "victor": {"password_hash": h("victor"), "role": "viewer",
                   "api_tokens": [hash_api_token(TOKENS["victor"])]},
        "oscar": {"password_hash": h("oscar"), "role": "operator"},
        "otto": {"password_hash": h("otto"), "role": "operator"},
        "rita": {"password_hash": h("rita"), "role": "operator", "consoles": ["web*"]},
    }


def make_config(data_dir: Path, *, auth: str = "login", listen: str = "127.0.0.1:0",
                users: dict[str, Any] | None = None) -> Config:
    host, _, port = listen.rpartition(":")
    return Config(
        source="test", data_dir=data_dir,
        server=ServerConfig(listen=listen, host=host.strip("[]"), port=int(port), auth=auth),
        consoles={}, base_dir=data_dir,
        users=parse_users(users_raw() if users is None else users),
    )


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_app(data_dir: Path, manager: StaticConsoles, *, auth: str = "login",
             clock: Callable[[], float] | None = None) -> web.Application:
    config = make_config(data_dir, auth=auth)
    authenticator = Authenticator(config.users, mode=auth,
                                  clock=clock or time.monotonic)
    return create_app(config, manager, authenticator=authenticator)


async def start_client(app: web.Application) -> TestClient:
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


_LOGIN_CSRF = re.compile(r'name="login_csrf" value="([^"]+)"')
_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)"')


async def login_form_token(client: TestClient) -> str:
    """Load the login form like a browser; returns its double-submit token."""
    page = await client.get("/login")
    token = _LOGIN_CSRF.search(await page.text())
    assert token, "login form has no login_csrf field"
    return token.group(1)


async def login(client: TestClient, user: str, password: str | None = None) -> str:
    """Log in through the form like a browser; returns the session's CSRF token."""
    resp = await client.post("/login", data={
        "username": user, "password": PASSWORDS[user] if password is None else password,
        "login_csrf": await login_form_token(client), "next": "/",
    }, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    return await csrf_token(client)


async def csrf_token(client: TestClient) -> str:
    page = await client.get("/")
    assert page.status == 200
    match = _CSRF.search(await page.text())
    assert match
    assert match.group(1)
    return match.group(1)


if __name__ == "__main__":
    # A manual try-out until the engine lands: two echoing consoles on 127.0.0.1:8080
    # with auth = "none" (`python tests/web_fakes.py`, then open http://127.0.0.1:8080/).
    import tempfile

    _dir = Path(tempfile.mkdtemp(prefix="solgate-web-"))
    _manager = StaticConsoles(_dir)
    for _name in ("web01", "web02"):
        _manager.add(_name, echo=True, tags=("demo",)).hub.publish(
            f"{_name} login: ".encode())
    _config = make_config(_dir, auth="none", listen="127.0.0.1:8080", users={})
    web.run_app(create_app(_config, _manager), host="127.0.0.1", port=8080,
                shutdown_timeout=5)
