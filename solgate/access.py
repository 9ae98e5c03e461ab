"""Live attachments keep only the rights their user still has.

Theory of operation
-------------------
A front end checks a user's rights when it attaches to a console (web/ws.py for the
browser and `solgate console`, ssh.py for the gateway). Those rights can go away while
the attachment lives: the browser logs out, or a reload demotes the user, takes a
console out of its access list, deletes its API token or ssh key, or deletes the user.
So every attachment carries its `Grant` (how the user proved who they are) and, after
any such change, `enforce` asks a judge about every live attachment and applies the
verdict at once:

* lost the right to see the console (or the credential is gone): the attachment is
  closed with the reason (`Hub.revoke`), and the front end tells the user why;
* lost only the right to type: the attachment becomes read-only (`Hub.downgrade`),
  its write lock is released and the front end is told why;
* lost the right to see state details (BMC address and user, for operators up): its
  state messages carry no detail from now on, and the state is sent again without it
  (`Attachment.hide_details`).

Both land in the console log and events.jsonl. A right gained is not given to a live
attachment: attaching again picks it up. `user_rights` is the one rule that turns a
user (or its absence) into rights on a console, by the role and access lists of
`solgate.users`; each front end adds its own credential check (web sessions and tokens
in `solgate.web.revoke`, ssh keys in `solgate.ssh`). Front ends read
`attachment.can_write` at every action.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from solgate.console.attachment import Attachment
    from solgate.console.hub import Hub
    from solgate.users import User

__all__ = ["Judge", "Rights", "Watched", "apply", "enforce", "user_rights"]

log = logging.getLogger("solgate.access")


@dataclass(frozen=True, slots=True)
class Rights:
    """What an attachment's user may still do on a console, and why not, in words."""

    view: bool
    write: bool
    reason: str = ""
    details: bool = False  # state details (BMC address, port, IPMI user) may be shown


class Watched(Protocol):
    """A console whose live attachments are re-checked: its name, tags and hub."""

    @property
    def name(self) -> str: ...

    @property
    def tags(self) -> Sequence[str]: ...

    @property
    def hub(self) -> Hub: ...


# Rights for one attachment, or None when the attachment is not this judge's to decide
# (it came in through another front end).
Judge = Callable[["Attachment", Watched], "Rights | None"]


def user_rights(user: User | None, name: str, console: str, tags: Sequence[str]) -> Rights:
    """The rights `user` (configured as `name`; None if no longer configured) has on the
    console named `console` that carries `tags`."""
    if user is None:
        return Rights(False, False, f"user {name} was removed from the configuration")
    if not user.can_view(console, tags):
        return Rights(False, False, f"{name} may no longer see {console}")
    details = user.sees_bmc_details
    if not user.can_write(console, tags):
        return Rights(True, False, f"{name} is now a {user.role.name.lower()} on {console}",
                      details)
    return Rights(True, True, details=details)


def apply(attachment: Attachment, rights: Rights | None) -> str | None:
    """Apply a verdict to one attachment; "revoked", "downgraded", "details hidden" or
    None (unchanged)."""
    if rights is None or attachment.closed:
        return None
    hub = attachment.hub
    if not rights.view:
        if hub.revoke(attachment, rights.reason):
            log.warning("%s: %s lost access (%s); detached", hub.name, attachment.user,
                        rights.reason)
            return "revoked"
        return None
    hidden = not rights.details and attachment.hide_details()
    if not rights.write and attachment.can_write:
        if hub.downgrade(attachment, rights.reason):
            log.warning("%s: %s is now read-only (%s)", hub.name, attachment.user,
                        rights.reason)
            return "downgraded"
    return "details hidden" if hidden else None


def enforce(consoles: Iterable[Watched], judge: Judge) -> int:
    """Re-check every live attachment of `consoles`; returns how many lost a right."""
    changed = 0
    for console in consoles:
        for attachment in console.hub.attachments:  # a copy: revoking removes from it
            try:
                rights = judge(attachment, console)
            except Exception:  # a broken check must not leave the rest unchecked
                log.exception("%s: checking %s's access failed; detaching it",
                              console.name, attachment.user)
                rights = Rights(False, False, "its access could not be checked")
            if apply(attachment, rights) is not None:
                changed += 1
    return changed
