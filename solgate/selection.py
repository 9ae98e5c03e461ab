"""Which consoles a fleet action is about: the console list's filter words, as data.

Theory of operation
-------------------
One selection language for the web list, the REST API and the CLI, so what an operator
sees in the list page's filter box is exactly what a fleet action touches:

* filter words (`words`), every one of which must match, as the list page's filter box:
  ``tag:rack12`` (a tag, exactly), ``state:backoff`` (part of the state or its words),
  ``panic`` (a kernel panic was seen), ``bad`` (not connected), a glob such as ``web*``
  (the whole name), or any other word (part of the name, or a tag exactly);
* CLI-style lists, each of which matches if any of its entries does: `consoles` (name
  globs, ``--console``), `tags` (``--tag``), `states` (``--state``: the state key or its
  words, exactly).

All given parts must match (AND between parts, OR within a list). An empty selection
selects nothing: acting on every console needs ``--console '*'``, said out loud.
This module is pure: it takes console attributes and returns names; static/consoles.js
implements the same filter words for the list page.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from solgate.errors import SolgateError

__all__ = ["Candidate", "Selection", "SelectionError", "select"]

GLOB_CHARS = frozenset("*?[")
GOOD_STATES = frozenset({"active"})
MAX_ENTRIES = 1000  # per list, so a request cannot make matching arbitrarily slow


class SelectionError(SolgateError):
    """A selection that cannot be understood; the message says how to write it."""


class Candidate(Protocol):
    """What selection looks at on a console (a `ConsoleView` or a worker has it all)."""

    @property
    def name(self) -> str: ...

    @property
    def tags(self) -> Sequence[str]: ...

    @property
    def state(self) -> str: ...

    @property
    def panic_count(self) -> int: ...


def _default_words(state: str) -> str:
    return state.replace("-", " ")


@dataclass(frozen=True, slots=True)
class Selection:
    """A console selection: filter words plus CLI-style lists (see the module doc)."""

    words: tuple[str, ...] = ()
    consoles: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    states: tuple[str, ...] = ()

    @classmethod
    def from_filter(cls, text: str) -> Selection:
        """The words of the list page's filter box."""
        return cls(words=tuple(text.lower().split()))

    @classmethod
    def from_json(cls, raw: object) -> Selection:
        """`{"filter": "tag:rack12 web", "consoles": [...], "tags": [...], "states": [...]}`."""
        if isinstance(raw, str):
            return cls.from_filter(raw)
        if not isinstance(raw, Mapping):
            raise SelectionError('selection must be an object such as {"filter": "tag:rack12"}'
                                 ' or {"consoles": ["web*"]}')
        unknown = set(raw) - {"filter", "consoles", "tags", "states"}
        if unknown:
            raise SelectionError(f"unknown selection key(s) {', '.join(sorted(unknown))}; use "
                                 "filter, consoles, tags and states")
        text = raw.get("filter", "")
        if not isinstance(text, str):
            raise SelectionError("selection filter must be a string of filter words")

        def strings(key: str) -> tuple[str, ...]:
            value = raw.get(key, [])
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SelectionError(f"selection {key} must be a list of strings")
            if len(value) > MAX_ENTRIES:
                raise SelectionError(f"selection {key} has {len(value)} entries; at most "
                                     f"{MAX_ENTRIES} (use a glob or a tag)")
            return tuple(v.strip() for v in value if v.strip())

        return cls(words=tuple(text.lower().split()), consoles=strings("consoles"),
                   tags=strings("tags"), states=strings("states"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.words:
            out["filter"] = " ".join(self.words)
        for key in ("consoles", "tags", "states"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        return out

    @property
    def empty(self) -> bool:
        return not (self.words or self.consoles or self.tags or self.states)

    def describe(self) -> str:
        """The selection in one line, for the audit trail."""
        parts = list(self.words)
        parts += [f"--console {c}" for c in self.consoles]
        parts += [f"--tag {t}" for t in self.tags]
        parts += [f"--state {s}" for s in self.states]
        text = " ".join(parts) or "(nothing)"
        return text if len(text) <= 300 else text[:297] + "..."

    def matches(self, console: Candidate,
                state_words: Callable[[str], str] = _default_words) -> bool:
        name = console.name
        tags = [t.lower() for t in console.tags]
        state = console.state
        if self.consoles and not any(fnmatch.fnmatchcase(name, g) for g in self.consoles):
            return False
        if self.tags and not any(t.lower() in tags for t in self.tags):
            return False
        if self.states:
            said = (state.lower(), state_words(state).lower())
            if not any(s.lower() in said for s in self.states):
                return False
        return all(_word_matches(w, name, tags, state, state_words, console.panic_count)
                   for w in self.words)


def _word_matches(word: str, name: str, tags: list[str], state: str,
                  state_words: Callable[[str], str], panics: int) -> bool:
    """One filter word, as static/consoles.js `matches` reads it."""
    if word.startswith("tag:"):
        return word[4:] in tags
    if word.startswith("state:"):
        return word[6:] in f"{state} {state_words(state)}".lower()
    if word == "panic":
        return panics > 0
    if word == "bad":
        return state not in GOOD_STATES
    if GLOB_CHARS & set(word):
        return fnmatch.fnmatchcase(name.lower(), word)
    return word in name.lower() or word in tags


def select(selection: Selection, consoles: Iterable[Candidate],
           state_words: Callable[[str], str] = _default_words) -> list[str]:
    """Names of the consoles the selection matches, in the given order; none if empty."""
    if selection.empty:
        return []
    return [c.name for c in consoles if selection.matches(c, state_words)]
