"""Panic detection: an operator gets one alert per crash, with the lines around it."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from solgate.console.panic import PanicDetector, PanicEvent, clean_line
from solgate.errors import ConfigError

BEFORE = """\
[   11.902113] systemd[1]: Started Journal Service.
[   12.001337] crashme: loading out-of-tree module taints kernel.
"""

# An Oops that escalates to a panic (panic_on_oops), as a serial console shows it.
OOPS_PANIC = """\
[   12.400001] BUG: kernel NULL pointer dereference, address: 0000000000000008
[   12.400010] #PF: supervisor read access in kernel mode
[   12.400015] #PF: error_code(0x0000) - not-present page
[   12.400020] PGD 0 P4D 0
[   12.400025] Oops: 0000 [#1] PREEMPT SMP NOPTI
[   12.400030] CPU: 3 PID: 1234 Comm: insmod Tainted: G           OE      6.1.0-18-amd64 #1
[   12.400035] Hardware name: Supermicro SYS-1029P-WTR/X11DDW-L, BIOS 3.4 12/01/2020
[   12.400040] RIP: 0010:crash_init+0x15/0x1000 [crashme]
[   12.400045] Code: Unable to access opcode bytes at 0xffffffffc0a1cfeb.
[   12.400050] RSP: 0018:ffffb5a0c1f3bc68 EFLAGS: 00010246
[   12.400055] RAX: 0000000000000000 RBX: 0000000000000000 RCX: 0000000000000000
[   12.400060] RDX: 0000000000000000 RSI: ffffffffc0a1d000 RDI: 0000000000000000
[   12.400065] RBP: ffffffffc0a1d000 R08: 0000000000000000 R09: ffffb5a0c1f3bb88
[   12.400070] R10: 0000000000000003 R11: ffffffff95d56a68 R12: ffff9c2a41e0a480
[   12.400075] FS:  00007f2b1c4a3740(0000) GS:ffff9c31bfcc0000(0000) knlGS:0000000000000000
[   12.400080] CR2: 0000000000000008 CR3: 000000010a5e2004 CR4: 00000000007706e0
[   12.400100] Call Trace:
[   12.400105]  <TASK>
[   12.400110]  ? __die+0x23/0x70
[   12.400115]  ? page_fault_oops+0x17d/0x4c0
[   12.400120]  ? exc_page_fault+0x7f/0x180
[   12.400125]  ? asm_exc_page_fault+0x26/0x30
[   12.400130]  ? crash_init+0x15/0x1000 [crashme]
[   12.400135]  do_one_initcall+0x5b/0x320
[   12.400140]  do_init_module+0x4c/0x240
[   12.400145]  __do_sys_finit_module+0xac/0x120
[   12.400150]  do_syscall_64+0x58/0xc0
[   12.400155]  entry_SYSCALL_64_after_hwframe+0x64/0xce
[   12.400160] RIP: 0033:0x7f2b1c5c8f29
[   12.400165] RSP: 002b:00007ffd5e8d6b58 EFLAGS: 00000246 ORIG_RAX: 0000000000000139
[   12.400170]  </TASK>
[   12.400175] Modules linked in: crashme(OE+) intel_rapl_msr intel_rapl_common sb_edac
[   12.400180] CR2: 0000000000000008
[   12.400185] ---[ end trace 0000000000000000 ]---
[   12.400300] RIP: 0010:crash_init+0x15/0x1000 [crashme]
[   12.400305] Code: Unable to access opcode bytes at 0xffffffffc0a1cfeb.
[   12.400400] Kernel panic - not syncing: Fatal exception
[   12.400500] Kernel Offset: 0x14000000 from 0xffffffff81000000 (relocation range: ...)
[   12.400600] ---[ end Kernel panic - not syncing: Fatal exception ]---
"""

# What follows on the console: the BMC's watchdog resets the machine and the BIOS paints.
AFTER = (
    "\x1b[2J\x1b[1;1H\x1b[0;37;44m"
    "\xc9\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xbb\r\n"
    "\xba Supermicro BIOS \xba\r\n"
    "\xc8\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xbc\r\n"
    "Press <DEL> to run Setup\r\n"
)

VFS_PANIC = """\
[    2.100000] VFS: Cannot open root device "sda1" or unknown-block(0,0): error -6
[    2.100010] Please append a correct "root=" boot option; here are the available partitions:
[    2.100020] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)
[    2.100030] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0 #1
[    2.100040] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2 04/01/2014
[    2.100050] Call Trace:
[    2.100060]  <TASK>
[    2.100070]  dump_stack_lvl+0x44/0x5c
[    2.100080]  panic+0x118/0x2ed
[    2.100090]  mount_block_root+0x1d3/0x1e6
[    2.100100]  prepare_namespace+0x136/0x165
[    2.100110]  kernel_init_freeable+0x25c/0x286
[    2.100120]  ? rest_init+0xd0/0xd0
[    2.100130]  kernel_init+0x16/0x130
[    2.100140]  ret_from_fork+0x22/0x30
[    2.100150]  </TASK>
[    2.100160] Kernel Offset: disabled
[    2.100170] ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs ]---
"""


def serial(text: str) -> bytes:
    """Text as a serial console sends it: CRLF line ends, CP437 for the BIOS bytes."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("latin-1")


