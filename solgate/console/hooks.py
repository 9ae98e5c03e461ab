"""Tell someone when a host panics: run a configured program and/or POST to a webhook.

A panic at 3 a.m. is only useful if it wakes the right person. Each console may name
`on_panic_command` (an argv, run without a shell, the event JSON on stdin) and
`on_panic_webhook` (a URL that receives the same JSON). Hooks run in the background with
a timeout and a global limit, so a slow pager never delays console output, and their
failures are logged and counted, never raised into the worker.
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


async def run_command(argv: tuple[str, ...], event: Mapping[str, Any]) -> int | None:
    """Run `argv` with the event on stdin; return its exit status (None if it timed out)."""
    body = json.dumps(event).encode()
    env = dict(os.environ)
    env.update(
        SOLGATE_CONSOLE=str(event.get("console", "")),
        SOLGATE_SEVERITY=str(event.get("severity", "")),
        SOLGATE_LINE=str(event.get("message", "")),
    )
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
    console: str, command: tuple[str, ...], webhook: str, event: Mapping[str, Any]
) -> list[str]:
    """Run whatever is configured; return one line per problem (also logged)."""
    problems: list[str] = []
    async with _semaphore():
        if command:
            try:
                status = await run_command(command, event)
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
