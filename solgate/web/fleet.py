"""POST /api/fleet: one action on many consoles, with a dry run and a confirmation.

The body is ``{"selection": {...}, "action": "power", "args": {"power": "cycle"},
"dry_run": false, "confirm_count": 20, "stream": false}`` (see `solgate.selection` for
the selection and `solgate.console.fleet.parse_action` for actions and their args).

* The selection is matched against every console; consoles the user may see but not
  act on are refused by name with the reason; consoles outside the user's access list
  are only counted (``unseen``), so a fleet request never reveals their names.
* ``dry_run`` answers what would be touched and touches nothing.
* Above ``[server] fleet_confirm_over`` consoles, ``confirm_count`` must equal the number
  that would be touched (409 with ``confirm_needed`` otherwise), so a selection that
  grew between the dry run and the request is not acted on.
* ``stream``: the answer is NDJSON, one ``{"progress": ...}`` line per console as it
  finishes and a last ``{"result": ...}`` line, for a progress bar on long runs.

Auth and CSRF are the middleware's, as for every other write endpoint.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from solgate.access import user_rights
from solgate.console.fleet import FleetAction, FleetError, FleetRunner, Outcome, parse_action
from solgate.selection import Selection, SelectionError, select
from solgate.users import User
from solgate.web.keys import config_key, manager_key
from solgate.web.middleware import json_error, require_identity
from solgate.web.model import ConsoleView, state_words


def refusal(user: User, console: ConsoleView, action: FleetAction) -> str | None:
    """Why `user` may not take `action` on `console` (which they may see), or None."""
    rights = user_rights(user, user.name, console.name, console.tags)
    if not rights.write:
        return f"{user.name} may only watch {console.name} ({user.role.name.lower()})"
    if action.needs_power and not user.can_power(console.name, console.tags):
        return f"{action.describe()} needs the admin role"
    return None


def _limits(app: web.Application) -> tuple[int, int, int]:
    server = app[config_key].server
    return server.fleet_concurrency, server.fleet_rate, server.fleet_confirm_over


async def post_fleet(request: web.Request) -> web.StreamResponse:
    ident = require_identity(request)
    user = ident.user
    try:
        body = await request.json()
    except ValueError:
        return json_error(400, "send a JSON object: {selection, action, args, dry_run, "
                               "confirm_count}")
    if not isinstance(body, dict):
        return json_error(400, "send a JSON object: {selection, action, args, dry_run, "
                               "confirm_count}")
    try:
        args = body.get("args") or {}
        if not isinstance(args, dict):
            raise FleetError("args must be an object, such as {\"power\": \"cycle\"}")
        action = parse_action(str(body.get("action", "")), args)
        selection = Selection.from_json(body.get("selection", {}))
    except (FleetError, SelectionError) as exc:
        return json_error(400, str(exc))
    if selection.empty:
        return json_error(400, "the selection is empty: name consoles, a tag, a state or "
                               "filter words (all consoles: {\"consoles\": [\"*\"]})")

    manager = request.app[manager_key]
    matched = set(select(selection, manager.consoles(), state_words))
    targets: list[str] = []
    refused: dict[str, str] = {}
    unseen = 0
    for console in manager.consoles():
        if console.name not in matched:
            continue
        if not user.can_view(console.name, console.tags):
            unseen += 1
            continue
        why = refusal(user, console, action)
        if why is None:
            targets.append(console.name)
        else:
            refused[console.name] = why
    if not targets and not refused and not unseen:
        return json_error(400, f"the selection {selection.describe()} matches no console")

    concurrency, rate, confirm_over = _limits(request.app)
    if body.get("dry_run"):
        return web.json_response({
            "dry_run": True, "action": action.describe(), "selection": selection.to_json(),
            "would_touch": targets,
            "refused": [Outcome(n, "refused", w).to_json() for n, w in refused.items()],
            "unseen": unseen, "confirm_needed": _confirm_needed(action, targets, confirm_over),
            "summary": {"total": len(targets) + len(refused) + unseen, "would_touch":
                        len(targets), "refused": len(refused) + unseen},
        })
    need = _confirm_needed(action, targets, confirm_over)
    if need is not None and body.get("confirm_count") != need:
        return web.json_response(
            {"error": f"{action.describe()} would touch {need} consoles; confirm with that "
                      f"count (confirm_count = {need})", "confirm_needed": need},
            status=409)

    runner = FleetRunner(manager, concurrency=concurrency, rate=rate)
    run = runner.run(action, targets, refused, user=user.name,
                     selection=selection.describe(), unseen=unseen)
    if not body.get("stream"):
        return web.json_response(await run)
    return await _stream(request, run, runner)


def _confirm_needed(action: FleetAction, targets: list[str], over: int) -> int | None:
    """The count to confirm, or None when no confirmation is needed."""
    return len(targets) if action.touches and len(targets) > over else None


async def _stream(request: web.Request, run: Any, runner: FleetRunner) -> web.StreamResponse:
    """NDJSON progress; the run goes on to the end even if the client goes away."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    runner.on_progress = lambda o, done, total: queue.put_nowait(
        {"progress": o.to_json(), "done": done, "total": total})
    task = asyncio.ensure_future(run)
    task.add_done_callback(lambda _t: queue.put_nowait({}))
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    writable = True
    while True:
        item = await queue.get()
        if not item:
            break
        if writable:
            try:
                await response.write(json.dumps(item).encode() + b"\n")
            except (ConnectionError, RuntimeError):
                writable = False  # the client left; the run still finishes and is recorded
    result = await task
    if writable:
        try:
            await response.write(json.dumps({"result": result}).encode() + b"\n")
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass
    return response
