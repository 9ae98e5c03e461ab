"""Run OpenIPMI's ipmi_sim as a throwaway BMC for interop tests.

`run_ipmi_sim(tmp_path)` is an async context manager that starts ipmi_sim on a free
loopback UDP port with a fresh state directory (persisted users would override
lan.conf), a TCP listener that acts as the host's serial port for SOL (ipmi_sim connects
to it as a client, so it listens first), and a chassis_control script that keeps the
power state in a file and logs every call. The `ipmi_sim` fixture wraps it and skips the
test cleanly when the binary is missing. Other test modules use it with::

    from tests.ipmi_sim import ipmi_sim_fixture  # noqa: F401  (provides `ipmi_sim`)

See ../shared/docs/ipmi_sim-notes.md for the quirks (never send Get Channel Payload
Support 0x4E to it: it crashes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from solgate.ipmi.target import BmcTarget

IPMI_SIM = shutil.which("ipmi_sim") or "/usr/bin/ipmi_sim"
USERNAME, PASSWORD = "admin", "password"
GUID = "a123456789abcdefa123456789abcdef"

_CHASSIS_SCRIPT = """#!/bin/sh
# chassis_control for ipmi_sim: "<device> get power" / "<device> set power 1 ..."
state='{state}'
log='{log}'
echo "$*" >> "$log"
shift
op=$1
shift
case $op in
  get)
    for parm in "$@"; do
      case $parm in
        power) echo "power:$(cat "$state" 2>/dev/null || echo 0)" ;;
        boot) echo "boot:default" ;;
        *) echo "Invalid parameter: $parm"; exit 1 ;;
      esac
    done ;;
  set)
    while [ $# -ge 2 ]; do
      parm=$1; val=$2; shift 2
      case $parm in
        power) echo "$val" > "$state" ;;
        reset|boot) ;;
        identify) [ $# -ge 1 ] && shift ;;
        *) echo "Invalid parameter: $parm"; exit 1 ;;
      esac
    done ;;
  *) exit 1 ;;
esac
"""


def free_udp_port() -> int:
    """A port nothing is bound to right now (it can be taken before we use it: retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SerialPort:
    """The host side of SOL: what we write is console output, what we read was typed."""

    connected: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    received: bytearray = field(default_factory=bytearray)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.writer is not None:  # keep the first connection; ipmi_sim only makes one
            writer.close()
            return
        self.reader, self.writer = reader, writer
        self.connected.set()

    async def write(self, data: bytes) -> None:
        await asyncio.wait_for(self.connected.wait(), 15)
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def read_until(self, expected: bytes, timeout: float = 5.0) -> bytes:
        """Read typed bytes until `expected` appears in everything received so far."""
        await asyncio.wait_for(self.connected.wait(), 15)
        assert self.reader is not None
        deadline = time.monotonic() + timeout
        while expected not in self.received:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"serial side did not receive {expected!r}: "
                                   f"{bytes(self.received)!r}")
            chunk = await asyncio.wait_for(self.reader.read(4096), left)
            if not chunk:
                raise ConnectionError("ipmi_sim closed the serial connection")
            self.received += chunk
        return bytes(self.received)


