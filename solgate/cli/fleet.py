"""`solgate do ACTION`: one action on many consoles, through a running server.

`solgate do power cycle --tag rack12`, `solgate do sysrq s --state active --console
'web*'`, `solgate do broadcast --line 'uptime' --tag rack12`; `solgate power --tag
rack12 cycle` is the same as `solgate do power cycle --tag rack12`. The selection is
the console list's (`solgate.selection`); the server checks every console against the
user's rights, paces the actions and records them (`POST /api/fleet`). The client
always asks for a dry run first: `--dry-run` stops there, and above the server's
`fleet_confirm_over` the action needs `--yes` (the count from the dry run is sent as the
confirmation, so a selection that grew in between is refused, not acted on). The API
token comes from $SOLGATE_TOKEN or the token file, as for `solgate console`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

from solgate.cli.config import add_config_argument, listen_from_config
from solgate.console.fleet import ACTIONS
from solgate.console.power import POWER_ACTIONS
from solgate.errors import ConfigError, SolgateError
from solgate.terminal import (
    DEFAULT_TOKEN_FILE,
    TOKEN_ENV,
    URL_ENV,
    read_token,
    resolve_server_url,
)

EXIT_NOT_ALL_DONE = 1
HTTP_TIMEOUT = 3600.0  # a paced run over thousands of consoles takes a while


def register(subparsers: Any) -> None:
    """Add `do` to the `solgate` command."""
    do = subparsers.add_parser(
        "do", allow_abbrev=False,
        help="one action on many consoles: power, break, sysrq, deactivate, broadcast",
        description="Run one action on every selected console through the server: "
                    "power status|on|off|cycle|reset, break, sysrq KEY, deactivate "
                    "(forced, then reconnect), broadcast TEXT (--line adds Enter). "
                    "Consoles you may not act on are reported, never touched.")
    do.add_argument("action", choices=ACTIONS, help="what to do")
    do.add_argument("arg", nargs="?", metavar="ARG",
                    help="power: status/on/off/cycle/reset; sysrq: the SysRq key; "
                         "broadcast: the text")
    do.add_argument("--line", action="store_true", help="broadcast: press Enter after the text")
    add_selection_arguments(do)
    do.set_defaults(handler=do_command)


def add_selection_arguments(parser: argparse.ArgumentParser, *, with_config: bool = True
                            ) -> None:
    """--console/--tag/--state/--filter plus the server, token and safety flags."""
    group = parser.add_argument_group("selection (all given parts must match)")
    group.add_argument("--console", action="append", dest="sel_consoles", default=[],
                       metavar="GLOB", help="console name or glob, repeatable (any)")
    group.add_argument("--tag", action="append", dest="sel_tags", default=[], metavar="TAG",
                       help="tag, repeatable (any)")
    group.add_argument("--state", action="append", dest="sel_states", default=[],
                       metavar="STATE", help="state such as active or backoff, repeatable (any)")
    group.add_argument("--filter", dest="sel_filter", default="", metavar="WORDS",
                       help="the console list's filter words, e.g. 'tag:rack12 panic'")
    safety = parser.add_argument_group("safety and server")
    safety.add_argument("--dry-run", action="store_true",
                        help="list what would be touched; touch nothing")
    safety.add_argument("--yes", action="store_true",
                        help="confirm an action on more consoles than the server's "
                             "fleet_confirm_over")
    safety.add_argument("--server", metavar="URL",
                        help=f"server address (default: ${URL_ENV}, else the "
                             "configuration's [server] listen)")
    safety.add_argument("--token-file", metavar="FILE",
                        help=f"file holding the API token (default {DEFAULT_TOKEN_FILE}; "
                             f"${TOKEN_ENV} wins)")
    safety.add_argument("--token", action=_RefuseToken, nargs="?", help=argparse.SUPPRESS)
    if with_config:
        add_config_argument(parser)


class _RefuseToken(argparse.Action):
    """A token in argv shows in `ps` and shell history: refuse it without echoing it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser.error(f"--token is not accepted (it would show in ps and shell history): set "
                     f"${TOKEN_ENV} or use --token-file FILE")


def has_selection(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "sel_consoles", None) or getattr(args, "sel_tags", None)
                or getattr(args, "sel_states", None) or getattr(args, "sel_filter", ""))