def feed_chunked(
    det: PanicDetector,
    data: bytes,
    rng: random.Random,
    now: float,
    sizes: tuple[int, int] = (1, 64),
) -> list[PanicEvent]:
    events: list[PanicEvent] = []
    pos = 0
    while pos < len(data):
        n = rng.randint(*sizes)
        events += det.feed(data[pos : pos + n], now)
        pos += n
    return events


@pytest.mark.parametrize(
    ("seed", "sizes"), [(0, (1, 1)), (1, (1, 7)), (2, (1, 200)), (3, (500, 5000))]
)
def test_oops_escalating_to_panic_is_one_critical_event(seed, sizes):
    det = PanicDetector()
    rng = random.Random(seed)
    data = serial(BEFORE) + serial(OOPS_PANIC) + serial(AFTER)
    events = feed_chunked(det, data, rng, now=100.0, sizes=sizes)
    events += det.flush(100.5, final=True)
    assert len(events) == 1, [e.line for e in events]
    ev = events[0]
    assert ev.severity == "critical"
    assert ev.pattern == "kernel-panic"
    assert ev.line.endswith("Kernel panic - not syncing: Fatal exception")
    assert ev.time == 100.0
    assert set(ev.patterns) >= {"bug", "oops", "call-trace", "kernel-panic"}
    ctx = ev.context
    # Before: what the console said just before the crash.
    assert ctx[0].endswith("systemd[1]: Started Journal Service.")
    # The whole incident, in order, cleaned of CR.
    assert any(line.endswith("Oops: 0000 [#1] PREEMPT SMP NOPTI") for line in ctx)
    assert ctx.index(next(c for c in ctx if "Call Trace:" in c)) < ctx.index(ev.line)
    assert any("---[ end Kernel panic" in line for line in ctx)
    # After: the reboot, escapes and box drawing removed.
    assert ctx[-1] == "Press <DEL> to run Setup"
    assert "Supermicro BIOS" in ctx[-2]
    assert all("\x1b" not in c and "\r" not in c and "\u2550" not in c for c in ctx)


def test_panic_is_reported_by_the_timer_when_the_machine_goes_silent():
    det = PanicDetector()
    assert det.next_deadline() is None
    assert det.feed(serial(VFS_PANIC), now=50.0) == []
    deadline = det.next_deadline()
    assert deadline is not None
    assert 50.0 < deadline <= 55.0  # a few seconds, not minutes
    assert det.handle_timeout(deadline - 0.01) == []
    [ev] = det.handle_timeout(deadline)
    assert ev.severity == "critical"
    assert "Unable to mount root fs" in ev.line
    assert ev.context[0].endswith(
        'VFS: Cannot open root device "sda1" or unknown-block(0,0): error -6'
    )
    assert ev.context[-1].startswith("[    2.100170] ---[ end Kernel panic")
    assert det.next_deadline() is None
    assert det.flush(60.0) == []


