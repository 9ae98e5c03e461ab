"""The ssh gateway, started by `run_server` from `[ssh] listen`, against simulated BMCs.

Clients: asyncssh (in process) and Debian's OpenSSH `ssh` on a pty. Users and their
keys come from `[users.NAME] ssh_keys` / `authorized_keys`, as an operator writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

asyncssh = pytest.importorskip("asyncssh")

from solgate.config import parse_config  # noqa: E402
from solgate.errors import ConfigError  # noqa: E402
from solgate.ssh import (  # noqa: E402
    load_or_create_host_key,
    parse_user_keys,
)
from tests.engine_helpers import HostInput, wait_for  # noqa: E402
from tests.terminal_helpers import (  # noqa: E402
    PtyChild,
    Shell,
    client_env,
    free_port,
    live_server,
)


class Keys:
    """Three users' key pairs in a temp dir: alice (operator), bob (viewer), eve (none)."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "keys"
        self.dir.mkdir()
        self.keys: dict[str, Any] = {}
        for name in ("alice", "bob", "eve", "carol"):
            key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{name}@test")
            self.keys[name] = key
            path = self.path(name)
            path.write_bytes(key.export_private_key())
            path.chmod(0o600)
        (self.dir / "bob.pub").write_bytes(self.public("bob").encode())

    def path(self, name: str) -> Path:
        return self.dir / f"id_{name}"

    def public(self, name: str) -> str:
        return self.keys[name].export_public_key().decode().strip()

    def config(self, ssh_port: int) -> str:
        return "\n".join([
            "[ssh]",
            f'listen = "127.0.0.1:{ssh_port}"',
            "",
            "[users.alice]",
            'role = "operator"',
            f'ssh_keys = ["{self.public("alice")}"]',
            "",
            "[users.bob]",
            'role = "viewer"',
            f'authorized_keys = "{self.dir / "bob.pub"}"',
            "",
            "[users.carol]",  # may only see the first console
            'role = "operator"',
            'consoles = ["sim001"]',
            f'ssh_keys = ["{self.public("carol")}"]',
            "",
        ])


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, count: int = 1) -> Any:
    keys = Keys(tmp_path)
    port = free_port()
    async with live_server(tmp_path, count=count, extra=keys.config(port)) as server:
        server.ssh_port = port
        server.keys = keys
        yield server


async def connect(server: Any, username: str, key: str) -> Any:
    return await asyncssh.connect(
        "127.0.0.1", server.ssh_port, username=username,
        client_keys=[server.keys.keys[key]], known_hosts=None, agent_path=None,
        config=[],
    )


async def shell(conn: Any, size: tuple[int, int] = (80, 24)) -> Shell:
    process = await conn.create_process(term_type="xterm", term_size=size, encoding=None)
    return Shell(process)


# --- configuration --------------------------------------------------------------------------


def test_ssh_settings_and_keys_are_checked(tmp_path) -> None:
    def cfg(text: str) -> Any:
        return parse_config(text, "solgate.toml", base_dir=tmp_path)

    assert cfg("").ssh is None
    settings = cfg('[ssh]\nlisten = "127.0.0.1:2222"\n').ssh
    assert settings is not None
    assert (settings.host, settings.port) == ("127.0.0.1", 2222)
    assert settings.host_key == tmp_path / "data" / "ssh_host_ed25519_key"
    with pytest.raises(ConfigError,
                       match=r'line 2: \[ssh\] lisen: unknown setting; did you mean "listen"'):
        cfg('[ssh]\nlisen = "127.0.0.1:2222"\n')
    with pytest.raises(ConfigError, match=r"line 2: \[ssh\] listen: \"2222\" is not HOST:PORT"):
        cfg('[ssh]\nlisten = "2222"\n')
    with pytest.raises(ConfigError, match=r"\[users.alice\] ssh_keys\[0\] is not an OpenSSH"):
        parse_user_keys(cfg('[users.alice]\nssh_keys = ["ssh-ed25519 nonsense"]\n'))
    keys_file = tmp_path / "alice.keys"
    keys_file.write_text('command="x" ssh-ed25519 AAAA\n')
    with pytest.raises(ConfigError, match="line 1 has options"):
        parse_user_keys(cfg(f'[users.alice]\nauthorized_keys = "{keys_file}"\n'))


def test_host_key_is_generated_once_with_private_permissions(tmp_path) -> None:
    path = tmp_path / "data" / "ssh_host_ed25519_key"
    key = load_or_create_host_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.with_name(path.name + ".pub").exists()
    again = load_or_create_host_key(path)
    assert again.public_data == key.public_data


# --- asyncssh client ------------------------------------------------------------------------


