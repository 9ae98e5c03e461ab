"""Merging one console's logs from several members by ownership epoch."""

from __future__ import annotations

from solgate.cluster.merge import merge_logs


def note(member: str, epoch: int) -> bytes:
    return f"[-- solgate 2026-12-06T05:00:00Z: cluster: {member} owns the console " \
           f"(epoch {epoch}) --]\r\n".encode()


def test_pieces_come_out_in_epoch_order_whatever_member_holds_them() -> None:
    a = b"before the cluster\r\n" + note("a", 10) + b"one\r\n" + note("a", 30) + b"three\r\n"
    b = note("b", 20) + b"two, cut mid-li"
    merged = merge_logs({"b": b, "a": a})
    assert merged == (b"before the cluster\r\n" + note("a", 10) + b"one\r\n" + note("b", 20)
                      + b"two, cut mid-li\r\n" + note("a", 30) + b"three\r\n")


def test_a_member_without_notes_keeps_its_text_first() -> None:
    assert merge_logs({"a": b"x\r\n", "b": note("b", 5) + b"y\r\n"}) == \
        b"x\r\n" + note("b", 5) + b"y\r\n"
