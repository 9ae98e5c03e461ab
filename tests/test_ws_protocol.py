"""The console WebSocket's messages: what the server writes, its terminal client reads back."""

from __future__ import annotations

import json

import pytest

from solgate.web import control
from solgate.web.control import CloseCode

SERVER_MESSAGES = [
    control.Hello("web01", "alice", "active", "", True, "bob", "operator", "~"),
    control.Hello("web01", "victor", "backoff", "", False, None, "viewer", None),
    control.SnapshotFollows(),
    control.Lagged(12345),
    control.WriteLock("bob"),
    control.WriteLock(None),
    control.State("backoff", "BMC 10.0.0.5:623 unreachable; retrying in 8 s"),
    control.Access(False, "alice is now a viewer on web01"),
    control.Error("read-only: your role cannot send BREAK"),
    control.Pong(),
    control.Closed("too slow"),
    control.Closed("idle for 30m without input", idle=True),
    control.Closed("logged out", revoked=True),
]


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=lambda m: type(m).__name__)
def test_every_server_message_reads_back_as_sent(message: control.ServerMessage) -> None:
    assert control.parse_server(control.encode(message)) == message


@pytest.mark.parametrize("message", [control.Resize(132, 43), control.TakeWrite(),
                                     control.Break(), control.SysRq("t"), control.Ping()],
                         ids=lambda m: type(m).__name__)
def test_every_client_message_passes_the_servers_schema(message: control.ControlMessage) -> None:
    assert control.parse_control(control.encode(message)) == message


def test_closed_names_only_the_flag_that_is_set_and_brings_its_close_code() -> None:
    assert json.loads(control.encode(control.Closed("too slow"))) == {
        "type": "closed", "reason": "too slow"}
    assert json.loads(control.encode(control.Closed("gone", revoked=True)))["revoked"] is True
    assert control.Closed("too slow").code == CloseCode.HUB_CLOSED == 4001
    assert control.Closed("idle", idle=True).code == CloseCode.IDLE == 4002
    assert control.Closed("gone", revoked=True).code == CloseCode.REVOKED == 4003


@pytest.mark.parametrize("text", ['{"type": "from-the-future"}', "[1, 2]", "not json", "{}"])
def test_a_client_passes_over_what_it_does_not_know(text: str) -> None:
    assert control.parse_server(text) is None
