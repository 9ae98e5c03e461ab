"""The simulated host's serial port, driven by a fake clock: boot, pacing, shell, SysRq, flood."""

from __future__ import annotations

import math
import re

import pytest

from solgate.errors import LocalProtocolError
from solgate.sim.flood import FLOOD_LINE_LEN, flood_bytes, flood_line
from solgate.sim.host import SYSRQ_TIMEOUT, HostState, SimHost, verify_flood

PROMPT = b"root@sim01:~# "
RATE = 11520  # bytes per second at 115200 baud
PANIC_MARKERS = (
    b"sysrq: Trigger a crash",
    b"Kernel panic - not syncing: sysrq triggered crash",
    b"Hardware name: ",
    b"Call Trace:",
    b" <TASK>",
    b"---[ end Kernel panic - not syncing: sysrq triggered crash ]---",
)


def drain(host: SimHost, now: float, *, step: float = 0.01, limit: float = 60.0):
    """Read everything the host will say, waking at its deadlines (at most every `step` s)."""
    out = bytearray(host.read(now, 1 << 30))
    end = now + limit
    while (deadline := host.next_deadline()) is not None:
        assert deadline > now - 1e-9
        now = max(deadline, now + step)
        assert now < end, "host never went idle"
        out += host.read(now, 1 << 30)
    return bytes(out), now


def booted(**kwargs) -> tuple[SimHost, float]:
    """A host that booted instantly and sits at its prompt, with its output drained."""
    host = SimHost(boot_speed=math.inf, **kwargs)
    host.power_on(0.0)
    out, now = drain(host, 0.0)
    assert out.endswith(b"root@%s:~# " % host.name.encode())
    return host, now


def type_line(host: SimHost, line: bytes, now: float) -> tuple[bytes, float]:
    host.write(line, now)
    return drain(host, now)


# ------------------------------------------------------------------------- boot


