"""`solgate console` on a real pty against a real server and a simulated BMC.

Each test runs `run_server` in this process (auth = "none", loopback, a free port)
with a one-BMC `SimFleet` whose host sits at its shell prompt, and starts
`python -m solgate.cli console` as a child whose stdin/stdout/stderr are the slave
side of a pty (its controlling terminal, so SIGWINCH works). The test reads the
master side and types into it, and compares the slave's termios modes before and
after to prove the terminal is put back.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest

from solgate.errors import ConfigError
from solgate.terminal import ServerEscaper, console_from_ssh_command, resolve_server_url
from tests.engine_helpers import wait_for
from tests.terminal_helpers import (
    PtyChild,
    client_env,
    console_on_pty,
    live_server,
    set_winsize,
)

# --- unit tests of the pieces -------------------------------------------------------------


def test_server_escaper_doubles_only_at_line_start() -> None:
    esc = ServerEscaper("~")
    assert esc.escape(b"~.") == b"~~."
    assert esc.escape(b"a~b") == b"a~b"
    assert esc.escape(b"\r~B") == b"\r~~B"
    # Split across chunks the same way.
    esc = ServerEscaper("~")
    assert esc.escape(b"ls\r") + esc.escape(b"~") + esc.escape(b"~") == b"ls\r~~~"
    assert ServerEscaper(None).escape(b"~.") == b"~."


def test_server_escaper_passes_over_terminal_replies_like_the_server() -> None:
    # After a cursor position answer the server's parser is still at line start, so a
    # `~` this client sends as data must still be doubled there.
    esc = ServerEscaper("~")
    assert esc.escape(b"\r\x1b[3;16R~x") == b"\r\x1b[3;16R~~x"
    assert esc.escape(b"\r\x1b[A~x") == b"\r\x1b[A~x"  # an arrow key is typing


def test_ssh_original_command_selects_the_console() -> None:
    assert console_from_ssh_command(None, "web01") == ("web01", set())
    assert console_from_ssh_command(None, "console web01 --read-only") == (
        "web01", {"read_only"})
    assert console_from_ssh_command("web01", None) == ("web01", set())
    assert console_from_ssh_command("web01", "web01 --force") == ("web01", {"force"})
    with pytest.raises(ConfigError, match="limited to console 'web01'"):
        console_from_ssh_command("web01", "db01")
    with pytest.raises(ConfigError, match="not allowed"):
        console_from_ssh_command(None, "web01 --server http://evil")
    with pytest.raises(ConfigError, match="which console"):
        console_from_ssh_command(None, None)


def test_server_url_precedence() -> None:
    assert resolve_server_url("https://sg:8443", {"SOLGATE_URL": "http://x"}, None) == (
        "https://sg:8443")
    assert resolve_server_url(None, {"SOLGATE_URL": "ws://x:1"}, None) == "http://x:1"
    assert resolve_server_url(None, {}, ("0.0.0.0", 8080, False)) == "http://127.0.0.1:8080"
    assert resolve_server_url(None, {}, ("::1", 8443, True)) == "https://[::1]:8443"
    with pytest.raises(ConfigError, match="--server"):
        resolve_server_url(None, {}, None)


# --- the client on a pty --------------------------------------------------------------------


async def test_console_types_breaks_and_leaves_with_the_terminal_restored(tmp_path) -> None:
    async with live_server(tmp_path) as server:
        with console_on_pty(tmp_path, server) as child:
            await child.expect(b"\x1b[H\x1b[2J")  # the snapshot: a repaint, at once
            await child.expect(b"~. leaves")
            child.type(b"\r")
            await child.expect(b"# ")
            assert child.modes() != child.modes_before  # raw mode while attached
            child.type(b"uname\r")
            await child.expect(b"Linux")
            child.type(b"~B")
            await wait_for(lambda: server.manager.get(server.names[0]).hub.viewers == 1, 10)
            child.type(b"h")
            await child.expect(b"sysrq: HELP")
            # ~? is answered locally.
            child.type(b"\r~?")
            await child.expect(b"detach from the console")
            child.type(b"~.")
            assert await child.wait() == 0
            assert child.modes() == child.modes_before
        await wait_for(lambda: server.manager.get(server.names[0]).hub.viewers == 0, 5,
                       "the attachment to end")


async def test_window_size_follows_the_terminal(tmp_path) -> None:
    async with live_server(tmp_path) as server:
        hub = server.manager.get(server.names[0]).hub
        with console_on_pty(tmp_path, server) as child:
            await child.expect(b"~. leaves")
            assert (hub.attachments[0].cols, hub.attachments[0].rows) == (80, 24)
            set_winsize(child.master, 132, 43)  # the kernel sends SIGWINCH
            await wait_for(lambda: (hub.attachments[0].cols, hub.attachments[0].rows)
                           == (132, 43), 5, "the resize to reach the server")
            child.type(b"~.")
            assert await child.wait() == 0


async def test_escape_char_option_and_server_tilde_passes_through(tmp_path) -> None:
    async with live_server(tmp_path) as server:
        with console_on_pty(tmp_path, server, "--escape", "&") as child:
            await child.expect(b"&. leaves")
            # "~." is plain data now: it reaches the host's shell, the client stays.
            child.type(b"~.\r")
            await child.expect(b"~.")
            await child.expect(b"# ")
            assert child.proc.poll() is None
            child.type(b"&.")
            assert await child.wait() == 0
            assert child.modes() == child.modes_before


async def test_read_only_never_sends_keys(tmp_path) -> None:
    async with live_server(tmp_path) as server:
        worker = server.manager.get(server.names[0])
        sent: list[bytes] = []
        original = worker.send_input
        worker.send_input = lambda data: (sent.append(data), original(data))[1]
        with console_on_pty(tmp_path, server, "--read-only") as child:
            await child.expect(b"read-only (--read-only)")
            child.type(b"uname\r")
            await child.expect(b"input is not sent")
            child.type(b"~B")
            await child.expect(b"cannot send a BREAK")
            assert worker.hub.writer is None  # a free lock is not taken either
            child.type(b"~.")
            assert await child.wait() == 0
        assert sent == []


async def test_lost_server_restores_the_terminal_and_exits_nonzero(tmp_path) -> None:
    async with live_server(tmp_path) as server:
        with console_on_pty(tmp_path, server, "--retries", "1") as child:
            await child.expect(b"~. leaves")
            await server.stop()
            await child.expect(b"reconnecting in")
            await child.expect(b"giving up", timeout=15)
            assert await child.wait() == 1
            assert child.modes() == child.modes_before
            await child.expect(b"reconnect attempts failed")  # the one-line error


async def test_sigterm_restores_the_terminal(tmp_path) -> None:
    async with live_server(tmp_path) as server:
        with console_on_pty(tmp_path, server) as child:
            await child.expect(b"~. leaves")
            child.proc.send_signal(signal.SIGTERM)
            assert await child.wait() == 128 + signal.SIGTERM
            assert child.modes() == child.modes_before


async def test_refusals_are_one_line(tmp_path) -> None:
    async with live_server(tmp_path) as server:
        env = client_env(tmp_path)

        async def run(*args: str, server_args: tuple[str, ...] = ("--server", server.url),
                      **extra: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "solgate.cli", "console", *args, *server_args,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={**env, **extra})
            out, err = await asyncio.wait_for(proc.communicate(), 20)
            return proc.returncode, err.decode()

        code, err = await run("nosuch")
        assert code == 1
        assert err.strip() == ("solgate: no console 'nosuch' or no access to it (HTTP 404); "
                               "check the name on the console list")
        code, err = await run(server.names[0], SOLGATE_TOKEN="sgt_wrong")
        assert code == 1
        assert "the server refused the token" in err
        assert len(err.strip().splitlines()) == 1
        # The server address from a configuration whose BMC password this machine lacks.
        config = tmp_path / "client.toml"
        config.write_text(f'[server]\nlisten = "127.0.0.1:{server.port}"\n'
                          '[consoles.x]\nhost = "10.0.0.9"\npassword_env = "NOT_SET_HERE"\n')
        code, err = await run("nosuch", server_args=("-c", str(config)))
        assert code == 1
        assert "no console 'nosuch' or no access" in err
        code, err = await run(server.names[0], SSH_ORIGINAL_COMMAND="other")
        assert code == 1
        assert "limited to console" in err


async def test_ssh_original_command_picks_the_console_on_a_pty(tmp_path) -> None:
    async with live_server(tmp_path, count=2) as server:
        env = client_env(tmp_path, SSH_ORIGINAL_COMMAND=server.names[1])
        child = PtyChild(["console", "--server", server.url], env)
        try:
            await child.expect(f"{server.names[1]} as local".encode())
            child.type(b"hostname\r")
            await child.expect(f"\n{server.names[1]}".encode())
            child.type(b"~.")
            assert await child.wait() == 0
        finally:
            child.close()