async def test_user_console_login_types_and_leaves(tmp_path) -> None:
    async with gateway(tmp_path) as server:
        name = server.names[0]
        async with await connect(server, f"alice:{name}", "alice") as conn:
            sh = await shell(conn)
            await sh.expect(f"{name} as alice, read-write".encode())
            hub = server.manager.get(name).hub
            assert [a.user for a in hub.attachments] == ["alice"]
            sh.type(b"uname\r")
            await sh.expect(b"Linux")
            sh.type(b"~.")
            await sh.expect(f"left {name}".encode())
            await asyncio.wait_for(sh.process.wait_closed(), 10)
            assert sh.process.exit_status == 0
        await wait_for(lambda: hub.viewers == 0, 5, "the attachment to end")
        server.manager.events.flush()
        path = Path(server.config.data_dir) / "events.jsonl"
        events = [json.loads(line) for line in path.read_text().splitlines()]
        mine = [e for e in events if e["kind"] in ("attach", "detach")]
        assert [(e["kind"], e["user"]) for e in mine] == [("attach", "alice"), ("detach", "alice")]
        assert "alice attached over ssh from 127.0.0.1" in mine[0]["message"]
        # The console log says it too, in its own line, for whoever reads it later (the
        # detach note waits up to NOTE_HOLD for the open prompt line to end).
        log_path = Path(server.config.data_dir) / "logs" / f"{name}.log"
        await wait_for(lambda: b"alice detached --]" in log_path.read_bytes(), 5, "the note")
        assert b"alice attached over ssh from 127.0.0.1" in log_path.read_bytes()


async def test_ssh_command_picks_the_console(tmp_path) -> None:
    async with gateway(tmp_path, count=2) as server:
        second = server.names[1]
        async with await connect(server, "alice", "alice") as conn:
            process = await conn.create_process(second, term_type="xterm",
                                                term_size=(80, 24), encoding=None)
            sh = Shell(process)
            await sh.expect(f"{second} as alice".encode())
            sh.type(b"~.")
            await asyncio.wait_for(process.wait_closed(), 10)
            assert process.exit_status == 0


async def test_wrong_key_is_refused(tmp_path) -> None:
    async with gateway(tmp_path) as server:
        name = server.names[0]
        for username in (f"alice:{name}", "alice", name):
            with pytest.raises(asyncssh.PermissionDenied):
                await connect(server, username, "eve")
        # alice's key does not log in as bob.
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(server, "bob", "alice")


async def test_console_name_login_records_the_key_owner(tmp_path) -> None:
    async with gateway(tmp_path, count=2) as server:
        first, second = server.names
        async with await connect(server, first, "carol") as conn:
            sh = await shell(conn)
            await sh.expect(f"{first} as carol".encode())
            assert [a.user for a in server.manager.get(first).hub.attachments] == ["carol"]
            sh.type(b"~.")
            await asyncio.wait_for(sh.process.wait_closed(), 10)
        # carol may not see the second console: her key does not open it.
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(server, second, "carol")


async def test_viewer_cannot_type(tmp_path) -> None:
    async with gateway(tmp_path) as server:
        name = server.names[0]
        worker = server.manager.get(name)
        typed: list[bytes] = []
        original = worker.send_input
        worker.send_input = lambda data: (typed.append(data), original(data))[1]
        async with await connect(server, f"bob:{name}", "bob") as conn:
            sh = await shell(conn)
            await sh.expect(b"read-only: your role cannot type")
            # The terminal answering a cursor query is not typing: no notice, and the
            # escape after it is an escape.
            sh.type(b"\x1b[3;16R~B")
            await sh.expect(b"cannot send BREAK")
            assert b"cannot type on this console" not in sh.buffer
            sh.type(b"uname\r")
            await sh.expect(b"read-only: your role cannot type on this console")
            sh.type(b"~B")
            await sh.expect(b"cannot send BREAK")
            sh.type(b"~w")
            await sh.expect(b"cannot take the write lock")
            sh.type(b"~.")
            await asyncio.wait_for(sh.process.wait_closed(), 10)
        assert typed == []


async def test_menu_lists_consoles_and_returns_after_leaving(tmp_path) -> None:
    async with gateway(tmp_path, count=2) as server:
        first, second = server.names
        async with await connect(server, "alice", "alice") as conn:
            sh = await shell(conn)
            menu = await sh.expect(b"(q quits): ")
            assert f"1) {first}".encode() in menu
            assert f"2) {second}".encode() in menu
            assert b"active" in menu
            sh.type(b"2\r")
            await sh.expect(f"{second} as alice".encode())
            sh.type(b"hostname\r")
            await sh.expect(f"\n{second}".encode())
            sh.type(b"~.")
            await sh.expect(b"(q quits): ")
            sh.type(b"nosuch\r")
            await sh.expect(b"no console nosuch or no access")
            await sh.expect(b"(q quits): ")
            sh.type(b"q\r")
            await asyncio.wait_for(sh.process.wait_closed(), 10)
            assert sh.process.exit_status == 0