def request_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /api/fleet body (without dry_run/confirm) for these arguments."""
    if not has_selection(args):
        raise ConfigError("select consoles with --console GLOB, --tag TAG, --state STATE or "
                          "--filter WORDS (every console: --console '*')")
    selection: dict[str, Any] = {}
    if args.sel_filter:
        selection["filter"] = args.sel_filter
    for key, value in (("consoles", args.sel_consoles), ("tags", args.sel_tags),
                       ("states", args.sel_states)):
        if value:
            selection[key] = list(value)
    action, arg = args.action, args.arg
    fleet_args: dict[str, Any] = {}
    if action == "power":
        if arg not in POWER_ACTIONS:
            raise ConfigError(f"solgate do power needs one of {', '.join(POWER_ACTIONS)}")
        fleet_args["power"] = arg
    elif action == "sysrq":
        if not arg:
            raise ConfigError("solgate do sysrq needs the SysRq key, e.g. s (sync)")
        fleet_args["key"] = arg
    elif action == "broadcast":
        if not arg:
            raise ConfigError("solgate do broadcast needs the text to type")
        fleet_args.update(text=arg, line=bool(getattr(args, "line", False)))
    elif arg:
        raise ConfigError(f"solgate do {action} takes no argument (got {arg!r})")
    return {"selection": selection, "action": action, "args": fleet_args}


def do_command(args: argparse.Namespace) -> Any:
    return run_fleet(args, request_from_args(args))


async def run_fleet(args: argparse.Namespace, body: dict[str, Any],
                    out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Dry run, confirm, run with progress, print the table; exit 0 only if all were done."""
    import aiohttp

    out = out or sys.stdout
    err = err or sys.stderr
    explicit = args.server or os.environ.get(URL_ENV)
    server = resolve_server_url(explicit, os.environ,
                                None if explicit else listen_from_config(args))
    token = read_token(args.token_file, os.environ,
                       lambda text: print(f"solgate: {text}", file=err))
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = f"{server.rstrip('/')}/api/fleet"
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
            plan = await _post(http, url, {**body, "dry_run": True})
            if args.dry_run:
                _print_plan(plan, out)
                return 0
            need = plan.get("confirm_needed")
            if need is not None and not args.yes:
                _print_plan(plan, out)
                print(f"solgate: {plan['action']} would touch {need} consoles; run again "
                      "with --yes to do it", file=err)
                return EXIT_NOT_ALL_DONE
            if not plan["would_touch"] and not plan["refused"] and not plan["unseen"]:
                print("solgate: the selection matches no console", file=err)
                return EXIT_NOT_ALL_DONE
            result = await _run(http, url, {**body, "confirm_count": need, "stream": True},
                                err)
    except aiohttp.ClientError as exc:
        raise SolgateError(f"cannot reach the solgate server at {server} ({exc}); is "
                           f"solgate serve running? (set --server or ${URL_ENV})") from None
    except OSError as exc:
        raise SolgateError(f"cannot reach the solgate server at {server} "
                           f"({exc.strerror or exc}); is solgate serve running?") from None
    print_results(result, out)
    summary = result["summary"]
    return 0 if summary["done"] == summary["total"] else EXIT_NOT_ALL_DONE


async def _post(http: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(url, json=body) as response:
        return _answer(response.status, await response.text())


def _answer(status: int, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        data = {"error": text.strip()[:200]}
    if status == 401:
        raise SolgateError(f"the server refused the token (HTTP 401); set ${TOKEN_ENV} or put "
                           f"a valid token in {DEFAULT_TOKEN_FILE}")
    if status >= 400 or not isinstance(data, dict):
        raise SolgateError(f"the server refused the fleet action (HTTP {status}): "
                           f"{data.get('error', data) if isinstance(data, dict) else data}")
    return data


async def _run(http: Any, url: str, body: dict[str, Any], err: TextIO) -> dict[str, Any]:
    """POST with stream=true: show a progress bar from the NDJSON lines; the last is it."""
    bar = err.isatty()
    async with http.post(url, json=body) as response:
        if response.status != 200:
            return _answer(response.status, await response.text())
        result: dict[str, Any] | None = None
        async for raw in response.content:
            line = raw.strip()
            if not line:
                continue
            item = json.loads(line)
            if "result" in item:
                result = item["result"]
            elif bar and "progress" in item:
                done, total = item["done"], max(1, item["total"])
                filled = 30 * done // total
                err.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {done}/{total}")
                err.flush()
        if bar:
            err.write("\n")
    if result is None:
        raise SolgateError("the server ended the fleet run without a result; see "
                           "events.jsonl on the server for what was done")
    return result


def _print_plan(plan: dict[str, Any], out: TextIO) -> None:
    rows = [(name, "would touch", "") for name in plan["would_touch"]]
    rows += [(r["console"], "refused", r["detail"]) for r in plan["refused"]]
    _table(rows, out)
    extra = f", {plan['unseen']} outside your access list" if plan.get("unseen") else ""
    print(f"dry run: {plan['action']} would touch {len(plan['would_touch'])} consoles, "
          f"{len(plan['refused'])} refused{extra}; nothing was touched", file=out)


def print_results(result: dict[str, Any], out: TextIO) -> None:
    _table([(r["console"], r["status"], r["detail"]) for r in result["results"]], out)
    s = result["summary"]
    extra = f" ({s['unseen']} outside your access list)" if s.get("unseen") else ""
    print(f"{result['action']}: {s['total']} consoles: {s['done']} done, {s['refused']} "
          f"refused{extra}, {s['error']} failed", file=out)


def _table(rows: list[tuple[str, str, str]], out: TextIO) -> None:
    if not rows:
        return
    width = max(len("CONSOLE"), *(len(r[0]) for r in rows))
    status_width = max(len("RESULT"), *(len(r[1]) for r in rows))
    print(f"{'CONSOLE':<{width}}  {'RESULT':<{status_width}}  DETAIL", file=out)
    for name, status, detail in rows:
        print(f"{name:<{width}}  {status:<{status_width}}  {detail}".rstrip(), file=out)
