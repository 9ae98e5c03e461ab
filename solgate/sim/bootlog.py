"""What the simulated host prints: boot and shutdown scripts, kernel panics, SysRq replies.

Kept apart from `host.py` so the state machine stays readable. Texts use "\\n"; the host
turns it into CR LF on the way out, as a tty with ONLCR does. Kernel messages are returned
without their "[    0.000000] " stamp, which the host adds from its clock.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

KERNEL_RELEASE = "6.1.0-sim"
KERNEL_BUILD = "#1 SMP PREEMPT_DYNAMIC Mon Jan  1 00:00:00 UTC 2024"
HARDWARE_NAME = "solgate-sim Simulated Server/SIM-1, BIOS v1.0 01/01/2024"
OS_NAME = "solgate-sim GNU/Linux"

_OK = "[\x1b[0;32m  OK  \x1b[0m]"  # systemd's green status tag


@dataclass(frozen=True)
class Step:
    """One step of a scripted phase: wait `delay` (nominal seconds), then print and/or mark.

    `kernel` lines get a printk timestamp. `mark` tells the host that a phase boundary was
    reached: "kernel" (timestamps start at 0), "sysrq" (the serial console driver is up, so a
    BREAK works), "shell" (the prompt is up), "restart" (reset into the firmware), "off".
    """

    delay: float
    text: str = ""
    kernel: bool = False
    mark: str = ""


def boot_script(name: str, baud: int, mac: str, rng: random.Random,
                size: int = 0) -> Iterator[Step]:
    """Firmware, boot loader, kernel and init, ending at the shell prompt (about 5 s).

    The plain script prints about 5 KB. With `size` (bytes, approximately) the kernel
    probes more devices and init starts more units until the log reaches it, as a large
    server's does (a real one prints 50-150 KB); the extra lines come a few ms apart, so
    the serial line, not the script, sets their pace.
    """
    yield Step(0.05, "\nsolgate-sim BIOS v1.0 (build 2024-01-01)\n")
    yield Step(0.05, "Copyright (C) 2024 the solgate project\n\n")
    yield Step(0.2, "CPU: Simulated x86-64 Processor @ 2.40GHz, 4 cores\n")
    for kib in (4194304, 8388608, 12582912):
        yield Step(0.2, f"Memory Test: {kib:9d}K\r")
    yield Step(0.2, f"Memory Test: {16777216:9d}K OK\n\n")
    yield Step(0.1, "Press <DEL> to enter setup, <F11> for boot menu, <F12> for network boot\n")
    yield Step(1.0, "\nBooting from Hard Disk 0...\n")
    yield Step(0.2, "GRUB loading.\nWelcome to GRUB!\n\n")
    yield Step(0.3, f"  Booting `{OS_NAME}, with Linux {KERNEL_RELEASE}'\n\n")
    yield Step(0.1, f"Loading Linux {KERNEL_RELEASE} ...\nLoading initial ramdisk ...\n")
    yield Step(0.4, mark="kernel")
    extra = max(0, size - _PLAIN_SIZE)
    for delay, message in _kernel_lines(name, baud, mac):
        if message == "<sysrq>":
            yield Step(0.0, mark="sysrq")
            continue
        yield Step(delay * (0.5 + rng.random()), message, kernel=True)
        if message.startswith("Run /sbin/init"):
            yield from _more_kernel_lines(extra * 2 // 3, rng)
    yield Step(0.2, f"\nWelcome to \x1b[1m{OS_NAME}\x1b[0m!\n\n")
    for unit in _UNITS:
        yield Step(0.04 + 0.08 * rng.random(), f"{_OK} {unit}\n")
    yield from _more_units(extra - extra * 2 // 3, rng)
    yield Step(0.2, f"\n{OS_NAME} {KERNEL_RELEASE} {name} ttyS0\n\n")
    yield Step(0.05, mark="shell")


def shutdown_script(power_off: bool) -> Iterator[Step]:
    """What `reboot`/`poweroff` print before the machine restarts or goes dark (about 1 s)."""
    for unit in ("Stopped target Multi-User System.", "Stopped Serial Getty on ttyS0.",
                 "Stopped Journal Service.", "Unmounted /boot.", "Reached target System Shutdown."):
        yield Step(0.1, f"{_OK} {unit}\n")
    if power_off:
        yield Step(0.3, "reboot: Power down", kernel=True)
        yield Step(0.05, mark="off")
    else:
        yield Step(0.3, "reboot: Restarting system", kernel=True)
        yield Step(0.5, mark="restart")


def _kernel_lines(name: str, baud: int, mac: str) -> list[tuple[float, str]]:
    """(nominal delay, message) pairs for a plausible 6.1 x86-64 boot on ttyS0."""
    return [
        (0.0, f"Linux version {KERNEL_RELEASE} (builder@solgate-sim) (gcc (GCC) 12.2.0, "
              f"GNU ld (GNU Binutils) 2.40) {KERNEL_BUILD}"),
        (0.001, f"Command line: BOOT_IMAGE=/boot/vmlinuz-{KERNEL_RELEASE} root=/dev/sda1 ro "
                f"console=tty0 console=ttyS0,{baud}n8"),
        (0.001, "BIOS-provided physical RAM map:"),
        (0.001, "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable"),
        (0.001, "BIOS-e820: [mem 0x0000000000100000-0x00000000bffdffff] usable"),
        (0.001, "BIOS-e820: [mem 0x0000000100000000-0x000000043fffffff] usable"),
        (0.001, "NX (Execute Disable) protection: active"),
        (0.001, "SMBIOS 3.0.0 present."),
        (0.001, f"DMI: {HARDWARE_NAME}"),
        (0.002, "tsc: Detected 2400.000 MHz processor"),
        (0.005, "ACPI: Early table checksum verification disabled"),
        (0.001, "ACPI: RSDP 0x00000000000F5A10 000014 (v00 SOLGAT)"),
        (0.001, "ACPI: RSDT 0x00000000BFFE1A2B 000034 "
                "(v01 SOLGAT SIM-1    00000001 SGSM 00000001)"),
        (0.010, "Memory: 16298628K/16776692K available (16384K kernel code, 2766K rwdata, "
                "10232K rodata, 3096K init, 3696K bss, 477804K reserved, 0K cma-reserved)"),
        (0.020, "Calibrating delay loop (skipped), value calculated using timer frequency.. "
                "4800.00 BogoMIPS (lpj=9600000)"),
        (0.010, "CPU0: Simulated x86-64 Processor @ 2.40GHz (family: 0x6, model: 0x55, "
                "stepping: 0x7)"),
        (0.030, "smp: Bringing up secondary CPUs ..."),
        (0.040, "smp: Brought up 1 node, 4 CPUs"),
        (0.020, "ACPI: Interpreter enabled"),
        (0.001, "ACPI: PM: (supports S0 S5)"),
        (0.002, "PCI: Using configuration type 1 for base access"),
        (0.050, "PCI host bridge to bus 0000:00"),
        (0.002, "pci 0000:00:00.0: [8086:1237] type 00 class 0x060000"),
        (0.002, "pci 0000:00:1f.2: [8086:2922] type 00 class 0x010601"),
        (0.002, "pci 0000:00:19.0: [8086:10d3] type 00 class 0x020000"),
        (0.080, "Serial: 8250/16550 driver, 4 ports, IRQ sharing enabled"),
        (0.010, f"00:04: ttyS0 at I/O 0x3f8 (irq = 4, base_baud = {baud}) is a 16550A"),
        (0.001, "printk: console [ttyS0] enabled"),
        (0.0, "<sysrq>"),
        (0.150, "ahci 0000:00:1f.2: AHCI 0001.0000 32 slots 6 ports 1.5 Gbps 0x3f impl SATA mode"),
        (0.200, "ata1: SATA link up 1.5 Gbps (SStatus 113 SControl 300)"),
        (0.050, "scsi 0:0:0:0: Direct-Access     ATA      SIM DISK         1.0  PQ: 0 ANSI: 5"),
        (0.010, "sd 0:0:0:0: [sda] 209715200 512-byte logical blocks: (107 GB/100 GiB)"),
        (0.010, " sda: sda1"),
        (0.050, f"e1000e 0000:00:19.0 eth0: (PCI Express:2.5GT/s:Width x1) {mac}"),
        (0.100, "EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none."),
        (0.020, "Run /sbin/init as init process"),
        (0.080, "systemd[1]: systemd 252 running in system mode (+PAM +AUDIT +SELINUX -APPARMOR "
                "+IMA +SMACK +SECCOMP +GCRYPT -GNUTLS +OPENSSL +ACL +BLKID +CURL)"),
        (0.002, "systemd[1]: Detected architecture x86-64."),
        (0.010, f"systemd[1]: Hostname set to <{name}>."),
    ]


_PLAIN_SIZE = 4100  # bytes the plain script prints (CR LF line ends, stamps included)
_STAMP = 15  # "[    1.234567] "


def _more_kernel_lines(budget: int, rng: random.Random) -> Iterator[Step]:
    """Device probes, as a server with many disks, NICs and PCIe functions prints them."""
    n = 0
    while budget > 0:
        text = _kernel_line(n)
        if n % 6 == 5:  # the DIMM's serial number is the host's own
            text += f"{rng.getrandbits(32):08X}"
        yield Step(0.002 * rng.random(), text, kernel=True)
        budget -= _STAMP + len(text) + 2
        n += 1


def _more_units(budget: int, rng: random.Random) -> Iterator[Step]:
    """systemd's start-up lines for the services and mounts of a busy server."""
    n = 0
    while budget > 0:
        text = _unit_line(n)
        yield Step(0.004 * rng.random(), text)
        budget -= len(text) + 1  # the line end goes out as CR LF
        n += 1


