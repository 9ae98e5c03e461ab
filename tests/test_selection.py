"""The fleet selection reads the console list's filter words and the CLI's lists alike."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from solgate.selection import Selection, SelectionError, select
from solgate.web.model import state_words


@dataclass
class C:
    name: str
    tags: tuple[str, ...] = ()
    state: str = "active"
    panic_count: int = 0


CONSOLES = [
    C("web01", ("rack12", "web")), C("web02", ("rack12",), "backoff"),
    C("db01", ("rack12",), panic_count=2), C("db02", ("Rack13",), "auth-failed"),
    C("mail1"),
]


def names(sel: Selection) -> list[str]:
    return select(sel, CONSOLES, state_words)


@pytest.mark.parametrize(("text", "expected"), [
    ("tag:rack12", ["web01", "web02", "db01"]),
    ("tag:rack13", ["db02"]),  # tags compare case-insensitively
    ("state:backoff", ["web02"]),
    ("state:waiting", ["web02"]),  # the state's words, as the list shows them
    ("panic", ["db01"]),
    ("bad", ["web02", "db02"]),
    ("web*", ["web01", "web02"]),  # a glob is the whole name
    ("web", ["web01", "web02"]),  # a plain word: part of the name, or a tag
    ("db tag:rack12", ["db01"]),  # all words must match
    ("WEB0?", ["web01", "web02"]),
])
def test_filter_words_match_the_list_page(text: str, expected: list[str]) -> None:
    assert names(Selection.from_filter(text)) == expected


def test_cli_lists_or_within_and_across() -> None:
    sel = Selection(consoles=("web*", "db0[1]"), tags=("rack12",), states=("active",))
    assert names(sel) == ["web01", "db01"]
    assert names(Selection(states=("waiting to reconnect",))) == ["web02"]
    assert names(Selection(consoles=("*",))) == [c.name for c in CONSOLES]


def test_empty_selection_selects_nothing() -> None:
    assert names(Selection()) == []
    assert names(Selection.from_json({"filter": "  "})) == []


def test_json_round_trip_and_errors() -> None:
    sel = Selection.from_json({"filter": "tag:rack12 Web", "consoles": ["db*"],
                               "states": "active"})
    assert sel == Selection(words=("tag:rack12", "web"), consoles=("db*",), states=("active",))
    assert Selection.from_json(sel.to_json()) == sel
    with pytest.raises(SelectionError, match="unknown selection key"):
        Selection.from_json({"names": ["x"]})
    with pytest.raises(SelectionError, match="list of strings"):
        Selection.from_json({"tags": [1]})
