"""Helpers for tests that need a simulated BMC: in memory with a fake clock, or on UDP.

- `make_bmc(...)`: a `SimBmc` with the default admin/password user, deterministic random.
- `Pair`: a client core and a BMC core joined in memory. `pump()` moves datagrams both
  ways (through optional `c2b` / `b2c` filters that drop, duplicate or reorder) and, when
  nothing is in flight, jumps the fake clock to the next deadline. Loops are bounded.
- `drop`, `duplicate`, `reorder`, `drop_first`: filters for `Pair`.
- `running_fleet(...)`: an async context manager that starts a `SimFleet` on free
  loopback ports (port 0) and stops it, for integration tests of other layers.
- `ScriptedBmc`, `establish(...)`, `pump(...)`, `target(...)`, `counting_random()`: a
  hand-written BMC side for byte-level tests of the session core, and a session
  established against it.
- `PATHS`, `use_path(path, monkeypatch)`: run a test on the pure-Python packet path and
  on the compiled one (`BUILT`; SOLGATE_REQUIRE_NATIVE=1 makes a missing build a failure).
"""

from __future__ import annotations

import contextlib
import os
import random as _random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from solgate.ipmi import codec, crypto
from solgate.ipmi.codec import Command, NetFn, PayloadType, Privilege, RakpStatus
from solgate.ipmi.crypto import (
    CIPHER_SUITES,
    PacketProtector,
    derive_k1_k2,
    rakp2_auth_code,
    rakp3_auth_code,
    rakp4_icv,
    session_integrity_key,
)
from solgate.ipmi.replay import OutboundCounter
from solgate.ipmi.session import (
    ClientSession,
)
from solgate.ipmi.target import BmcTarget
from solgate.sim.bmc import SimBmc, SimBmcConfig

CLIENT_ADDR = ("127.0.0.1", 40000)
USERNAME = "admin"
PASSWORD = b"password"

Filter = Callable[[list[bytes]], list[bytes]]


def seeded_random(seed: int = 1) -> Callable[[int], bytes]:
    """A deterministic stand-in for os.urandom, so failures reproduce."""
    rng = _random.Random(seed)
    return lambda n: rng.randbytes(n)


def make_config(**overrides: Any) -> SimBmcConfig:
    values: dict[str, Any] = {"name": "bmc0"}
    values.update(overrides)
    return SimBmcConfig(**values)


def make_bmc(seed: int = 7, **overrides: Any) -> SimBmc:
    return SimBmc(make_config(**overrides), random=seeded_random(seed))


def make_target(port: int = 623, **overrides: Any) -> BmcTarget:
    values: dict[str, Any] = {
        "host": "127.0.0.1", "port": port, "username": USERNAME.encode(),
        "password": PASSWORD, "cipher_suites": (17,), "privilege": Privilege.ADMINISTRATOR,
    }
    values.update(overrides)
    return BmcTarget(**values)


def drop(indices: Iterable[int]) -> Filter:
    """Drop the n-th datagrams (0-based, counted over the life of the filter)."""
    wanted = set(indices)
    seen = 0

    def f(batch: list[bytes]) -> list[bytes]:
        nonlocal seen
        out = []
        for d in batch:
            if seen not in wanted:
                out.append(d)
            seen += 1
        return out

    return f


def drop_first(n: int) -> Filter:
    return drop(range(n))


def duplicate() -> Filter:
    return lambda batch: [d for d in batch for _ in (0, 1)]


def reorder() -> Filter:
    """Hold each datagram back until the next one has passed (pairs swap)."""
    held: list[bytes] = []

    def f(batch: list[bytes]) -> list[bytes]:
        out = []
        for d in batch:
            if held:
                out.extend([d, held.pop()])
            else:
                held.append(d)
        return out

    return f


_MAILBOXES: dict[int, tuple[Any, dict[tuple, list[bytes]]]] = {}