# Line n of the extra probes and units is the same on every host (only a DIMM's serial
# and the delays are drawn from the host's generator): made once per process, so 2,000
# hosts booting a large log do not format the same text 2,000 times.
# (Dicts: hosts booting in two threads at once may both fill in line n, with one text.)
_KERNEL_LINES: dict[int, str] = {}
_UNIT_LINES: dict[int, str] = {}


def _kernel_line(n: int) -> str:
    """Line n of the extra device probes (a DIMM line without its serial number)."""
    text = _KERNEL_LINES.get(n)
    if text is None:
        text = _KERNEL_LINES.setdefault(n, _make_kernel_line(n))
    return text


def _unit_line(n: int) -> str:
    """Line n of the extra units, with its line end."""
    text = _UNIT_LINES.get(n)
    if text is None:
        text = _UNIT_LINES.setdefault(n, _make_unit_line(n) + "\n")
    return text


def _make_kernel_line(n: int) -> str:
    bus, dev, fn = n // 64 % 256, n // 8 % 8, n % 8
    match n % 6:
        case 0:
            return (f"pci 0000:{bus + 0x17:02x}:{dev:02x}.{fn}: [8086:{0x2020 + n % 97:04x}] "
                    f"type 00 class 0x{0x088000 + n % 5:06x}")
        case 1:
            return (f"pci 0000:{bus + 0x17:02x}:{dev:02x}.{fn}: reg 0x10: "
                    f"[mem 0x{0xc0000000 + n * 0x4000:08x}-0x{0xc0003fff + n * 0x4000:08x} "
                    "64bit pref]")
        case 2:
            disk = _disk_name(n // 6)
            return (f"sd {n // 6 % 16}:0:{n // 96}:0: [{disk}] 7814037168 512-byte logical "
                    "blocks: (4.00 TB/3.64 TiB)")
        case 3:
            disk = _disk_name(n // 6)
            return (f"sd {n // 6 % 16}:0:{n // 96}:0: [{disk}] Write cache: enabled, read "
                    "cache: enabled, doesn't support DPO or FUA")
        case 4:
            return (f"mlx5_core 0000:{bus + 0x41:02x}:00.{fn}: firmware version: 16.35.2000, "
                    f"port {n % 2 + 1} link up, 100Gbps full duplex")
        case _:
            return (f"EDAC MC{n % 4}: DIMM {n % 32:02d} (channel {n % 8}, slot {n % 2}): "
                    "16384 MB DDR4-3200 RDIMM ECC, serial ")


def _make_unit_line(n: int) -> str:
    match n % 4:
        case 0:
            return f"{_OK} Started Node Exporter instance {n} (metrics port {9100 + n})."
        case 1:
            return f"{_OK} Mounted /srv/scratch{n:04d} (nfs4 storage{n % 16:02d}:/export)."
        case 2:
            return f"{_OK} Finished Set up network interface ens{n % 64}f{n % 2} (bond{n % 4})."
        case _:
            return f"{_OK} Reached target Job Slot {n} of the batch system (slurmd.service)."


def _disk_name(i: int) -> str:
    """sda..sdz, sdaa.. as the kernel names disks."""
    letters = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        letters = chr(ord("a") + r) + letters
    return "sd" + letters


_UNITS = (
    "Created slice Slice /system/getty.",
    "Started Journal Service.",
    "Finished Remount Root and Kernel File Systems.",
    "Reached target Local File Systems.",
    "Started Network Time Synchronization.",
    "Reached target Network.",
    "Started OpenBSD Secure Shell server.",
    "Started Serial Getty on ttyS0.",
    "Reached target Multi-User System.",
)

SYSRQ_HELP = (
    "sysrq: HELP : loglevel(0-9) reboot(b) crash(c) terminate-all-tasks(e) "
    "memory-full-oom-kill(f) kill-all-tasks(i) thaw-filesystems(j) sak(k) "
    "show-backtrace-all-active-cpus(l) show-memory-usage(m) nice-all-RT-tasks(n) poweroff(o) "
    "show-registers(p) show-all-timers(q) unraw(r) sync(s) show-task-states(t) unmount(u) "
    "force-fb(v) show-blocked-tasks(w) dump-ftrace-buffer(z)"
)

# SysRq key -> (kernel messages, action the host takes). Keys not here print the help.
SYSRQ_KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "b": (("sysrq: Resetting",), "reboot"),
    "c": ((), "crash"),
    "e": (("sysrq: Terminate All Tasks",), "kill"),
    "f": (("sysrq: Manual OOM execution",), ""),
    "i": (("sysrq: Kill All Tasks",), "kill"),
    "j": (("sysrq: Emergency Thaw of all frozen filesystems",), ""),
    "k": (("sysrq: SAK",), "kill"),
    "l": (("sysrq: Show backtrace of all active CPUs",
           "NMI backtrace for cpu 0", "CPU: 0 PID: 0 Comm: swapper/0 Not tainted "
           f"{KERNEL_RELEASE} {KERNEL_BUILD.split()[0]}"), ""),
    "m": (("sysrq: Show Memory", "Mem-Info:",
           "active_anon:2113 inactive_anon:5412 isolated_anon:0",
           "free:4074519 free_pcp:1024 free_cma:0"), ""),
    "n": (("sysrq: Nice All RT Tasks",), ""),
    "o": (("sysrq: Power Off",), "poweroff"),
    "p": (("sysrq: Show Regs",), ""),
    "q": (("sysrq: Show clockevent devices & pending hrtimers (no others)",), ""),
    "r": (("sysrq: Keyboard mode set to system default",), ""),
    "s": (("sysrq: Emergency Sync", "Emergency Sync complete"), ""),
    "t": (("sysrq: Show State", "task:systemd         state:S stack:0     pid:1     "
           "ppid:0      flags:0x00000002"), ""),
    "u": (("sysrq: Emergency Remount R/O", "Emergency Remount complete"), ""),
    "v": (("sysrq: Restore framebuffer console",), ""),
    "w": (("sysrq: Show Blocked State",), ""),
    "z": (("sysrq: Dump ftrace buffer", "Dumping ftrace buffer:", "   (ftrace buffer empty)"), ""),
}
for _level in range(10):
    SYSRQ_KEYS[str(_level)] = (("sysrq: Changing Loglevel", f"sysrq: Loglevel set to {_level}"), "")

PANIC_REASON = "sysrq triggered crash"

_PROCESS_FRAMES = (
    " <TASK>", " dump_stack_lvl+0x44/0x5c", " panic+0x118/0x2e8", " ? _printk+0x58/0x73",
    " sysrq_handle_crash+0x16/0x20", " __handle_sysrq.cold+0x43/0x11b",
    " write_sysrq_trigger+0x24/0x40", " proc_reg_write+0x56/0xa0", " vfs_write+0xc7/0x3e0",
    " ? fpregs_assert_state_consistent+0x22/0x50", " ksys_write+0x6b/0xf0",
    " do_syscall_64+0x58/0xc0", " ? exit_to_user_mode_prepare+0x40/0x1e0",
    " entry_SYSCALL_64_after_hwframe+0x64/0xce",
)

_IRQ_FRAMES = (
    " <IRQ>", " dump_stack_lvl+0x44/0x5c", " panic+0x118/0x2e8", " sysrq_handle_crash+0x16/0x20",
    " __handle_sysrq.cold+0x43/0x11b", " serial8250_handle_irq+0x1d5/0x200",
    " serial8250_default_handle_irq+0x45/0x90", " serial8250_interrupt+0x54/0xb0",
    " __handle_irq_event_percpu+0x46/0x190", " handle_irq_event+0x34/0x70",
    " handle_edge_irq+0x9f/0x240", " __common_interrupt+0x3f/0xa0",
    " common_interrupt+0x7b/0xa0", " </IRQ>", " <TASK>", " asm_common_interrupt+0x22/0x40",
)

_IDLE_FRAMES = (
    " default_idle_call+0x2c/0xd0", " do_idle+0x1f7/0x280", " cpu_startup_entry+0x1d/0x20",
    " rest_init+0xcc/0xd0", " arch_call_rest_init+0xa/0x14", " start_kernel+0x6ef/0x718",
    " secondary_startup_64_no_verify+0xe5/0xeb",
)


def panic_lines(rng: random.Random, *, from_serial: bool, pid: int) -> list[str]:
    """A SysRq-c kernel panic: from the serial interrupt (BREAK c) or from a shell's write."""
    def reg() -> str:
        return f"{rng.getrandbits(64):016x}"

    lines = ["sysrq: Trigger a crash", f"Kernel panic - not syncing: {PANIC_REASON}"]
    if from_serial:
        lines.append(f"CPU: 0 PID: 0 Comm: swapper/0 Not tainted {KERNEL_RELEASE} #1")
    else:
        cpu = rng.randrange(4)
        lines.append(f"CPU: {cpu} PID: {pid} Comm: sh Not tainted {KERNEL_RELEASE} #1")
    lines += [f"Hardware name: {HARDWARE_NAME}", "Call Trace:"]
    if from_serial:
        lines += _IRQ_FRAMES
        lines.append("RIP: 0010:default_idle+0xb/0x10")
        lines.append("Code: 07 76 e8 a3 0b 7e ff cc cc cc cc cc cc cc 66 90 0f 1f 44 00 00 "
                     "eb 07 0f 00 2d 52 5c 4d 00 fb f4 <fa> c3 cc cc cc cc")
        lines.append("RSP: 0018:ffffffff93603e80 EFLAGS: 00000246")
        lines.append(f"RAX: {reg()} RBX: 0000000000000000 RCX: {reg()}")
        lines += _IDLE_FRAMES
    else:
        lines += _PROCESS_FRAMES
        lines.append(f"RIP: 0033:0x7f{rng.getrandbits(40):010x}")
        lines.append("Code: 0f 1f 84 00 00 00 00 00 64 8b 04 25 18 00 00 00 85 c0 75 14 b8 01 "
                     "00 00 00 0f 05 <48> 3d 00 f0 ff ff 77 55 c3 0f 1f 40 00")
        lines.append(f"RSP: 002b:00007ffc{rng.getrandbits(32):08x} EFLAGS: 00000246 "
                     "ORIG_RAX: 0000000000000001")
        lines.append(f"RAX: ffffffffffffffda RBX: 0000000000000002 RCX: {reg()}")
        lines.append(f"RDX: 0000000000000002 RSI: {reg()} RDI: 0000000000000001")
    lines.append(" </TASK>")
    offset = rng.randrange(1, 0x3F) << 24
    lines.append(f"Kernel Offset: 0x{offset:x} from 0xffffffff81000000 "
                 "(relocation range: 0xffffffff80000000-0xffffffffbfffffff)")
    lines.append(f"---[ end Kernel panic - not syncing: {PANIC_REASON} ]---")
    return lines


HELP_TEXT = """\
solgate-sim shell: a simulated host behind a simulated BMC. Commands:
  uname [-a|-s|-n|-r|-m]  kernel and host name
  hostname                the host name
  echo [-n] WORDS         print WORDS
  flood BYTES             print exactly BYTES of numbered lines at line rate (64K, 10M ok)
  panic                   crash the kernel (like echo c > /proc/sysrq-trigger)
  reboot | poweroff       restart or power down the host
  clear | true | false | help
Keys: Ctrl-C interrupts, Backspace/DEL erases, Ctrl-U kills the line.
A serial BREAK followed by a key within 5 s is a SysRq (h help, c crash, b reboot).
"""