def test_boot_prints_a_realistic_log_over_a_few_seconds_and_reaches_the_prompt():
    host = SimHost("sim01", seed=3)
    assert not host.powered
    host.power_on(100.0)
    assert host.powered
    early = host.read(101.0, 1 << 20)
    assert b"solgate-sim BIOS v1.0" in early
    assert PROMPT not in early  # lines appear over time, not all at once

    rest, end = drain(host, 101.0)
    out = early + rest
    assert out.endswith(PROMPT)
    assert host.state is HostState.SHELL
    assert 2.0 < end - 100.0 < 10.0
    markers = [
        b"solgate-sim BIOS v1.0", b"Memory Test:", b"Press <DEL> to enter setup", b"GRUB",
        b"[    0.000000] Linux version 6.1.0-sim", b"console=ttyS0,115200", b"ACPI: ",
        b"Memory: ", b"CPU0: ", b"pci 0000:", b"ttyS0 at I/O 0x3f8", b"EXT4-fs (sda1): mounted",
        b"systemd[1]: ", b"Welcome to \x1b[1msolgate-sim",
        b"solgate-sim GNU/Linux 6.1.0-sim sim01 ttyS0",
    ]
    positions = [out.find(m) for m in markers]
    assert -1 not in positions, [m for m, p in zip(markers, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    stamps = [float(s) for s in re.findall(rb"\[\s*(\d+\.\d{6})\] ", out)]
    assert len(stamps) > 20
    assert stamps == sorted(stamps)
    assert 0.5 < stamps[-1] < 5.0  # kernel time, counted from the kernel's start
    assert b"\n" not in out.replace(b"\r\n", b"")  # ONLCR: every newline is CR LF


def test_boot_speed_scales_the_delays():
    slow, slow_end = drain(_on(SimHost(boot_speed=1.0)), 0.0, step=0.001)
    fast, fast_end = drain(_on(SimHost(boot_speed=10.0)), 0.0, step=0.001)
    assert slow.endswith(PROMPT)
    assert fast.endswith(PROMPT)
    assert fast_end < slow_end / 3
    # Instant: everything is written at t=0, so only the UART's pace is left.
    host = _on(SimHost(boot_speed=math.inf))
    total = len(drain(_on(SimHost(boot_speed=math.inf)), 0.0)[0])
    done_at = total / RATE
    assert not host.read(done_at - 0.5 / RATE, 1 << 20).endswith(PROMPT)
    assert host.read(done_at, 1 << 20) == PROMPT[-1:]
    assert host.next_deadline() is None


def _on(host: SimHost) -> SimHost:
    host.power_on(0.0)
    return host


def test_boot_log_size_makes_a_server_sized_log_paced_by_the_line():
    """A boot storm benchmark needs boot logs as long as a large server's, and the count of
    bytes the host put on the line to tell what a console should have logged."""
    plain = len(drain(_on(SimHost(boot_speed=math.inf)), 0.0)[0])
    host = _on(SimHost(seed=5, boot_log_size=65536))
    out, end = drain(host, 0.0, step=0.005)
    assert out.endswith(PROMPT)
    assert 64_000 <= len(out) <= 67_000
    assert plain < 8_000
    assert host.output_bytes == len(out)
    assert len(out) / RATE < end < len(out) / RATE + 5  # mostly line time, as on a real port
    assert re.search(rb"\] sd \d+:0:\d+:0: \[sd[a-z]+\] ", out)


def test_output_bytes_leaves_out_what_a_reset_flushed():
    host = SimHost(boot_speed=math.inf)
    host.power_on(0.0)
    out, now = drain(host, 0.0)
    host.write(b"flood 100000\r", now)
    out += host.read(now + 1.0, 1 << 20)
    host.reset(now + 1.0)  # the flood's untransmitted bytes never reach the line
    more, _ = drain(host, now + 1.0)
    out += more
    assert more.endswith(PROMPT)
    assert host.output_bytes == len(out) < 100_000


def test_boot_without_log_gives_a_prompt_at_once():
    host = SimHost(boot_log=False)
    host.power_on(5.0)
    assert drain(host, 5.0)[0] == PROMPT


def test_host_born_powered_is_quiet_until_enter():
    host = SimHost(powered=True)
    assert host.powered
    assert host.next_deadline() is None
    assert host.read(10.0) == b""
    out, _ = type_line(host, b"\r", 10.0)
    assert out == b"\r\n" + PROMPT


def test_query_cursor_prompts_ask_and_the_shell_takes_the_answer_silently():
    # busybox ash and systemd's serial getty: ESC [ 6 n after each prompt.
    host = SimHost(powered=True, query_cursor=True)
    out, now = type_line(host, b"\r", 10.0)
    assert out == b"\r\n" + PROMPT + b"\x1b[6n"
    out, now = type_line(host, b"\x1b[3;15R", now)
    assert out == b""
    assert host.cursor_replies == 1
    out, now = type_line(host, b"uname\r", now)
    assert out == b"uname\r\nLinux\r\n" + PROMPT + b"\x1b[6n"
    # Another sequence is ordinary input, echoed as the tty does.
    out, now = type_line(host, b"\x1b[A", now)
    assert out == b"^[[A"
    assert host.cursor_replies == 1


def test_same_seed_same_bytes_other_seed_other_bytes():
    def boot(seed: int) -> bytes:
        host = _on(SimHost(seed=seed))
        return drain(host, 0.0)[0]

    assert boot(7) == boot(7)
    assert boot(7) != boot(8)


def test_bad_arguments_are_refused():
    with pytest.raises(LocalProtocolError):
        SimHost(baud=0)
    with pytest.raises(LocalProtocolError):
        SimHost(boot_speed=0)


# ------------------------------------------------------------------------ pacing


def test_uart_pacing_at_115200_baud():
    host, t0 = booted()
    host.write(b"flood 100000\r", t0)
    assert len(host.read(t0 + 1.0, 1 << 20)) == RATE  # busy line: exactly 11520 bytes/s
    assert len(host.read(t0 + 1.0, 1 << 20)) == 0
    assert len(host.read(t0 + 1.5, 1 << 20)) == RATE // 2


def test_uart_pacing_follows_the_baud_rate():
    host, t0 = booted(baud=9600)
    host.write(b"flood 100000\r", t0)
    assert len(host.read(t0 + 1.0, 1 << 20)) == 960


def test_read_respects_max_bytes_and_keeps_the_rest():
    host, t0 = booted()
    host.write(b"flood 5000\r", t0)
    first = host.read(t0 + 1.0, 100)
    assert len(first) == 100
    assert host.available(t0 + 1.0) == len(b"flood 5000\r\n") + 5000 + len(PROMPT) - 100
    assert host.next_deadline() <= t0 + 1.0  # more is waiting: come back at once
    rest = host.read(t0 + 1.0, 1 << 20)
    assert (first + rest).endswith(PROMPT)
    assert host.next_deadline() is None
    assert host.read(t0 + 1.0, 0) == b""


def test_next_deadline_is_when_the_next_byte_is_transmitted():
    host, t0 = booted()
    assert host.next_deadline() is None
    host.write(b"x", t0)
    deadline = host.next_deadline()
    assert deadline == pytest.approx(t0 + 1 / RATE)
    assert host.read(deadline - 0.5 / RATE) == b""
    assert host.read(deadline) == b"x"
    assert host.next_deadline() is None


def test_output_timeline_does_not_depend_on_how_it_is_read():
    def run(reader: str) -> bytes:
        host, t0 = booted(seed=5)
        host.write(b"flood 30000\r", t0)
        host.write(b"\x02", t0 + 0.5)  # ignored while the job runs; must not change anything
        if reader == "one":
            return host.read(t0 + 10.0, 1 << 20)
        out, now = bytearray(), t0
        while (deadline := host.next_deadline()) is not None:
            now = max(deadline, now + 0.0123)
            out += host.read(now, 77)
        return bytes(out + host.read(now + 10.0, 1 << 20))

    assert run("one") == run("many")


# ------------------------------------------------------------------------- shell


def test_typed_command_is_echoed_and_run():
    host, t = booted()
    for ch in b"echo hello   world":
        host.write(bytes([ch]), t)
        t += 0.05
    assert host.read(t) == b"echo hello   world"
    out, _ = type_line(host, b"\r", t)
    assert out == b"\r\nhello world\r\n" + PROMPT


def test_uname_hostname_and_unknown_command():
    host, t = booted(name="web07")
    prompt = b"root@web07:~# "
    out, t = type_line(host, b"uname\r", t)
    assert out == b"uname\r\nLinux\r\n" + prompt
    out, t = type_line(host, b"uname -a\r", t)
    assert re.fullmatch(
        rb"uname -a\r\nLinux web07 6\.1\.0-sim #1 SMP .* x86_64 GNU/Linux\r\n" + re.escape(prompt),
        out,
    )
    out, t = type_line(host, b"uname -rn\r", t)
    assert out == b"uname -rn\r\nweb07 6.1.0-sim\r\n" + prompt
    out, t = type_line(host, b"hostname\r", t)
    assert out == b"hostname\r\nweb07\r\n" + prompt
    out, t = type_line(host, b"foo bar\r", t)
    assert out == b"foo bar\r\nsh: foo: command not found\r\n" + prompt
    out, t = type_line(host, b"help\r", t)
    assert b"flood BYTES" in out
    assert out.endswith(prompt)


def test_line_editing_like_a_cooked_tty():
    host, t = booted()
    out, t = type_line(host, b"ecx\x7fho hi\x08\x08yo\r", t)
    assert out == b"ecx\b \bho hi\b \b\b \byo\r\nyo\r\n" + PROMPT
    out, t = type_line(host, b"junk\x15echo ok\r", t)
    assert out == b"junk" + b"\b \b" * 4 + b"echo ok\r\nok\r\n" + PROMPT
    out, t = type_line(host, b"\x7f\r", t)  # erasing an empty line echoes nothing
    assert out == b"\r\n" + PROMPT
    out, t = type_line(host, "echo é\x7fe\r".encode(), t)  # erase takes the whole UTF-8 char
    assert out.endswith(b"\r\ne\r\n" + PROMPT)


def test_ctrl_c_prints_caret_c_and_a_new_prompt():
    host, t = booted()
    out, t = type_line(host, b"uname -a\x03", t)
    assert out == b"uname -a^C\r\n" + PROMPT
    out, t = type_line(host, b"\r", t)  # the interrupted line was thrown away
    assert out == b"\r\n" + PROMPT


def test_reboot_command_restarts_and_boots_again():
    host, t = booted()
    out, t = type_line(host, b"reboot\r", t)
    assert re.search(rb"\[\s*\d+\.\d{6}\] reboot: Restarting system\r\n", out)
    assert out.index(b"reboot: Restarting system") < out.index(b"solgate-sim BIOS v1.0")
    assert out.endswith(PROMPT)
    assert host.boot_count == 2


def test_poweroff_command_turns_the_host_off():
    host, t = booted()
    out, t = type_line(host, b"poweroff\r", t)
    assert b"reboot: Power down" in out
    assert not host.powered


# ------------------------------------------------------------------------ panics


def assert_panic(out: bytes) -> None:
    positions = [out.find(m) for m in PANIC_MARKERS]
    assert -1 not in positions, out
    assert positions == sorted(positions)
    assert re.search(rb"CPU: \d+ PID: \d+ Comm: \S+ Not tainted 6\.1\.0-sim", out)
    assert len(re.findall(rb"\n\[\s*\d+\.\d{6}\]  [\w.]+\+0x[0-9a-f]+/0x[0-9a-f]+\r", out)) >= 5


def assert_dead(host: SimHost, t: float) -> None:
    assert host.panicked
    assert host.powered
    host.write(b"uname\r", t)
    host.send_break(t)
    host.write(b"h", t)
    assert host.next_deadline() is None
    assert host.read(t + 60.0) == b""


def test_panic_command_prints_a_kernel_panic_then_ignores_input():
    host, t = booted()
    out, t = type_line(host, b"panic\r", t)
    assert out.startswith(b"panic\r\n")
    assert_panic(out)
    assert b"Comm: sh " in out
    assert out.endswith(b"---[ end Kernel panic - not syncing: sysrq triggered crash ]---\r\n")
    assert_dead(host, t)
    host.reset(t + 1)
    out, _ = drain(host, t + 1)
    assert out.endswith(PROMPT)
    assert not host.panicked


def test_break_then_h_prints_sysrq_help_and_the_key_is_not_typed():
    host, t = booted()
    host.send_break(t)
    out, t = type_line(host, b"h", t + 1.0)
    assert re.fullmatch(
        rb"\[\s*\d+\.\d{6}\] sysrq: HELP : loglevel\(0-9\) reboot\(b\) crash\(c\) .*\r\n", out
    )
    out, t = type_line(host, b"h\r", t)  # the break is used up: h is an ordinary key again
    assert out == b"h\r\nsh: h: command not found\r\n" + PROMPT


def test_break_then_c_panics_from_the_serial_interrupt():
    host, t = booted()
    host.send_break(t)
    out, t = type_line(host, b"c", t + 0.2)
    assert_panic(out)
    assert b" <IRQ>" in out
    assert b"serial8250_handle_irq" in out
    assert_dead(host, t)


def test_break_then_b_reboots():
    host, t = booted()
    host.send_break(t)
    out, t = type_line(host, b"b", t)
    assert b"sysrq: Resetting" in out
    assert out.index(b"sysrq: Resetting") < out.index(b"solgate-sim BIOS v1.0")
    assert out.endswith(PROMPT)
    assert host.boot_count == 2


@pytest.mark.parametrize(
    ("key", "expected"),
    [(b"s", b"sysrq: Emergency Sync"), (b"7", b"sysrq: Loglevel set to 7"),
     (b"m", b"sysrq: Show Memory"), (b"Q", b"sysrq: HELP : ")],
)
def test_other_sysrq_keys_print_their_message(key, expected):
    host, t = booted()
    host.send_break(t)
    out, _ = type_line(host, key, t)
    assert expected in out
    assert host.state is HostState.SHELL


def test_sysrq_o_powers_off():
    host, t = booted()
    host.send_break(t)
    out, _ = type_line(host, b"o", t)
    assert b"sysrq: Power Off" in out
    assert b"reboot: Power down" in out
    assert not host.powered


def test_sysrq_during_a_flood_ends_the_job_and_is_printed():
    host, t = booted()
    host.write(b"flood 10M\r", t)
    host.send_break(t + 1.0)
    out, _ = type_line(host, b"e", t + 1.0)
    killed = rb"\[\s*\d+\.\d{6}\] sysrq: Terminate All Tasks\r\n" + re.escape(PROMPT) + rb"\Z"
    assert re.search(killed, out)
    assert len(out) < 2 * RATE  # the rest of the flood was flushed
    host.send_break(t + 2.0)
    out, _ = type_line(host, b"o", t + 2.0)
    assert b"sysrq: Power Off" in out
    assert not host.powered


def test_a_break_is_forgotten_after_five_seconds():
    host, t = booted()
    host.send_break(t)
    out, _ = type_line(host, b"h", t + SYSRQ_TIMEOUT + 0.1)
    assert out == b"h"


def test_a_break_does_nothing_before_the_kernel_console_is_up():
    host = _on(SimHost(boot_speed=1.0))
    host.send_break(0.5)  # still in the BIOS
    host.write(b"c", 0.6)
    out, _ = drain(host, 0.6)
    assert not host.panicked
    assert b"sysrq" not in out
    assert out.endswith(PROMPT)


# ------------------------------------------------------------------------- flood


@pytest.mark.parametrize("size", [1, 63, 64, 65, 100_000, 100_001])
def test_flood_prints_exactly_n_bytes_that_verify(size):
    host, t = booted()
    command = b"flood %d\r" % size
    out, t = type_line(host, command, t)
    echo = command + b"\n"
    assert out.startswith(echo)
    assert out.endswith(PROMPT)
    body = out[len(echo) : -len(PROMPT)]
    assert len(body) == size
    assert verify_flood(body, size) == (True, f"{size} bytes ({size // 64} full lines) verified")


def test_flood_format_is_numbered_fixed_width_lines():
    assert flood_line(1) == b"flood 00000001 BCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuv\r\n"
    assert all(len(flood_line(k)) == FLOOD_LINE_LEN for k in (1, 61, 62, 99_999_999))
    assert flood_bytes(130) == flood_line(1) + flood_line(2) + flood_line(3)[:2]


def test_ten_megabyte_flood_is_lazy_and_complete():
    host, t = booted()
    size = 10_000_000
    host.write(b"flood 10000000\r", t)
    first = host.read(t + 1.0, 1 << 30)
    assert len(first) == RATE
    done_at = t + (len(b"flood 10000000\r\n") + size + len(PROMPT)) / RATE
    middle = host.read(done_at - 1.0, 1 << 30)
    assert not middle.endswith(PROMPT)
    out = first + middle + host.read(done_at, 1 << 30)
    assert out.endswith(PROMPT)
    body = out[len(b"flood 10000000\r\n") : -len(PROMPT)]
    assert verify_flood(body, size)[0]
    assert host.next_deadline() is None


def test_ctrl_c_stops_a_flood_at_once():
    host, t = booted()
    host.write(b"flood 6399999936\r", t)  # 6.4 GB, hours of output: must cost nothing up front
    host.write(b"\x03", t + 0.5)
    out, _ = drain(host, t + 0.5)
    assert out.endswith(b"^C\r\n" + PROMPT)
    sent = out[: -len(b"^C\r\n" + PROMPT)]
    assert len(sent) == RATE // 2  # what was on the wire by then; the rest was flushed
    body = sent[len(b"flood 6399999936\r\n") :]
    assert verify_flood(body)[0]


def test_flood_rejects_bad_sizes():
    host, t = booted()
    out, t = type_line(host, b"flood lots\r", t)
    assert b"flood: usage: flood BYTES" in out
    out, t = type_line(host, b"flood 64K\r", t)
    assert len(out) == len(b"flood 64K\r\n") + 65536 + len(PROMPT)


def _lines(count: int) -> list[bytes]:
    return [flood_line(k) for k in range(1, count + 1)]


def test_verify_flood_detects_a_dropped_line():
    lines = _lines(10)
    del lines[4]
    ok, details = verify_flood(b"".join(lines))
    assert not ok
    assert "line 5 dropped" in details
    assert f"offset {4 * FLOOD_LINE_LEN}" in details


def test_verify_flood_detects_a_duplicated_line():
    lines = _lines(10)
    lines.insert(4, lines[3])
    ok, details = verify_flood(b"".join(lines))
    assert not ok
    assert "line 4 duplicated" in details


def test_verify_flood_detects_reordered_lines():
    lines = _lines(10)
    lines[3], lines[6] = lines[6], lines[3]
    ok, details = verify_flood(b"".join(lines))
    assert not ok
    assert "lines 4..6 dropped" in details  # line 7 arrived where 4 was due
    ok, details = verify_flood(b"".join(lines[:3] + [lines[4], lines[3]] + lines[5:]))
    assert not ok


def test_verify_flood_detects_corruption_and_wrong_length():
    data = bytearray(flood_bytes(1000))
    data[300] ^= 0x20
    ok, details = verify_flood(bytes(data))
    assert not ok
    assert "line 5: corrupted" in details
    ok, details = verify_flood(flood_bytes(999), 1000)
    assert not ok
    assert "999" in details
    assert not verify_flood(b"garbage")[0]
    assert not verify_flood(flood_bytes(1000)[64:])[0]  # must start at line 1


# --------------------------------------------------------------------- power


def test_power_off_stops_output_and_ignores_input():
    host = _on(SimHost())
    before = host.read(0.3, 1 << 20)
    host.power_off(0.3)
    assert not host.powered
    assert host.next_deadline() is None
    host.write(b"uname\r", 0.4)
    host.send_break(0.4)
    assert host.read(100.0) == b""
    assert b"BIOS" in before
    host.power_off(1.0)  # already off: nothing happens
    host.reset(1.0)
    assert not host.powered


def test_power_off_loses_only_untransmitted_output():
    host, t = booted()
    host.write(b"flood 100000\r", t)
    host.power_off(t + 1.0)
    out = host.read(t + 50.0, 1 << 20)
    assert len(out) == RATE  # what had been sent stays readable; nothing more comes
    assert verify_flood(out[len(b"flood 100000\r\n") :])[0]


def test_power_on_and_cycle_boot_from_the_firmware_again():
    host, t = booted()
    host.power_off(t)
    host.power_on(t + 1.0)
    host.power_on(t + 1.5)  # already on: no second boot
    out, t = drain(host, t + 1.0)
    assert out.count(b"solgate-sim BIOS v1.0") == 1
    assert out.endswith(PROMPT)
    host.power_cycle(t)
    out, t = drain(host, t)
    assert out.startswith(b"\r\nsolgate-sim BIOS v1.0")
    assert out.endswith(PROMPT)
    assert host.boot_count == 3


def test_reset_mid_boot_restarts_the_boot():
    host = _on(SimHost(boot_speed=1.0))
    out1 = host.read(4.0, 1 << 20)
    host.reset(4.0)
    out2, _ = drain(host, 4.0)
    assert b"Linux version" in out1  # the kernel had started
    assert out2.startswith(b"\r\nsolgate-sim BIOS v1.0")
    assert out2.endswith(PROMPT)


def test_lines_written_while_the_line_is_busy_share_segments_and_read_the_same():
    """A large boot log outruns the line: its lines join the UART's last segment (up to
    MERGE_LIMIT bytes each) instead of one segment a line, and any way of reading it gives
    the same bytes at the same times as reading it all at the end."""
    from solgate.sim.host import MERGE_LIMIT

    a = SimHost("merge", seed=5, boot_log_size=65536)
    b = SimHost("merge", seed=5, boot_log_size=65536)
    a.power_on(0.0)
    b.power_on(0.0)
    got, t, most = [], 0.0, 0
    for _ in range(100_000):
        due = a.next_deadline()
        if due is None:
            break
        t = max(t + 0.013, due)
        most = max(most, len(a._uart.queue))
        got.append(a.read(t, 200))
    whole = b.read(t, 1 << 20)
    assert b"".join(got) == whole
    assert len(whole) == a.output_bytes == b.output_bytes > 60_000
    assert most <= 65536 // MERGE_LIMIT + 8  # not one segment per line (~700 lines)
    # A reset flushes what a merged segment had not transmitted, as it did per line.
    c = SimHost("merge", seed=5, boot_log_size=65536)
    c.power_on(0.0)
    early = c.read(6.0, 1 << 20)
    c.reset(6.0)
    assert whole.startswith(early)
    again = c.read(60.0, 1 << 20)
    assert again.startswith(b"\r\nsolgate-sim BIOS")
    assert c.output_bytes == len(early) + len(again)


@pytest.mark.parametrize(("size", "length", "digest", "last"), [
    (0, 4086, "bb5a6c6bac0a5e8b", 5.414684),
    (8192, 8211, "25aede380145d637", 5.527876),
    (65536, 65562, "2709338725e2ea88", 9.646429),
])
def test_boot_logs_are_byte_for_byte_what_they_were(size, length, digest, last):
    """Pinned: the boot log's bytes and the time of its last byte, read as a SOL port
    reads (every ~8 ms, 255 at a time). Work on the host's speed must not move them
    (the values are those of the code before the UART merged segments and the extra
    boot lines were made once per process)."""
    import hashlib

    host = SimHost("golden", seed=3, boot_log_size=size)
    host.power_on(0.0)
    t, got = 0.0, []
    for _ in range(100_000):
        due = host.next_deadline()
        if due is None:
            break
        t = max(t + 0.0083, due)
        got.append(host.read(t, 255))
    data = b"".join(got)
    assert (len(data), hashlib.sha256(data).hexdigest()[:16]) == (length, digest)
    assert round(t, 6) == last
