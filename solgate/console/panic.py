"""Kernel panics, Oopses, lockups and OOM kills spotted in console output, one event each.

Theory of operation
-------------------
`PanicDetector` is sans-I/O: the console worker feeds it the same bytes it logs, with
`now` from its wall clock (`time.time()`, since `now` becomes the event's time), and
gets back `PanicEvent`s. It never reads a clock; `next_deadline()` says when to call
`handle_timeout(now)` so an incident is reported a few seconds after the console goes
quiet even if no further byte ever arrives (a panicked machine prints nothing more).

Bytes become lines robustly: `\\r\\n`, `\\n` and a lone `\\r` end a line; each line is
decoded as UTF-8, or CP437 (which maps every byte) when that fails; ANSI escape
sequences, BIOS box drawing and other control characters are removed; blank lines
are ignored. No line grows past `max_line_bytes`: longer runs are cut into pieces, so
a flood without newlines costs bounded memory. Most output matches nothing, so a chunk
of plain ASCII lines is cleared in one search for the built-in patterns' literals (and
the extra patterns' one combined regex per line) before any per-line work is done.

One incident, one event. The first line that matches a pattern opens an incident,
taking the `context_before` lines that preceded it. While it is open, further
matches join it (the event's severity is the highest seen, and its headline `line`
the first line of that severity), and so do the lines of a stack dump (frames,
registers, `Code:`), which keep it open. It closes when `context_after` ordinary
lines have passed since the last match or dump line, when `quiet_seconds` pass
without one, after `max_open_seconds`, or when it reaches `max_incident_lines`.
`---[ end Kernel panic` ends the incident's grouping: lines after it are only
after-context, and a new match starts a new incident. So `Oops` + `Call Trace` +
`Kernel panic - not syncing: Fatal exception` + the end marker is one critical event.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from solgate.errors import ConfigError

__all__ = [
    "BUILTIN_PATTERNS",
    "MAX_LINE_BYTES",
    "SEVERITIES",
    "PanicDetector",
    "PanicEvent",
    "PanicPattern",
    "clean_line",
]

SEVERITIES = ("info", "warning", "error", "critical")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
MAX_LINE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class PanicPattern:
    """A named regular expression and how bad a match is."""

    name: str
    regex: re.Pattern[str]
    severity: str


@dataclass(frozen=True, slots=True)
class PanicEvent:
    """One incident on one console.

    `time` is when its first matching line arrived; `pattern` names the pattern of the
    headline `line` (the first line of the highest severity); `context` is every kept
    line of the incident, from `context_before` lines before it to the after-context;
    `patterns` names every pattern that matched, in order of first appearance.
    """

    time: float
    severity: str
    pattern: str
    line: str
    context: tuple[str, ...]
    patterns: tuple[str, ...] = ()


def _p(name: str, regex: str, severity: str) -> PanicPattern:
    return PanicPattern(name, re.compile(regex), severity)


# Checked in this order; the first match names a line's hit.
BUILTIN_PATTERNS: tuple[PanicPattern, ...] = (
    _p("kernel-panic", r"Kernel panic - not syncing", "critical"),
    _p("hard-lockup", r"Watchdog detected hard LOCKUP", "critical"),
    _p("soft-lockup", r"BUG: soft lockup", "error"),
    _p("machine-check", r"mce: \[Hardware Error\]|Machine [Cc]heck", "error"),
    _p("oom-killer", r"Out of memory: Kill|invoked oom-killer", "error"),
    _p("general-protection-fault", r"general protection fault", "error"),
    _p("oops", r"\bOops: ", "error"),
    _p("bug", r"\bBUG: ", "error"),
    _p("hung-task", r"INFO: task .+ blocked for more than", "warning"),
    _p("kernel-warning", r"WARNING: CPU: \d+ PID: \d+", "warning"),
    _p("call-trace", r"Call Trace:", "warning"),
)
# Every built-in regex needs one of these literals, so a line (or a whole chunk) without
# any of them matches no built-in pattern. One regex over the keys beats a loop of `in`.
_BUILTIN_KEYS = (
    "Kernel panic",
    "LOCKUP",
    "BUG: ",  # also soft-lockup's "BUG: soft lockup"
    "Hardware Error",
    "Machine ",
    "Out of memory",
    "-killer",  # "invoked oom-killer"
    "protection fault",
    "Oops: ",
    "INFO: task",
    "WARNING: CPU",
    "Call Trace:",
)
_KEYS = re.compile("|".join(re.escape(k) for k in _BUILTIN_KEYS))
_KEYS_BYTES = re.compile(b"|".join(re.escape(k.encode()) for k in _BUILTIN_KEYS))

_END_OF_PANIC = "---[ end Kernel panic"

# Lines of a stack dump: they keep an open incident open but are not incidents themselves.
_PRINTK_TIME = r"(?:<\d+>)?(?:\[\s*\d+\.\d+\] )?"  # exactly one space: more is indentation
_DUMP_LINE = re.compile(
    _PRINTK_TIME
    + r"(?:\s|\?|<|\[<|---\[ end trace"
    + r"|[\w.$]+\+0x[0-9a-f]+/0x[0-9a-f]+"
    + r"|(?:RIP|RSP|RAX|RBX|RCX|RDX|RSI|RDI|RBP|R\d+|FS|GS|CS|CR2|DR\d|EIP|ESP|EAX|EBX"
    + r"|ECX|EDX|ESI|EDI|EBP|DS|ES|pc|lr|sp|x\d+|pstate|NIP|LR|MSR|GPR\d+)\s*:"
    + r"|Code:|Modules linked in:|CPU:|Hardware name:|Kernel Offset:|Workqueue:"
    + r"|Stack:|PGD |PUD |PMD |PTE |#PF:|Tainted:|task:|Mem-Info:|Node \d|Tasks state"
    + r"|\[\s*pid\s*\]|\[\s*\d+\]\s+\d+|Call trace:|Internal error:|Process |Backtrace:"
    + r"|Rebooting in|Shutting down cpus|---\[ end)"
)

# Text cleanup. ANSI: CSI, OSC (BEL or ST terminated), DCS/PM/APC/SOS strings, and
# two/three-byte escapes such as ESC ( B or ESC =.
_ANSI = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|[ -/]*[0-~])|\x9b[0-?]*[ -/]*[@-~]"
)
_BOX_DRAWING = re.compile("[\u2500-\u25ff]")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def clean_line(raw: bytes) -> str:
    """Decode one console line for matching: UTF-8, else CP437; no escapes, no boxes."""
    if raw.isascii():
        text = raw.decode("ascii")  # the common case: no box drawing possible
        if "\x1b" in text:
            text = _ANSI.sub("", text)
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp437")
        if "\x1b" in text or "\x9b" in text:
            text = _ANSI.sub("", text)
        text = _BOX_DRAWING.sub(" ", text)
    if "\t" in text:
        text = text.replace("\t", " ")
    if not text.isprintable():  # printable text has no control character to remove
        text = _CONTROL.sub("", text)
    return text.rstrip()


# For `PanicDetector._skim`: what `clean_line` does to ASCII without ESC, on bytes.
_TAB_TO_SPACE = bytes.maketrans(b"\t", b" ")
_CONTROL_BYTES = bytes(range(0x09)) + bytes(range(0x0B, 0x20)) + b"\x7f"  # keeps \n
_INVISIBLE = bytes(range(0x21)) + b"\x7f"  # a line of only these cleans to blank


def _compile_extra(spec: str | tuple[str, str]) -> PanicPattern:
    if isinstance(spec, str):
        regex, severity = spec, "error"
    else:
        regex, severity = spec
    if severity not in _RANK:
        raise ConfigError(
            f"panic pattern {regex!r} has severity {severity!r}; use one of {', '.join(SEVERITIES)}"
        )
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        raise ConfigError(
            f"panic pattern {regex!r} is not a valid regular expression ({exc}); "
            "fix or remove it in solgate.toml"
        ) from exc
    return PanicPattern(regex, compiled, severity)


@dataclass(slots=True)
class _Incident:
    start: float
    last_active: float
    before: tuple[str, ...]
    lines: list[str]
    rank: int
    name: str
    line: str
    names: list[str] = field(default_factory=list)
    quiet_lines: int = 0
    ended: bool = False


_EOL = re.compile(rb"\r\n|\r|\n")


def _combine(extra: tuple[PanicPattern, ...]) -> re.Pattern[str] | None:
    """One regex matching where any of `extra` does, to test a line once; None when the
    patterns cannot be joined safely (groups could be back-referenced by number)."""
    if not extra or any(p.regex.groups for p in extra):
        return None
    try:
        return re.compile("|".join(f"(?:{p.regex.pattern})" for p in extra))
    except re.error:  # e.g. a global flag like (?i) that must start its pattern
        return None


class PanicDetector:
    """Sans-I/O pattern matcher over console output; one `PanicEvent` per incident."""

    def __init__(
        self,
        extra_patterns: Sequence[str | tuple[str, str]] = (),
        *,
        context_before: int = 20,
        context_after: int = 30,
        quiet_seconds: float = 3.0,
        max_open_seconds: float = 30.0,
        max_incident_lines: int = 400,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        if isinstance(extra_patterns, str):
            extra_patterns = (extra_patterns,)
        self._extra = tuple(_compile_extra(s) for s in extra_patterns)
        self._extra_any = _combine(self._extra)
        self._context_after = max(0, context_after)
        self._quiet_seconds = quiet_seconds
        self._max_open_seconds = max_open_seconds
        self._max_incident_lines = max(1, max_incident_lines)
        self._max_line = max(16, max_line_bytes)
        self._partial = bytearray()
        # Cleaned lines, or raw ones `_skim` knows are not blank (cleaned when needed).
        self._recent: deque[str | bytes] = deque(maxlen=max(0, context_before))
        self._incident: _Incident | None = None
        self.lines_seen = 0
        self.events_emitted = 0

    @property
    def patterns(self) -> tuple[PanicPattern, ...]:
        return BUILTIN_PATTERNS + self._extra

    @property
    def buffered_bytes(self) -> int:
        """Bytes of an unfinished line held back; never more than `max_line_bytes`."""
        return len(self._partial)

    @property
    def incident_open(self) -> bool:
        return self._incident is not None

    def feed(self, data: bytes, now: float) -> list[PanicEvent]:
        """Consume console output; return the incidents that closed."""
        events = self.handle_timeout(now) if self._incident is not None else []
        lines = self._split(data)
        if lines and not (self._incident is None and self._skim(lines)):
            for raw in lines:
                self._line(raw, now, events)
        return events

    def next_deadline(self) -> float | None:
        """When an open incident should be reported even if no more output comes."""
        inc = self._incident
        if inc is None:
            return None
        return min(inc.last_active + self._quiet_seconds, inc.start + self._max_open_seconds)

    def handle_timeout(self, now: float) -> list[PanicEvent]:
        """Report the open incident if its deadline has passed."""
        deadline = self.next_deadline()
        if deadline is not None and now >= deadline:
            return [self._close()]
        return []

    def flush(self, now: float, *, final: bool = False) -> list[PanicEvent]:
        """Report the open incident now, after-context complete or not.

        With `final=True` (the session ended) an unfinished last line counts as a line.
        """
        events: list[PanicEvent] = []
        if final and self._partial:
            raw = bytes(self._partial)
            self._partial.clear()
            self._line(raw, now, events)
        if self._incident is not None:
            events.append(self._close())
        return events

    # -- internals ----------------------------------------------------------------

    def _split(self, data: bytes) -> list[bytes]:
        """Complete lines (cut to `max_line`); keep the unfinished rest in `_partial`."""
        has_eol = b"\n" in data or b"\r" in data
        if not has_eol and len(self._partial) + len(data) <= self._max_line:
            self._partial += data
            return []
        buf = bytes(self._partial) + data if self._partial else bytes(data)
        self._partial.clear()
        if not has_eol:
            parts = [buf]
        elif b"\r" not in buf:
            parts = buf.split(b"\n")
        else:
            parts = buf.split(b"\r\n")
            pairs = len(parts) - 1
            if buf.count(b"\r") != pairs or buf.count(b"\n") != pairs:
                parts = _EOL.split(buf)  # a lone CR or LF somewhere
        rest = parts.pop()
        limit = self._max_line
        if len(buf) <= limit:  # then no piece is too long
            lines = [part for part in parts if part]
        else:
            lines = []
            for part in parts:
                if len(part) <= limit:
                    if part:
                        lines.append(part)
                else:
                    lines.extend(part[i : i + limit] for i in range(0, len(part), limit))
            if len(rest) > limit:
                whole = len(rest) - len(rest) % limit
                lines.extend(rest[i : i + limit] for i in range(0, whole, limit))
                rest = rest[whole:]
        self._partial += rest
        return lines

    def _skim(self, lines: list[bytes]) -> bool:
        """Take `lines` as `_line` would when none of them can match, else return False.

        Most console output matches nothing. For ASCII without ESC, `clean_line` is a byte
        translation, so one search for the built-in keys over the whole chunk clears every
        line at once; blank lines are told by their bytes, and the kept ones are cleaned
        only if an incident later wants them as before-context. Call with no incident open.
        """
        probe = b"\n".join(lines)
        if not probe.isascii() or b"\x1b" in probe:
            return False
        if _KEYS_BYTES.search(probe.translate(_TAB_TO_SPACE, _CONTROL_BYTES)):
            return False
        kept = [raw for raw in lines if raw.strip(_INVISIBLE)]
        if self._extra:
            texts = [
                raw.translate(_TAB_TO_SPACE, _CONTROL_BYTES).decode("ascii").rstrip()
                for raw in kept
            ]
            if any(self._match_extra(text) for text in texts):
                return False
            self._recent.extend(texts)
        else:
            self._recent.extend(kept)
        self.lines_seen += len(kept)
        return True

    def _match(self, line: str) -> PanicPattern | None:
        if _KEYS.search(line):
            for pattern in BUILTIN_PATTERNS:
                if pattern.regex.search(line):
                    return pattern
        return self._match_extra(line) if self._extra else None

    def _match_extra(self, line: str) -> PanicPattern | None:
        if self._extra_any is not None and not self._extra_any.search(line):
            return None
        for pattern in self._extra:
            if pattern.regex.search(line):
                return pattern
        return None

    def _line(self, raw: bytes, now: float, events: list[PanicEvent]) -> None:
        line = clean_line(raw)
        if not line.strip():
            return
        self.lines_seen += 1
        hit = self._match(line)
        inc = self._incident
        if inc is not None and hit is not None and inc.ended:
            events.append(self._close())
            inc = None
        if inc is not None:
            inc.lines.append(line)
            if hit is not None:
                self._hit(inc, hit, line, now)
                if _END_OF_PANIC in line:
                    inc.ended = True
            elif not inc.ended and _DUMP_LINE.match(line):
                inc.last_active = now
                inc.quiet_lines = 0
            else:
                inc.quiet_lines += 1
            if inc.quiet_lines >= self._context_after or len(inc.lines) >= self._max_incident_lines:
                events.append(self._close())
        elif hit is not None:
            inc = _Incident(
                start=now,
                last_active=now,
                before=tuple(r if isinstance(r, str) else clean_line(r) for r in self._recent),
                lines=[line],
                rank=_RANK[hit.severity],
                name=hit.name,
                line=line,
                names=[hit.name],
                ended=_END_OF_PANIC in line,
            )
            self._incident = inc
            if self._context_after == 0 or self._max_incident_lines <= 1:
                events.append(self._close())
        self._recent.append(line)

    def _hit(self, inc: _Incident, hit: PanicPattern, line: str, now: float) -> None:
        inc.last_active = now
        inc.quiet_lines = 0
        rank = _RANK[hit.severity]
        if rank > inc.rank:
            inc.rank, inc.name, inc.line = rank, hit.name, line
        if hit.name not in inc.names:
            inc.names.append(hit.name)

    def _close(self) -> PanicEvent:
        inc = self._incident
        assert inc is not None  # callers check
        self._incident = None
        self.events_emitted += 1
        return PanicEvent(
            time=inc.start,
            severity=SEVERITIES[inc.rank],
            pattern=inc.name,
            line=inc.line,
            context=inc.before + tuple(inc.lines),
            patterns=tuple(inc.names),
        )
