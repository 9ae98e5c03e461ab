"""Where a value came from: the file's name and text, so every error names a line.

tomllib gives no positions, so `_Locator` scans the raw text for the table header and
the key. Every table's parser reports through one `Source`, and every error is one
`ConfigError` line:

    solgate.toml line 14: [consoles.web01] <key>: <problem>; <fix>

Relative paths in the file are relative to `base_dir` (the directory holding the file),
so the daemon behaves the same whatever its working directory.
"""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from solgate.config.checks import Invalid, did_you_mean
from solgate.errors import ConfigError
from solgate.units import kind, toml_repr

logger = logging.getLogger("solgate.config")

_KEY_PART = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*""")


def _dotted_key(text: str, pos: int, end: str) -> tuple[tuple[str, ...], int] | None:
    """Parse a TOML dotted key at `pos` that is followed by one of `end`'s characters."""
    parts: list[str] = []
    while True:
        m = _KEY_PART.match(text, pos)
        if not m:
            return None
        parts.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
        if pos < len(text) and text[pos] == ".":
            pos += 1
            continue
        if pos < len(text) and text[pos] in end:
            return tuple(parts), pos
        return None


class _Locator:
    """Finds the line of a table or key in the raw text (tomllib gives no positions)."""

    def __init__(self, text: str) -> None:
        # (line number, path) for every header and every `key =` line, as absolute paths.
        self._entries: list[tuple[int, tuple[str, ...]]] = []
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.lstrip()
            if stripped.startswith("[["):
                table = ("[[",)  # arrays of tables are not part of our schema
                continue
            if stripped.startswith("["):
                parsed = _dotted_key(stripped, 1, "]")
                if parsed:
                    table = parsed[0]
                    self._entries.append((number, table))
                continue
            parsed = _dotted_key(line, 0, "=")
            if parsed:
                self._entries.append((number, table + parsed[0]))

    def line(self, table: tuple[str, ...], key: str | None = None) -> int | None:
        """The line that best names `[table] key`: the key, else the table, else None."""
        want = table + ((key,) if key else ())
        best: tuple[float, int] | None = None  # (score, line)
        for number, path in self._entries:
            common = min(len(path), len(want))
            if path[:common] != want[:common]:
                continue
            # Exact beats a sub-table of the key ([x.y] for x), which beats an enclosing table.
            score = common + (0.5 if len(path) == len(want) else 0.25 if len(path) > common
                              else 0.0)
            if best is None or score > best[0]:
                best = (score, number)
        if best is None or best[0] < max(1, len(table)):
            return None
        return best[1]


def table_name(table: tuple[str, ...]) -> str:
    """`consoles.web01` for ("consoles", "web01"); odd names quoted as TOML would."""
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else toml_repr(p) for p in table)


def warn_if_readable(path: Path, what: str) -> bool:
    """One warning line when a secret's file can be read by other users; True if so."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False  # whoever reads it says what is wrong
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s %s is readable by other users; chmod 600 %s", what, path, path)
        return True
    return False


class Source:
    """One configuration text being read: names lines in errors, resolves relative paths
    and secrets from the environment, and warns once per secret file others can read."""

    def __init__(self, text: str, name: str, base_dir: Path,
                 environ: Mapping[str, str]) -> None:
        self.name = name  # the file's path, "<string>", "command line": errors start with it
        self.base_dir = base_dir
        self.environ = environ
        self._locator = _Locator(text)
        self._checked_files: set[Path] = set()  # secret files already checked for mode

    def path(self, text: str) -> Path:
        """A path from the file, relative to the file's directory."""
        return self.base_dir / Path(text).expanduser()

    def check_private(self, path: Path, what: str) -> None:
        """Warn once per load about a secret file others can read (a shared password_file
        is checked once, not once per console)."""
        if path not in self._checked_files:
            self._checked_files.add(path)
            warn_if_readable(path, what)

    def warn(self, table: tuple[str, ...], key: str | None, text: str) -> None:
        """One warning line placed as `fail` places an error: something that works here
        and now but may not elsewhere (`check-config` prints it, `serve` logs it)."""
        logger.warning("%s", self.fail(table, key, text))

    # -- errors

    def fail(self, table: tuple[str, ...], key: str | None, text: str) -> ConfigError:
        """`source line N: [table] text`, the line of `key` (or the table) when known."""
        line = self._locator.line(table, key)
        where = f"{self.name} line {line}" if line else self.name
        prefix = f"[{table_name(table)}] " if table else ""
        return ConfigError(f"{where}: {prefix}{text}" if where else prefix + text)

    def invalid(self, table: tuple[str, ...], key: str, value: object,
                exc: Invalid) -> ConfigError:
        head = f"{key} = {toml_repr(value)} " if exc.show_value else f"{key}: "
        return self.fail(table, key, head + exc.text)

    def unknown(self, table: tuple[str, ...], key: str, known: tuple[str, ...] | list[str],
                elsewhere: str = "") -> ConfigError:
        hint = did_you_mean(key, known)
        fix = hint or elsewhere or ("known keys: " + ", ".join(known))
        if hint and elsewhere:
            fix = f"{hint} ({elsewhere})"
        return self.fail(table, key, f"{key}: unknown setting; {fix}")

    def table(self, where: tuple[str, ...], key: str | None, value: object) -> dict[str, Any]:
        """`value` if it is a table, else the error saying to write it as a section."""
        if not isinstance(value, dict):
            name = "[" + table_name(where + ((key,) if key else ())) + "]"
            raise self.fail(where, key, f"{key or table_name(where)}: expected a table "
                            f"{name}, got {kind(value)}; write it as a {name} section")
        return value


def detached() -> Source:
    """A `Source` with no text and no name: errors start at the table (for a table read
    outside a file)."""
    return Source("", "", Path.cwd(), {})
