"""A real browser (Debian chromium driven by Playwright) against the web app.

Logs in, opens a console, sees the current screen, types and sees the echo, survives
a dropped connection, and leaves with `~.`.  Skipped when playwright or chromium is
not installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import pytest_asyncio
from web_fakes import PASSWORDS, StaticConsoles, make_app, start_client

from solgate.web.ws import close_all
from tests.engine_helpers import wait_for

async_api = pytest.importorskip("playwright.async_api")

CHROMIUM = os.environ.get("SOLGATE_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000

# One chromium for the module (a launch costs a second or two), so the tests share its
# event loop. `browser.new_page()` gives each page a context of its own (its own cookies),
# as with a browser per test, and what a test opened is closed after it.
pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed"),
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium():
    async with async_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def browser(chromium):
    try:
        yield chromium
    finally:
        for context in chromium.contexts:
            await context.close()


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


async def logged_in_page(browser, base: str, user: str, path: str):
    """A new page, logged in as `user` through the form, at `path`."""
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(f"{base}/login?next={path}")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", PASSWORDS[user])
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}{path}")
    return page


async def test_console_list_filter_hides_non_matching_consoles(tmp_path: Path, browser) -> None:
    manager = StaticConsoles(tmp_path)
    manager.add("web01", tags=("rack1",))
    manager.add("web02", tags=("rack1",))
    manager.add("db01", tags=("rack2",))
    client = await start_client(make_app(tmp_path, manager))
    base = f"http://{client.host}:{client.port}"
    try:
        page = await logged_in_page(browser, base, "oscar", "/")
        rows = page.locator("#rows tr")
        await async_api.expect(rows).to_have_count(3)
        await page.fill("#filter", "web")
        await async_api.expect(rows).to_have_count(2)
        await async_api.expect(page.locator("#rows")).not_to_contain_text("db01")
        await async_api.expect(page.locator("#summary")).to_contain_text("2 of 3 shown")
        await page.fill("#filter", "tag:rack2")
        await async_api.expect(rows).to_have_count(1)
        await async_api.expect(rows).to_contain_text("db01")
        await page.fill("#filter", "nosuchconsole")
        await async_api.expect(rows).to_have_text("No console matches the filter.")
        await page.fill("#filter", "")
        await async_api.expect(rows).to_have_count(3)
        # The filter is kept in the address, so a reload or a shared link keeps it.
        await page.goto(f"{base}/?q=db")
        await async_api.expect(rows).to_have_count(1)
        await async_api.expect(rows).to_contain_text("db01")
    finally:
        await client.close()


async def test_search_finds_a_line_that_scrolled_off(tmp_path: Path, browser) -> None:
    manager = StaticConsoles(tmp_path)
    console = manager.add("web01")
    client = await start_client(make_app(tmp_path, manager))
    base = f"http://{client.host}:{client.port}"
    try:
        page = await logged_in_page(browser, base, "victor", "/consoles/web01")
        await async_api.expect(page.locator("#conn")).to_have_text("live")
        screen = page.locator(".xterm-rows")
        console.hub.publish(b"oops: needle-4711 happened\r\n")
        console.hub.publish(b"".join(b"filler line %03d\r\n" % i for i in range(200)))
        await async_api.expect(screen).to_contain_text("filler line 199")
        await async_api.expect(screen).not_to_contain_text("needle-4711")
        await page.fill("#search", "needle-4711")
        await page.press("#search", "Enter")
        # The terminal scrolls back to the match.
        await async_api.expect(screen).to_contain_text("needle-4711")
        await async_api.expect(page.locator("#message")).not_to_contain_text("no match")
        await page.fill("#search", "not-in-scrollback")
        await page.click("#search-next")
        await async_api.expect(page.locator("#message")).to_contain_text("no match")
    finally:
        await client.close()


# Every text the connection badge and the banner show, recorded as they change.
WATCH_CONNECTION = """() => {
  window.seen = [];
  const note = () => window.seen.push([document.getElementById("conn").textContent,
                                       document.getElementById("banner").hidden,
                                       document.getElementById("banner").textContent]);
  for (const id of ["conn", "banner"]) {
    new MutationObserver(note).observe(document.getElementById(id),
      {childList: true, characterData: true, subtree: true, attributes: true});
  }
}"""


async def test_lost_connection_banner_appears_and_clears_on_reconnect(
    tmp_path: Path, browser
) -> None:
    manager = StaticConsoles(tmp_path)
    console = manager.add("web01")
    client = await start_client(make_app(tmp_path, manager))
    base = f"http://{client.host}:{client.port}"
    try:
        page = await logged_in_page(browser, base, "victor", "/consoles/web01")
        await async_api.expect(page.locator("#conn")).to_have_text("live")
        await async_api.expect(page.locator("#banner")).to_be_hidden()
        await page.evaluate(WATCH_CONNECTION)
        await close_all(client.server.app)
        # First the page must notice (until then the old "live" is still shown).
        await page.wait_for_function(
            "() => window.seen.some(s => s[0] === 'offline' && !s[1])")
        await async_api.expect(page.locator("#conn")).to_have_text("live")
        await async_api.expect(page.locator("#banner")).to_be_hidden()
        seen = await page.evaluate("window.seen")
        offline = [s for s in seen if s[0] == "offline" and not s[1]]
        assert offline, seen
        assert "Connection to solgate lost" in offline[0][2]
        assert "reconnecting in" in offline[0][2]
        assert seen[-1][0] == "live"
        await wait_for(lambda: console.hub.viewers == 1)
    finally:
        await client.close()


async def test_idle_timeout_detaches_with_a_banner_and_no_reconnect(
    tmp_path: Path, browser
) -> None:
    manager = StaticConsoles(tmp_path)
    console = manager.add("web01")
    client = await start_client(make_app(tmp_path, manager))
    base = f"http://{client.host}:{client.port}"
    try:
        page = await logged_in_page(browser, base, "victor", "/consoles/web01")
        await async_api.expect(page.locator("#conn")).to_have_text("live")
        assert console.hub.expire_idle(0.0) == 1  # what the server's tick does at the timeout
        await async_api.expect(page.locator("#conn")).to_have_text("idle")
        await async_api.expect(page.locator("#banner")).to_contain_text(
            "Detached: idle for 0s without input")
        await page.wait_for_timeout(3000)  # longer than the first reconnect delay
        assert console.hub.viewers == 0
        await async_api.expect(page.locator("#conn")).to_have_text("idle")
    finally:
        await client.close()


async def test_confirmation_dialogs_and_dismissing_sends_nothing(tmp_path: Path, browser) -> None:
    manager = StaticConsoles(tmp_path)
    console = manager.add("web01")
    client = await start_client(make_app(tmp_path, manager))
    base = f"http://{client.host}:{client.port}"
    try:
        page = await logged_in_page(browser, base, "alice", "/consoles/web01")
        await async_api.expect(page.locator("#conn")).to_have_text("live")
        await async_api.expect(page.locator("#lock")).to_have_text("you type")
        dialogs: list[str] = []
        answer = {"accept": False}

        async def on_dialog(dialog: object) -> None:
            dialogs.append(dialog.message)  # type: ignore[attr-defined]
            if answer["accept"]:
                await dialog.accept()  # type: ignore[attr-defined]
            else:
                await dialog.dismiss()  # type: ignore[attr-defined]

        page.on("dialog", on_dialog)
        await page.click("#deactivate")
        await page.select_option("#power-action", "cycle")
        await page.click("#power")
        await page.select_option("#sysrq-key", "b")
        await page.click("#sysrq")
        await wait_for(lambda: len(dialogs) == 3, timeout=5)
        assert "drop its SOL session" in dialogs[0]
        assert "Power cycle web01?" in dialogs[1]
        assert "SysRq-b" in dialogs[2]
        # Accepted, the same button acts; nothing the dismissed ones asked for was sent.
        answer["accept"] = True
        await page.click("#deactivate")
        await wait_for(lambda: manager.actions != [], timeout=5)
        await async_api.expect(page.locator("#message")).to_contain_text("SOL deactivated")
        assert manager.actions == [("deactivate", "web01", "alice")]
        assert console.inputs == []
        assert len(dialogs) == 4
    finally:
        await client.close()


async def test_demoted_then_logged_out_the_page_says_why_and_stops(
    tmp_path: Path, browser
) -> None:
    """A reload demotes the operator: the page turns read-only and says why; the session
    then ends (logout elsewhere): the page says so and does not reconnect."""
    from dataclasses import replace

    from solgate.users import Role
    from solgate.web.keys import auth_key

    manager = StaticConsoles(tmp_path)
    console = manager.add("web01", echo=True)
    client = await start_client(make_app(tmp_path, manager))
    base = f"http://{client.host}:{client.port}"
    auth = client.server.app[auth_key]
    try:
        page = await logged_in_page(browser, base, "oscar", "/consoles/web01")
        await async_api.expect(page.locator("#conn")).to_have_text("live")
        await async_api.expect(page.locator("#lock")).to_have_text("you type")
        users = {**auth.users, "oscar": replace(auth.users["oscar"], role=Role.VIEWER)}
        auth.replace_users(users)  # what a reload does
        await async_api.expect(page.locator("#message")).to_contain_text(
            "read-only now: oscar is now a viewer on web01")
        await async_api.expect(page.locator("#lock")).to_contain_text("read-only")
        await page.locator(".xterm").click()
        await page.keyboard.type("reboot")
        await async_api.expect(page.locator("#message")).to_contain_text("read-only")
        assert console.inputs == []

        auth.sessions.drop_user("oscar")  # logged out from another tab
        await async_api.expect(page.locator("#conn")).to_have_text("refused")
        await async_api.expect(page.locator("#banner")).to_contain_text(
            "The server refused this console: logged out")
        await page.wait_for_timeout(3000)  # longer than the first reconnect delay
        assert console.hub.viewers == 0
    finally:
        await client.close()


async def test_escapes_work_after_xterm_answers_a_cursor_query(tmp_path: Path, browser) -> None:
    # busybox ash and systemd's serial getty ask for the cursor position with each prompt;
    # xterm.js answers by itself (ESC [ row ; col R), and that answer is not typing.
    manager = StaticConsoles(tmp_path)
    console = manager.add("web01")
    client = await start_client(make_app(tmp_path, manager))
    base = f"http://{client.host}:{client.port}"
    cpr = re.compile(rb"\x1b\[\d+;\d+R")
    try:
        viewer = await logged_in_page(browser, base, "victor", "/consoles/web01")
        page = await logged_in_page(browser, base, "oscar", "/consoles/web01")
        await async_api.expect(page.locator("#lock")).to_have_text("you type")
        await page.locator(".xterm").click()
        console.hub.publish(b"\r\nroot@web01:~# \x1b[6n")
        await wait_for(lambda: cpr.fullmatch(b"".join(console.inputs)) is not None, 5)
        await page.keyboard.type("~B")
        await wait_for(lambda: ("break", "web01", "oscar") in manager.actions, 5)
        console.hub.publish(b"\r\nroot@web01:~# \x1b[6n")
        await wait_for(lambda: len(cpr.findall(b"".join(console.inputs))) == 2, 5)
        await page.keyboard.type("~.")
        await page.wait_for_url(f"{base}/")
        assert b"~" not in b"".join(console.inputs)
        # The viewer's xterm.js answered both queries too, and was not told "read-only".
        assert "read-only" not in (await viewer.locator("#message").text_content() or "")
    finally:
        await client.close()
