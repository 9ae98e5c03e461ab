"""`solgate console` escapes, the write lock between users, and tokens, on a real pty.

The same setting as test_terminal.py (helpers in terminal_helpers.py): `run_server` in
this process with a one-BMC `SimFleet` over UDP, and the client as a child process
whose controlling terminal is a pty. test_terminal_locks_and_tokens.py has the happy
paths (one user on several terminals); this file has what a user sees around them:
tildes that must reach the host, help that must not, the notices two users get when
the lock moves between them, what a read-only attachment or a viewer's role may not
do, and every way a token can be wrong.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from solgate.users import new_api_token
from tests.engine_helpers import HostInput, event_lines, wait_for
from tests.terminal_helpers import PtyChild, client_env, console_on_pty, live_server

pytestmark = pytest.mark.timeout(120)

HELP_LINES = (
    b"~.  - detach from the console",
    b"~B  - send a serial break",
    b"~D  - force the BMC to drop SOL and reconnect",
    b"~w  - take the write lock",
    b"~?  - this help",
    b"~~  - send one ~",
)


def log_of(server: Any, name: str) -> bytes:
    return (Path(server.config.data_dir) / "logs" / f"{name}.log").read_bytes()


def users_config(**users: tuple[str, str]) -> str:
    """`[users.NAME]` tables, each with a role and one API token hash."""
    return "".join(
        f'\n[users.{name}]\nrole = "{role}"\napi_tokens = ["{token_hash}"]\n'
        for name, (role, token_hash) in users.items()
    )


def as_user(tmp_path: Path, server: Any, token: str, *args: str) -> PtyChild:
    """`solgate console` on a pty with the token in $SOLGATE_TOKEN."""
    return PtyChild(
        ["console", server.names[0], "--server", server.url, *args],
        client_env(tmp_path, SOLGATE_TOKEN=token),
    )


async def leave(child: PtyChild) -> None:
    child.type(b"\r~.")
    assert await child.wait() == 0
    assert child.modes() == child.modes_before


# --- tildes and help ------------------------------------------------------------------------


async def test_tildes_reach_the_host_as_typed_except_the_doubled_one(tmp_path) -> None:
    async with live_server(tmp_path) as server:
        typed = HostInput(server.fleet.bmcs[0].host)
        hub = server.manager.get(server.names[0]).hub
        with console_on_pty(tmp_path, server) as child:
            await child.expect(b"~. leaves")
            child.type(b"\r")
            await child.expect(b"# ")
            # `~~.` at line start is how a user behind another `~` layer sends `~.`: the
            # host gets `~.` once, and this client stays attached.
            start = len(typed.data)
            child.type(b"~~.\r")
            await child.expect(b"sh: ~.: command not found")
            assert bytes(typed.data[start:]) == b"~.\r"
            assert child.proc.poll() is None
            assert hub.viewers == 1
            # The two tildes of `~~` may come in separate reads (slow typing).
            start = len(typed.data)
            child.type(b"~")
            await asyncio.sleep(0.3)  # so the client reads it alone
            assert bytes(typed.data[start:]) == b""  # held back: it may start an escape
            child.type(b"~")
            child.type(b"y\r")
            await child.expect(b"sh: ~y: command not found")
            assert bytes(typed.data[start:]) == b"~y\r"
            # Mid-line a tilde is plain data, however many there are.
            start = len(typed.data)
            child.type(b"echo a~~b~.c\r")
            await child.expect(b"\na~~b~.c")
            assert bytes(typed.data[start:]) == b"echo a~~b~.c\r"
            assert child.proc.poll() is None
            await leave(child)


async def test_help_lists_every_escape_and_sends_nothing_to_the_host(tmp_path) -> None:
    async with live_server(tmp_path) as server:
        typed = HostInput(server.fleet.bmcs[0].host)
        with console_on_pty(tmp_path, server) as child:
            await child.expect(b"~. leaves")
            child.type(b"\r")
            await child.expect(b"# ")
            start = len(typed.data)
            child.type(b"~?")
            shown = await child.expect(b"(Behind ssh")
            for line in HELP_LINES:
                assert line in shown, line
            # Help leaves the input at line start: a command typed next is whole, and
            # it is the only thing the host got.
            child.type(b"uname\r")
            await child.expect(b"Linux")
            assert bytes(typed.data[start:]) == b"uname\r"
            # `~?~.` in one read: the help, then leave.
            child.type(b"~?~.")
            await child.expect(b"~~  - send one ~")
            assert await child.wait() == 0
            assert child.modes() == child.modes_before
            assert bytes(typed.data[start:]) == b"uname\r"


async def test_help_follows_the_escape_option(tmp_path) -> None:
    async with live_server(tmp_path) as server:
        typed = HostInput(server.fleet.bmcs[0].host)
        with console_on_pty(tmp_path, server, "--escape", "&") as child:
            await child.expect(b"&. leaves, &? help")
            start = len(typed.data)
            child.type(b"&?")
            shown = await child.expect(b"(Escape character is &.)")
            assert b"&D  - force the BMC to drop SOL and reconnect" in shown
            assert b"&&  - send one &" in shown
            assert b"~." not in shown
            child.type(b"&.")
            assert await child.wait() == 0
            assert bytes(typed.data[start:]) == b""


# --- the write lock between users -----------------------------------------------------------


async def test_w_and_force_move_the_lock_between_users_who_are_told(tmp_path) -> None:
    alice, alice_hash = new_api_token()
    bob, bob_hash = new_api_token()
    extra = users_config(alice=("operator", alice_hash), bob=("operator", bob_hash))
    async with live_server(tmp_path, auth="login", extra=extra) as server:
        name = server.names[0]
        hub = server.manager.get(name).hub
        typed = HostInput(server.fleet.bmcs[0].host)
        first = as_user(tmp_path, server, alice)
        second: PtyChild | None = None
        try:
            await first.expect(f"{name} as alice, read-write".encode())
            await wait_for(lambda: hub.writer == "alice", 5, "alice to hold the lock")
            # bob attaches while alice writes: he is told who holds it and how to take it.
            second = as_user(tmp_path, server, bob)
            await second.expect(b"as bob, alice holds the write lock (~w takes it)")
            # Bob's keys do not reach the host while alice holds the lock.
            start = len(typed.data)
            second.type(b"date\r")
            await second.expect(b"read-only: take the write lock to type")
            assert bytes(typed.data[start:]) == b""
            # ~w: bob writes, alice is told and her keys stop reaching the host.
            second.type(b"~w")
            await first.expect(b"bob took the write lock; ~w takes it back")
            assert hub.writer == "bob"
            second.type(b"hostname\r")
            await second.expect(f"\n{name}".encode())
            start = len(typed.data)
            first.type(b"date\r")
            await first.expect(b"read-only: take the write lock to type")
            assert bytes(typed.data[start:]) == b""
            # ~w back: alice writes again, bob is told.
            first.type(b"~w")
            await second.expect(b"alice took the write lock; ~w takes it back")
            assert hub.writer == "alice"
            # bob leaves and comes back with --force: the lock is his on attach.
            await leave(second)
            second.close()
            second = as_user(tmp_path, server, bob, "--force")
            await second.expect(b"as bob,")
            await first.expect(b"bob took the write lock; ~w takes it back")
            assert hub.writer == "bob"
            second.type(b"uname\r")
            await second.expect(b"Linux")
            await leave(second)
            await leave(first)
        finally:
            first.close()
            if second is not None:
                second.close()
        lines = event_lines(log_of(server, name))
        assert any("bob" in line and "took the write lock" in line for line in lines), lines


async def test_a_viewer_cannot_take_the_lock_type_or_force_a_reconnect(tmp_path) -> None:
    alice, alice_hash = new_api_token()
    carol, carol_hash = new_api_token()
    extra = users_config(alice=("operator", alice_hash), carol=("viewer", carol_hash))
    async with live_server(tmp_path, auth="login", extra=extra) as server:
        name = server.names[0]
        worker = server.manager.get(name)
        typed = HostInput(server.fleet.bmcs[0].host)
        writer = as_user(tmp_path, server, alice)
        viewer = as_user(tmp_path, server, carol, "--force")  # --force cannot lift a role
        try:
            await writer.expect(b"as alice, read-write")
            await viewer.expect(b"as carol, read-only: your role cannot type")
            assert worker.hub.writer == "alice"
            start = len(typed.data)
            viewer.type(b"\r~w")
            await viewer.expect(b"read-only: your role cannot take the write lock")
            viewer.type(b"~D")
            await viewer.expect(
                f"forced reconnect refused (HTTP 403) user 'carol' may only watch '{name}'".encode()
            )
            viewer.type(b"reboot\r")
            await viewer.expect(b"read-only: your role cannot type on this console")
            assert bytes(typed.data[start:]) == b""
            assert worker.hub.writer == "alice"
            assert worker.state == "active"
            # What the host prints still reaches the viewer.
            writer.type(b"hostname\r")
            await viewer.expect(f"\n{name}".encode())
            await leave(viewer)
            await leave(writer)
        finally:
            writer.close()
            viewer.close()
        assert not any("forced deactivate" in line for line in event_lines(log_of(server, name)))


async def test_read_only_option_refuses_w_and_d_locally(tmp_path) -> None:
    async with live_server(tmp_path) as server:
        worker = server.manager.get(server.names[0])
        with console_on_pty(tmp_path, server, "--read-only", "--force") as child:
            await child.expect(b"read-only (--read-only)")
            child.type(b"\r~w")
            await child.expect(b"read-only (--read-only): cannot take the write lock")
            child.type(b"~D")
            await child.expect(b"read-only (--read-only): cannot force a reconnect")
            assert worker.hub.writer is None
            assert worker.state == "active"
            child.type(b"~.")
            assert await child.wait() == 0
        assert not any(
            "forced deactivate" in line for line in event_lines(log_of(server, server.names[0]))
        )


# --- ~D as an operator with a token ---------------------------------------------------------


async def test_operator_d_reconnects_sol_and_keeps_the_same_attachment(tmp_path) -> None:
    alice, alice_hash = new_api_token()
    async with live_server(
        tmp_path, auth="login", extra=users_config(alice=("operator", alice_hash))
    ) as server:
        name = server.names[0]
        worker = server.manager.get(name)
        child = as_user(tmp_path, server, alice)
        try:
            await child.expect(b"as alice, read-write")
            await wait_for(lambda: worker.hub.viewers == 1, 5, "the attachment")
            attachment = worker.hub.attachments[0]
            ups = event_lines(log_of(server, name)).count("SOL up (cipher suite 17)")
            child.type(b"\r~D")
            await child.expect(b"asked the BMC to drop SOL; reconnecting")
            await wait_for(
                lambda: event_lines(log_of(server, name)).count("SOL up (cipher suite 17)") > ups,
                20,
                "SOL to come back after ~D",
            )
            await wait_for(lambda: worker.state == "active", 10, "the console to be active")
            # The terminal never left: the same attachment, still the writer, typing works.
            assert worker.hub.attachments == (attachment,)
            assert attachment.is_writer
            child.type(b"uname\r")
            await child.expect(b"Linux")
            assert b"connection lost" not in bytes(child.buffer)
            await leave(child)
        finally:
            child.close()
        lines = event_lines(log_of(server, name))
        forced = lines.index("forced deactivate and reconnect by alice")
        assert "SOL up (cipher suite 17)" in lines[forced:], lines


# --- tokens ---------------------------------------------------------------------------------


async def test_token_from_the_default_file_and_never_in_the_process_list(tmp_path) -> None:
    alice, alice_hash = new_api_token()
    async with live_server(
        tmp_path, auth="login", extra=users_config(alice=("operator", alice_hash))
    ) as server:
        token_file = tmp_path / ".config" / "solgate" / "token"  # HOME is tmp_path
        token_file.parent.mkdir(parents=True)
        token_file.write_text(f"{alice}\n")
        token_file.chmod(0o600)
        with console_on_pty(tmp_path, server) as child:
            await child.expect(b"as alice, read-write")
            cmdline = Path(f"/proc/{child.proc.pid}/cmdline").read_bytes()
            assert alice.encode() not in cmdline
            assert b"warning" not in bytes(child.buffer)
            await leave(child)
        # A file others may read still works, with a warning that says how to fix it.
        token_file.chmod(0o644)
        with console_on_pty(tmp_path, server) as child:
            await child.expect(
                f"warning: {token_file} is readable by other users; chmod 600 {token_file}".encode()
            )
            await child.expect(b"as alice, read-write")
            await leave(child)


async def test_a_wrong_token_is_one_line_and_the_terminal_is_restored(tmp_path) -> None:
    alice, alice_hash = new_api_token()
    wrong, _ = new_api_token()
    async with live_server(
        tmp_path, auth="login", extra=users_config(alice=("operator", alice_hash))
    ) as server:
        refusal = (
            b"solgate: the server refused the token (HTTP 401); set $SOLGATE_TOKEN or "
            b"put a valid token in ~/.config/solgate/token (make one with `solgate "
            b"token`)\r\n"
        )
        token_file = tmp_path / "token"
        token_file.write_text(f"{wrong}\n")
        token_file.chmod(0o600)
        good_file = tmp_path / "good-token"
        good_file.write_text(f"{alice}\n")
        good_file.chmod(0o600)
        for args, env in (
            ((), {"SOLGATE_TOKEN": wrong}),
            (("--token-file", str(token_file)), {}),
            # $SOLGATE_TOKEN comes first: a stale one is not silently skipped for the file.
            (("--token-file", str(good_file)), {"SOLGATE_TOKEN": wrong}),
        ):
            with console_on_pty(tmp_path, server, *args, **env) as child:
                assert await child.wait() == 1
                assert child.modes() == child.modes_before
                await child.expect(refusal)
                assert bytes(child.buffer) == refusal, bytes(child.buffer)
        assert server.manager.get(server.names[0]).hub.viewers == 0
        with console_on_pty(tmp_path, server, "--token-file", str(tmp_path / "nosuch")) as child:
            assert await child.wait() == 1
            await child.expect(b"no such file\r\n")
            assert (
                bytes(child.buffer)
                == (f"solgate: --token-file {tmp_path / 'nosuch'}: no such file\r\n").encode()
            )


async def test_a_token_option_is_refused_without_echoing_the_token(tmp_path) -> None:
    """`--token VALUE` must not pass as an abbreviation of --token-file and print VALUE."""
    secret, _ = new_api_token()
    for args in (("--token", secret), (f"--token={secret}",)):
        child = PtyChild(
            ["console", "web01", "--server", "http://127.0.0.1:9", *args], client_env(tmp_path)
        )
        try:
            assert await child.wait() != 0
            await child.expect(b"SOLGATE_TOKEN")
            assert secret.encode() not in bytes(child.buffer), bytes(child.buffer)
            assert child.modes() == child.modes_before
        finally:
            child.close()


# --- a host that asks the terminal where the cursor is ------------------------------------------

CURSOR_QUERY = b"\x1b[6n"
CURSOR_REPLY = b"\x1b[3;16R"  # what the user's terminal answers, as if typed


async def prompt_and_answer(child: PtyChild, host: Any, first_read: bytes = b"") -> None:
    """Enter; the prompt asks for the cursor; answer as a terminal does (its own read)."""
    seen = host.cursor_replies
    child.type(b"\r")
    await child.expect(b"# " + CURSOR_QUERY)
    child.type(CURSOR_REPLY + first_read)
    if not first_read:
        await wait_for(lambda: host.cursor_replies > seen, 5, "the shell to read the answer")


async def test_escapes_work_after_the_host_queries_the_cursor(tmp_path) -> None:
    # busybox ash and systemd's serial getty send ESC [ 6 n with each prompt; the answer
    # the user's terminal types back must not make the next ~ a mid-line tilde.
    async with live_server(tmp_path) as server:
        name = server.names[0]
        host = server.fleet.bmcs[0].host
        host.query_cursor = True
        typed = HostInput(host)
        worker = server.manager.get(name)
        with console_on_pty(tmp_path, server) as child:
            await child.expect(b"~. leaves")
            # ~B then h: a SysRq help from the kernel, not "~Bh: not found" from the shell.
            await prompt_and_answer(child, host)
            child.type(b"~B")
            await wait_for(
                lambda: "serial BREAK sent by local" in event_lines(log_of(server, name)),
                5, "the BREAK")
            child.type(b"h")
            await child.expect(b"sysrq: HELP")
            # ~D, with the answer and the escape in one read.
            await prompt_and_answer(child, host, b"~D")
            await child.expect(b"asked the BMC to drop SOL; reconnecting")
            await wait_for(lambda: event_lines(log_of(server, name)).count(
                "SOL up (cipher suite 17)") >= 2, 20, "SOL to come back after ~D")
            await wait_for(lambda: worker.state == "active", 10, "the console to be active")
            # Enter ~ . typed in one go: the answer comes between the ~ and the dot, and
            # still ~. leaves.
            seen = host.cursor_replies
            child.type(b"\r~")
            await child.expect(b"# " + CURSOR_QUERY)
            child.type(CURSOR_REPLY)
            await wait_for(lambda: host.cursor_replies > seen, 5, "the answer to pass the ~")
            child.type(b".")
            assert await child.wait() == 0
            assert child.modes() == child.modes_before
        assert b"~" not in typed.data, bytes(typed.data)
        assert host.cursor_replies >= 3
