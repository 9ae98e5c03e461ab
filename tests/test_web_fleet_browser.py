"""The list page's fleet actions in a real browser, against the real engine and `solgate sim`.

An admin logs in, filters the console list by tag, ticks "select all shown", picks
power cycle, reviews, types the count (a wrong count keeps Run disabled) and sees the
results table and its summary line; exactly the filtered simulated hosts were power
cycled. Skipped when playwright or chromium is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.engine_helpers import ROOT_PASSWORD, names, running_stack, tagged, wait_for

async_api = pytest.importorskip("playwright.async_api")

CHROMIUM = os.environ.get("SOLGATE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 15_000
COUNT = 6  # n00, n01 and n05 carry the tag rack12

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed")


@pytest.fixture
async def browser():
    async with async_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def test_select_by_filter_confirm_the_count_and_see_results(
        tmp_path: Path, browser) -> None:
    rack = sorted(n for n in names(COUNT) if tagged(n))
    async with running_stack(tmp_path / "data", COUNT) as stack:
        await wait_for(lambda: all(c.state == "active" for c in stack.manager.consoles()),
                       30, "every console to be active")
        page = await browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{stack.url}/login")
        await page.fill("input[name=username]", "root")
        await page.fill("input[name=password]", ROOT_PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{stack.url}/")

        expect = async_api.expect
        await expect(page.locator("#rows tr")).to_have_count(COUNT)
        await expect(page.locator("#fleetbar")).to_be_hidden()
        await page.fill("#filter", "tag:rack12")
        await expect(page.locator("#rows tr")).to_have_count(len(rack))
        await page.check("#select-all")
        await expect(page.locator("#fleet-count")).to_have_text(f"{len(rack)} selected")
        await page.select_option("#fleet-action", "power:cycle")
        await page.click("#fleet-go")

        dialog = page.locator("#fleet-confirm")
        await expect(dialog).to_be_visible()
        await expect(page.locator("#fleet-plan")).to_contain_text(
            f"power cycle on {len(rack)} consoles")
        await page.fill("#fleet-typed", str(len(rack) + 1))
        await expect(page.locator("#fleet-run")).to_be_disabled()
        assert stack.cycles == []  # the review touched nothing
        await page.fill("#fleet-typed", str(len(rack)))
        await page.click("#fleet-run")

        summary = page.locator("#fleet-summary")
        await expect(summary).to_have_text(
            f"power cycle: {len(rack)} consoles: {len(rack)} done, 0 refused, 0 failed")
        rows = page.locator("#fleet-rows tr")
        await expect(rows).to_have_count(len(rack))
        for name in rack:
            await expect(page.locator("#fleet-rows")).to_contain_text(name)
        assert sorted(n for n, _ in stack.cycles) == rack
        assert errors == []


async def test_a_viewer_is_not_offered_fleet_actions(tmp_path: Path, browser) -> None:
    """Everything a viewer tries is refused, so the list has no checkboxes or action bar;
    an operator's has them."""
    from web_fakes import PASSWORDS, StaticConsoles, make_app, start_client

    manager = StaticConsoles(tmp_path)
    manager.add("web01")
    manager.add("web02")
    client = await start_client(make_app(tmp_path, manager))
    base = f"http://{client.host}:{client.port}"
    expect = async_api.expect
    try:
        for user, offered in (("victor", False), ("oscar", True)):
            context = await browser.new_context()
            page = await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
            await page.goto(f"{base}/login")
            await page.fill("input[name=username]", user)
            await page.fill("input[name=password]", PASSWORDS[user])
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{base}/")
            await expect(page.locator("#rows tr")).to_have_count(2)
            await expect(page.locator("#rows a")).to_have_count(2)
            await expect(page.locator("#rows input.pick")).to_have_count(2 if offered else 0)
            await expect(page.locator("#fleetbar")).to_have_count(1 if offered else 0)
            await expect(page.locator("#select-all")).to_have_count(1 if offered else 0)
            assert errors == [], (user, errors)
            await context.close()
    finally:
        await client.close()