def test_the_panic_chunks_arriving_slowly_still_make_one_event():
    # At 9600 baud a long trace takes seconds; each frame line keeps the incident open.
    det = PanicDetector()
    events: list[PanicEvent] = []
    now = 0.0
    for line in serial(OOPS_PANIC).splitlines(keepends=True):
        events += det.feed(line, now)
        now += 0.08
    now += 10
    events += det.handle_timeout(now)
    assert [e.severity for e in events] == ["critical"]


def test_separate_incidents_are_separate_events():
    det = PanicDetector(context_after=5)
    quiet = "".join(f"[  100.{i:06d}] eth0: link up\n" for i in range(10))
    text = (
        "[   99.000000] kworker/0:1 invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE)\n"
        "[   99.000100] Out of memory: Killed process 4242 (java) total-vm:9123456kB\n"
        + quiet
        + "[  130.000000] watchdog: BUG: soft lockup - CPU#2 stuck for 22s! [kworker/2:1:77]\n"
    )
    events = det.feed(serial(text), now=1.0) + det.flush(2.0)
    assert [(e.pattern, e.severity) for e in events] == [
        ("oom-killer", "error"),
        ("soft-lockup", "error"),
    ]
    assert events[0].patterns == ("oom-killer",)  # both OOM lines: one event
    assert len(events[0].context) == 2 + 5


@pytest.mark.parametrize(
    ("line", "pattern", "severity"),
    [
        ("Oops: 0002 [#1] SMP PTI", "oops", "error"),
        ("watchdog: BUG: soft lockup - CPU#5 stuck for 23s! [java:31337]", "soft-lockup", "error"),
        ("NMI watchdog: Watchdog detected hard LOCKUP on cpu 7", "hard-lockup", "critical"),
        ("INFO: task jbd2/sda1-8:402 blocked for more than 120 seconds.", "hung-task", "warning"),
        ("Out of memory: Killed process 2211 (mysqld) total-vm:4000000kB", "oom-killer", "error"),
        ("postgres invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0", "oom-killer", "error"),
        (
            "mce: [Hardware Error]: CPU 0: Machine Check Exception: 5 Bank 4",
            "machine-check",
            "error",
        ),
        (
            "general protection fault, probably for non-canonical address",
            "general-protection-fault",
            "error",
        ),
        ("BUG: unable to handle page fault for address: ffffed1000000000", "bug", "error"),
        (
            "WARNING: CPU: 1 PID: 99 at net/core/dev.c:3120 skb_warn_bad_offload+0x0/0x10",
            "kernel-warning",
            "warning",
        ),
        ("Call Trace:", "call-trace", "warning"),
        (
            "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009",
            "kernel-panic",
            "critical",
        ),
    ],
)
def test_each_builtin_pattern_is_detected(line, pattern, severity):
    det = PanicDetector()
    events = det.feed(f"[  123.456789] {line}\r\n".encode(), now=5.0) + det.flush(6.0)
    assert [(e.pattern, e.severity) for e in events] == [(pattern, severity)]


def test_ordinary_boot_output_raises_nothing():
    det = PanicDetector()
    text = (
        "Booting `Debian GNU/Linux'\n"
        "[    0.000000] Linux version 6.1.0-18-amd64\n"
        "[    1.234567] ACPI: bus type PCI registered\n"
        "[    3.000000] EXT4-fs (sda1): mounted filesystem with ordered data mode\n"
        "Debian GNU/Linux 12 web01 ttyS1\n"
        "web01 login: "
    )
    assert det.feed(text.encode(), now=0.0) == []
    assert det.flush(1.0, final=True) == []
    assert det.lines_seen == 6


def test_ansi_colored_line_still_matches():
    det = PanicDetector()
    data = (
        b"\x1b[1;31mKernel \x1b[0;1mpanic\x1b[0m - not syncing: "
        b"\x1b]0;title\x07Fatal exception\x1b[0m\r\n"
    )
    [ev] = det.feed(data, now=0.0) + det.flush(1.0)
    assert ev.severity == "critical"
    assert ev.line == "Kernel panic - not syncing: Fatal exception"


