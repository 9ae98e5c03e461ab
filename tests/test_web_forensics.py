"""The web side of the forensics: the screen at a moment, the asciicast download and the
search page, each showing only the consoles a user may see."""

from __future__ import annotations

import asyncio
import html
import json
import re
import threading
from pathlib import Path
from urllib.parse import unquote

import pytest
from web_fakes import StaticConsoles, login, make_app, start_client

from solgate.console.log import ConsoleLog, format_time
from solgate.console.screen import Screen
from solgate.forensics import GrepResult
from solgate.web import forensics as web_forensics
from solgate.web.limits import LOG_READS_PER_USER

T0 = 1_780_000_000.0


def write_log(data_dir: Path, name: str, steps: list[tuple[float, bytes | str]]) -> None:
    """Writes at given times: bytes are console output, str a note."""
    clock = [T0]
    log = ConsoleLog(data_dir / "logs" / f"{name}.log", clock=lambda: clock[0])
    for t, what in steps:
        clock[0] = t
        if isinstance(what, str):
            log.event(what)
        else:
            log.write(what)
    log.close()


@pytest.fixture
def manager(tmp_path: Path) -> StaticConsoles:
    m = StaticConsoles(tmp_path)
    m.add("web01", tags=("rack1",))
    m.add("db01")
    (tmp_path / "logs").mkdir()
    write_log(tmp_path, "web01", [
        (T0, "SOL up"), (T0 + 1, b"login: root\r\n"), (T0 + 2, b"$ dmesg\r\n"),
        (T0 + 60, b"\x1b[H\x1b[2Jmce: Machine check events logged\r\n"),
        (T0 + 70, "PANIC (critical): Kernel panic"), (T0 + 71, b"after\r\n"),
    ])
    write_log(tmp_path, "db01", [(T0 + 30, b"db: Machine check in bank 4\r\n")])
    return m


async def client_for(tmp_path: Path, manager: StaticConsoles, user: str):  # noqa: ANN201
    c = await start_client(make_app(tmp_path, manager))
    await login(c, user)
    return c


def screen_rows(text: str) -> list[str]:
    match = re.search(r'<pre class="screen" id="screen">(.*?)</pre>', text, re.S)
    assert match, text[:2000]
    return [html.unescape(r) for r in match.group(1).split("\n")]


async def test_screen_page_shows_the_screen_at_a_moment_and_steps_between_notes(
        tmp_path: Path, manager: StaticConsoles) -> None:
    c = await client_for(tmp_path, manager, "oscar")
    try:
        resp = await c.get("/consoles/web01/screen", params={"at": format_time(T0 + 30)})
        assert resp.status == 200
        text = await resp.text()
        rows = screen_rows(text)
        assert rows[:2] == ["login: root", "$ dmesg"]
        assert "replayed" in text
        assert "Machine check" not in "".join(rows)
        # The next note is the panic at T0+70: its screen has the cleared screen.
        nxt = html.unescape(re.search(r'href="([^"]+)" id="next-note"', text).group(1))
        assert unquote(nxt) == f"?at={format_time(T0 + 70, millis=True)}"
        rows = screen_rows(await (await c.get("/consoles/web01/screen" + nxt)).text())
        assert rows[0] == "mce: Machine check events logged"
        assert 'id="slider"' in text
    finally:
        await c.close()


async def test_cast_download_is_asciicast_v2_and_replays_to_the_screen(
        tmp_path: Path, manager: StaticConsoles) -> None:
    c = await client_for(tmp_path, manager, "oscar")
    try:
        resp = await c.get("/api/consoles/web01/cast",
                           params={"from": format_time(T0 + 1.5, millis=True),
                                   "to": format_time(T0 + 80)})
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/x-asciicast")
        assert "attachment" in resp.headers["Content-Disposition"]
        head, *lines = (await resp.text()).splitlines()
        header = json.loads(head)
        assert header["version"] == 2
        assert (header["width"], header["height"], header["timestamp"]) == (80, 25,
                                                                             int(T0 + 1.5))
        events = [json.loads(line) for line in lines]
        assert [e[0] for e in events] == sorted(e[0] for e in events)
        assert [e for e in events if e[1] == "m"] == [
            [68.5, "m", f"[-- solgate {format_time(T0 + 70)}: PANIC (critical): Kernel panic --]"]]
        machine = next(e for e in events if "Machine check" in e[2])
        assert machine[0] == pytest.approx(58.5)
        replay = Screen(80, 25)
        for e in events:
            if e[1] == "o":
                replay.feed(e[2].encode())
        page = await c.get("/consoles/web01/screen", params={"at": format_time(T0 + 80)})
        assert [r.rstrip() for r in replay.display] == screen_rows(await page.text())[:25]
    finally:
        await c.close()


