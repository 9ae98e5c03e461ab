"""`solgate console` on a real pty: `~w`, `--force`, `~D`, and where the token comes from.

Same setting as test_terminal.py (an in-process server, a simulated BMC over UDP, the
client as a child process on a pty); these are the escapes and options an operator
reaches for when sharing a console, and the two ways a token reaches the client.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from solgate.users import new_api_token
from tests.engine_helpers import event_lines, wait_for
from tests.terminal_helpers import PtyChild, client_env, console_on_pty, live_server

pytestmark = pytest.mark.timeout(90)


def log_of(server, name: str) -> bytes:
    return (Path(server.config.data_dir) / "logs" / f"{name}.log").read_bytes()


async def test_w_takes_the_lock_and_force_takes_it_on_attach(tmp_path) -> None:
    async with live_server(tmp_path) as server:
        hub = server.manager.get(server.names[0]).hub
        with console_on_pty(tmp_path, server) as first:
            await first.expect(b"~. leaves")
            await wait_for(lambda: hub.viewers == 1, 5, "the first attachment")
            holder = hub.attachments[0]
            assert holder.is_writer
            with console_on_pty(tmp_path, server) as second:
                await second.expect(b"~. leaves")
                await wait_for(lambda: hub.viewers == 2, 5, "the second attachment")
                other = hub.attachments[1]
                assert not other.is_writer  # the lock was taken: it watches
                second.type(b"\r~w")
                await wait_for(lambda: other.is_writer, 5, "~w to take the write lock")
                assert not holder.is_writer
                # Now the second one types and the host answers it.
                second.type(b"uname\r")
                await second.expect(b"Linux")
                with console_on_pty(tmp_path, server, "--force") as third:
                    await third.expect(b"~. leaves")
                    await wait_for(lambda: hub.viewers == 3, 5, "the third attachment")
                    forced = hub.attachments[2]
                    await wait_for(lambda: forced.is_writer, 5, "--force to take the lock")
                    assert not other.is_writer
                    third.type(b"\r~.")
                    assert await third.wait() == 0
                second.type(b"\r~.")
                assert await second.wait() == 0
            first.type(b"\r~.")
            assert await first.wait() == 0
        log = log_of(server, server.names[0])
        assert b"took the write lock" in log


async def test_force_reconnect_escape_drops_and_regains_sol(tmp_path) -> None:
    async with live_server(tmp_path) as server:
        name = server.names[0]
        worker = server.manager.get(name)
        with console_on_pty(tmp_path, server) as child:
            await child.expect(b"~. leaves")
            child.type(b"\r~D")
            await child.expect(b"asked the BMC to drop SOL; reconnecting")
            await wait_for(lambda: event_lines(log_of(server, name)).count(
                "SOL up (cipher suite 17)") >= 2, 20, "SOL to come back after ~D")
            await wait_for(lambda: worker.state == "active", 10, "the console to be active")
            child.type(b"uname\r")
            await child.expect(b"Linux")  # still attached, and typing works again
            child.type(b"~.")
            assert await child.wait() == 0
        lines = event_lines(log_of(server, name))
        assert "forced deactivate and reconnect by local" in lines, lines


USERS = """
[users.alice]
role = "operator"
api_tokens = ["{hash}"]
"""


async def test_token_from_the_environment_or_a_file_never_an_argument(tmp_path) -> None:
    token, token_hash = new_api_token()
    async with live_server(tmp_path, auth="login",
                           extra=USERS.format(hash=token_hash)) as server:
        name = server.names[0]
        env = client_env(tmp_path, SOLGATE_TOKEN=token)
        child = PtyChild(["console", name, "--server", server.url], env)
        try:
            await child.expect(f"{name} as alice".encode())
            child.type(b"~.")
            assert await child.wait() == 0
        finally:
            child.close()
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        child = PtyChild(["console", name, "--server", server.url,
                          "--token-file", str(token_file)], client_env(tmp_path))
        try:
            await child.expect(f"{name} as alice".encode())
            child.type(b"~.")
            assert await child.wait() == 0
            assert child.modes() == child.modes_before
        finally:
            child.close()
        # Without any token the server says 401 and the client one line with the fix.
        child = PtyChild(["console", name, "--server", server.url], client_env(tmp_path))
        try:
            await child.expect(b"SOLGATE_TOKEN")
            assert await child.wait() == 1
            assert child.modes() == child.modes_before
        finally:
            child.close()
    # And there is no option that would put a token into the process list.
    help_child = PtyChild(["console", "--help"], client_env(tmp_path))
    try:
        await help_child.expect(b"--token-file FILE")
        assert await help_child.wait() == 0
        assert b"--token " not in bytes(help_child.buffer)
        assert b"--token=" not in bytes(help_child.buffer)
    finally:
        help_child.close()
