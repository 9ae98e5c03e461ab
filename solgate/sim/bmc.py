"""A simulated BMC: the server side of RMCP+ and SOL, sans-I/O.

Theory of operation
-------------------
`SimBmc` is the BMC half of the protocol solgate's client speaks, built from the same
codecs and crypto (`solgate.ipmi.codec`, `crypto`, `replay`, `sol_codec`), so one
implementation of the bytes serves both roles while independent clients (ipmitool,
ipmiconsole) keep it honest. Like the client cores it is a plain object:

- inputs: `receive_datagram(data, addr, now)`, `handle_timeout(now)`;
- outputs: `datagrams_to_send()` -> ``[(datagram, addr)]``, `next_deadline()`.

It never reads a clock, sleeps or touches a socket; `fleet.py` is the asyncio shell and
`faults.py` wraps the core to lose, duplicate, reorder, delay or corrupt datagrams.

What it answers (ipmi-sol-protocol.md section 11): ASF presence ping; IPMI 1.5
pre-session Get Channel Auth Capabilities / Cipher Suites; Open Session, RAKP 1-4; then,
inside an authenticated (and, per suite, encrypted) session, the IPMI commands in
`bmc_commands.py` and SOL payloads for the one SOL instance (`bmc_sol.py`).

Rules it keeps:
- Malformed, unauthenticated, replayed or unknown-session datagrams are dropped and
  counted in `stats`; nothing raises out of `receive_datagram`.
- Sessions start at USER privilege; an idle session expires after `session_timeout`
  (a half-open one after `handshake_timeout`), and SOL owned by it ends with it.
- Cost: with no sessions there is no deadline at all, and host output produced while SOL
  is inactive is discarded lazily at the next activation, so an idle BMC costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from solgate.errors import LocalProtocolError, ProtocolError
from solgate.ipmi.codec import (
    PAYLOAD_TYPE_MASK,
    RMCP_ASF_CLASS,
    Ipmi15Packet,
    IpmiMessage,
    OpenSessionResponse,
    PayloadType,
    Privilege,
    Rakp2,
    Rakp4,
    RakpStatus,
    decode_ipmi15,
    decode_ipmi_message,
    decode_open_session_request,
    decode_rakp1,
    decode_rakp3,
    decode_unauthenticated,
    encode_ipmi15,
    encode_ipmi_message,
    encode_open_session_response,
    encode_rakp2,
    encode_rakp4,
    encode_unauthenticated,
    unpack_rmcpplus_header,
)
from solgate.ipmi.crypto import (
    CIPHER_SUITES,
    AuthAlgorithm,
    PacketProtector,
    constant_time_equal,
    derive_k1_k2,
    password_key,
    rakp2_auth_code,
    rakp3_auth_code,
    rakp4_icv,
    session_integrity_key,
)
from solgate.ipmi.replay import ReplayWindow
from solgate.ipmi.sol_codec import SolPacket, SolStatus, encode_sol
from solgate.sim import bmc_commands
from solgate.sim.bmc_session import Address, BmcSession, SessionState, SimUser
from solgate.sim.bmc_sol import SolPort
from solgate.sim.sel import SimSel

if TYPE_CHECKING:
    from solgate.sim.host import SimHost

log = logging.getLogger(__name__)

DEFAULT_USERS: Mapping[str, tuple[bytes, Privilege]] = {
    "admin": (b"password", Privilege.ADMINISTRATOR),
}
SECURE_DEFAULT_SUITES = (1, 2, 3, 17)
ASF_IANA = b"\x00\x00\x11\xbe"
_ASF_PING = 0x80
_ASF_PONG = 0x40
_SOL = int(PayloadType.SOL)


@dataclass(frozen=True)
class SimBmcConfig:
    """Everything that makes one simulated BMC different from another."""

    name: str = "sim"
    # username -> (password, highest privilege the account may reach)
    users: Mapping[str, tuple[bytes, Privilege]] = field(default_factory=lambda: DEFAULT_USERS)
    guid: bytes | None = None  # 16 bytes; derived from `name` when None
    kg: bytes | None = field(default=None, repr=False)
    cipher_suites: tuple[int, ...] = SECURE_DEFAULT_SUITES
    insecure: bool = False  # allow cipher suite 0 (any password logs in)
    session_timeout: float = 60.0
    handshake_timeout: float = 10.0
    max_sessions: int = 32
    # Replay window for inbound session sequence numbers (digest section 4).
    replay_ahead: int = 32
    replay_behind: int = 16
    # SOL (ipmi_sim retransmits every 1 s, 4 times).
    sol_retry_interval: float = 1.0
    sol_retry_count: int = 4
    accumulate_interval: float = 0.02
    send_threshold: int = 96
    inbound_payload_size: int = 36  # 32 characters + 4 header bytes
    outbound_payload_size: int = 259  # 255 characters + 4 header bytes
    # Characters the host's serial input buffer holds (None: unlimited). When set, a
    # console typing faster than the baud rate gets a partial ACK with NACK, and an ACK
    # without NACK once the buffer has drained (ipmi_sim's buffer holds 32).
    host_input_buffer: int | None = None
    port: int = 623  # reported in Activate Payload; the fleet sets the bound port
    host: SimHost | None = None
    device_id: int = 0x20
    manufacturer_id: int = 0x0000  # "unspecified"
    product_id: int = 0x5347

    def __post_init__(self) -> None:
        for suite in self.cipher_suites:
            if suite not in CIPHER_SUITES:
                raise ValueError(f"cipher suite {suite} is not implemented")
            if not self.insecure and CIPHER_SUITES[suite].auth == AuthAlgorithm.NONE:
                raise ValueError(f"cipher suite {suite} accepts any password; set insecure=True")
        if self.guid is not None and len(self.guid) != 16:
            raise ValueError("guid must be 16 bytes")

    @property
    def bmc_guid(self) -> bytes:
        if self.guid is not None:
            return self.guid
        return hashlib.sha256(b"solgate-sim:" + self.name.encode()).digest()[:16]


@dataclass(slots=True)
class BmcStats:
    """Why datagrams were dropped, and what succeeded; for tests and the CLI."""

    received: int = 0
    sent: int = 0
    dropped_malformed: int = 0
    dropped_unknown_session: int = 0
    dropped_auth: int = 0
    dropped_replay: int = 0
    dropped_sol_not_owner: int = 0
    sessions_opened: int = 0
    sessions_timed_out: int = 0
    logins_failed: int = 0
    commands_ignored: int = 0  # in-session IPMI requests left unanswered (ignore_commands)


class SimBmc:
    """One simulated BMC. See the module docstring for the contract."""

    def __init__(self, config: SimBmcConfig,
                 *, random: Callable[[int], bytes] = os.urandom) -> None:
        self.config = config
        self.port = config.port
        self._random = random
        self._users = {
            name.encode(): SimUser(name.encode(), password_key(pw), Privilege(priv))
            for name, (pw, priv) in config.users.items()
        }
        self._guid = config.bmc_guid
        self._sessions: dict[int, BmcSession] = {}
        self._out: list[tuple[bytes, Address]] = []
        self.stats = BmcStats()
        self.sol = SolPort(config, config.host)
        # Behaviour knobs, set by `faults.FaultyBmc` (or a test).
        self.refuse_logins = False
        self.stop_acking_sol = False
        self.ignore_commands = False  # a starved command handler: SOL still flows
        self.max_sessions = config.max_sessions
        self.last_power_event = 0
        # What the host's panics and power changes leave in the BMC's event log.
        self.sel = SimSel()
        if config.host is not None:
            config.host.on_event = self.sel.host_event

    # ------------------------------------------------------------------ public API

    @property
    def host(self) -> SimHost | None:
        return self.config.host

    @property
    def sessions(self) -> Mapping[int, BmcSession]:
        """SIDc -> session, including half-open ones."""
        return self._sessions

    def active_sessions(self) -> list[BmcSession]:
        return [s for s in self._sessions.values() if s.active]

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        self.stats.sent += len(out)
        return out

    def next_deadline(self) -> float | None:
        deadline = self.sol.next_deadline()
        for s in self._sessions.values():
            if deadline is None or s.expires < deadline:
                deadline = s.expires
        return deadline

    def handle_timeout(self, now: float) -> None:
        for s in [s for s in self._sessions.values() if s.expires <= now]:
            self.stats.sessions_timed_out += s.active
            log.debug("%s: session %r timed out", self.config.name, s)
            self._drop_session(s, now)
        self.sol.handle_timeout(now)
        self._flush_sol(now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.stats.received += 1
        try:
            self._dispatch(bytes(data), addr, now)
        except ProtocolError as exc:
            self.stats.dropped_malformed += 1
            log.debug("%s: dropped datagram from %s: %s", self.config.name, addr, exc)
        self._flush_sol(now)

    def restart(self) -> None:
        """Forget every session and the SOL owner, as a BMC reboot would (host untouched)."""
        self._sessions.clear()
        self.sol.deactivate()

    def set_phantom_sol_owner(self, held: bool) -> None:
        """SOL held by a session that does not exist on the wire (a crashed console)."""
        if held:
            self.sol.activate_phantom()
        elif self.sol.phantom:
            self.sol.deactivate()

    def steal_sol(self, by_sidc: int, now: float) -> None:
        """Deactivate SOL on behalf of session `by_sidc`; a live old owner is told with a SOL
        packet whose status has DEACTIVATING set, as a well-behaved BMC does."""
        old = self.sol.owner
        if old is not None and old != by_sidc:
            s = self._sessions.get(old)
            if s is not None and s.active:
                notice = SolPacket(flags=SolStatus.DEACTIVATING)
                self.send_payload(s, PayloadType.SOL, encode_sol(notice))
        self.sol.deactivate()

    def close_session(self, sidc: int, now: float) -> bool:
        """End a session from outside (a test, an operator); its SOL ends with it."""
        s = self._sessions.get(sidc)
        if s is None:
            return False
        self._drop_session(s, now)
        return True

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, data: bytes, addr: Address, now: float) -> None:
        if len(data) < 5 or data[0] != 0x06:
            raise ProtocolError("not an RMCP packet")
        if data[3] & 0x80:
            raise ProtocolError("RMCP ACK")
        cls = data[3] & 0x1F
        if cls == RMCP_ASF_CLASS:
            self._asf(data, addr)
            return
        if cls != 0x07:
            raise ProtocolError(f"RMCP class 0x{cls:02x}")
        if data[4] != 0x06:
            self._ipmi15(data, addr)
            return
        # The per-packet path: the header as a tuple and `unseal`, no objects per packet.
        ptype, sid, seq, _ = unpack_rmcpplus_header(data)
        ptype &= PAYLOAD_TYPE_MASK
        if sid == 0:
            _, payload = decode_unauthenticated(data)
            if ptype == PayloadType.OPEN_SESSION_REQUEST:
                self._open_session(payload, addr, now)
            elif ptype == PayloadType.RAKP_1:
                self._rakp1(payload, addr, now)
            elif ptype == PayloadType.RAKP_3:
                self._rakp3(payload, addr, now)
            elif ptype == PayloadType.IPMI:
                # ipmitool asks Get Channel Cipher Suites this way, before any session.
                req = decode_ipmi_message(payload)
                if req.is_response:
                    raise ProtocolError("unsolicited IPMI response")
                cc, body = bmc_commands.pre_session(self, req)
                self._out.append((_setup(PayloadType.IPMI, _response(req, cc, body)), addr))
            else:
                raise ProtocolError(f"payload {PayloadType.describe(ptype)} outside a session")
            return
        s = self._sessions.get(sid)
        if s is None or s.protector is None or not s.active:
            self.stats.dropped_unknown_session += 1
            return
        try:
            payload = s.protector.unseal(data)[2]
        except ProtocolError:
            self.stats.dropped_auth += 1
            return
        if not s.window.accept(seq):
            self.stats.dropped_replay += 1
            return
        s.addr = addr
        s.expires = now + self.config.session_timeout
        if ptype == PayloadType.IPMI:
            if self.ignore_commands:
                self.stats.commands_ignored += 1
            else:
                self._ipmi(s, decode_ipmi_message(payload), now)
        elif ptype == _SOL:
            if self.sol.owner != s.sidc:
                self.stats.dropped_sol_not_owner += 1
            elif not self.stop_acking_sol:
                self.sol.receive_payload(payload, now)
        else:
            raise ProtocolError(f"payload {PayloadType.describe(ptype)} in a session")

    def _asf(self, data: bytes, addr: Address) -> None:
        """Presence ping -> pong (digest section 1.2): IPMI supported, ASF 1.0."""
        if len(data) < 12 or data[4:8] != ASF_IANA or data[8] != _ASF_PING:
            raise ProtocolError("not an ASF presence ping")
        tag = data[9]
        body = ASF_IANA + b"\x00\x00\x00\x00" + b"\x81\x00" + bytes(6)
        pong = b"\x06\x00\xff\x06" + ASF_IANA + bytes((_ASF_PONG, tag, 0, len(body))) + body
        self._out.append((pong, addr))

    def _ipmi15(self, data: bytes, addr: Address) -> None:
        packet = decode_ipmi15(data)
        if packet.session_id != 0:
            raise ProtocolError("IPMI 1.5 sessions are not supported")
        req = decode_ipmi_message(packet.message)
        if req.is_response:
            raise ProtocolError("unsolicited IPMI response")
        cc, body = bmc_commands.pre_session(self, req)
        self._out.append((encode_ipmi15(Ipmi15Packet(_response(req, cc, body))), addr))

    def _ipmi(self, s: BmcSession, req: IpmiMessage, now: float) -> None:
        if req.is_response:
            return  # a console answering something; we never ask
        key = (req.netfn, req.cmd, req.rq_seq, req.data)
        response = s.cached_response(key, now)
        if response is None:
            cc, body = bmc_commands.in_session(self, s, req, now)
            response = _response(req, cc, body)
            s.remember_response(key, response, now)
        self.send_payload(s, PayloadType.IPMI, response)
        if s.closing:
            self._drop_session(s, now)

    # ------------------------------------------------------------------ handshake

    def _open_session(self, payload: bytes, addr: Address, now: float) -> None:
        req = decode_open_session_request(payload)
        for s in self._sessions.values():  # a retransmission: same answer, no new session
            if s.state is SessionState.OPENED and s.addr == addr and s.open_request == payload:
                self._out.append((s.open_response, addr))
                return

        def refuse(status: RakpStatus) -> None:
            msg = OpenSessionResponse(req.tag, status, console_session_id=req.console_session_id)
            self._out.append((_setup(PayloadType.OPEN_SESSION_RESPONSE,
                                     encode_open_session_response(msg)), addr))

        if req.console_session_id == 0:
            refuse(RakpStatus.INVALID_SESSION_ID)
            return
        if len(self._sessions) >= self.max_sessions:
            refuse(RakpStatus.INSUFFICIENT_RESOURCES)
            return
        suite = self._match_suite(req.auth_alg, req.integrity_alg, req.conf_alg)
        if isinstance(suite, RakpStatus):
            refuse(suite)
            return
        if req.privilege > Privilege.OEM:
            refuse(RakpStatus.INVALID_ROLE)
            return
        privilege = Privilege(req.privilege or Privilege.ADMINISTRATOR)
        sidc = self._new_session_id()
        s = BmcSession(sidc, req.console_session_id, addr, CIPHER_SUITES[suite], privilege,
                       now + self.config.handshake_timeout)
        msg = OpenSessionResponse(
            req.tag, RakpStatus.NO_ERRORS, privilege, req.console_session_id, sidc,
            req.auth_alg, req.integrity_alg, req.conf_alg,
        )
        s.open_request = payload
        s.open_response = _setup(PayloadType.OPEN_SESSION_RESPONSE,
                                 encode_open_session_response(msg))
        self._sessions[sidc] = s
        self._out.append((s.open_response, addr))

    def _match_suite(self, auth: int, integrity: int, conf: int) -> int | RakpStatus:
        allowed = [CIPHER_SUITES[i] for i in self.config.cipher_suites]
        for suite in allowed:
            if (suite.auth, suite.integrity, suite.confidentiality) == (auth, integrity, conf):
                return suite.id
        if all(suite.auth != auth for suite in allowed):
            return RakpStatus.INVALID_AUTHENTICATION_ALGORITHM
        return RakpStatus.NO_CIPHER_SUITE_MATCH

    def _new_session_id(self) -> int:
        while True:
            sidc = int.from_bytes(self._random(4), "little")
            if sidc and sidc not in self._sessions:
                return sidc

    def _rakp1(self, payload: bytes, addr: Address, now: float) -> None:
        req = decode_rakp1(payload)
        s = self._sessions.get(req.bmc_session_id)
        if s is None or s.state is SessionState.ACTIVE:
            msg = Rakp2(req.tag, RakpStatus.INVALID_SESSION_ID)
            self._out.append((_setup(PayloadType.RAKP_2, encode_rakp2(msg)), addr))
            return
        if s.state is SessionState.RAKP2_SENT and payload == s.rakp1:
            self._out.append((s.rakp2, addr))
            return

        def refuse(status: RakpStatus) -> None:
            self.stats.logins_failed += 1
            msg = Rakp2(req.tag, status, s.sidm)
            self._out.append((_setup(PayloadType.RAKP_2, encode_rakp2(msg)), addr))
            del self._sessions[s.sidc]

        user = self._users.get(req.username)
        requested = req.role & 0x0F
        if self.refuse_logins or user is None or not req.username:
            refuse(RakpStatus.UNAUTHORIZED_NAME)
            return
        if requested > Privilege.OEM:
            refuse(RakpStatus.INVALID_ROLE)
            return
        if requested > user.max_privilege or requested > s.max_privilege:
            refuse(RakpStatus.UNAUTHORIZED_ROLE_OR_PRIVILEGE)
            return
        s.user, s.rm, s.role, s.rc = user, req.console_random, req.role, self._random(16)
        if requested:
            s.max_privilege = Privilege(requested)
        s.max_privilege = Privilege(min(s.max_privilege, user.max_privilege))
        code = rakp2_auth_code(s.suite.auth, user.password, s.sidm, s.sidc, s.rm, s.rc,
                               self._guid, s.role, user.name)
        msg = Rakp2(req.tag, RakpStatus.NO_ERRORS, s.sidm, s.rc, self._guid, code)
        s.rakp1 = payload
        s.rakp2 = _setup(PayloadType.RAKP_2, encode_rakp2(msg))
        s.state = SessionState.RAKP2_SENT
        s.addr = addr
        s.expires = now + self.config.handshake_timeout
        self._out.append((s.rakp2, addr))

    def _rakp3(self, payload: bytes, addr: Address, now: float) -> None:
        req = decode_rakp3(payload)
        s = self._sessions.get(req.bmc_session_id)
        if s is None:
            msg = Rakp4(req.tag, RakpStatus.INVALID_SESSION_ID)
            self._out.append((_setup(PayloadType.RAKP_4, encode_rakp4(msg)), addr))
            return
        if s.state is SessionState.ACTIVE and payload == s.rakp3:
            self._out.append((s.rakp4, addr))  # our RAKP4 was lost
            return
        if s.state is not SessionState.RAKP2_SENT or s.user is None:
            msg = Rakp4(req.tag, RakpStatus.INACTIVE_SESSION_ID, s.sidm)
            self._out.append((_setup(PayloadType.RAKP_4, encode_rakp4(msg)), addr))
            return
        if req.status != RakpStatus.NO_ERRORS:
            # The console rejected our RAKP2 (e.g. it has another password): it aborts.
            self.stats.logins_failed += 1
            del self._sessions[s.sidc]
            return
        alg, user = s.suite.auth, s.user
        expected = rakp3_auth_code(alg, user.password, s.sidm, s.rc, s.role, user.name)
        if not constant_time_equal(expected, req.key_exchange_code):
            self.stats.logins_failed += 1
            msg = Rakp4(req.tag, RakpStatus.INVALID_INTEGRITY_CHECK_VALUE, s.sidm)
            self._out.append((_setup(PayloadType.RAKP_4, encode_rakp4(msg)), addr))
            del self._sessions[s.sidc]
            return
        sik = session_integrity_key(alg, user.password, self.config.kg, s.rm, s.rc, s.role,
                                    user.name)
        k1, k2 = derive_k1_k2(alg, sik)
        icv = rakp4_icv(alg, sik, s.rm, s.sidc, self._guid)
        s.protector = PacketProtector(s.suite, k1, k2, random=self._random)
        s.window = ReplayWindow(self.config.replay_ahead, self.config.replay_behind)
        s.privilege = Privilege(min(Privilege.USER, s.max_privilege))
        s.state = SessionState.ACTIVE
        s.rakp3 = payload
        s.rakp4 = _setup(PayloadType.RAKP_4,
                         encode_rakp4(Rakp4(req.tag, RakpStatus.NO_ERRORS, s.sidm, icv)))
        s.addr = addr
        s.expires = now + self.config.session_timeout
        self.stats.sessions_opened += 1
        log.debug("%s: session %r established", self.config.name, s)
        self._out.append((s.rakp4, addr))

    # ------------------------------------------------------------------ helpers

    def send_payload(self, s: BmcSession, payload_type: int, payload: bytes) -> None:
        """Seal a payload for an active session and queue it."""
        if s.protector is None:
            raise LocalProtocolError(f"session 0x{s.sidc:08x} has no keys yet")
        seq = s.outbound.next()
        self._out.append((s.protector.seal(payload_type, s.sidm, seq, payload), s.addr))

    def _drop_session(self, s: BmcSession, now: float) -> None:
        self._sessions.pop(s.sidc, None)
        if self.sol.owner == s.sidc:
            self.sol.deactivate()

    def _flush_sol(self, now: float) -> None:
        payloads = self.sol.pump(now)
        if not payloads:
            return
        owner = self._sessions.get(self.sol.owner) if self.sol.owner else None
        if owner is None or not owner.active:
            return
        for payload in payloads:
            self.send_payload(owner, PayloadType.SOL, payload)


def _response(req: IpmiMessage, cc: int, body: bytes) -> bytes:
    return encode_ipmi_message(IpmiMessage(
        netfn=req.netfn | 1, cmd=req.cmd, rq_seq=req.rq_seq, data=bytes((cc,)) + body,
        rs_addr=req.rs_addr, rq_addr=req.rq_addr, rs_lun=req.rs_lun, rq_lun=req.rq_lun,
    ))


def _setup(payload_type: int, payload: bytes) -> bytes:
    return encode_unauthenticated(payload_type, payload)

