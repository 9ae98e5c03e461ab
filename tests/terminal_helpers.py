"""Shared helpers of the terminal, ssh and revocation tests: a live server in this
process, `solgate console` on a real pty, an ssh shell."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solgate.cli.demo import demo_config_text
from solgate.config import parse_config
from solgate.daemon import run_server
from tests.engine_helpers import wait_for

REPO = Path(__file__).resolve().parents[1]


# The child makes the pty its controlling terminal (it is a session leader), then
# becomes `solgate`.
CTTY_WRAPPER = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'solgate.cli', *sys.argv[1:]])\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@dataclass
class LiveServer:
    """A running `solgate serve` (in process) and its simulated fleet."""

    url: str
    port: int
    manager: Any
    fleet: Any
    names: list[str]
    config: Any
    shutdown: asyncio.Event
    task: asyncio.Task[int]

    async def stop(self) -> None:
        self.shutdown.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 15)


def sim_config_factory(index: int, name: str) -> Any:
    from solgate.cli.demo import DEMO_PASSWORD
    from solgate.ipmi.codec import Privilege
    from solgate.sim.bmc import SimBmcConfig
    from solgate.sim.host import SimHost

    users = {"admin": (DEMO_PASSWORD.encode(), Privilege.ADMINISTRATOR)}
    return SimBmcConfig(name=name, users=users, host=SimHost(name, seed=index, powered=True))


@contextlib.asynccontextmanager
async def live_server(tmp_path: Path, *, count: int = 1, extra: str = "",
                      auth: str = "none") -> AsyncIterator[LiveServer]:
    """Fleet + run_server on a free port; every console active before it yields."""
    from solgate.sim.fleet import SimFleet

    fleet = SimFleet(count, base_port=0, config_factory=sim_config_factory)
    await fleet.start()
    server: LiveServer | None = None
    try:
        names = [h.name for h in fleet.bmcs]
        port = free_port()
        text = demo_config_text(fleet.ports, names, listen=f"127.0.0.1:{port}",
                                data_dir=str(tmp_path / "data"))
        if auth != "none":
            text = text.replace('auth = "none"', f'auth = "{auth}"')
        config = parse_config(text + "\n" + extra, "<test>", base_dir=tmp_path)
        shutdown = asyncio.Event()
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_ready(manager: Any, url: str | None, ssh: str | None) -> None:
            ready.set_result(manager)

        task = asyncio.create_task(run_server(config, shutdown=shutdown, on_ready=on_ready))
        await asyncio.wait({ready, task}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises the start-up error
        manager = ready.result()
        server = LiveServer(f"http://127.0.0.1:{port}", port, manager, fleet, names, config,
                            shutdown, task)
        await wait_for(lambda: all(c.state == "active" for c in manager.consoles()), 15,
                       "the consoles to become active")
        yield server
    finally:
        if server is not None:
            await server.stop()
        await fleet.stop()


class PtyChild:
    """A child process on the slave side of a fresh pty; the test holds the master."""

    def __init__(self, args: list[str], env: dict[str, str], *, cols: int = 80,
                 rows: int = 24, program: list[str] | None = None) -> None:
        self.master, self.slave = os.openpty()
        set_winsize(self.slave, cols, rows)
        self.modes_before = termios.tcgetattr(self.slave)
        argv = program or [sys.executable, "-c", CTTY_WRAPPER]
        self.proc = subprocess.Popen(
            [*argv, *args], stdin=self.slave, stdout=self.slave, stderr=self.slave,
            env=env, start_new_session=True, close_fds=True,
        )
        self.buffer = bytearray()
        self.mark = 0
        self._changed = asyncio.Event()
        os.set_blocking(self.master, False)
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every slave descriptor is closed
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self.buffer += data
        self._changed.set()

    async def expect(self, needle: bytes, timeout: float = 10.0) -> bytes:
        """Wait for `needle` after the last match; return what came up to its end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            at = self.buffer.find(needle, self.mark)
            if at >= 0:
                seen = bytes(self.buffer[self.mark:at + len(needle)])
                self.mark = at + len(needle)
                return seen
            left = deadline - loop.time()
            if left <= 0:
                tail = bytes(self.buffer[self.mark:])[-600:]
                raise AssertionError(f"no {needle!r} within {timeout} s; got {tail!r}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    async def wait(self, timeout: float = 15.0) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)

    def modes(self) -> list[Any]:
        return termios.tcgetattr(self.slave)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.master)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def client_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SOLGATE_", "SSH_", "PYTEST_"))}
    env.update(HOME=str(tmp_path), TERM="xterm", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


@contextlib.contextmanager
def console_on_pty(tmp_path: Path, server: LiveServer, *args: str, **env: str) -> Any:
    child = PtyChild(["console", server.names[0], "--server", server.url, *args],
                     client_env(tmp_path, **env))
    try:
        yield child
    finally:
        child.close()


class Shell:
    """An interactive asyncssh session with a pty, read into a buffer."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.buffer = bytearray()
        self.mark = 0

    async def expect(self, needle: bytes, timeout: float = 10.0) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            at = self.buffer.find(needle, self.mark)
            if at >= 0:
                seen = bytes(self.buffer[self.mark:at + len(needle)])
                self.mark = at + len(needle)
                return seen
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no {needle!r}; got {bytes(self.buffer[-600:])!r}")
            try:
                data = await asyncio.wait_for(self.process.stdout.read(4096), left)
            except TimeoutError:
                continue
            if not data:
                raise AssertionError(f"EOF before {needle!r}; got {bytes(self.buffer[-600:])!r}")
            self.buffer += data

    def type(self, data: bytes) -> None:
        self.process.stdin.write(data)
