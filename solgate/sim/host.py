"""The simulated host behind a simulated BMC: what its serial port (ttyS0) says.

Theory of operation
-------------------
`SimHost` is a sans-I/O core: it never reads a clock or sleeps. Every call that can change
something takes `now` (seconds, from the caller's monotonic clock; a `now` earlier than one
already seen is treated as that one). The BMC feeds it keystrokes from SOL (`write`,
`send_break`), drives its power (`power_on`, `power_off`, `power_cycle`, `reset`), pulls
serial output (`read`) and asks when to come back (`next_deadline`).

Output model. The host's software writes text at the moment it happens (a boot line at its
scheduled time, an echo at the time of the keystroke). Every write goes into one FIFO that
the UART drains at line rate: 10 bits per byte, so 11520 bytes/s at 115200 baud. Byte
number k of an uninterrupted burst that started at time T is transmitted at T + k/rate; a
burst starts when text is written while the line is idle. The timeline depends only on what
was written when, never on when or how much the caller reads: `read(now)` returns bytes
whose transmission finished by `now`, oldest first, at most `max_bytes`, and the rest stays
for the next call. Nothing is dropped: a caller that does not want the output (no SOL
session) reads it and throws it away. A caller that never reads makes the backlog grow by
line rate (11.5 KB/s), which is what real wires do too.

Long output (`flood`) is not written all at once: like a process blocked on a full tty
buffer, the job writes `TTY_CHUNK` bytes each time the UART queue runs dry, and the bytes
themselves are produced only when read (see `flood.py`), so a 10 MB flood costs a few
thousand small records. Ctrl-C during a job flushes the untransmitted part of the queue
(as n_tty does on SIGINT), prints "^C" and a new prompt.

Lifecycle. OFF -> FIRMWARE (BIOS, GRUB) -> BOOTING (kernel; a BREAK works once the serial
console is up) -> SHELL (cooked-mode tty: echo, erase, Ctrl-C, Ctrl-U; a login-less prompt
``root@<name>:~# ``; with `query_cursor=True` each prompt ends with a cursor position query
``ESC [ 6 n`` as busybox ash and systemd's serial getty send, and the shell takes the
terminal's ``ESC [ row ; col R`` answer silently) -> SHUTTING_DOWN (after `reboot`,
`poweroff`, SysRq b/o) -> FIRMWARE again or OFF. A kernel panic (`panic`, or BREAK then c)
moves to PANICKED: no more output, all input ignored until `reset`/`power_cycle`. Power off
and reset discard whatever the UART has not transmitted yet; bytes already transmitted stay
readable.

SysRq. `send_break(now)` arms SysRq for `SYSRQ_TIMEOUT` seconds (as Linux's 8250 driver
does); the next character written in that window is consumed as a SysRq key.

Determinism. All randomness (boot timing jitter, MAC address, panic registers) comes from
`random.Random(seed)`; the same seed and the same calls give the same bytes.
"""

from __future__ import annotations

import enum
import math
import random
import re
import shlex
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from solgate.errors import LocalProtocolError
from solgate.sim.bootlog import (
    HELP_TEXT,
    KERNEL_BUILD,
    KERNEL_RELEASE,
    SYSRQ_HELP,
    SYSRQ_KEYS,
    Step,
    boot_script,
    panic_lines,
    shutdown_script,
)
from solgate.sim.flood import FLOOD_MAX_BYTES, flood_bytes, flood_slice, verify_flood

__all__ = [
    "SYSRQ_TIMEOUT",
    "HostState",
    "SimHost",
    "flood_bytes",
    "flood_slice",
    "verify_flood",
]

BITS_PER_BYTE = 10  # start bit, 8 data bits, stop bit
SYSRQ_TIMEOUT = 5.0  # seconds a BREAK keeps SysRq armed, like Linux's uart_handle_break
TTY_CHUNK = 4096  # bytes a running job writes each time the tty buffer drains
MAX_LINE = 4095  # n_tty's canonical line limit
MERGE_LIMIT = 4096  # bytes of text one UART segment grows to by merging later writes
_EPS = 1e-3  # in byte-times: absorbs float error so a byte due at t counts at t

_CTRL_C, _CTRL_D, _CTRL_U, _BS, _DEL = 0x03, 0x04, 0x15, 0x08, 0x7F
_SIZE_RE = re.compile(r"(\d+)([kKmMgG]?)")