async def test_search_finds_hits_newest_first_only_on_visible_consoles(
        tmp_path: Path, manager: StaticConsoles) -> None:
    c = await client_for(tmp_path, manager, "oscar")
    try:
        resp = await c.get("/api/search", params={"q": "machine check", "since": ""})
        body = await resp.json()
        assert [(h["console"], h["line"]) for h in body["hits"]] == [
            ("web01", "mce: Machine check events logged"),
            ("db01", "db: Machine check in bank 4")]
        assert body["hits"][0]["time"] == format_time(T0 + 60, millis=True)
        page = await (await c.get("/search", params={"q": "Machine check", "since": "",
                                                     "tag": "rack1"})).text()
        assert "db01" not in page
        assert f"/consoles/web01/screen?at={format_time(T0 + 60, millis=True)}".replace(
            ":", "%3A") in page
    finally:
        await c.close()
    rita = await client_for(tmp_path, manager, "rita")  # may see web* only
    try:
        body = await (await rita.get("/api/search", params={"q": "Machine", "since": ""})).json()
        assert {h["console"] for h in body["hits"]} == {"web01"}
        assert (await rita.get("/consoles/db01/screen")).status == 404
        assert (await rita.get("/api/consoles/db01/cast")).status == 404
    finally:
        await rita.close()


async def test_searches_share_the_per_user_log_read_limit_and_threads(
        tmp_path: Path, manager: StaticConsoles, monkeypatch: pytest.MonkeyPatch) -> None:
    """One user's slow searches refuse that user's next one (429), not another user's,
    and run in the log-reading threads, not the pool logins rely on."""
    release = threading.Event()
    started = threading.Semaphore(0)
    threads: list[str] = []

    def slow_grep(*args: object, **kwargs: object) -> GrepResult:
        threads.append(threading.current_thread().name)
        started.release()
        release.wait(10)
        return GrepResult([], None)

    monkeypatch.setattr(web_forensics, "grep_logs", slow_grep)
    victor = await client_for(tmp_path, manager, "victor")
    oscar = await client_for(tmp_path, manager, "oscar")
    try:
        search = {"q": "x", "since": ""}
        first = [asyncio.ensure_future(victor.get("/api/search", params=search))
                 for _ in range(LOG_READS_PER_USER)]
        for _ in range(LOG_READS_PER_USER):
            assert await asyncio.to_thread(started.acquire, True, 5)
        extra = await victor.get("/api/search", params=search)
        assert extra.status == 429
        assert "Retry-After" in extra.headers
        other = asyncio.ensure_future(oscar.get("/api/search", params=search))
        assert await asyncio.to_thread(started.acquire, True, 5)  # runs beside victor's
        release.set()
        assert (await other).status == 200
        assert [r.status for r in await asyncio.gather(*first)] == [200] * LOG_READS_PER_USER
        assert all(name.startswith("solgate-logread") for name in threads), threads
    finally:
        release.set()
        await victor.close()
        await oscar.close()


async def test_panic_bundles_are_shown_only_to_who_may_see_their_console(
        tmp_path: Path, manager: StaticConsoles) -> None:
    (tmp_path / "bundles").mkdir()
    for name in ("web01", "db01"):
        (tmp_path / "bundles" / f"{name}-20260528T202750Z.json").write_text(json.dumps({
            "id": f"{name}-20260528T202750Z", "console": name,
            "panic_time": format_time(T0 + 70), "event": {"message": "Kernel panic"},
            "sel": [{"id": 7, "timestamp": int(T0 + 70), "time": format_time(T0 + 70),
                     "words": "OS Critical Stop: run-time critical stop (panic)"}],
            "chassis": {"power": "on", "last_power_event": 0, "faults": []},
            "screen": ["Kernel panic"], "log": ["Kernel panic"]}))
    rita = await client_for(tmp_path, manager, "rita")  # may see web* only
    try:
        page = await rita.get("/bundles/web01-20260528T202750Z")
        assert page.status == 200
        assert "OS Critical Stop: run-time critical stop (panic)" in await page.text()
        api = await rita.get("/api/bundles/web01-20260528T202750Z")
        assert (await api.json())["sel"][0]["id"] == 7
        assert (await rita.get("/bundles/db01-20260528T202750Z")).status == 404
        assert (await rita.get("/api/bundles/db01-20260528T202750Z")).status == 404
        assert (await rita.get("/api/bundles/..%2Fusers")).status == 404
    finally:
        await rita.close()
