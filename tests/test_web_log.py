"""The log page (pages across rotated files, search, panic marks, consoles that are down)
and the events API's kind filter."""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pytest
from web_fakes import TOKENS, StaticConsoles, login, make_app, start_client

from solgate.web import logview


@pytest.fixture
def manager(tmp_path: Path) -> StaticConsoles:
    m = StaticConsoles(tmp_path)
    m.add("web01")
    m.add("db01", state="unreachable", state_detail="BMC 10.0.0.9:623 does not answer")
    (tmp_path / "logs").mkdir()
    return m


@pytest.fixture
async def client(tmp_path: Path, manager: StaticConsoles):
    c = await start_client(make_app(tmp_path, manager))
    await login(c, "oscar")
    yield c
    await c.close()


def write_rotated(log: Path, files: list[list[str]]) -> list[str]:
    """`files` oldest first; the last one is the current file. Returns every line."""
    names = [log.with_name(f"{log.name}.{n}") for n in range(len(files) - 1, 0, -1)] + [log]
    for name, lines in zip(names, files, strict=True):
        name.write_bytes(b"".join(f"{line}\r\n".encode() for line in lines))
    return [line for lines in files for line in lines]


_LINK = re.compile(r'<a href="([^"]+)" rel="(prev|next)"')
_PRE = re.compile(r'<pre class="log">(.*?)</pre>', re.S)


def page_lines(text: str) -> list[str]:
    match = _PRE.search(text)
    if match is None:
        return []
    body = re.sub(r"<[^>]+>", "", match.group(1))
    return [html.unescape(line).replace("⚠ ", "") for line in body.split("\n") if line]


def link(text: str, rel: str) -> str | None:
    for href, kind in _LINK.findall(text):
        if kind == rel:
            return html.unescape(href)
    return None


async def test_older_pages_walk_back_through_rotated_files(client, manager) -> None:
    log = manager.get("web01").log_path
    everything = write_rotated(log, [[f"old {i}" for i in range(7)],
                                     [f"mid {i}" for i in range(7)],
                                     [f"new {i}" for i in range(7)]])
    url = "/consoles/web01/log?lines=5"
    text = await (await client.get(url)).text()
    assert page_lines(text) == everything[-5:]
    assert link(text, "next") is None  # the newest page has no newer one
    seen = page_lines(text)
    pages = 1
    while (older := link(text, "prev")) is not None:
        pages += 1
        assert pages < 10
        resp = await client.get("/consoles/web01/log" + older)
        assert resp.status == 200
        text = await resp.text()
        seen = page_lines(text) + seen
    assert seen == everything
    assert "start of the log" in text

    # Newer walks forward again, from the oldest page to the end.
    newer = link(text, "next")
    assert newer is not None
    text = await (await client.get("/consoles/web01/log" + newer)).text()
    assert page_lines(text) == everything[1:6]  # the oldest page held one line


async def test_a_page_link_survives_a_rotation(client, manager) -> None:
    log = manager.get("web01").log_path
    write_rotated(log, [[f"a{i}" for i in range(4)], [f"b{i}" for i in range(4)]])
    text = await (await client.get("/consoles/web01/log?lines=4")).text()
    older = link(text, "prev")  # names the start of the current file
    assert older is not None
    # Rotate by rename, as the console log does: .1 -> .2, current -> .1, a new current.
    os.rename(log.with_name("web01.log.1"), log.with_name("web01.log.2"))
    os.rename(log, log.with_name("web01.log.1"))
    log.write_bytes(b"c0\r\n")
    text = await (await client.get("/consoles/web01/log" + older)).text()
    assert page_lines(text) == ["a0", "a1", "a2", "a3"]
    # A page whose file was deleted says so and shows the newest lines.
    log.with_name("web01.log.1").unlink()
    text = await (await client.get("/consoles/web01/log" + older)).text()
    assert "deleted by rotation" in text
    assert page_lines(text)[-1] == "c0"


async def test_search_reaches_old_files_and_ignores_case_and_escapes(client, manager) -> None:
    log = manager.get("web01").log_path
    log.with_name("web01.log.1").write_bytes(b"boot: \x1b[1mEXT4-fs error\x1b[0m sda1\r\nok\r\n")
    log.write_bytes(b"login: <script>alert(1)</script>\r\nprogress 10%\rprogress 100%\r\n")
    text = await (await client.get("/consoles/web01/log?q=ext4-FS")).text()
    assert page_lines(text) == ["boot: EXT4-fs error sda1 context"]
    text = await (await client.get("/consoles/web01/log?q=nothing-like-this")).text()
    assert "contains “nothing-like-this”" in text
    text = await (await client.get("/consoles/web01/log")).text()
    assert "<script>" not in text  # shown as text, never as markup
    assert "progress 100%" in page_lines(text)  # a carriage return overwrites, as on screen
    assert (await client.get("/consoles/web01/log?before=not-a-cursor")).status == 400