def take_datagrams(bmc: Any, addr: tuple) -> list[bytes]:
    """What `bmc` sent to `addr`; datagrams for other addresses wait for their own pair."""
    entry = _MAILBOXES.get(id(bmc))
    if entry is None or entry[0] is not bmc:
        entry = _MAILBOXES[id(bmc)] = (bmc, {})
    boxes = entry[1]
    for data, to in bmc.datagrams_to_send():
        boxes.setdefault(to, []).append(data)
    return boxes.pop(addr, [])


class Pair:
    """A client core (anything with the ClientSession I/O methods) and a BMC in memory.

    Several pairs may share one BMC; give each its own `addr`."""

    def __init__(self, client: Any, bmc: SimBmc, now: float = 0.0,
                 addr: tuple = CLIENT_ADDR) -> None:
        self.client = client
        self.bmc = bmc
        self.now = now
        self.addr = addr
        self.c2b: Filter | None = None
        self.b2c: Filter | None = None
        self.client_events: list[Any] = []

    def transfer(self) -> int:
        """Move every queued datagram once in each direction; how many were delivered."""
        moved = 0
        out = self.client.datagrams_to_send()
        if self.c2b is not None:
            out = self.c2b(out)
        for d in out:
            self.bmc.receive_datagram(d, self.addr, self.now)
            moved += 1
        back = take_datagrams(self.bmc, self.addr)
        if self.b2c is not None:
            back = self.b2c(back)
        for d in back:
            self.client.receive_datagram(d, self.now)
            moved += 1
        while (event := self.client.next_event()) is not None:
            self.client_events.append(event)
        return moved

    def advance(self) -> bool:
        """Jump to the earliest deadline and fire it; False when no timer runs."""
        deadlines = [d for d in (self.client.next_deadline(), self.bmc.next_deadline())
                     if d is not None]
        if not deadlines:
            return False
        self.now = max(self.now, min(deadlines))
        if (d := self.client.next_deadline()) is not None and d <= self.now:
            self.client.handle_timeout(self.now)
        if (d := self.bmc.next_deadline()) is not None and d <= self.now:
            self.bmc.handle_timeout(self.now)
        return True

    def pump(self, until: Callable[[], bool] | None = None, *, max_steps: int = 200,
             timers: bool = True) -> None:
        """Transfer until quiet (or `until()`), firing timers when nothing moves."""
        for _ in range(max_steps):
            if until is not None and until():
                return
            if self.transfer():
                continue
            if until is None and not timers:
                return
            if not timers or not self.advance():
                if until is None:
                    return
                raise AssertionError("nothing in flight and no timer, condition not met")
        if until is not None and not until():
            raise AssertionError(f"condition not met after {max_steps} steps")

    def events_of(self, kind: type) -> list[Any]:
        return [e for e in self.client_events if isinstance(e, kind)]


@contextlib.asynccontextmanager
async def running_fleet(count: int = 1, base_port: int = 0,
                        **kwargs: Any) -> AsyncIterator[Any]:
    """Start `count` simulated BMCs on free loopback ports; yields the `SimFleet`."""
    from solgate.sim.fleet import SimFleet

    fleet = SimFleet(count, base_port=base_port, **kwargs)
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


# --- a scripted BMC for the session core (test_session.py, test_transport.py, fuzzing) ---

AUTH_CAPS_BODY = bytes.fromhex("0197060300000000")  # what ipmi_sim answered (digest 2.2)
DEVICE_ID_RESPONSE = bytes.fromhex("00" "00030908029f911200020f00000000")  # ipmi_sim, with cc


