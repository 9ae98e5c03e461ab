"""The compiled per-packet path (solgate/ipmi/_speedups.c) against its reference, crypto.py.

The same bytes go into both `PacketProtector` implementations: sealed datagrams must be
byte-identical (same IV), and any datagram, valid, mangled or random, must open to the
same (payload type, sequence number, payload) or fail with the same `ProtocolError`
message. The known-answer tests (test_crypto_kat.py) run on both paths through `PATHS`.
Without a compiler the extension is not built and the native half skips, unless
SOLGATE_REQUIRE_NATIVE=1 (CI) makes that a failure.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solgate.errors import ProtocolError
from solgate.ipmi import crypto
from solgate.ipmi.crypto import CIPHER_SUITES, PacketProtector
from tests.sim_helpers import BUILT, REQUIRE_NATIVE

SUITES = [0, 1, 2, 3, 7, 8, 16, 17]


def test_native_is_built_when_required():
    assert BUILT or not REQUIRE_NATIVE, "build it: python setup.py build_ext --inplace"


def pair(suite: int, k1: bytes, k2: bytes, iv: bytes) -> tuple[PacketProtector, PacketProtector]:
    if not BUILT:
        pytest.skip("solgate.ipmi._speedups is not built")
    ivs = lambda n: iv  # noqa: E731
    return (PacketProtector(CIPHER_SUITES[suite], k1, k2, random=ivs, native=False),
            PacketProtector(CIPHER_SUITES[suite], k1, k2, random=ivs, native=True))


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except ProtocolError as exc:
        return ("error", str(exc))


keys = st.binary(min_size=1, max_size=80)
ivs = st.binary(min_size=16, max_size=16)
fast = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@fast
@given(suite=st.sampled_from(SUITES), k1=keys, k2=st.binary(min_size=20, max_size=32),
       iv=ivs, ptype=st.integers(0, 0x3F), sid=st.integers(0, 2**32 - 1),
       seq=st.integers(0, 2**32 - 1), payload=st.binary(max_size=600))
def test_seal_gives_the_same_bytes_and_both_open_them(suite, k1, k2, iv, ptype, sid, seq,
                                                      payload):
    py, c = pair(suite, k1, k2, iv)
    wire = py.seal(ptype, sid, seq, payload)
    assert c.seal(ptype, sid, seq, payload) == wire
    assert outcome(c.unseal, wire) == outcome(py.unseal, wire)


@fast
@given(suite=st.sampled_from(SUITES), k1=keys, iv=ivs, payload=st.binary(max_size=300),
       edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
       cut=st.integers(0, 40), extra=st.binary(max_size=8))
def test_mangled_datagrams_give_the_same_result_or_error(suite, k1, iv, payload, edits, cut,
                                                         extra):
    py, c = pair(suite, k1, bytes(range(20)), iv)
    wire = bytearray(py.seal(1, 7, 9, payload))
    for at, value in edits:
        if at < len(wire):
            wire[at] = value
    data = bytes(wire[: max(0, len(wire) - cut)]) + extra
    assert outcome(c.unseal, data) == outcome(py.unseal, data)


@fast
@given(suite=st.sampled_from(SUITES), data=st.binary(max_size=200))
def test_random_bytes_give_the_same_result_or_error(suite, data):
    py, c = pair(suite, b"k1", bytes(20), bytes(16))
    assert outcome(c.unseal, data) == outcome(py.unseal, data)
    header = b"\x06\x00\xff\x07\x06" + data  # past the RMCP checks, into the trailer's
    assert outcome(c.unseal, header) == outcome(py.unseal, header)


def test_a_payload_too_long_for_the_length_field_is_refused_by_both():
    py, c = pair(17, b"k1", bytes(20), bytes(16))
    with pytest.raises(Exception):  # noqa: B017 - struct.error vs ValueError: both refuse
        py.seal(1, 1, 1, bytes(70000))
    with pytest.raises(ValueError):
        c.seal(1, 1, 1, bytes(70000))


def test_the_path_in_use_is_named():
    assert crypto.packet_path().startswith("native" if crypto.NATIVE else "pure Python")


@fast
@given(suite=st.sampled_from([3, 8, 17]), body=st.binary(max_size=120),
       ptype=st.sampled_from([0xC1, 0x41, 0xC0]))
def test_authentic_packets_with_any_ciphertext_decrypt_or_fail_alike(suite, body, ptype):
    """A valid HMAC over arbitrary ciphertext reaches the decrypt and pad checks."""
    import struct

    from solgate.ipmi.crypto import integrity_pad_length

    py, c = pair(suite, b"k1", bytes(20), bytes(16))
    covered = (struct.pack("<BBIIH", 6, ptype, 7, 9, len(body)) + body
               + b"\xff" * integrity_pad_length(len(body))
               + bytes((integrity_pad_length(len(body)), 7)))
    wire = b"\x06\x00\xff\x07" + covered + py._auth_code(covered)
    assert outcome(c.unseal, wire) == outcome(py.unseal, wire)
