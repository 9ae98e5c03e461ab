"""Independent clients accept the simulated BMC: ipmitool (lanplus) and FreeIPMI ipmiconsole.

Each test runs a one-BMC `SimFleet` on a free loopback port in this process (or `solgate
sim` itself, as an operator would, for what its options decide) and drives the real
client binary; `sol activate` / ipmiconsole need a terminal, so they run on a
pty whose output is collected by the event loop (no threads, no sleeps: every wait is
for a pattern, bounded by a timeout). Only child processes started here are killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from sim_helpers import make_target, running_fleet

from solgate.errors import PayloadActiveElsewhere
from solgate.ipmi.transport import IpmiClient
from solgate.sim.bmc import SimBmcConfig
from solgate.sim.fleet import make_host

pytestmark = pytest.mark.interop

IPMITOOL = shutil.which("ipmitool")
IPMICONSOLE = shutil.which("ipmiconsole") or (
    "/usr/sbin/ipmiconsole" if os.path.exists("/usr/sbin/ipmiconsole") else None)
TIMEOUT = 15.0


def need(binary: str | None, name: str) -> str:
    if binary is None:
        pytest.skip(f"{name} is not installed")
    return binary


def low_free_port() -> int:
    """A free UDP port below 32768: ipmiconsole 1.6.10 calls "127.0.0.1:40000" an invalid
    hostname (it parses the port as a signed 16-bit number), so port 0 will not do."""
    rng = random.Random()  # noqa: S311 - picking a port, not a secret
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free UDP port below 32768")


def fast_host_config(index: int, name: str) -> SimBmcConfig:
    """A host that boots quickly, so a test sees the whole boot log in a second or two."""
    return SimBmcConfig(name=name, host=make_host(name, seed=index, boot_speed=50.0))


def ipmitool_argv(port: int, suite: int, *command: str) -> list[str]:
    return [need(IPMITOOL, "ipmitool"), "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port),
            "-U", "admin", "-P", "password", "-C", str(suite), *command]


def ipmiconsole_argv(port: int, suite: int, *extra: str) -> list[str]:
    return [need(IPMICONSOLE, "ipmiconsole"), "-h", f"127.0.0.1:{port}", "-u", "admin",
            "-p", "password", "-I", str(suite), *extra]


async def run(argv: list[str]) -> tuple[int, str]:
    """Run a non-interactive client to completion; (exit code, stdout + stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


class PtyClient:
    """A client process on a pseudo-terminal; output is gathered by the event loop."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; output via add_reader
            argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
            start_new_session=True)
        os.close(slave)
        self.output = bytearray()
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except OSError:
            data = b""
        if not data:
            self._loop.remove_reader(self.master)
        self.output += data
        self._changed.set()

    async def expect(self, pattern: bytes, *, since: int = 0, timeout: float = TIMEOUT) -> int:
        """Wait until `pattern` (a regex) appears in the output after offset `since`;
        returns the offset just past the match."""
        regex = re.compile(pattern)

        async def wait() -> int:
            while True:
                if m := regex.search(bytes(self.output), since):
                    return m.end()
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{pattern!r} not seen within {timeout} s; output so far: "
                f"{bytes(self.output[-2000:])!r}") from None

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    async def wait_exit(self, timeout: float = TIMEOUT) -> int:
        for _ in range(int(timeout / 0.05)):
            if self.proc.poll() is not None:
                return self.proc.returncode
            await asyncio.sleep(0.05)
        raise AssertionError(f"client did not exit; output: {bytes(self.output[-2000:])!r}")

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.master)
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)  # our own child, by pid
            self.proc.wait(5)
        os.close(self.master)


@contextlib.asynccontextmanager
async def pty_client(argv: list[str]):
    client = PtyClient(argv)
    try:
        yield client
    finally:
        client.close()


# ------------------------------------------------------------------------ ipmitool


@pytest.mark.parametrize("suite", [3, 17])
async def test_ipmitool_chassis_power(suite):
    async with running_fleet(1, power_on=False) as fleet:
        port = fleet.bmcs[0].port
        assert await run(ipmitool_argv(port, suite, "chassis", "power", "status")) == (
            0, "Chassis Power is off\n")
        rc, out = await run(ipmitool_argv(port, suite, "chassis", "power", "on"))
        assert rc == 0, out
        assert fleet.bmcs[0].host.powered
        assert await run(ipmitool_argv(port, suite, "chassis", "power", "status")) == (
            0, "Chassis Power is on\n")


async def test_ipmitool_wrong_password_fails():
    async with running_fleet(1) as fleet:
        argv = ipmitool_argv(fleet.bmcs[0].port, 17, "chassis", "power", "status")
        argv[argv.index("password")] = "wrong"
        rc, out = await run(argv)
        assert rc != 0
        assert "Unable to establish" in out


@pytest.mark.parametrize("suite", [3, 17])
async def test_ipmitool_sol_session(suite):
    async with running_fleet(1, power_on=False, config_factory=fast_host_config) as fleet:
        port = fleet.bmcs[0].port
        async with pty_client(ipmitool_argv(port, suite, "sol", "activate")) as sol:
            at = await sol.expect(rb"\[SOL Session operational")
            assert (await run(ipmitool_argv(port, suite, "chassis", "power", "on")))[0] == 0
            at = await sol.expect(rb"Linux version", since=at)  # the boot log arrives
            at = await sol.expect(rb"[#$] $", since=at)  # a shell prompt
            sol.type(b"echo solgate\" \"ok\r")
            at = await sol.expect(rb"\nsolgate ok\r", since=at)  # typed text reached the shell
            sol.type(b"\r~B")
            sol.type(b"h")
            at = await sol.expect(rb"(?i)sysrq.*help", since=at)
            sol.type(b"\r~.")
            assert await sol.wait_exit() == 0
        # ipmitool deactivated on the way out: nothing is left to deactivate.
        rc, out = await run(ipmitool_argv(port, suite, "sol", "deactivate"))
        assert rc == 1
        assert "already de-activated" in out
        assert not fleet.bmcs[0].core.sol.active


async def test_ipmitool_sol_deactivate_evicts_the_owner():
    async with running_fleet(1, config_factory=fast_host_config) as fleet:
        port = fleet.bmcs[0].port
        async with pty_client(ipmitool_argv(port, 17, "sol", "activate")) as sol:
            await sol.expect(rb"\[SOL Session operational")
            rc, out = await run(ipmitool_argv(port, 17, "sol", "activate"))
            assert rc == 1
            assert "already active on another session" in out
            assert await run(ipmitool_argv(port, 17, "sol", "deactivate")) == (0, "")
            assert not fleet.bmcs[0].core.sol.active
            # ipmitool ignores the "deactivating" status; like on ipmi_sim it finds out when
            # its next keystroke is not acknowledged, and leaves.
            sol.type(b"x")
            await sol.expect(rb"Error sending SOL data|SOL session closed by BMC", timeout=20)
            assert await sol.wait_exit() == 1


# ------------------------------------------------------------------------ ipmiconsole


@pytest.mark.parametrize("suite", [3, 17])
async def test_ipmiconsole_sol_session(suite):
    async with running_fleet(1, base_port=low_free_port(), power_on=False,
                             config_factory=fast_host_config) as fleet:
        port = fleet.bmcs[0].port
        async with pty_client(ipmiconsole_argv(port, suite)) as sol:
            at = await sol.expect(rb"\[SOL established\]")
            assert (await run(ipmitool_argv(port, 17, "chassis", "power", "on")))[0] == 0
            at = await sol.expect(rb"Linux version", since=at)
            at = await sol.expect(rb"[#$] $", since=at)
            sol.type(b"echo solgate\" \"ok\r")
            at = await sol.expect(rb"\nsolgate ok\r", since=at)
            sol.type(b"&B")
            sol.type(b"h")
            at = await sol.expect(rb"(?i)sysrq.*help", since=at)
            sol.type(b"&.")
            assert await sol.wait_exit() == 0
        assert not fleet.bmcs[0].core.sol.active
        assert not fleet.bmcs[0].core.sessions


# ------------------------------------------------------------------------ K_g, cipher suites

KG = "two-key-kg-20-bytes!"  # 20 bytes, the most K_g may be


def kg_config(index: int, name: str) -> SimBmcConfig:
    return SimBmcConfig(name=name, kg=KG.encode())


@pytest.mark.parametrize("suite", [3, 17])
async def test_ipmitool_kg_login(suite):
    async with running_fleet(1, config_factory=kg_config) as fleet:
        port = fleet.bmcs[0].port
        status = ("chassis", "power", "status")
        ok = (0, "Chassis Power is off\n")  # kg_config's BMC has no host
        assert await run(ipmitool_argv(port, suite, "-k", KG, *status)) == ok
        assert await run(ipmitool_argv(port, suite, "-y", KG.encode().hex(), *status)) == ok
        for wrong in ([], ["-k", "not-the-right-kg"]):
            rc, out = await run(ipmitool_argv(port, suite, *wrong, *status))
            assert rc != 0
            assert "Unable to establish" in out


async def solgate_sim(*args: str) -> tuple[asyncio.subprocess.Process, int]:
    """`solgate sim` as an operator runs it; the port comes from the printed fragment."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from solgate.cli import main; sys.exit(main())",
        "sim", "--base-port", "0", *args,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
            assert line, "solgate sim exited before printing its fragment"
            if m := re.fullmatch(rb"port = (\d+)\n", line):
                return proc, int(m[1])
    except BaseException:
        await stop(proc)
        raise


async def stop(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM our own child by pid, as Ctrl-C would; SIGKILL if it does not stop."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0


def cipher_suite_ids(out: str) -> list[int]:
    """The ID column of `ipmitool channel getciphers` (one row per suite under a header)."""
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["ID", "IANA"], out
    return [int(line.split()[0]) for line in lines[1:] if line.strip()]


@pytest.mark.parametrize("suite", [3, 17])
async def test_ipmitool_getciphers_lists_what_solgate_sim_accepts(suite):
    need(IPMITOOL, "ipmitool")
    proc, port = await solgate_sim()
    try:
        rc, out = await run(ipmitool_argv(port, suite, "channel", "getciphers", "ipmi"))
        assert rc == 0, out
        assert cipher_suite_ids(out) == [1, 2, 3, 17]
        rows = {int(line.split()[0]): line.split()[2:] for line in out.splitlines()[1:]}
        assert rows[17] == ["hmac_sha256", "sha256_128", "aes_cbc_128"]
        assert rows[3] == ["hmac_sha1", "hmac_sha1_96", "aes_cbc_128"]
    finally:
        assert await stop(proc) == 0


async def test_ipmitool_getciphers_follows_the_cipher_suites_option():
    need(IPMITOOL, "ipmitool")
    proc, port = await solgate_sim("--cipher-suites", "17")
    try:
        rc, out = await run(ipmitool_argv(port, 17, "channel", "getciphers", "ipmi"))
        assert rc == 0, out
        assert cipher_suite_ids(out) == [17]
        rc, out = await run(ipmitool_argv(port, 3, "chassis", "power", "status"))
        assert rc != 0  # suite 3 is no longer accepted
    finally:
        assert await stop(proc) == 0


# ------------------------------------------------------------------------ ipmiconsole --deactivate


@pytest.mark.parametrize("holder", ["phantom", "solgate"])
async def test_ipmiconsole_deactivate_frees_a_held_sol(holder):
    need(IPMICONSOLE, "ipmiconsole")
    async with running_fleet(1, base_port=low_free_port()) as fleet:
        bmc = fleet.bmcs[0]
        target = make_target(port=bmc.port)
        async with contextlib.AsyncExitStack() as stack:
            if holder == "phantom":
                bmc.faults.phantom_sol_owner = True  # applied at the next datagram
            else:
                owner = await stack.enter_async_context(
                    await asyncio.wait_for(IpmiClient.connect(target), TIMEOUT))
                await owner.activate_sol()
            client = await stack.enter_async_context(
                await asyncio.wait_for(IpmiClient.connect(target), TIMEOUT))
            assert bmc.core.sol.active
            with pytest.raises(PayloadActiveElsewhere):
                await client.activate_sol()
            rc, out = await run(ipmiconsole_argv(bmc.port, 17, "--deactivate"))
            assert rc == 0, out
            assert not bmc.core.sol.active
            assert not (await client.payload_activation_status()).is_active()
            await client.activate_sol()  # a console may now take it
            assert bmc.core.sol.owner == client.session.bmc_session_id


async def test_ipmitool_reads_the_simulated_sel_after_a_panic_and_a_power_cycle():
    def at_prompt(index: int, name: str) -> SimBmcConfig:
        return SimBmcConfig(name=name, host=make_host(name, seed=index, powered=True))

    async with running_fleet(1, config_factory=at_prompt) as fleet:
        bmc = fleet.bmcs[0]
        loop = asyncio.get_running_loop()
        bmc.host.write(b"panic\r", loop.time())  # the host's IPMI driver logs the stop
        assert bmc.host.panicked
        rc, out = await run(ipmitool_argv(bmc.port, 17, "chassis", "power", "cycle"))
        assert rc == 0, out
        rc, out = await run(ipmitool_argv(bmc.port, 17, "sel", "list"))
        assert rc == 0, out
        events = [line.split(" | ", 3)[3] for line in out.splitlines()]
        assert events[-3:] == [
            "OS Critical Stop #0x4b | Run-time critical stop | Asserted",
            "Power Unit #0x01 | Power off/down | Asserted",
            "System Boot Initiated #0x01 | Initiated by power up | Asserted",
        ]
