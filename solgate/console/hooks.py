"""Tell someone when a host panics: run a configured program and/or POST to a webhook.

A panic at 3 a.m. is only useful if it wakes the right person. Each console may name
`on_panic_command` (an argv, run without a shell, the event JSON on stdin) and
`on_panic_webhook` (a URL that receives the same JSON). Hooks run in the background with
a timeout and a global limit, so a slow pager never delays console output, and their
failures are logged and counted, never raised into the worker.

A command gets a clean environment, not solgate's: solgate's own may hold BMC passwords
(`password_env`) and other secrets. It sees the basics a program needs (`BASE_ENV`:
PATH, HOME, locale, TZ...), the event (`SOLGATE_CONSOLE`, `SOLGATE_SEVERITY`,
`SOLGATE_LINE`, `SOLGATE_PATTERN`, `SOLGATE_TIME`, `SOLGATE_LOG`) and the variables the
operator lists in `on_panic_pass_env`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

# Passed on from solgate's environment when set: what programs need to run, nothing secret.
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
COMMAND_TIMEOUT = 30.0
WEBHOOK_TIMEOUT = 10.0
MAX_CONCURRENT_HOOKS = 8

logger = logging.getLogger("solgate.hooks")
_slots: asyncio.Semaphore | None = None


def _semaphore() -> asyncio.Semaphore:
    global _slots  # noqa: PLW0603 - one limit for the whole process
    if _slots is None:
        _slots = asyncio.Semaphore(MAX_CONCURRENT_HOOKS)
    return _slots


def hook_environment(event: Mapping[str, Any], pass_env: tuple[str, ...] = (),
                     log_path: str = "",
                     environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a panic command: basics, the event, and `pass_env`."""
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items() if k in BASE_ENV or k.startswith("LC_")}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update({k: source[k] for k in pass_env if k in source})
    env.update(
        SOLGATE_CONSOLE=str(event.get("console", "")),
        SOLGATE_SEVERITY=str(event.get("severity", "")),
        SOLGATE_LINE=str(event.get("message", "")),
        SOLGATE_PATTERN=str(event.get("pattern", "")),
        SOLGATE_TIME=str(event.get("time", "")),
    )
    if log_path:
        env["SOLGATE_LOG"] = log_path
    return env


async def run_command(argv: tuple[str, ...], event: Mapping[str, Any],
                      pass_env: tuple[str, ...] = (), log_path: str = "") -> int | None:
    """Run `argv` with the event on stdin; return its exit status (None if it timed out)."""
    body = json.dumps(event).encode()
    env = hook_environment(event, pass_env, log_path)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, env=env,
    )
    try:
        await asyncio.wait_for(proc.communicate(body), COMMAND_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None
    return proc.returncode


async def post_webhook(url: str, event: Mapping[str, Any]) -> int:
    """POST the event as JSON; return the HTTP status."""
    timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
        url, json=dict(event), headers={"User-Agent": "solgate"}
    ) as response:
        return response.status


def _webhook_origin(url: str) -> str:
    """scheme://host:port of a webhook: its path often holds a token, so messages omit it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _webhook_failure(url: str, exc: BaseException) -> str:
    origin = _webhook_origin(url)
    if isinstance(exc, aiohttp.ClientResponseError):
        detail = f"{type(exc).__name__}: HTTP {exc.status} {exc.message}"  # its str has the URL
    else:
        detail = str(exc) or type(exc).__name__
    detail = detail.replace(url, origin + "/...")
    return (f"on_panic_webhook failed: {detail}; check the URL and that {origin} is "
            "reachable from this machine")


async def run_panic_hooks(
    console: str, command: tuple[str, ...], webhook: str, event: Mapping[str, Any],
    *, pass_env: tuple[str, ...] = (), log_path: str = "",
) -> list[str]:
    """Run whatever is configured; return one line per problem (also logged)."""
    problems: list[str] = []
    async with _semaphore():
        if command:
            try:
                status = await run_command(command, event, pass_env, log_path)
            except OSError as exc:
                problems.append(f"on_panic_command {command[0]!r} could not start: {exc}")
            else:
                if status is None:
                    problems.append(f"on_panic_command {command[0]!r} ran longer than "
                                    f"{COMMAND_TIMEOUT:.0f} s and was killed")
                elif status != 0:
                    problems.append(f"on_panic_command {command[0]!r} exited with {status}")
        if webhook:
            try:
                status = await post_webhook(webhook, event)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problems.append(_webhook_failure(webhook, exc))
            else:
                if not 200 <= status < 300:
                    problems.append(f"on_panic_webhook answered HTTP {status} from "
                                    f"{_webhook_origin(webhook)}; check the URL")
    for problem in problems:
        logger.warning("console %s: %s", console, problem)
    return problems
