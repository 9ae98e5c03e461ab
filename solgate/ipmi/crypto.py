"""Cipher suites, RAKP key exchange and per-packet integrity and confidentiality.

Theory of operation
-------------------
RMCP+ (ipmi-sol-protocol.md sections 2.7, 3) proves both sides know the user's password
(`Kuid`) with HMACs over the random numbers and session IDs of the handshake, then derives
a Session Integrity Key (SIK) keyed by K_g (or Kuid), and from it K1 (integrity HMAC key)
and K2 (AES key = K2[:16]). Every later packet is sealed as: encrypt the payload (random
IV, pad ``01 02 .. N`` then ``N``), then append an integrity trailer whose AuthCode is an
HMAC with K1 over everything from the auth-type byte to the next-header byte.

Both roles use the same functions: the client computes RAKP3 and verifies RAKP2/RAKP4,
the simulated BMC computes RAKP2/RAKP4 and verifies RAKP3.

The per-packet path (`PacketProtector.seal` / `open`) keeps a keyed HMAC object and copies
it, so no key schedule is redone for each datagram. It raises `ProtocolError` for anything
it cannot authenticate or decrypt; callers drop and count those.

`unseal` and `seal` have an optional compiled twin, `solgate.ipmi._speedups` (C over
OpenSSL's libcrypto, built by setup.py when a compiler and libssl-dev are there). This
module stays the reference: both run the same known-answer tests, and a differential test
requires the same bytes or the same error from both. `NATIVE` says which one runs;
`SOLGATE_NATIVE=0` in the environment turns the compiled one off.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from solgate.errors import ProtocolError
from solgate.ipmi.codec import (
    NEXT_HEADER,
    PAYLOAD_AUTHENTICATED,
    PAYLOAD_ENCRYPTED,
    PAYLOAD_TYPE_MASK,
    RMCP_IPMI_HEADER,
    RMCPPLUS_HEADER_LEN,
    RmcpPlusHeader,
    decode_rmcpplus_header,
    unpack_rmcpplus_header,
)


class AuthAlgorithm(IntEnum):
    NONE = 0
    HMAC_SHA1 = 1
    HMAC_MD5 = 2
    HMAC_SHA256 = 3


class IntegrityAlgorithm(IntEnum):
    NONE = 0
    HMAC_SHA1_96 = 1
    HMAC_MD5_128 = 2
    MD5_128 = 3
    HMAC_SHA256_128 = 4


class ConfidentialityAlgorithm(IntEnum):
    NONE = 0
    AES_CBC_128 = 1
    XRC4_128 = 2
    XRC4_40 = 3


_AUTH_HASH = {
    AuthAlgorithm.HMAC_SHA1: "sha1",
    AuthAlgorithm.HMAC_MD5: "md5",
    AuthAlgorithm.HMAC_SHA256: "sha256",
}
# RAKP4 integrity check value length per authentication algorithm.
_ICV_LENGTH = {
    AuthAlgorithm.HMAC_SHA1: 12,
    AuthAlgorithm.HMAC_MD5: 16,
    AuthAlgorithm.HMAC_SHA256: 16,
}
# Integrity algorithm -> (hash, AuthCode length).
_INTEGRITY = {
    IntegrityAlgorithm.HMAC_SHA1_96: ("sha1", 12),
    IntegrityAlgorithm.HMAC_MD5_128: ("md5", 16),
    IntegrityAlgorithm.HMAC_SHA256_128: ("sha256", 16),
}


@dataclass(frozen=True, slots=True)
class CipherSuite:
    id: int
    auth: AuthAlgorithm
    integrity: IntegrityAlgorithm
    confidentiality: ConfidentialityAlgorithm

    @property
    def secure(self) -> bool:
        """Both ends prove the password and every packet carries an HMAC."""
        return self.auth != AuthAlgorithm.NONE and self.integrity != IntegrityAlgorithm.NONE


_A, _I, _C = AuthAlgorithm, IntegrityAlgorithm, ConfidentialityAlgorithm
# Only suites this module can actually run: no xRC4, no MD5-128 (non-HMAC) integrity.
CIPHER_SUITES: dict[int, CipherSuite] = {
    s.id: s
    for s in (
        CipherSuite(0, _A.NONE, _I.NONE, _C.NONE),
        CipherSuite(1, _A.HMAC_SHA1, _I.NONE, _C.NONE),
        CipherSuite(2, _A.HMAC_SHA1, _I.HMAC_SHA1_96, _C.NONE),
        CipherSuite(3, _A.HMAC_SHA1, _I.HMAC_SHA1_96, _C.AES_CBC_128),
        CipherSuite(6, _A.HMAC_MD5, _I.NONE, _C.NONE),
        CipherSuite(7, _A.HMAC_MD5, _I.HMAC_MD5_128, _C.NONE),
        CipherSuite(8, _A.HMAC_MD5, _I.HMAC_MD5_128, _C.AES_CBC_128),
        CipherSuite(15, _A.HMAC_SHA256, _I.NONE, _C.NONE),
        CipherSuite(16, _A.HMAC_SHA256, _I.HMAC_SHA256_128, _C.NONE),
        CipherSuite(17, _A.HMAC_SHA256, _I.HMAC_SHA256_128, _C.AES_CBC_128),
    )
}

def _load_native() -> Any:
    """The compiled `_speedups` module, or None when it is not built."""
    try:
        from solgate.ipmi import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _speedups


_native = _load_native()
# The default for every PacketProtector: compiled when built, unless SOLGATE_NATIVE=0.
NATIVE: bool = _native is not None and os.environ.get("SOLGATE_NATIVE", "1").strip().lower() \
    not in ("0", "no", "false", "off")


def sol_fast_path_available() -> bool:
    """Whether the compiled SOL fast path can run (built, and not turned off)."""
    return NATIVE and hasattr(_native, "SolFastPath")


def packet_path() -> str:
    """Which per-packet implementation runs, for the ready line and /metrics."""
    if _native is None or not NATIVE:
        return "pure Python"
    return f"native ({_native.OPENSSL_VERSION})"


KEY_CONSTANT_1 = b"\x01" * 20
KEY_CONSTANT_2 = b"\x02" * 20
_U32 = struct.Struct("<I")


def _hmac(alg: AuthAlgorithm, key: bytes, message: bytes) -> bytes:
    if alg == AuthAlgorithm.NONE:
        return b""
    return hmac.new(key, message, _AUTH_HASH[alg]).digest()


def password_key(password: bytes) -> bytes:
    """Kuid: the password as HMAC key. IPMI 2.0 passwords are at most 20 bytes; HMAC
    zero-pads short keys, so padding to 20 changes nothing and is not done."""
    if len(password) > 20:
        raise ValueError("IPMI 2.0 passwords are at most 20 bytes")
    return password


def _user_fields(role: int, username: bytes) -> bytes:
    return bytes((role, len(username))) + username


def rakp2_auth_code(alg: AuthAlgorithm, kuid: bytes, sidm: int, sidc: int, rm: bytes,
                    rc: bytes, guid: bytes, role: int, username: bytes) -> bytes:
    """The BMC's proof that it knows the password; the client must verify it."""
    msg = _U32.pack(sidm) + _U32.pack(sidc) + rm + rc + guid + _user_fields(role, username)
    return _hmac(alg, kuid, msg)