@dataclass
class ScriptedBmc:
    password: bytes = b"password"
    username: bytes = b"admin"
    suites: frozenset[int] = frozenset({2, 3, 17})
    sidc: int = 0x0202
    rc: bytes = bytes.fromhex("dfc27b9d31a678968b428a1b62e5cfab")
    guid: bytes = bytes.fromhex("a123456789abcdefa123456789abcdef")
    rakp2_status: int = 0
    rakp2_password: bytes | None = None  # key RAKP2 with another password (wrong password)
    refuse_privileges: frozenset[int] = frozenset()
    # filled in as the handshake goes
    sidm: int = 0
    suite: int = 0
    rm: bytes = b""
    role: int = 0
    protector: PacketProtector | None = None
    out: OutboundCounter = field(default_factory=OutboundCounter)
    received: list[codec.IpmiMessage] = field(default_factory=list)
    received_sol: list[bytes] = field(default_factory=list)
    last_rakp3: codec.Rakp3 | None = None
    open_session_requests: list[codec.OpenSessionRequest] = field(default_factory=list)
    seen_seqs: list[int] = field(default_factory=list)

    def handle(self, datagram: bytes) -> list[bytes]:
        if codec.is_ipmi15(datagram):
            msg = codec.decode_ipmi_message(codec.decode_ipmi15(datagram).message)
            reply = self.response(msg, b"\x00" + AUTH_CAPS_BODY)
            return [codec.encode_ipmi15(codec.Ipmi15Packet(reply))]
        header = codec.decode_rmcpplus_header(datagram)
        if header.session_id == 0:
            return self._setup(header.payload_type, codec.decode_unauthenticated(datagram)[1])
        assert self.protector is not None
        opened = self.protector.open(datagram)
        self.seen_seqs.append(opened.header.seq)
        if opened.header.payload_type == PayloadType.SOL:
            self.received_sol.append(opened.payload)
            return []
        msg = codec.decode_ipmi_message(opened.payload)
        self.received.append(msg)
        return [self.seal_ipmi(self.response(msg, self.answer(msg)))]

    def answer(self, msg: codec.IpmiMessage) -> bytes:
        if (msg.netfn, msg.cmd) == (NetFn.APP, Command.SET_SESSION_PRIVILEGE_LEVEL):
            if msg.data[0] in self.refuse_privileges:
                return b"\x81"
            return bytes((0, msg.data[0]))
        if (msg.netfn, msg.cmd) == (NetFn.APP, Command.GET_DEVICE_ID):
            return DEVICE_ID_RESPONSE
        return b"\x00"

    @staticmethod
    def response(req: codec.IpmiMessage, data: bytes) -> bytes:
        return codec.encode_ipmi_message(codec.IpmiMessage(
            netfn=req.netfn | 1, cmd=req.cmd, rq_seq=req.rq_seq, data=data,
            rs_addr=req.rs_addr, rq_addr=req.rq_addr))

    def seal_ipmi(self, message: bytes, seq: int | None = None) -> bytes:
        assert self.protector is not None
        return self.protector.seal(PayloadType.IPMI, self.sidm,
                                   self.out.next() if seq is None else seq, message)

    def seal_sol(self, payload: bytes) -> bytes:
        assert self.protector is not None
        return self.protector.seal(PayloadType.SOL, self.sidm, self.out.next(), payload)

    def _setup(self, ptype: int, payload: bytes) -> list[bytes]:
        if ptype == PayloadType.OPEN_SESSION_REQUEST:
            req = codec.decode_open_session_request(payload)
            self.open_session_requests.append(req)
            suite = next((s for s in self.suites
                          if (CIPHER_SUITES[s].auth, CIPHER_SUITES[s].integrity,
                              CIPHER_SUITES[s].confidentiality)
                          == (req.auth_alg, req.integrity_alg, req.conf_alg)), None)
            if suite is None:
                rsp = codec.OpenSessionResponse(
                    req.tag, RakpStatus.INVALID_AUTHENTICATION_ALGORITHM,
                    console_session_id=req.console_session_id)
            else:
                self.suite, self.sidm = suite, req.console_session_id
                rsp = codec.OpenSessionResponse(
                    req.tag, 0, req.privilege, req.console_session_id, self.sidc,
                    req.auth_alg, req.integrity_alg, req.conf_alg)
            return [codec.encode_unauthenticated(PayloadType.OPEN_SESSION_RESPONSE,
                                                 codec.encode_open_session_response(rsp))]
        if ptype == PayloadType.RAKP_1:
            r1 = codec.decode_rakp1(payload)
            self.rm, self.role = r1.console_random, r1.role
            if self.rakp2_status:
                r2 = codec.Rakp2(r1.tag, self.rakp2_status, self.sidm)
            else:
                alg = CIPHER_SUITES[self.suite].auth
                code = rakp2_auth_code(alg, self.rakp2_password or self.password, self.sidm,
                                       self.sidc, self.rm, self.rc, self.guid, self.role,
                                       r1.username)
                r2 = codec.Rakp2(r1.tag, 0, self.sidm, self.rc, self.guid, code)
            return [codec.encode_unauthenticated(PayloadType.RAKP_2, codec.encode_rakp2(r2))]
        if ptype == PayloadType.RAKP_3:
            r3 = codec.decode_rakp3(payload)
            self.last_rakp3 = r3
            if r3.status:
                return []
            suite = CIPHER_SUITES[self.suite]
            alg = suite.auth
            want = rakp3_auth_code(alg, self.password, self.sidm, self.rc, self.role,
                                   self.username)
            if want != r3.key_exchange_code:
                r4 = codec.Rakp4(r3.tag, RakpStatus.INVALID_INTEGRITY_CHECK_VALUE, self.sidm)
            else:
                sik = session_integrity_key(alg, self.password, None, self.rm, self.rc,
                                            self.role, self.username)
                k1, k2 = derive_k1_k2(alg, sik)
                self.protector = PacketProtector(suite, k1, k2)
                icv = rakp4_icv(alg, sik, self.rm, self.sidc, self.guid)
                r4 = codec.Rakp4(r3.tag, 0, self.sidm, icv)
            return [codec.encode_unauthenticated(PayloadType.RAKP_4, codec.encode_rakp4(r4))]
        return []