def test_line_endings_lone_cr_and_split_crlf():
    det = PanicDetector()
    events = det.feed(b"progress 10%\rprogress 20%\rOops: 0000 [#1] SMP\r", now=0.0)
    events += det.feed(b"\nnext line\n", now=0.0) + det.flush(1.0)
    [ev] = events
    assert ev.line == "Oops: 0000 [#1] SMP"
    assert ev.context == ("progress 10%", "progress 20%", "Oops: 0000 [#1] SMP", "next line")


def test_cp437_and_utf8_lines_decode():
    assert clean_line("Kernel panic – naïve".encode()) == "Kernel panic – naïve"
    assert clean_line(b"\xba Machine check \xba\x07") == "  Machine check"
    assert clean_line(b"\x1b[31mred\x1b[0m\ttab") == "red tab"


def test_flood_without_newlines_keeps_memory_bounded():
    det = PanicDetector()
    chunk = b"A" * 65536
    peak = 0
    for _ in range(160):  # 10 MiB
        assert det.feed(chunk, now=0.0) == []
        peak = max(peak, det.buffered_bytes)
    rng = random.Random(5)
    for _ in range(2000):  # odd sizes too, including single bytes
        det.feed(b"B" * rng.choice((1, 3, 4095, 4097, 10000)), now=0.0)
        peak = max(peak, det.buffered_bytes)
    assert peak <= 4096
    # The detector still works afterwards.
    [ev] = det.feed(b"\nKernel panic - not syncing: after the flood\n", now=1.0) + det.flush(2.0)
    assert ev.line == "Kernel panic - not syncing: after the flood"
    assert all(len(c) <= 4096 for c in ev.context)


def test_pattern_at_the_start_of_a_huge_line_is_seen():
    det = PanicDetector()
    events = det.feed(b"Kernel panic - not syncing: x" + b"y" * 100_000, now=0.0)
    events += det.flush(1.0)
    assert [e.pattern for e in events] == ["kernel-panic"]


def test_custom_patterns_from_config():
    det = PanicDetector(["FATAL: .* firmware", ("EDAC MC\\d: \\d+ UE", "critical")])
    events = det.feed(b"i40e: FATAL: bad NVM firmware image\r\n", now=0.0) + det.flush(1.0)
    assert [(e.pattern, e.severity) for e in events] == [("FATAL: .* firmware", "error")]
    events = det.feed(b"EDAC MC0: 1 UE memory read error on CPU_SrcID#0\r\n", now=2.0)
    events += det.flush(3.0)
    assert [e.severity for e in events] == ["critical"]


def test_bad_custom_pattern_names_the_fix():
    with pytest.raises(ConfigError, match=r"'oops\(' is not a valid regular expression"):
        PanicDetector(["oops("])
    with pytest.raises(ConfigError, match="use one of"):
        PanicDetector([("x", "fatal")])


def test_context_sizes_are_honoured():
    det = PanicDetector(context_before=3, context_after=2)
    lines = "".join(f"line {i}\n" for i in range(10))
    text = lines + "Oops: 0000 [#1] SMP\n" + "after 1\nafter 2\nafter 3\n"
    [ev] = det.feed(text.encode(), now=0.0)
    assert ev.context == ("line 7", "line 8", "line 9", "Oops: 0000 [#1] SMP", "after 1", "after 2")
    assert not det.incident_open


def test_a_trace_longer_than_the_after_context_stays_one_incident():
    # Frames, registers and "Kernel Offset:" are part of the dump, not quiet lines, so
    # the end marker does not start a second (duplicate) critical event.
    det = PanicDetector(context_after=5)
    events = det.feed(serial(VFS_PANIC), now=0.0) + det.flush(1.0)
    assert [e.severity for e in events] == ["critical"]
    assert "---[ end Kernel panic" in events[0].context[-1]


