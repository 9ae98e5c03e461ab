"""The headers members send each other (the routes under `/api/cluster/peer/`), and the
reason in a member's refusal.

Every request from one member to another carries the shared member secret; the routes
that act for a user (the ssh gateway's console WebSocket, the search) also name that
user, and the ssh gateway names where the user came from. A member believes the user and
address headers only after the secret checked out (`solgate.cluster.fleet`).
"""

from __future__ import annotations

import json

SECRET_HEADER = "X-Solgate-Member-Secret"  # noqa: S105 - a header name
AS_USER_HEADER = "X-Solgate-As-User"  # the user the asking member authenticated
PEER_ADDRESS_HEADER = "X-Solgate-Peer-Address"  # the ssh client's address, for the log
VIA_MEMBER_HEADER = "X-Solgate-Via-Member"  # the member whose gateway the user came to


def error_text(body: bytes) -> str:
    """Why a member refused a request: the `error` of its JSON answer, else the start of
    the answer."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:200]
