"""Panic hooks: a configured program and a webhook both receive the panic event."""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

from solgate.config import parse_config
from solgate.console.events import EventLog
from solgate.console.hooks import run_panic_hooks
from solgate.console.log import ConsoleLog
from solgate.console.panic import PanicDetector, PanicEvent
from solgate.console.worker import ConsoleWorker

EVENT = {"console": "web01", "kind": "panic", "severity": "critical",
         "message": "Kernel panic - not syncing: sysrq triggered crash", "context": ["a", "b"]}


def _recorder_script(tmp_path):
    out = tmp_path / "got.json"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, os, sys\n"
        "data = json.load(sys.stdin)\n"
        "data['env'] = {k: os.environ[k] for k in "
        "('SOLGATE_CONSOLE', 'SOLGATE_SEVERITY', 'SOLGATE_LINE')}\n"
        f"open({str(out)!r}, 'w').write(json.dumps(data))\n"
    )
    return [sys.executable, str(script)], out


async def _webhook_server(handler=None, path="/hook"):
    got: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(path, handler or hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}{path}", got


async def test_command_gets_the_event_on_stdin_and_in_its_environment(tmp_path):
    argv, out = _recorder_script(tmp_path)
    problems = await run_panic_hooks("web01", tuple(argv), "", EVENT)
    assert problems == []
    got = json.loads(out.read_text())
    assert got["message"] == EVENT["message"]
    assert got["context"] == ["a", "b"]
    assert got["env"] == {"SOLGATE_CONSOLE": "web01", "SOLGATE_SEVERITY": "critical",
                          "SOLGATE_LINE": EVENT["message"]}


async def test_webhook_receives_the_event_as_json():
    runner, url, got = await _webhook_server()
    try:
        assert await run_panic_hooks("web01", (), url, EVENT) == []
    finally:
        await runner.cleanup()
    assert got == [EVENT]


async def test_a_failing_webhook_is_reported_without_its_secret_path(caplog):
    """Webhook URLs often carry a token in their path; a failure names the host only."""
    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(str(request.url))  # to itself until aiohttp gives up

    runner, url, _ = await _webhook_server(loop, "/services/T0KEN-SECRET")
    try:
        problems = await run_panic_hooks("web01", (), url, EVENT)
    finally:
        await runner.cleanup()
    assert len(problems) == 1
    assert "on_panic_webhook failed" in problems[0]
    assert url.removesuffix("/services/T0KEN-SECRET") in problems[0]
    assert "T0KEN-SECRET" not in problems[0]
    assert "T0KEN-SECRET" not in caplog.text


async def test_failures_are_reported_not_raised(tmp_path):
    problems = await run_panic_hooks(
        "web01", (str(tmp_path / "no-such-program"),), "http://127.0.0.1:9/hook", EVENT)
    assert len(problems) == 2
    assert "could not start" in problems[0]
    assert "on_panic_webhook failed" in problems[1]
    failing = await run_panic_hooks("web01", (sys.executable, "-c", "raise SystemExit(3)"),
                                    "", EVENT)
    assert failing == [f"on_panic_command {sys.executable!r} exited with 3"]


async def test_a_detected_panic_runs_the_console_hooks(tmp_path):
    """The worker's panic path (log line, events.jsonl, hooks) without a BMC."""
    argv, out = _recorder_script(tmp_path)
    runner, url, got = await _webhook_server()
    config = parse_config(
        "[consoles.web01]\nhost = '127.0.0.1'\nusername = 'admin'\npassword = 'pw'\n"
        f"on_panic_command = {json.dumps(argv)}\non_panic_webhook = '{url}'\n",
        "<test>", base_dir=tmp_path)
    events = EventLog(tmp_path / "events.jsonl")
    log = ConsoleLog(tmp_path / "web01.log")
    worker = ConsoleWorker(config.consoles["web01"], log=log, events=events,
                           panic=PanicDetector(), setup_slots=asyncio.Semaphore(1))
    try:
        worker._on_panic(PanicEvent(time=0.0, severity="critical", pattern="kernel-panic",
                                    line="Kernel panic - not syncing: test", context=("x",)))
        for _ in range(200):
            if out.exists() and got:
                break
            await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
        log.close()
        events.close()
    assert worker.panic_count == 1
    assert json.loads(out.read_text())["message"] == "Kernel panic - not syncing: test"
    assert (got[0]["console"], got[0]["kind"]) == ("web01", "panic")
    logged = (tmp_path / "web01.log").read_bytes()
    assert b"PANIC (critical): Kernel panic - not syncing: test" in logged


async def test_command_environment_holds_no_bmc_password(tmp_path, monkeypatch):
    """solgate's own environment carries password_env secrets; a hook sees only what it
    needs plus what on_panic_pass_env names."""
    monkeypatch.setenv("SOLGATE_BMC_PASSWORD", "bmc-secret-pw")
    monkeypatch.setenv("PAGER_API_KEY", "pager-key")
    out = tmp_path / "env.json"
    script = tmp_path / "dump_env.py"
    script.write_text("import json, os\n"
                      f"open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))\n")
    config = parse_config(
        "[consoles.web01]\nhost = '127.0.0.1'\npassword_env = 'SOLGATE_BMC_PASSWORD'\n"
        f"on_panic_command = {json.dumps([sys.executable, str(script)])}\n"
        "on_panic_pass_env = ['PAGER_API_KEY']\n", "<test>", base_dir=tmp_path)
    console = config.consoles["web01"]
    assert console.on_panic_pass_env == ("PAGER_API_KEY",)
    problems = await run_panic_hooks("web01", console.on_panic_command, "", EVENT,
                                     pass_env=console.on_panic_pass_env,
                                     log_path=str(tmp_path / "web01.log"))
    assert problems == []
    env = json.loads(out.read_text())
    assert "bmc-secret-pw" not in env.values()
    assert "SOLGATE_BMC_PASSWORD" not in env
    assert env["PAGER_API_KEY"] == "pager-key"
    assert env["SOLGATE_CONSOLE"] == "web01"
    assert env["SOLGATE_LOG"] == str(tmp_path / "web01.log")
    assert env["PATH"]
    assert set(env) <= {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
                        "PAGER_API_KEY", "SOLGATE_CONSOLE", "SOLGATE_SEVERITY", "SOLGATE_LINE",
                        "SOLGATE_PATTERN", "SOLGATE_TIME", "SOLGATE_LOG"} | {
                            k for k in env if k.startswith("LC_")}
