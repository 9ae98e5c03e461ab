"""The whole product in one test: a browser against `run_server` with the real engine.

Debian's chromium (driven by Playwright) logs in to `run_server`, which runs the real
`ConsoleManager` against a `SimFleet`: simulated BMCs with simulated Linux hosts, over
real RMCP+/SOL on loopback UDP.  The user types `uname` into xterm.js and reads the
answer, sends BREAK + SysRq-h from the toolbar and reads the kernel's SysRq help,
panics the host and sees the panic badge on the console list, finds the panic marked
in the log view and listed on the events page.  Skipped when playwright or chromium is
not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from solgate.config import Config, parse_config
from solgate.console.manager import ConsoleManager
from solgate.daemon import run_server
from solgate.sim.bmc import SimBmcConfig
from solgate.sim.fleet import SimFleet
from solgate.sim.host import SimHost
from solgate.users import hash_password

async_api = pytest.importorskip("playwright.async_api")

CHROMIUM = os.environ.get("SOLGATE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 10_000
OPERATOR, OPERATOR_PASSWORD = "oscar", "oscar-real-stack-pw"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed")

# The rows of the xterm.js screen as text, one string per row (trailing blanks cut).
SCREEN_ROWS = ("() => Array.from(document.querySelectorAll('.xterm-rows > div'))"
               ".map((row) => row.textContent.replace(/\\s+$/, ''))")


def stack_config(data_dir: Path, names: list[str], ports: list[int]) -> Config:
    """A solgate.toml as an operator would write it, with a cheap password hash."""
    password_hash = hash_password(OPERATOR_PASSWORD, n=16, r=1, p=1)
    lines = [
        f'data_dir = "{data_dir}"',
        "[server]", 'listen = "127.0.0.1:0"', 'auth = "login"',
        "[defaults]", 'username = "admin"', 'password = "password"',
        "cipher_suites = [17, 3]", 'reconnect_max = "2s"',
        f"[users.{OPERATOR}]", f'password_hash = "{password_hash}"', 'role = "operator"',
    ]
    for name, port in zip(names, ports, strict=True):
        lines += [f"[consoles.{name}]", 'host = "127.0.0.1"', f"port = {port}",
                  'tags = ["sim"]']
    return parse_config("\n".join(lines), "<real-stack test>")


@dataclass
class Stack:
    url: str
    manager: ConsoleManager
    fleet: SimFleet


@contextlib.asynccontextmanager
async def running_stack(data_dir: Path, count: int = 2) -> AsyncIterator[Stack]:
    """SimFleet hosts already at their shell prompt, and `run_server` in front of them."""
    fleet = SimFleet(count, base_port=0, config_factory=lambda i, name: SimBmcConfig(
        name=name, host=SimHost(name, seed=i, powered=True)))
    await fleet.start()
    shutdown = asyncio.Event()
    ready: asyncio.Future[tuple[ConsoleManager, str | None]] = (
        asyncio.get_running_loop().create_future())
    config = stack_config(data_dir, [h.name for h in fleet.bmcs], fleet.ports)
    server = asyncio.create_task(run_server(
        config, shutdown=shutdown, on_ready=lambda m, url, ssh: ready.set_result((m, url))))
    try:
        done, _ = await asyncio.wait({server, ready}, timeout=10,
                                     return_when=asyncio.FIRST_COMPLETED)
        assert ready in done, "run_server did not become ready"
        manager, url = ready.result()
        assert url is not None
        yield Stack(url.rstrip("/"), manager, fleet)
    finally:
        shutdown.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(server, 15)
        await fleet.stop()


@pytest.fixture
async def browser():
    async with async_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def wait_for_row(page: object, text: str, *, exact: bool = False) -> None:
    """Wait until a row of the terminal screen is (or contains) `text`."""
    test = "rows.some((r) => r === want)" if exact else "rows.some((r) => r.includes(want))"
    await page.wait_for_function(  # type: ignore[attr-defined]
        f"(want) => {{ const rows = ({SCREEN_ROWS})(); return {test}; }}",
        arg=text, timeout=TIMEOUT_MS)


async def test_browser_drives_a_simulated_host_through_the_real_engine(
        tmp_path: Path, browser) -> None:
    async with running_stack(tmp_path) as stack:
        page = await browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        dialogs: list[str] = []

        async def accept(dialog: object) -> None:
            dialogs.append(dialog.message)  # type: ignore[attr-defined]
            await dialog.accept()  # type: ignore[attr-defined]

        page.on("dialog", accept)

        await page.goto(f"{stack.url}/consoles/sim001")
        assert "/login" in page.url
        await page.fill("input[name=username]", OPERATOR)
        await page.fill("input[name=password]", OPERATOR_PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{stack.url}/consoles/sim001")
        await async_api.expect(page.locator("#conn")).to_have_text("live")
        await async_api.expect(page.locator("#state")).to_have_text("active")
        await async_api.expect(page.locator("#lock")).to_have_text("you type")

        # Typing goes browser -> WebSocket -> hub -> SOL over UDP -> host, and back.
        await page.locator(".xterm").click()
        await page.keyboard.type("uname")
        await page.keyboard.press("Enter")
        await wait_for_row(page, "Linux", exact=True)
        await wait_for_row(page, "root@sim001:~#")

        # Toolbar SysRq (after its confirmation): a serial BREAK, then 'h'.
        await page.select_option("#sysrq-key", "h")
        await page.click("#sysrq")
        await wait_for_row(page, "sysrq: HELP")
        assert any("SysRq" in d for d in dialogs)

        # The escape ~B works from the keyboard too: BREAK, then the next key is SysRq.
        await page.locator(".xterm").click()
        await page.keyboard.press("Enter")
        await page.keyboard.type("~B")
        await page.keyboard.type("m")
        await wait_for_row(page, "sysrq: Show Memory")

        # A kernel panic: the engine flags it, and the console list shows the badge.
        await page.locator(".xterm").click()
        await page.keyboard.type("panic")
        await page.keyboard.press("Enter")
        await wait_for_row(page, "Kernel panic - not syncing")
        await page.goto(f"{stack.url}/")
        badge = page.locator("#rows tr", has_text="sim001").locator(".panic")
        # Reported after 3 s of quiet, then seen by the list page's next poll (every 3 s).
        await async_api.expect(badge).to_have_text("1", timeout=15_000)
        other = page.locator("#rows tr", has_text="sim002")
        await async_api.expect(other).to_be_visible()
        assert await other.locator(".panic").count() == 0

        # The log view marks the panic and links it to the events page.
        await page.goto(f"{stack.url}/consoles/sim001/log")
        await async_api.expect(page.locator(".log")).to_contain_text("uname")
        await async_api.expect(page.locator(".log .panic-mark").first).to_contain_text(
            "Kernel panic")
        worker = stack.manager.get("sim001")
        assert worker is not None
        assert worker.panic_count == 1

        # The events page: panics and SOL up/down over all consoles, newest first.
        await page.click("text=See them on the events page")
        await page.wait_for_url(f"{stack.url}/events?console=sim001&kind=panic")
        panic_row = page.locator("#rows tr.ev-panic")
        await async_api.expect(panic_row).to_have_count(1)
        await async_api.expect(panic_row.locator("a", has_text="Kernel panic")).to_be_visible()
        await page.fill("#ev-console", "")
        await page.click("button.ev-preset[data-kind^=sol-up]")
        await async_api.expect(page.locator("#rows tr.ev-sol-up")).to_have_count(2)
        assert await page.locator("#rows tr.ev-panic").count() == 0
        assert errors == []