class HostState(enum.Enum):
    """Where the simulated host is in its life; see the module comment."""

    OFF = "off"
    FIRMWARE = "firmware"
    BOOTING = "booting"
    SHELL = "shell"
    SHUTTING_DOWN = "shutting-down"
    PANICKED = "panicked"


@dataclass(eq=False, slots=True)
class _Segment:
    """A run of bytes written at once: literal `data`, or a slice of the flood stream."""

    run_start: float  # when the burst this segment belongs to started transmitting
    run_offset: int  # bytes of that burst before this segment
    length: int
    data: bytes | bytearray | None  # a bytearray once later writes were merged into it
    flood_base: int = 0
    read_pos: int = 0  # bytes already handed to read()

    def slice(self, start: int, stop: int) -> bytes | bytearray:
        if self.data is not None:
            return self.data[start:stop]
        return flood_slice(self.flood_base + start, stop - start)


class _Uart:
    """The transmit FIFO, drained at line rate; see "Output model" above."""

    def __init__(self, baud: int) -> None:
        self.rate = baud / BITS_PER_BYTE
        self.queue: deque[_Segment] = deque()
        self.run_start = -math.inf
        self.run_len = 0
        self.written = 0  # bytes pushed, less the ones flushed before transmission

    def end(self) -> float:
        """When everything written so far will have been transmitted."""
        return self.run_start + self.run_len / self.rate

    def push(self, ready_at: float, data: bytes | None, length: int, flood_base: int = 0) -> None:
        if length <= 0:
            return
        queue = self.queue
        if ready_at > self.end():  # the line was idle: a new burst starts now
            self.run_start = ready_at
            self.run_len = 0
        elif data is not None and queue:
            # Text written while the line is busy joins the burst's last segment when that
            # one is literal text ending where this starts (a boot script outrunning the
            # line writes hundreds of lines a burst): one segment per MERGE_LIMIT bytes
            # instead of one per line. What is transmitted when does not change.
            last = queue[-1]
            held = last.data
            if (held is not None and last.run_start == self.run_start
                    and last.run_offset + last.length == self.run_len
                    and len(held) == last.length and last.length < MERGE_LIMIT):
                if type(held) is not bytearray:
                    held = last.data = bytearray(held)
                held += data
                last.length += length
                self.run_len += length
                self.written += length
                return
        queue.append(_Segment(self.run_start, self.run_len, length, data, flood_base))
        self.run_len += length
        self.written += length

    def sent(self, seg: _Segment, now: float) -> int:
        done = math.floor((now - seg.run_start) * self.rate + _EPS) - seg.run_offset
        return min(max(done, 0), seg.length)

    def read(self, now: float, max_bytes: int) -> bytes:
        out: list[bytes | bytearray] = []
        room = max_bytes
        queue = self.queue
        rate = self.rate
        while queue and room > 0:
            seg = queue[0]
            # `sent(seg, now)`, inline: this runs for every SOL packet of every host.
            done = math.floor((now - seg.run_start) * rate + _EPS) - seg.run_offset
            length = seg.length
            pos = seg.read_pos
            take = (length if done >= length else done) - pos
            if take > room:
                take = room
            if take <= 0:
                break
            out.append(seg.slice(pos, pos + take))
            seg.read_pos = pos + take
            room -= take
            if pos + take < length:
                break
            queue.popleft()
        return out[0] if len(out) == 1 and type(out[0]) is bytes else b"".join(out)

    def available(self, now: float) -> int:
        total = 0
        for seg in self.queue:
            sent = self.sent(seg, now)
            total += sent - seg.read_pos
            if sent < seg.length:
                break
        return total

    def next_byte_at(self) -> float | None:
        """When the oldest unread byte is (or was) transmitted; None if nothing is queued."""
        if not self.queue:
            return None
        seg = self.queue[0]  # fully read segments are popped, so it has an unread byte
        return seg.run_start + (seg.run_offset + seg.read_pos + 1) / self.rate

    def flush(self, now: float) -> None:
        """Discard every byte not transmitted by `now` (reset, power loss, tty flush)."""
        while self.queue:
            seg = self.queue[-1]
            sent = self.sent(seg, now)
            if sent >= seg.length:
                break
            self.written -= seg.length - sent
            seg.length = sent
            if seg.length > seg.read_pos:
                break
            self.queue.pop()
        self.run_start = now
        self.run_len = 0


@dataclass
class _FloodJob:
    total: int
    produced: int = 0