def rakp3_auth_code(alg: AuthAlgorithm, kuid: bytes, sidm: int, rc: bytes, role: int,
                    username: bytes) -> bytes:
    """The client's proof that it knows the password."""
    return _hmac(alg, kuid, rc + _U32.pack(sidm) + _user_fields(role, username))


def session_integrity_key(alg: AuthAlgorithm, kuid: bytes, kg: bytes | None, rm: bytes,
                          rc: bytes, role: int, username: bytes) -> bytes:
    """SIK: keyed by K_g when a non-zero one is configured (two-key login), else Kuid."""
    key = kg if kg and any(kg) else kuid
    return _hmac(alg, key, rm + rc + _user_fields(role, username))


def derive_k1_k2(alg: AuthAlgorithm, sik: bytes) -> tuple[bytes, bytes]:
    """K1 and K2 use the 20-byte constants for every algorithm, SHA-256 included."""
    if alg == AuthAlgorithm.NONE:
        return KEY_CONSTANT_1, KEY_CONSTANT_2
    return _hmac(alg, sik, KEY_CONSTANT_1), _hmac(alg, sik, KEY_CONSTANT_2)


def rakp4_icv(alg: AuthAlgorithm, sik: bytes, rm: bytes, sidc: int, guid: bytes) -> bytes:
    """The BMC's proof that it derived the same SIK (truncated HMAC)."""
    if alg == AuthAlgorithm.NONE:
        return b""
    return _hmac(alg, sik, rm + _U32.pack(sidc) + guid)[: _ICV_LENGTH[alg]]


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# --------------------------------------------------------------------------- per packet


