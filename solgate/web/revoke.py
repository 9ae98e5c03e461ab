"""Web attachments (browser tabs, `solgate console`) lose what their user lost, at once.

The console WebSocket records how its user came (`grant_for`): the session id, the API
token's hash, or the implicit identity of `auth = "none"` / a trusted proxy. Whenever
the `Authenticator` changes (a session ends, a reload replaces users and tokens), `watch`
re-checks every web attachment through `solgate.access.enforce`: an ended session or a
deleted token ends the attachment, and the user's current role and access list decide
the rest (`solgate.access.user_rights`).
"""

from __future__ import annotations

from aiohttp import web

from solgate.access import Judge, Rights, Watched, apply, enforce, user_rights
from solgate.console.attachment import Attachment, Grant
from solgate.users import hash_api_token
from solgate.web.auth import Authenticator
from solgate.web.keys import auth_key, manager_key
from solgate.web.middleware import Identity
from solgate.web.model import ConsoleView

WEB_GRANTS = frozenset({"session", "token", "local", "proxy"})


def grant_for(request: web.Request, ident: Identity) -> Grant:
    """How `ident` authenticated this request, for later re-checks."""
    if ident.session is not None:
        return Grant("session", ident.session.id)
    if ident.via == "token":
        header = request.headers.get("Authorization", "")
        return Grant("token", hash_api_token(header.partition(" ")[2].strip()))
    return Grant(ident.via)


def judge(auth: Authenticator, ended_sessions: frozenset[str] = frozenset()) -> Judge:
    """The web's verdict on an attachment; None for attachments of other front ends."""

    def verdict(attachment: Attachment, console: Watched) -> Rights | None:
        grant = attachment.grant
        if grant is None or grant.how not in WEB_GRANTS:
            return None
        if grant.how == "session" and grant.credential in ended_sessions:
            return Rights(False, False, "logged out")
        if grant.how == "token":
            owner = auth.user_for_token_hash(grant.credential)
            if owner is None or owner.name != attachment.user:
                return Rights(False, False, "its API token was deleted")
        # user_named: with auth = "none" everyone is the implicit admin "local".
        return user_rights(auth.user_named(attachment.user), attachment.user, console.name,
                           console.tags)

    return verdict


def watch(app: web.Application) -> None:
    """Re-check the app's live attachments whenever its users or sessions change."""
    auth = app[auth_key]

    def changed(ended_sessions: frozenset[str]) -> None:
        enforce(app[manager_key].consoles(), judge(auth, ended_sessions))

    auth.on_change = changed


def check_new(request: web.Request, attachment: Attachment, console: ConsoleView) -> None:
    """Re-check an attachment just made: its session may have ended while it was set up."""
    auth = request.app[auth_key]
    grant = attachment.grant
    ended: frozenset[str] = frozenset()
    if (grant is not None and grant.how == "session"
            and not auth.sessions.alive(grant.credential)):
        ended = frozenset((grant.credential,))
    apply(attachment, judge(auth, ended)(attachment, console))