def test_a_new_crash_after_the_end_marker_is_a_new_event():
    det = PanicDetector()
    text = serial(VFS_PANIC) + serial("[    9.000000] Oops: 0000 [#1] SMP\n")
    events = det.feed(text, now=0.0) + det.flush(1.0)
    assert [e.pattern for e in events] == ["kernel-panic", "oops"]


# Pieces a console line is made of, picked so that keys, escapes, tabs, control bytes,
# box drawing and line ends land inside and across lines and chunks.
_PIECES = [
    b"Kernel panic - not syncing: x",
    b"Kernel\tpanic - not syncing",
    b"Kern\x07el panic",
    b"BUG\x07: x",
    b"BUG: soft lockup",
    b"BU\x1b[0mG: ",
    b"Oops: 0000",
    b"Oops:",
    b"Call Trace:",
    b"WARNING: CPU: 1 PID: 2",
    b"INFO: task x:1 blocked for more than 120 seconds",
    b"invoked oom-killer",
    b"Machine check",
    b"general protection fault",
    b"[   1.000] ",
    b" ? do_thing+0x1/0x2",
    b"RIP: 0010:x",
    b"---[ end Kernel panic ]---",
    b"FATAL: firmware",
    b"hello",
    b"   ",
    b"\t",
    b"\x00",
    b"\x7f",
    b"\x1b[31m",
    b"\x1b]0;t",
    b"\x07",
    b"\xcd\xba",
    "\u2550naïve".encode(),
    b"\xff",
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.sampled_from(_PIECES), max_size=80),
    cuts=st.lists(st.integers(1, 300), min_size=1, max_size=20),
    extra=st.sampled_from([(), ("FATAL: .* firmware",), ("(?i)hello", "x{3}")]),
    max_line=st.sampled_from([16, 40, 4096]),
)
@example(
    pieces=[b"hello", b"\r\n", b"Kernel\tpanic - not syncing", b"\r\n"],
    cuts=[300],
    extra=(),
    max_line=4096,
)
@example(
    pieces=[b"hello", b"\n", b"BUG\x07: x", b"\n", b"   ", b"\n"],
    cuts=[300],
    extra=(),
    max_line=4096,
)
def test_chunk_prefilter_reports_exactly_what_line_by_line_matching_does(
    pieces, cuts, extra, max_line
):
    """The whole-chunk shortcut for quiet output changes no event, context or count."""
    data = b"".join(pieces)
    fast = PanicDetector(extra, context_before=3, context_after=4, max_line_bytes=max_line)
    slow = PanicDetector(extra, context_before=3, context_after=4, max_line_bytes=max_line)
    slow._skim = lambda lines: False  # every line through the per-line path
    got: list[PanicEvent] = []
    want: list[PanicEvent] = []
    pos, i, now = 0, 0, 0.0
    while pos < len(data):
        n = cuts[i % len(cuts)]
        got += fast.feed(data[pos : pos + n], now)
        want += slow.feed(data[pos : pos + n], now)
        pos, i, now = pos + n, i + 1, now + 0.5
    got += fast.flush(now, final=True)
    want += slow.flush(now, final=True)
    assert got == want
    assert fast.lines_seen == slow.lines_seen


@pytest.mark.parametrize(
    "raw",
    [
        b"plain",
        b"tab\there  ",
        b"\x1b[1mbold\x1b[0m",
        b"\xba box \xba",
        b"bell\x07\x7f",
        b"\t \x0b",
        "caf\u00e9 \u2502x".encode(),
        b"\xc9\xcd\xbb",
        b"nbsp\xc2\xa0",
        b"\x9b31mx",
    ],
)
def test_clean_line_keeps_its_meaning(raw):
    """`clean_line` skips steps that cannot change a line; the result is the full recipe's."""
    import re as _re

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp437")
    text = _re.sub(
        r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?"
        r"|[ -/]*[0-~])|\x9b[0-?]*[ -/]*[@-~]",
        "",
        text,
    )
    text = _re.sub("[\u2500-\u25ff]", " ", text)
    text = _re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", "", text.replace("\t", " ")).rstrip()
    assert clean_line(raw) == text