class SimHost:
    """A simulated server's serial console: boot log, a tiny shell, SysRq, panics, floods."""

    def __init__(
        self,
        name: str = "sim01",
        *,
        baud: int = 115200,
        seed: int = 0,
        powered: bool = False,
        boot_log: bool = True,
        boot_speed: float = 1.0,
        query_cursor: bool = False,
        boot_log_size: int = 0,
    ) -> None:
        """Build a host; with `powered=True` it is already up and idle at its prompt.

        `boot_log_size` (bytes, approximate) makes the boot log that long; 0 keeps the
        plain ~5 KB one.
        """
        if baud <= 0:
            raise LocalProtocolError(f"SimHost {name!r}: baud must be positive, got {baud}")
        if not boot_speed > 0:
            raise LocalProtocolError(
                f"SimHost {name!r}: boot_speed must be positive (math.inf for instant), "
                f"got {boot_speed}"
            )
        self.name = name
        self.baud = baud
        self.boot_log = boot_log
        self.boot_speed = boot_speed
        self.boot_log_size = boot_log_size
        self.query_cursor = query_cursor
        self.cursor_replies = 0  # answers to the cursor query the shell took
        self.boot_count = 0
        self._rng = random.Random(seed)  # noqa: S311 - a simulation, not crypto
        # Told "panic", "power-on", "power-off" and "reset": the BMC's event log listens.
        self.on_event: Callable[[str], None] | None = None
        self._mac = "52:54:00:" + ":".join(f"{self._rng.randrange(256):02x}" for _ in range(3))
        self._uptime0 = 3600.0 + self._rng.random() * 86400.0  # for a host born powered on
        self._uart = _Uart(baud)
        self._now = -math.inf
        self._state = HostState.OFF
        self._program: Iterator[Step] | None = None
        self._step: Step | None = None
        self._step_at = math.inf
        self._kernel_start: float | None = None
        self._sysrq_ready = False
        self._break_at: float | None = None
        self._line = bytearray()
        self._reply: bytearray | None = None  # an ESC sequence coming in after a query
        self._job: _FloodJob | None = None
        self._shell_pid = 1
        self._commands: dict[str, Callable[[list[str], float], bool]] = {
            "uname": self._cmd_uname,
            "hostname": self._cmd_hostname,
            "echo": self._cmd_echo,
            "help": self._cmd_help,
            "panic": self._cmd_panic,
            "flood": self._cmd_flood,
            "reboot": self._cmd_reboot,
            "poweroff": self._cmd_poweroff,
            "clear": self._cmd_clear,
            "exit": self._cmd_exit,
            "true": lambda args, t: True,
            "false": lambda args, t: True,
        }
        if powered:
            self._state = HostState.SHELL
            self._sysrq_ready = True
            self._shell_pid = self._rng.randrange(600, 4000)
            self.boot_count = 1

    # ----------------------------------------------------------------- public API

    @property
    def powered(self) -> bool:
        """True from power on until power off (a panicked host is still powered)."""
        return self._state is not HostState.OFF

    @property
    def panicked(self) -> bool:
        """True after a kernel panic, until reset, power cycle or power off."""
        return self._state is HostState.PANICKED

    @property
    def state(self) -> HostState:
        """The lifecycle state as of the last `now` seen."""
        return self._state

    def power_on(self, now: float) -> None:
        """Apply power: the firmware starts and the boot log begins. No-op if already on."""
        t = self._advance(now)
        if self._state is HostState.OFF:
            self._boot(t)
            self._tell("power-on")

    def power_off(self, now: float) -> None:
        """Cut power: untransmitted output is lost, input is ignored. No-op if already off."""
        t = self._advance(now)
        if self._state is not HostState.OFF:
            self._uart.flush(t)
            self._halt()
            self._tell("power-off")

    def power_cycle(self, now: float) -> None:
        """Power off then on at the same instant; powers on a host that was off."""
        self.power_off(now)
        self.power_on(now)

    def reset(self, now: float) -> None:
        """Hard reset: untransmitted output is lost and the host boots again. No-op when off."""
        t = self._advance(now)
        if self._state is not HostState.OFF:
            self._uart.flush(t)
            self._boot(t)
            self._tell("reset")

    def write(self, data: bytes, now: float) -> None:
        """Characters arriving on the host's serial port (typed through SOL)."""
        t = self._advance(now)
        for byte in data:
            if self._state in (HostState.OFF, HostState.PANICKED):
                return
            if self._break_at is not None:
                armed_at, self._break_at = self._break_at, None
                if t - armed_at <= SYSRQ_TIMEOUT:
                    self._sysrq(byte, t)
                    continue
            if self._state is HostState.SHELL:
                self._tty_input(byte, t)

    def send_break(self, now: float) -> None:
        """A serial BREAK: once the kernel's console is up, the next character is a SysRq key."""
        t = self._advance(now)
        if self._sysrq_ready and self._state is not HostState.PANICKED:
            self._break_at = t

    def read(self, now: float, max_bytes: int = 4096) -> bytes:
        """Bytes the UART finished transmitting by `now` and not read yet, at most `max_bytes`."""
        t = self._advance(now)
        if max_bytes <= 0:
            return b""
        return self._uart.read(t, max_bytes)

    @property
    def output_bytes(self) -> int:
        """Bytes the host has put on its serial line or will (what was written, less what a
        reset, power loss or Ctrl-C flushed before it was transmitted): what a console
        that missed nothing has logged once the line is idle."""
        return self._uart.written

    def available(self, now: float) -> int:
        """How many bytes `read(now)` could return (without the `max_bytes` cap)."""
        return self._uart.available(self._advance(now))

    def next_deadline(self) -> float | None:
        """When `read` will next return something, or the host's script moves on; None if idle.

        A time at or before the last `now` means output is already waiting (a `read` capped
        by `max_bytes` left some). While the UART is busy this is the completion time of the
        next byte (1/11520 s apart at 115200 baud), so a caller that wants batches should
        wait longer, e.g. its SOL character-accumulate interval, then read all that arrived.
        """
        byte_at = self._uart.next_byte_at()
        if self._program is None:
            return byte_at
        step_at = self._step_at
        return step_at if byte_at is None or step_at < byte_at else byte_at

    # ------------------------------------------------------------- time and output

    def _advance(self, now: float) -> float:
        """Run the scripted steps and job writes that were due by `now`, in time order."""
        now = max(now, self._now)
        self._now = now
        while True:
            step_at = self._step_at if self._program is not None else math.inf
            job_at = self._uart.end() if self._job is not None else math.inf
            if min(step_at, job_at) > now:
                return now
            if step_at <= job_at:
                self._run_step()
            else:
                self._pump_job(job_at)

    def _out(self, text: str, t: float) -> None:
        data = text.replace("\n", "\r\n").encode()
        self._uart.push(t, data, len(data))

    def _out_bytes(self, data: bytes, t: float) -> None:
        self._uart.push(t, data, len(data))

    def _klog(self, messages: list[str] | tuple[str, ...], t: float) -> None:
        """Print kernel messages with printk timestamps a few microseconds apart."""
        if self._kernel_start is None:  # born powered on: invent an uptime
            self._kernel_start = t - self._uptime0
        micros = max(0, round((t - self._kernel_start) * 1e6))
        lines = []
        for message in messages:
            lines.append(f"[{micros // 1_000_000:5d}.{micros % 1_000_000:06d}] {message}\n")
            micros += self._rng.randrange(5, 400)
        self._out("".join(lines), t)

    def _prompt(self, t: float) -> None:
        self._out(f"root@{self.name}:~# " + ("\x1b[6n" if self.query_cursor else ""), t)

    # --------------------------------------------------------------- lifecycle

    def _start_program(self, script: Iterator[Step], t: float) -> None:
        self._program = script
        self._step = next(script, None)
        if self._step is None:
            self._program = None
        else:
            self._step_at = t + self._scaled(self._step.delay)

    def _scaled(self, delay: float) -> float:
        return delay / self.boot_speed

    def _run_step(self) -> None:
        program, step, t = self._program, self._step, self._step_at
        assert program is not None  # _advance checked
        assert step is not None
        if step.text:
            if step.kernel:
                self._klog([step.text], t)
            else:
                self._out(step.text, t)
        if step.mark:
            self._mark(step.mark, t)
        if self._program is program:  # the mark did not start or stop a program
            self._step = next(program, None)
            if self._step is None:
                self._program = None
            else:
                self._step_at = t + self._scaled(self._step.delay)

    def _mark(self, mark: str, t: float) -> None:
        if mark == "kernel":
            self._kernel_start = t
            self._state = HostState.BOOTING
        elif mark == "sysrq":
            self._sysrq_ready = True
        elif mark == "shell":
            self._enter_shell(t)
        elif mark == "restart":
            self._boot(t)
        elif mark == "off":
            self._halt()

    def _boot(self, t: float) -> None:
        """Start from the firmware (power on, reset, reboot)."""
        self._halt()
        self.boot_count += 1
        self._state = HostState.FIRMWARE
        if self.boot_log:
            self._start_program(boot_script(self.name, self.baud, self._mac, self._rng,
                                            self.boot_log_size), t)
        else:
            self._kernel_start = t
            self._sysrq_ready = True
            self._enter_shell(t)

    def _enter_shell(self, t: float) -> None:
        self._state = HostState.SHELL
        self._shell_pid = self._rng.randrange(600, 4000)
        self._line.clear()
        self._prompt(t)

    def _halt(self) -> None:
        """Stop everything the host was doing; the caller decides what comes next."""
        self._state = HostState.OFF
        self._program = None
        self._step = None
        self._kernel_start = None
        self._sysrq_ready = False
        self._break_at = None
        self._line.clear()
        self._job = None

    def _shut_down(self, script: Iterator[Step], t: float) -> None:
        self._cancel_job(t)
        self._line.clear()
        self._state = HostState.SHUTTING_DOWN
        self._start_program(script, t)

    def _tell(self, kind: str) -> None:
        if self.on_event is not None:
            self.on_event(kind)

    def _panic(self, t: float, *, from_serial: bool) -> None:
        self._cancel_job(t)
        self._program = None
        self._klog(panic_lines(self._rng, from_serial=from_serial, pid=self._shell_pid), t)
        self._state = HostState.PANICKED
        self._tell("panic")
        self._break_at = None
        self._line.clear()

    def _sysrq(self, byte: int, t: float) -> None:
        key = chr(byte)
        if key == "c":
            self._panic(t, from_serial=True)
            return
        messages, action = SYSRQ_KEYS.get(key, ((SYSRQ_HELP,), ""))
        if action:  # these end the running job; flush its output before the kernel speaks
            self._cancel_job(t)
        if action == "reboot":  # emergency_restart: no sync, pending tty output is lost
            self._uart.flush(t)
            self._klog(messages, t)
            self._shut_down(iter([Step(0.3, mark="restart")]), t)
            return
        self._klog(messages, t)
        if action == "poweroff":
            self._shut_down(iter([Step(0.5, "reboot: Power down", kernel=True),
                                  Step(0.05, mark="off")]), t)
        elif action == "kill" and self._state is HostState.SHELL:
            self._enter_shell(t)  # the getty respawns a fresh shell

    # ------------------------------------------------------------------- the tty

    def _tty_input(self, byte: int, t: float) -> None:
        """Cooked-mode line discipline: echo, erase, kill, interrupt, newline."""
        if self.query_cursor and self._job is None:
            if self._reply is None and byte == 0x1B:
                self._reply = bytearray(b"\x1b")
                return
            if self._reply is not None:
                self._reply.append(byte)
                if len(self._reply) == 2 and byte == ord("["):
                    return
                if len(self._reply) > 2 and 0x30 <= byte <= 0x3F and len(self._reply) < 32:
                    return
                seq, self._reply = bytes(self._reply), None
                if re.fullmatch(rb"\x1b\[\d+;\d+R", seq):
                    self.cursor_replies += 1  # the shell read its answer
                    return
                for b in seq:  # not a cursor report: ordinary (echoed) input
                    self._tty_byte(b, t)
                return
        self._tty_byte(byte, t)

    def _tty_byte(self, byte: int, t: float) -> None:
        if self._job is not None:  # a job owns the terminal; only Ctrl-C gets through
            if byte == _CTRL_C:
                self._cancel_job(t)
                self._out("^C\n", t)
                self._prompt(t)
            return
        if byte in (0x0D, 0x0A):
            self._out("\n", t)
            line = bytes(self._line)
            self._line.clear()
            self._execute(line, t)
        elif byte in (_BS, _DEL):
            self._erase(t)
        elif byte == _CTRL_C:
            self._line.clear()
            self._out("^C\n", t)
            self._prompt(t)
        elif byte == _CTRL_U:
            while self._line:
                self._erase(t)
        elif byte == _CTRL_D:
            pass  # the shell ignores EOF (ignoreeof)
        elif len(self._line) >= MAX_LINE:
            pass
        elif byte < 0x20 and byte != 0x09:
            self._line.append(byte)
            self._out_bytes(b"^" + bytes([byte + 0x40]), t)  # ECHOCTL
        else:
            self._line.append(byte)
            self._out_bytes(bytes([byte]), t)

    def _erase(self, t: float) -> None:
        """Erase one character, a whole UTF-8 sequence or a two-column ^X."""
        if not self._line:
            return
        byte = self._line.pop()
        while 0x80 <= byte < 0xC0 and self._line:  # continuation byte: keep going
            byte = self._line.pop()
        width = 2 if byte < 0x20 and byte != 0x09 else 1
        self._out_bytes(b"\b \b" * width, t)

    def _cancel_job(self, t: float) -> None:
        """Kill a running job and flush what it left in the tty (as SIGINT does)."""
        if self._job is not None:
            self._job = None
            self._uart.flush(t)

    def _pump_job(self, t: float) -> None:
        """The tty buffer drained: the job writes its next chunk (and may finish)."""
        job = self._job
        assert job is not None  # _advance checked
        size = min(TTY_CHUNK, job.total - job.produced)
        self._uart.push(t, None, size, flood_base=job.produced)
        job.produced += size
        if job.produced >= job.total:
            self._job = None
            self._prompt(t)

    # ------------------------------------------------------------------ commands

    def _execute(self, line: bytes, t: float) -> None:
        text = line.decode("utf-8", "replace").strip()
        try:
            words = shlex.split(text)
        except ValueError:
            self._out("sh: syntax error: unterminated quoted string\n", t)
            self._prompt(t)
            return
        if not words:
            self._prompt(t)
            return
        command = self._commands.get(words[0])
        if command is None:
            self._out(f"sh: {words[0]}: command not found\n", t)
            prompt_now = True
        else:
            prompt_now = command(words[1:], t)
        if prompt_now:
            self._prompt(t)

    def _cmd_uname(self, args: list[str], t: float) -> bool:
        fields = {"s": "Linux", "n": self.name, "r": KERNEL_RELEASE, "v": KERNEL_BUILD,
                  "m": "x86_64", "o": "GNU/Linux"}
        wanted: set[str] = set()
        for arg in args:
            if arg in ("-a", "--all"):
                wanted.update(fields)
                continue
            letters = arg[1:] if arg.startswith("-") and len(arg) > 1 else "?"
            for letter in letters:
                if letter not in fields:
                    self._out(f"uname: invalid option -- '{letter}'\n"
                              "Try 'uname --help' for more information.\n", t)
                    return True
                wanted.add(letter)
        order = [fields[k] for k in "snrvmo" if k in (wanted or {"s"})]
        self._out(" ".join(order) + "\n", t)
        return True

    def _cmd_hostname(self, args: list[str], t: float) -> bool:
        self._out(self.name + "\n", t)
        return True

    def _cmd_echo(self, args: list[str], t: float) -> bool:
        newline = "\n"
        if args and args[0] == "-n":
            args, newline = args[1:], ""
        self._out(" ".join(args) + newline, t)
        return True

    def _cmd_help(self, args: list[str], t: float) -> bool:
        self._out(HELP_TEXT, t)
        return True

    def _cmd_panic(self, args: list[str], t: float) -> bool:
        self._panic(t, from_serial=False)
        return False

    def _cmd_flood(self, args: list[str], t: float) -> bool:
        size = _parse_size(args[0]) if len(args) == 1 else None
        if size is None:
            self._out("flood: usage: flood BYTES (for example 1000000, 64K or 10M)\n", t)
            return True
        if size > FLOOD_MAX_BYTES:
            self._out(f"flood: at most {FLOOD_MAX_BYTES} bytes\n", t)
            return True
        if size == 0:
            return True
        self._job = _FloodJob(total=size)
        self._pump_job(t)
        return False

    def _cmd_reboot(self, args: list[str], t: float) -> bool:
        self._shut_down(shutdown_script(power_off=False), t)
        return False

    def _cmd_poweroff(self, args: list[str], t: float) -> bool:
        self._shut_down(shutdown_script(power_off=True), t)
        return False

    def _cmd_clear(self, args: list[str], t: float) -> bool:
        self._out("\x1b[H\x1b[2J", t)
        return True

    def _cmd_exit(self, args: list[str], t: float) -> bool:
        self._out("logout\n\n", t)
        self._enter_shell(t)  # a login-less getty starts a new shell at once
        return False


def _parse_size(text: str) -> int | None:
    """'1000', '64K', '10M', '1G' (binary multiples) -> bytes; None if malformed."""
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        return None
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    return int(match.group(1)) * scale
