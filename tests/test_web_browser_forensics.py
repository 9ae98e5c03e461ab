"""A real browser on the forensics pages: the time slider and note steps of the
screen-at-a-moment page, the vendored asciicast player, and the search page's link to
the screen at a hit. Skipped when playwright or chromium is not installed.

With SOLGATE_SCREENSHOTS=DIR the test also saves the screenshots docs/forensics.md
shows (player.png, search.png, bundle.png).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from web_fakes import PASSWORDS, StaticConsoles, make_app, start_client

from solgate.console.log import ConsoleLog, format_time

async_api = pytest.importorskip("playwright.async_api")

CHROMIUM = os.environ.get("SOLGATE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 10_000
T0 = 1_780_000_000.0
SHOTS = os.environ.get("SOLGATE_SCREENSHOTS")

BUNDLE = {
    "id": "web01-20260528T202750Z", "console": "web01", "panic_time": format_time(T0 + 70),
    "event": {"severity": "critical",
              "message": "Kernel panic - not syncing: Fatal machine check"},
    "sel": [{"id": 41, "time": format_time(T0 - 3000),
             "words": "System Boot / Restart Initiated: initiated by power up"},
            {"id": 42, "time": format_time(T0 + 60),
             "words": "Processor: machine check exception"},
            {"id": 43, "time": format_time(T0 + 61),
             "words": "OS Critical Stop: run-time critical stop (panic) [reported by the OS]"}],
    "chassis": {"power": "on", "last_power_event": 0, "faults": []},
    "screen_note": "web01 at ...", "screen": ["[ 1201.000002] Kernel panic - not syncing: "
                                              "Fatal machine check"],
    "log": ["[ 1201.000001] mce: [Hardware Error]: Machine check events logged",
            "[ 1201.000002] Kernel panic - not syncing: Fatal machine check"],
    "log_until": format_time(T0 + 70),
}

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed")


def write_log(data_dir: Path, name: str, steps: list[tuple[float, bytes | str]]) -> None:
    clock = [T0]
    log = ConsoleLog(data_dir / "logs" / f"{name}.log", clock=lambda: clock[0])
    for t, what in steps:
        clock[0] = t
        if isinstance(what, str):
            log.event(what)
        else:
            log.write(what)
    log.close()
    os.utime(log.path, (clock[0], clock[0]))  # as if written then, not today


async def shot(page, name: str) -> None:  # noqa: ANN001
    if SHOTS:
        await page.screenshot(path=str(Path(SHOTS) / name), full_page=True)


async def test_slider_notes_player_and_search(tmp_path: Path) -> None:
    manager = StaticConsoles(tmp_path)
    manager.add("web01")
    manager.add("db01")
    (tmp_path / "logs").mkdir()
    write_log(tmp_path, "web01", [
        (T0, "SOL up"), (T0 + 1, b"web01 login: root\r\nPassword:\r\n"),
        (T0 + 2, b"root@web01:~# dmesg | tail -1\r\n"),
        (T0 + 3, b"[  812.334512] eth0: link up\r\nroot@web01:~# "),
        (T0 + 60, b"\r\n[ 1201.000001] mce: [Hardware Error]: Machine check events logged\r\n"),
        (T0 + 61, b"[ 1201.000002] Kernel panic - not syncing: Fatal machine check\r\n"),
        (T0 + 70, "PANIC (critical): Kernel panic - not syncing: Fatal machine check"),
    ])
    write_log(tmp_path, "db01", [(T0 + 30, b"[  99.1] mce: Machine check in bank 4\r\n")])
    (tmp_path / "bundles").mkdir()
    (tmp_path / "bundles" / f"{BUNDLE['id']}.json").write_text(json.dumps(BUNDLE))
    (tmp_path / "events.jsonl").write_text(json.dumps({
        "time": format_time(T0 + 70, millis=True), "console": "web01", "kind": "panic",
        "severity": "critical", "message": BUNDLE["event"]["message"],
        "bundle": BUNDLE["id"]}) + "\n")
    client = await start_client(make_app(tmp_path, manager))
    base = f"http://{client.host}:{client.port}"
    errors: list[str] = []
    try:
        async with async_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS,
                                              headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1100, "height": 900})
                page.set_default_timeout(TIMEOUT_MS)
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("console", lambda msg: errors.append(msg.text)
                        if msg.type == "error" else None)
                await page.goto(f"{base}/login?next=/consoles/web01/screen")
                await page.fill("input[name=username]", "oscar")
                await page.fill("input[name=password]", PASSWORDS["oscar"])
                await page.click("button[type=submit]")
                await page.goto(f"{base}/consoles/web01/screen?at={format_time(T0 + 30)}")
                screen = page.locator("#screen")
                await async_api.expect(screen).to_contain_text("eth0: link up")
                await async_api.expect(screen).not_to_contain_text("Machine check")

                # Drag the slider to a later moment: the page shows the screen then.
                slider = page.locator("#slider")
                await slider.evaluate(
                    "(el, v) => { el.value = v; el.dispatchEvent(new Event('input'));"
                    " el.dispatchEvent(new Event('change')); }", str(int(T0 + 65)))
                await page.wait_for_url(f"**at={format_time(T0 + 65)}".replace(":", "%3A"))
                await async_api.expect(screen).to_contain_text("Machine check events logged")
                await async_api.expect(page.locator("#at")).to_have_value(
                    format_time(T0 + 65, millis=True))

                # Step to the previous note (SOL up, before any output) and back.
                await page.click("#prev-note")
                await async_api.expect(screen).not_to_contain_text("login")
                await page.click("#next-note")
                await async_api.expect(screen).to_contain_text("Kernel panic - not syncing")
                await shot(page, "screen.png")

                # The recording plays in the vendored player.
                await page.click("#play")
                await async_api.expect(page.locator("#player")).to_contain_text(
                    "Kernel panic - not syncing", timeout=20_000)
                await shot(page, "player.png")

                # The search page finds both consoles, newest first (solgate's PANIC note
                # too), and links the screen at each hit.
                await page.goto(f"{base}/search?q=machine+check&since=")
                rows = page.locator("#hits tbody tr")
                await async_api.expect(rows).to_have_count(4)
                await async_api.expect(rows.nth(0)).to_contain_text("PANIC (critical)")
                await async_api.expect(rows.nth(1)).to_contain_text("Fatal machine check")
                await async_api.expect(rows.nth(3)).to_contain_text("db01")
                await shot(page, "search.png")
                await rows.nth(3).locator("td.when a").click()
                await async_api.expect(page.locator("#screen")).to_contain_text(
                    "Machine check in bank 4")

                # A panic's bundle, as the engine writes it, from the events page's link.
                await page.goto(f"{base}/events?kind=panic")
                await page.click("a.bundle-link")
                await page.wait_for_url(f"{base}/bundles/{BUNDLE['id']}")
                await async_api.expect(page.locator("#bundle")).to_contain_text(
                    "OS Critical Stop: run-time critical stop (panic)")
                await shot(page, "bundle.png")
                assert errors == []
            finally:
                await browser.close()
    finally:
        await client.close()