def target(**kw) -> BmcTarget:
    base = dict(host="10.0.0.5", username=b"admin", password=b"password")
    base.update(kw)
    return BmcTarget(**base)


def counting_random() -> Callable[[int], bytes]:
    """Deterministic, distinct bytes for every call (a new SIDm / Rm / IV each time)."""
    state = {"n": 0}

    def rnd(n: int) -> bytes:
        state["n"] += 1
        return bytes((state["n"] + i) & 0xFF for i in range(n))
    return rnd


def events(session: ClientSession) -> list:
    out = []
    while (ev := session.next_event()) is not None:
        out.append(ev)
    return out


def pump(session: ClientSession, bmc: ScriptedBmc, now: float = 0.0, rounds: int = 20) -> list:
    """Move datagrams both ways until both sides are quiet; return the client's events."""
    evs: list = []
    for _ in range(rounds):
        out = session.datagrams_to_send()
        if not out:
            break
        for d in out:
            for reply in bmc.handle(d):
                session.receive_datagram(reply, now)
        evs += events(session)
    else:
        raise AssertionError("no quiescence")
    return evs + events(session)


def establish(bmc: ScriptedBmc | None = None, **kw) -> tuple[ClientSession, ScriptedBmc, list]:
    bmc = bmc or ScriptedBmc()
    session = ClientSession(target(**kw), random=counting_random())
    session.start(0.0)
    return session, bmc, pump(session, bmc)


# --- the two packet paths (solgate/ipmi/_speedups.c and crypto.py) ----------------------------

REQUIRE_NATIVE = os.environ.get("SOLGATE_REQUIRE_NATIVE") == "1"
try:
    from solgate.ipmi import _speedups  # type: ignore[attr-defined]  # noqa: F401

    BUILT = True
except ImportError:
    BUILT = False
PATHS = ["python", pytest.param("native", marks=pytest.mark.skipif(
    not BUILT and not REQUIRE_NATIVE, reason="solgate.ipmi._speedups is not built"))]


def use_path(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `PacketProtector()` run `path` ('python' or 'native') for this test."""
    if path == "native" and not BUILT:
        pytest.fail("SOLGATE_REQUIRE_NATIVE=1 but solgate.ipmi._speedups is not built")
    monkeypatch.setattr(crypto, "NATIVE", path == "native")