@dataclass(frozen=True, slots=True)
class OpenedPacket:
    header: RmcpPlusHeader
    payload: bytes  # decrypted, confidentiality pad removed


def integrity_pad_length(payload_length: int) -> int:
    """FF bytes so that auth type .. next header is a multiple of 4 (digest section 1.6)."""
    return (4 - ((12 + payload_length + 2) % 4)) % 4


_SESSION_HEADER = struct.Struct("<BBIIH")  # auth type .. payload length (after RMCP)
_CONF_PADS = tuple(bytes(range(1, n + 1)) for n in range(17))  # 01 02 .. N
_CONF_TAILS = tuple(pad + bytes((n,)) for n, pad in enumerate(_CONF_PADS[:16]))  # + N
_TRAILERS = tuple(b"\xff" * pad + bytes((pad, NEXT_HEADER)) for pad in range(4))
IV_POOL_BYTES = 4096  # IVs drawn from os.urandom 256 at a time: one syscall, not one each


def _hmac_pads(name: str, key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """Hashes fed with key ^ ipad and key ^ opad: HMAC's keyed state, to copy per message."""
    inner = hashlib.new(name)
    if len(key) > inner.block_size:
        key = hashlib.new(name, key).digest()
    key = key.ljust(inner.block_size, b"\0")
    inner.update(bytes(b ^ 0x36 for b in key))
    return inner, hashlib.new(name, bytes(b ^ 0x5C for b in key))


class PacketProtector:
    """Seals and opens RMCP+ datagrams of one established session, in either direction.

    `seal` builds a whole datagram; `open` checks integrity, decrypts and strips padding,
    raising `ProtocolError` for anything forged, truncated or badly padded.
    """

    # Per packet this does two C calls for AES (a reusable ECB context per direction; the
    # CBC chaining is one big-integer XOR) instead of building Cipher objects, and the
    # HMAC from copies of two hashes already keyed with K1 ^ ipad and K1 ^ opad (RFC 2104),
    # half the cost of `hmac.digest`, which sets up the key on every call.
    # With the default `os.urandom`, IVs come from a pool refilled 4 KiB at a time (one
    # getrandom call per 256 packets); any other `random` is called once per IV.
    # `native=None` takes the compiled twin when it is there (`NATIVE`); True requires it,
    # False runs this class's own code (the reference).
    __slots__ = ("suite", "_mac_len", "_aes_key", "_random", "_digest", "_inner", "_outer",
                 "_ecb_enc", "_ecb_dec", "_iv_pool", "_iv_at", "_native")

    def __init__(self, suite: CipherSuite, k1: bytes, k2: bytes,
                 random: Callable[[int], bytes] = os.urandom,
                 native: bool | None = None) -> None:
        self.suite = suite
        if native is None:
            native = NATIVE
        if native and _native is None:
            raise RuntimeError("the compiled per-packet path (solgate.ipmi._speedups) "
                               "is not built: pip install -e . with gcc and libssl-dev")
        # With the compiled twin, this class's own keyed contexts are not built (about
        # 3 KB a session): `seal`/`unseal` go to the twin, and `encrypt`, `decrypt` and
        # `_auth_code` are the reference path's internals.
        self._inner: Any = None
        self._outer: Any = None
        self._ecb_enc: Any = None
        self._ecb_dec: Any = None
        if suite.integrity in _INTEGRITY:
            name, self._mac_len = _INTEGRITY[suite.integrity]
            self._digest: str | None = name  # None: no integrity
            if not native:
                self._inner, self._outer = _hmac_pads(name, k1)
        elif suite.integrity == IntegrityAlgorithm.NONE:
            self._digest, self._mac_len = None, 0
        else:
            raise ValueError(f"integrity algorithm {suite.integrity!r} is not supported")
        if suite.confidentiality == ConfidentialityAlgorithm.AES_CBC_128:
            self._aes_key: bytes | None = k2[:16]
            if not native:
                ecb = Cipher(algorithms.AES(k2[:16]), modes.ECB())  # noqa: S305 - CBC below
                self._ecb_enc = ecb.encryptor()
                self._ecb_dec = ecb.decryptor()
        elif suite.confidentiality == ConfidentialityAlgorithm.NONE:
            self._aes_key = None
        else:
            raise ValueError(f"confidentiality {suite.confidentiality!r} is not supported")
        self._random = random
        self._iv_pool = b""
        self._iv_at = 0
        self._native: Any = None
        if native:
            self._native = _native.Protector(self._digest, self._mac_len, k1, self._aes_key)

    @property
    def encrypts(self) -> bool:
        return self._aes_key is not None

    @property
    def authenticates(self) -> bool:
        return self._digest is not None

    def _auth_code(self, covered: bytes) -> bytes:
        """HMAC-K1(covered), truncated (callers check `authenticates`)."""
        inner: hashlib._Hash = self._inner.copy()
        inner.update(covered)
        outer: hashlib._Hash = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[: self._mac_len]

    def _iv(self) -> bytes:
        if self._random is not os.urandom:
            return self._random(16)
        at = self._iv_at
        if at + 16 > len(self._iv_pool):
            self._iv_pool, at = os.urandom(IV_POOL_BYTES), 0
        self._iv_at = at + 16
        return self._iv_pool[at : at + 16]

    def encrypt(self, plaintext: bytes) -> bytes:
        """IV + AES-CBC(plaintext + 01..N + N); N < 16 always (OpenBMC rejects 16)."""
        assert self._aes_key is not None  # noqa: S101
        padded = plaintext + _CONF_TAILS[(15 - len(plaintext) % 16) % 16]
        iv = self._iv()
        if len(padded) == 16:  # an ACK, a keystroke: one block
            block: bytes = self._ecb_enc.update(
                (int.from_bytes(padded) ^ int.from_bytes(iv)).to_bytes(16))
            return iv + block
        out = [iv]
        prev = int.from_bytes(iv)
        update = self._ecb_enc.update
        for i in range(0, len(padded), 16):  # CBC: C_i = E(P_i ^ C_i-1)
            block = update((int.from_bytes(padded[i : i + 16]) ^ prev).to_bytes(16))
            out.append(block)
            prev = int.from_bytes(block)
        return b"".join(out)

    def decrypt(self, payload: bytes) -> bytes:
        assert self._aes_key is not None  # noqa: S101
        if len(payload) < 32 or len(payload) % 16:
            raise ProtocolError(f"encrypted payload of {len(payload)} bytes")
        # CBC: P_i = D(C_i) ^ C_i-1, all blocks at once (C_0 is the IV).
        decrypted = self._ecb_dec.update(payload[16:])
        plain = (int.from_bytes(decrypted) ^ int.from_bytes(payload[:-16])).to_bytes(
            len(decrypted))
        n = plain[-1]
        if n > 16 or n + 1 > len(plain):
            raise ProtocolError(f"confidentiality pad length {n}")
        if plain[-1 - n : -1] != _CONF_PADS[n]:
            raise ProtocolError("confidentiality pad bytes are wrong")
        return plain[: -1 - n]

    @property
    def native(self) -> bool:
        """Whether `seal` and `unseal` run the compiled twin."""
        return self._native is not None

    def sol_fast_path(self, wake: Callable[[bool], object], cap: int) -> Any:
        """The compiled SOL receive path (fastpath.py) with this protector's keys. Its ACK
        IVs come from OpenSSL's CSPRNG where `_iv` would use os.urandom, else (tests) from
        the same source `_iv` calls, 16 bytes per ACK."""
        if self._native is None or not hasattr(_native, "SolFastPath"):
            raise ValueError("the fast path needs the compiled packet path")
        iv_source = None if self._random is os.urandom else self._random
        return _native.SolFastPath(self._native, iv_source, wake, cap)

    def seal(self, payload_type: int, session_id: int, seq: int, payload: bytes) -> bytes:
        native = self._native
        if native is not None:
            return native.seal(payload_type, session_id, seq, payload,  # type: ignore[no-any-return]
                               self._iv() if self._aes_key is not None else None)
        body = self.encrypt(payload) if self._aes_key is not None else payload
        ptype = payload_type
        if self._aes_key is not None:
            ptype |= PAYLOAD_ENCRYPTED
        if self._digest is None:
            return (
                RMCP_IPMI_HEADER + _SESSION_HEADER.pack(6, ptype, session_id, seq, len(body))
                + body
            )
        ptype |= PAYLOAD_AUTHENTICATED
        covered = (
            _SESSION_HEADER.pack(6, ptype, session_id, seq, len(body))
            + body
            + _TRAILERS[integrity_pad_length(len(body))]
        )
        return RMCP_IPMI_HEADER + covered + self._auth_code(covered)

    def open(self, datagram: bytes) -> OpenedPacket:
        header = decode_rmcpplus_header(datagram)
        return OpenedPacket(header, self.unseal(datagram)[2])

    def unseal(self, datagram: bytes) -> tuple[int, int, bytes]:
        """`open` without objects, for the per-packet path: (payload type, session
        sequence number, payload), or `ProtocolError`."""
        native = self._native
        if native is not None:
            return native.unseal(datagram)  # type: ignore[no-any-return]
        ptype, _, seq, length = unpack_rmcpplus_header(datagram)
        end = RMCPPLUS_HEADER_LEN + length
        if self._digest is not None:
            if not ptype & PAYLOAD_AUTHENTICATED:
                raise ProtocolError("unauthenticated packet on an authenticated session")
            trailer = len(datagram) - end
            pad = trailer - 2 - self._mac_len
            if not 0 <= pad <= 4:
                raise ProtocolError(f"session trailer of {trailer} bytes")
            if datagram[end + pad] != pad or datagram[end + pad + 1] != NEXT_HEADER:
                raise ProtocolError("session trailer pad length or next header is wrong")
            mac_at = len(datagram) - self._mac_len
            if not hmac.compare_digest(self._auth_code(datagram[4:mac_at]), datagram[mac_at:]):
                raise ProtocolError("integrity check failed")
        elif ptype & PAYLOAD_AUTHENTICATED or len(datagram) != end:
            raise ProtocolError("unexpected session trailer")
        payload = bytes(datagram[RMCPPLUS_HEADER_LEN:end])
        if self._aes_key is not None:
            if not ptype & PAYLOAD_ENCRYPTED:
                raise ProtocolError("unencrypted payload on an encrypted session")
            payload = self.decrypt(payload)
        elif ptype & PAYLOAD_ENCRYPTED:
            raise ProtocolError("encrypted payload on a session without confidentiality")
        return ptype & PAYLOAD_TYPE_MASK, seq, payload