@dataclass
class IpmiSim:
    host: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    serial: SerialPort
    username: str = USERNAME
    password: str = PASSWORD

    @property
    def power_file(self) -> Path:
        return self.workdir / "power"

    @property
    def chassis_log(self) -> Path:
        return self.workdir / "chassis.log"

    def power_calls(self) -> list[str]:
        """Every chassis_control invocation, e.g. ['0x20 get power', '0x20 set power 0']."""
        if not self.chassis_log.exists():
            return []
        return self.chassis_log.read_text().splitlines()

    def set_power(self, on: bool) -> None:
        self.power_file.write_text("1\n" if on else "0\n")

    def target(self, **overrides: object) -> BmcTarget:
        """A BmcTarget for this BMC (CS3 by default: ipmi_sim has no SHA-256)."""
        values: dict[str, object] = dict(
            host=self.host, port=self.port, username=self.username.encode(),
            password=self.password.encode(), cipher_suites=(3,), retransmit_timeout=0.5,
            max_tries=4, name="sim")
        values.update(overrides)
        return BmcTarget(**values)  # type: ignore[arg-type]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def _write_config(workdir: Path, port: int, serial_port: int) -> tuple[Path, Path]:
    script = workdir / "chassis_control.sh"
    script.write_text(_CHASSIS_SCRIPT.format(state=workdir / "power", log=workdir / "chassis.log"))
    script.chmod(0o755)
    (workdir / "power").write_text("1\n")
    lan = workdir / "lan.conf"
    lan.write_text(f"""name "solgate-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback md2 md5 straight
    allowed_auths_user md2 md5 straight
    allowed_auths_operator md2 md5 straight
    allowed_auths_admin md2 md5 straight
    guid {GUID}
  endlan
  chassis_control "{script} 0x20"
  sol "tcp:127.0.0.1:{serial_port}" 115200
  user 2 true "{USERNAME}" "{PASSWORD}" admin 10 md2 md5 straight
  user 3 true "operator" "operator" operator 10 md2 md5 straight
""")
    emu = workdir / "bmc.emu"
    emu.write_text("""mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
""")
    return lan, emu


def _answers_ping(port: int) -> bool:
    """An RMCP presence ping: ipmi_sim answers once its LAN channel is up."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(bytes.fromhex("0600ff06000011be80010000"), ("127.0.0.1", port))
            return len(s.recv(512)) >= 12
        except OSError:
            return False


async def _wait_until_up(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if await asyncio.to_thread(_answers_ping, port):
            return True
        await asyncio.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(3)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@contextlib.asynccontextmanager
async def run_ipmi_sim(tmp_path: Path, *, attempts: int = 3, wait_serial: bool = True
                       ) -> AsyncIterator[IpmiSim]:
    """Start ipmi_sim; yield an `IpmiSim`; stop it and the serial listener afterwards."""
    serial = SerialPort()
    server = await asyncio.start_server(serial._accept, "127.0.0.1", 0)
    serial_port = server.sockets[0].getsockname()[1]
    proc: subprocess.Popen[bytes] | None = None
    try:
        for attempt in range(attempts):
            workdir = tmp_path / f"ipmi_sim-{attempt}"
            (workdir / "state").mkdir(parents=True)
            port = free_udp_port()
            lan, emu = _write_config(workdir, port, serial_port)
            log = (workdir / "ipmi_sim.log").open("wb")
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, test helper
                [IPMI_SIM, "-c", str(lan), "-f", str(emu), "-s", str(workdir / "state"), "-n"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=workdir, env={**os.environ, "HOME": str(workdir)},
            )
            log.close()
            if await _wait_until_up(proc, port, 5.0):
                break
            _stop(proc)
            proc = None
        if proc is None:
            raise RuntimeError(f"ipmi_sim did not start after {attempts} attempts; see "
                               f"{tmp_path}/ipmi_sim-*/ipmi_sim.log")
        if wait_serial:
            await asyncio.wait_for(serial.connected.wait(), 5.0)
        yield IpmiSim("127.0.0.1", port, workdir, proc, serial)
    finally:
        if proc is not None:
            _stop(proc)
        if serial.writer is not None:
            serial.writer.close()
            with contextlib.suppress(ConnectionError):
                await serial.writer.wait_closed()
        server.close()
        await server.wait_closed()


@pytest.fixture(name="ipmi_sim")
async def ipmi_sim_fixture(tmp_path: Path) -> AsyncIterator[IpmiSim]:
    """A fresh ipmi_sim per test (skipped when OpenIPMI is not installed)."""
    if not os.access(IPMI_SIM, os.X_OK):
        pytest.skip("ipmi_sim (OpenIPMI) is not installed")
    async with run_ipmi_sim(tmp_path) as sim:
        yield sim
