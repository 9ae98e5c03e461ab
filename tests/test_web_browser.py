"""A real browser (Debian chromium driven by Playwright) against the web app.

Logs in, opens a console, sees the current screen, types and sees the echo, survives
a dropped connection, and leaves with `~.`.  Skipped when playwright or chromium is
not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from web_fakes import PASSWORDS, StaticConsoles, make_app, start_client

from solgate.web.ws import close_all

async_api = pytest.importorskip("playwright.async_api")

CHROMIUM = os.environ.get("SOLGATE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 10_000

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed")


@pytest.fixture
async def browser():
    async with async_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def test_login_open_console_type_and_see_output(tmp_path: Path, browser) -> None:
    manager = StaticConsoles(tmp_path)
    console = manager.add("web01", echo=True, tags=("rack1",))
    manager.add("db01")
    console.hub.publish(b"Debian GNU/Linux 12 web01 ttyS0\r\n\r\nweb01 login: ")
    client = await start_client(make_app(tmp_path, manager))
    base = f"http://{client.host}:{client.port}"
    errors: list[str] = []
    try:
        page = await browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("requestfailed", lambda req: errors.append(f"failed: {req.url}"))
        hosts: set[str] = set()
        page.on("request", lambda req: hosts.add(req.url.split("/")[2]))

        await page.goto(f"{base}/consoles/web01")
        assert "/login" in page.url
        await page.fill("input[name=username]", "oscar")
        await page.fill("input[name=password]", PASSWORDS["oscar"])
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{base}/consoles/web01")

        rows = page.locator(".xterm-rows")
        await async_api.expect(rows).to_contain_text("web01 login:")
        await async_api.expect(page.locator("#conn")).to_have_text("live")
        await async_api.expect(page.locator("#lock")).to_have_text("you type")

        await page.locator(".xterm").click()
        await page.keyboard.type("root")
        await page.keyboard.press("Enter")
        await async_api.expect(rows).to_contain_text("web01 login: root")
        assert b"".join(console.inputs) == b"root\r"

        # The server drops every socket: the page says so and reconnects by itself.
        await close_all(client.server.app)
        await async_api.expect(page.locator("#conn")).to_have_text("live")
        console.hub.publish(b"\r\nback again")
        await async_api.expect(rows).to_contain_text("back again")

        # ~. at the start of a line leaves the console for the list.
        await page.locator(".xterm").click()
        await page.keyboard.press("Enter")
        await page.keyboard.type("~.")
        await page.wait_for_url(f"{base}/")
        await async_api.expect(page.locator("#rows")).to_contain_text("web01")
        await async_api.expect(page.locator("#rows")).to_contain_text("db01")

        assert hosts == {f"{client.host}:{client.port}"}
        assert errors == []
    finally:
        await client.close()


async def test_viewer_sees_output_but_cannot_type(tmp_path: Path, browser) -> None:
    manager = StaticConsoles(tmp_path)
    console = manager.add("web01", echo=True)
    client = await start_client(make_app(tmp_path, manager))
    base = f"http://{client.host}:{client.port}"
    try:
        page = await browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(f"{base}/login?next=/consoles/web01")
        await page.fill("input[name=username]", "victor")
        await page.fill("input[name=password]", PASSWORDS["victor"])
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{base}/consoles/web01")
        await async_api.expect(page.locator("#conn")).to_have_text("live")
        await async_api.expect(page.locator("#lock")).to_contain_text("read-only")
        assert await page.locator("#break").count() == 0
        await page.locator(".xterm").click()
        await page.keyboard.type("rm -rf /")
        await async_api.expect(page.locator("#message")).to_contain_text("read-only")
        assert console.inputs == []
        console.hub.publish(b"kernel: hello viewer")
        await async_api.expect(page.locator(".xterm-rows")).to_contain_text("hello viewer")
    finally:
        await client.close()