async def test_panics_from_the_events_file_are_listed_and_marked(client, manager,
                                                                  tmp_path) -> None:
    log = manager.get("web01").log_path
    log.write_bytes(
        b"[ 12.5] Kernel panic - not syncing: Fatal exception\r\n"
        b"[ 12.6] ---[ end Kernel panic - not syncing: Fatal exception ]---\r\n"
        b"[-- solgate 2026-01-01T00:00:03Z: PANIC (critical): "
        b"[ 12.5] Kernel panic - not syncing: Fatal exception --]\r\n"
        b"[-- solgate 2026-01-01T00:00:09Z: SOL down: session ended --]\r\n")
    records = [
        {"time": "2026-01-01T00:00:03Z", "console": "web01", "kind": "panic",
         "severity": "critical", "message": "[ 12.5] Kernel panic - not syncing: Fatal exception"},
        {"time": "2026-01-01T00:00:04Z", "console": "db01", "kind": "panic",
         "severity": "critical", "message": "db01 only"},
        {"time": "2026-01-01T00:00:05Z", "console": "web01", "kind": "sol-down"},
        {"time": "2026-01-01T00:00:09.250Z", "console": "web01", "kind": "sol-down",
         "message": "SOL down: session ended"},
    ]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    text = await (await client.get("/consoles/web01/log")).text()
    assert "1</span> kernel panic recorded for web01" in text
    assert "db01 only" not in text
    marks = re.findall(r'<span class="panic-mark"[^>]*>(.*?)</span>', text)
    assert len(marks) == 2  # the console's own panic line and solgate's PANIC event line
    assert "Kernel panic - not syncing: Fatal exception" in marks[0]
    assert "PANIC (critical)" in marks[1]
    assert "/events?console=web01&amp;kind=panic" in text
    assert re.search(r'<span class="event-mark">\[-- solgate [^<]*SOL down', text)


async def test_a_console_that_is_down_still_shows_its_log(client, manager) -> None:
    text = await (await client.get("/consoles/db01/log")).text()
    assert "No output logged yet for db01" in text
    assert "BMC unreachable" in text
    manager.get("db01").log_path.write_bytes(b"last words before the BMC went away\r\n")
    text = await (await client.get("/consoles/db01/log")).text()
    assert page_lines(text) == ["last words before the BMC went away"]


def test_pages_are_exact_whatever_the_block_size(tmp_path, monkeypatch) -> None:
    log = tmp_path / "c.log"
    lines = [f"line {i} " + "x" * (i % 13) + "." for i in range(60)]
    write_rotated(log, [lines[:20], lines[20:45], lines[45:]])
    log.write_bytes(log.read_bytes() + b"partial")
    for block in (3, 7, 64, 1 << 16):
        monkeypatch.setattr(logview, "BLOCK", block)
        seen: list[str] = []
        page = logview.read_page(log, limit=9)
        seen = [line.text for line in page.lines]
        while page.older is not None:
            page = logview.read_page(log, before=page.older, limit=9)
            seen = [line.text for line in page.lines] + seen
        assert seen == [*lines, "partial"], block
        forward: list[str] = []
        page = logview.read_page(log, after=f"{os.stat(log.with_name('c.log.2')).st_ino}-0",
                                 limit=11)
        forward += [line.text for line in page.lines]
        while page.newer is not None:
            page = logview.read_page(log, after=page.newer, limit=11)
            forward += [line.text for line in page.lines]
        assert forward == [*lines, "partial"], block


async def test_events_api_takes_several_kinds(client, tmp_path) -> None:
    kinds = ["sol-up", "attach", "panic", "sol-down", "detach", "sol-up"]
    (tmp_path / "events.jsonl").write_text("".join(
        json.dumps({"time": f"2026-01-01T00:00:0{i}Z", "console": "web01", "kind": k}) + "\n"
        for i, k in enumerate(kinds)))
    body = await (await client.get("/api/events?kind=sol-up,sol-down")).json()
    assert [e["kind"] for e in body["events"]] == ["sol-up", "sol-down", "sol-up"]
    assert body["events"][0]["time"] == "2026-01-01T00:00:05Z"  # newest first
    body = await (await client.get("/api/events?kind=panic")).json()
    assert [e["kind"] for e in body["events"]] == ["panic"]


async def test_the_api_pages_the_same_lines_as_json(client, manager) -> None:
    log = manager.get("web01").log_path
    everything = write_rotated(log, [[f"old {i}" for i in range(5)],
                                     [f"new {i}" for i in range(5)]])
    headers = {"Authorization": f"Bearer {TOKENS['alice']}"}
    body = await (await client.get("/api/consoles/web01/log?format=json&lines=4",
                                   headers=headers)).json()
    seen = [line["text"] for line in body["lines"]]
    assert body["newer"] is None
    while body["older"] is not None:
        resp = await client.get("/api/consoles/web01/log", headers=headers,
                                params={"before": body["older"], "lines": "4"})
        body = await resp.json()
        seen = [line["text"] for line in body["lines"]] + seen
    assert seen == everything
    body = await (await client.get("/api/consoles/web01/log?q=OLD 3", headers=headers)).json()
    assert [line["text"] for line in body["lines"]] == ["old 3"]
    resp = await client.get("/api/consoles/web01/log?before=x", headers=headers)
    assert resp.status == 400
    assert "log position" in (await resp.json())["error"]