async def test_menu_shows_only_what_the_user_may_see(tmp_path) -> None:
    async with gateway(tmp_path, count=2) as server:
        first, second = server.names
        async with await connect(server, "carol", "carol") as conn:
            sh = await shell(conn)
            menu = await sh.expect(b"(q quits): ")
            assert first.encode() in menu
            assert second.encode() not in menu
            sh.type(f"{second}\r".encode())
            await sh.expect(f"no console {second} or no access".encode())
            sh.type(b"\x04")
            await asyncio.wait_for(sh.process.wait_closed(), 10)


async def test_window_size_and_changes_reach_the_hub(tmp_path) -> None:
    async with gateway(tmp_path) as server:
        name = server.names[0]
        hub = server.manager.get(name).hub
        async with await connect(server, f"alice:{name}", "alice") as conn:
            sh = await shell(conn, size=(100, 30))
            await sh.expect(b"read-write")
            assert (hub.attachments[0].cols, hub.attachments[0].rows) == (100, 30)
            sh.process.change_terminal_size(120, 40)
            await wait_for(lambda: (hub.attachments[0].cols, hub.attachments[0].rows)
                           == (120, 40), 5, "the resize")
            sh.type(b"~.")
            await asyncio.wait_for(sh.process.wait_closed(), 10)


# --- OpenSSH client on a pty ----------------------------------------------------------------


def openssh(server: Any, tmp_path: Path, login: str, key: str, *extra: str) -> PtyChild:
    ssh = shutil.which("ssh")
    if ssh is None:
        pytest.skip("OpenSSH client not installed (apt-get install openssh-client)")
    args = ["-tt", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-i", str(server.keys.path(key)), "-p", str(server.ssh_port), *extra,
            "-l", login, "127.0.0.1"]
    env = client_env(tmp_path)
    env.pop("SSH_AUTH_SOCK", None)
    return PtyChild(args, env, program=[ssh])


async def test_openssh_client_break_and_tilde_tilde_dot(tmp_path) -> None:
    async with gateway(tmp_path) as server:
        name = server.names[0]
        child = openssh(server, tmp_path, f"alice:{name}", "alice")
        try:
            await child.expect(b"read-write")
            child.type(b"uname\r")
            await child.expect(b"Linux")
            # OpenSSH's own ~B sends an ssh BREAK: the gateway makes it a serial BREAK.
            child.type(b"~B")
            child.type(b"h")
            await child.expect(b"sysrq: HELP")
            # ~~. reaches the gateway as ~. and leaves.
            child.type(b"\r~~.")
            await child.expect(f"left {name}".encode())
            assert await child.wait() == 0
        finally:
            child.close()


async def test_openssh_wrong_key_and_menu(tmp_path) -> None:
    async with gateway(tmp_path) as server:
        child = openssh(server, tmp_path, "alice", "eve")
        try:
            assert await child.wait() == 255
            await child.expect(b"Permission denied")
        finally:
            child.close()
        child = openssh(server, tmp_path, "alice", "alice", "-e", "none")
        try:
            await child.expect(b"(q quits): ")
            child.type(b"1\r")
            await child.expect(b"read-write")
            child.type(b"~.")
            await child.expect(b"(q quits): ")
            child.type(b"q\r")
            assert await child.wait() == 0
        finally:
            child.close()


async def test_escapes_work_after_the_host_queries_the_cursor(tmp_path) -> None:
    # The gateway's parser must pass over the answer the user's terminal types back to
    # a prompt's cursor query (busybox ash, systemd's serial getty).
    async with gateway(tmp_path) as server:
        name = server.names[0]
        host = server.fleet.bmcs[0].host
        host.query_cursor = True
        typed = HostInput(host)
        async with await connect(server, f"alice:{name}", "alice") as conn:
            sh = await shell(conn)
            await sh.expect(f"{name} as alice, read-write".encode())
            sh.type(b"\r")
            await sh.expect(b"# \x1b[6n")
            sh.type(b"\x1b[3;16R")
            await wait_for(lambda: host.cursor_replies == 1, 5, "the shell to read the answer")
            sh.type(b"~Bh")
            await sh.expect(b"sysrq: HELP")
            sh.type(b"\r")
            await sh.expect(b"# \x1b[6n")
            sh.type(b"\x1b[3;16R~.")
            await sh.expect(f"left {name}".encode())
            await asyncio.wait_for(sh.process.wait_closed(), 10)
        assert b"~" not in typed.data, bytes(typed.data)
