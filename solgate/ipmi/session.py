"""Client side of one RMCP+ session: handshake, sequence numbers, request matching, retries.

Theory of operation
-------------------
`ClientSession` is a sans-I/O core (STYLE.md items 1, 4-7). The caller feeds it datagrams
(`receive_datagram`) and timer expiries (`handle_timeout`), both with a `now` from the
caller's clock, and drains `datagrams_to_send()` and `next_event()`. `next_deadline()`
says when `handle_timeout` is due. Nothing here reads a clock, sleeps or owns a socket.

Handshake (ipmi-sol-protocol.md section 2), one state per outstanding step:

    IDLE -> AUTH_CAPS -> OPEN_SESSION -> RAKP2 -> RAKP4 -> PRIVILEGE -> ESTABLISHED
                             ^   |          |        |
                             +---+----------+--------+   next suite / timeout restart

* Get Channel Authentication Capabilities (IPMI 1.5 wrapper) is retransmitted as is; a
  BMC that errors on the "v2.0 data" bit 7 is asked again without it.
* Open Session asks for one cipher suite at a time, in `target.cipher_suites` order. A
  status that means "not this suite" (`SUITE_REJECTED`) moves on to the next suite with a
  new SIDm and Rm. A timeout in any RMCP+ step restarts from Open Session (as ipmitool
  does), at most `target.max_tries` attempts per suite.
* RAKP2's HMAC is the BMC's proof that it knows the password: on a mismatch we send RAKP3
  with status 0x0F and fail with `AuthenticationError`. RAKP4's ICV proves it derived the
  same session key. Only then are the keys trusted.
* Set Session Privilege Level raises the session from USER (where every session starts)
  to the configured level, falling back from ADMINISTRATOR to OPERATOR once.

Forged setup errors: Open Session and RAKP replies are not authenticated, so one datagram
with the right message tag and an error status could end a handshake (and, for an
authentication status, put a console into its long backoff). Three defences: message tags
start at a random value (drawn from `random`, so tests stay deterministic); a reply must
carry our SIDm when it carries one at all; and an error reply without a SIDm (some BMCs
send only tag and status) is held, not believed: a genuine answer arriving before the
step's retransmit deadline wins, and only at that deadline is the held error acted on.

Established session: every IPMI request gets a 6-bit rqSeq; responses are matched on
(rqSeq, netfn, cmd). A request is retransmitted after `target.retransmit_timeout`, up to
`target.max_tries` sends in all, each with a new session sequence number and the same
rqSeq. cc 0xCF ("duplicate request") answers are ignored. SOL payloads are sealed and
opened here but their stream logic lives in `sol.py`.

Receive invariants: every datagram that is malformed, unauthenticated, replayed or not
expected now is dropped and counted in `dropped`; none raises. The replay window moves
only after the packet's integrity was verified. Only fatal conditions (authentication,
cipher suite, privilege, handshake timeout) end the session, as `SessionTerminated`.
Calling a method in a state where it makes no sense raises `LocalProtocolError`.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

from solgate.errors import (
    LocalProtocolError,
    ProtocolError,
    SolgateError,
    SolgateTimeoutError,
)
from solgate.ipmi import codec
from solgate.ipmi import session_errors as errors
from solgate.ipmi.codec import (
    CURRENT_CHANNEL,
    NAME_ONLY_LOOKUP,
    Command,
    CompletionCode,
    IpmiMessage,
    NetFn,
    PayloadType,
    Privilege,
    RakpStatus,
)
from solgate.ipmi.commands import command_name
from solgate.ipmi.crypto import (
    CIPHER_SUITES,
    AuthAlgorithm,
    CipherSuite,
    PacketProtector,
    constant_time_equal,
    derive_k1_k2,
    password_key,
    rakp2_auth_code,
    rakp3_auth_code,
    rakp4_icv,
    session_integrity_key,
)
from solgate.ipmi.replay import OutboundCounter, ReplayWindow
from solgate.ipmi.target import BmcTarget

log = logging.getLogger(__name__)

# Open Session statuses that mean "the BMC does not do this cipher suite": try the next.
SUITE_REJECTED = frozenset({
    RakpStatus.INSUFFICIENT_RESOURCES,  # Intel M50CYP answers 0x01 when only CS17 is allowed
    RakpStatus.INVALID_AUTHENTICATION_ALGORITHM,
    RakpStatus.INVALID_INTEGRITY_ALGORITHM,
    RakpStatus.INVALID_CONFIDENTIALITY_ALGORITHM,
    RakpStatus.NO_CIPHER_SUITE_MATCH,
})
# Set Session Privilege Level codes after which a lower level is worth asking for.
PRIVILEGE_REFUSED = frozenset({0x80, 0x81})

# Workaround names (target.workarounds) understood here.
WORKAROUND_OPEN_SESSION_PRIV_HIGHEST = "open_session_priv_highest"  # send 0 in Open Session
WORKAROUND_SKIP_AUTH_CAPS = "skip_auth_caps"
WORKAROUND_RAKP2_LONG = ("supermicro20", "sun20")  # RAKP2 auth code one byte too long
WORKAROUND_AUTHCAP = "authcap"  # Get Channel Auth Capabilities bits are not to be trusted
WORKAROUND_NO_CHECKSUM = "nochecksumcheck"  # IPMI message checksums are wrong

DROP_REASONS = ("malformed", "unauthenticated", "replayed", "unexpected", "unsolicited",
                "duplicate")

_AUTH_CAPS_RQ_SEQ = 0
_IPMI = int(PayloadType.IPMI)
_SOL = int(PayloadType.SOL)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class SessionEstablished:
    cipher_suite: int
    bmc_session_id: int
    privilege: Privilege


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    request_id: int
    message: IpmiMessage


@dataclass(frozen=True, slots=True)
class RequestTimedOut:
    request_id: int
    error: SolgateTimeoutError


@dataclass(frozen=True, slots=True)
class SolPayloadReceived:
    payload: bytes


@dataclass(frozen=True, slots=True)
class SessionTerminated:
    reason: str
    error: SolgateError | None


SessionEvent = (
    SessionEstablished | ResponseReceived | RequestTimedOut | SolPayloadReceived
    | SessionTerminated
)


# --------------------------------------------------------------------------- states


class SessionState(Enum):
    IDLE = auto()
    AUTH_CAPS = auto()
    OPEN_SESSION = auto()
    RAKP2 = auto()
    RAKP4 = auto()
    PRIVILEGE = auto()
    ESTABLISHED = auto()
    TERMINATED = auto()


# Module names for the states the per-packet path tests (a class attribute of an Enum
# costs several dictionary lookups on every access).
_IDLE = SessionState.IDLE
_ESTABLISHED = SessionState.ESTABLISHED
_TERMINATED = SessionState.TERMINATED


class SessionInput(Enum):
    START = auto()
    START_WITHOUT_AUTH_CAPS = auto()
    RECV_AUTH_CAPS = auto()
    RECV_OPEN_SESSION_OK = auto()
    RESTART_OPEN_SESSION = auto()  # next suite, or a timeout in the RMCP+ handshake
    RECV_RAKP2_OK = auto()
    RECV_RAKP4_OK = auto()
    SKIP_PRIVILEGE = auto()
    RECV_PRIVILEGE_OK = auto()
    CLOSE = auto()
    FAIL = auto()


_S, _I = SessionState, SessionInput
_HANDSHAKE = (_S.AUTH_CAPS, _S.OPEN_SESSION, _S.RAKP2, _S.RAKP4, _S.PRIVILEGE)
_TRANSITIONS: dict[tuple[SessionState, SessionInput], SessionState] = {
    (_S.IDLE, _I.START): _S.AUTH_CAPS,
    (_S.IDLE, _I.START_WITHOUT_AUTH_CAPS): _S.OPEN_SESSION,
    (_S.AUTH_CAPS, _I.RECV_AUTH_CAPS): _S.OPEN_SESSION,
    (_S.OPEN_SESSION, _I.RECV_OPEN_SESSION_OK): _S.RAKP2,
    (_S.OPEN_SESSION, _I.RESTART_OPEN_SESSION): _S.OPEN_SESSION,
    (_S.RAKP2, _I.RESTART_OPEN_SESSION): _S.OPEN_SESSION,
    (_S.RAKP4, _I.RESTART_OPEN_SESSION): _S.OPEN_SESSION,
    (_S.RAKP2, _I.RECV_RAKP2_OK): _S.RAKP4,
    (_S.RAKP4, _I.RECV_RAKP4_OK): _S.PRIVILEGE,
    (_S.RAKP4, _I.SKIP_PRIVILEGE): _S.ESTABLISHED,
    (_S.PRIVILEGE, _I.RECV_PRIVILEGE_OK): _S.ESTABLISHED,
    **{(s, _I.CLOSE): _S.TERMINATED for s in (_S.IDLE, *_HANDSHAKE, _S.ESTABLISHED)},
    **{(s, _I.FAIL): _S.TERMINATED for s in (_S.IDLE, *_HANDSHAKE, _S.ESTABLISHED)},
}


class _ReplyVerdict(Enum):
    ANSWER = auto()  # answers our outstanding setup message
    UNVERIFIED_ERROR = auto()  # an error reply without a SIDm: held (module docstring)
    STALE = auto()  # another attempt's answer, or forged: dropped


_SetupReply = codec.OpenSessionResponse | codec.Rakp2 | codec.Rakp4


@dataclass(slots=True)
class _Pending:
    """One IPMI request waiting for its response."""

    request_id: int
    netfn: int
    cmd: int
    rq_seq: int
    data: bytes
    deadline: float
    tries: int = 1
    internal: bool = False  # Set Session Privilege Level, answered inside the core


class ClientSession:
    """The client half of an RMCP+ session with one BMC (see the module docstring)."""

    def __init__(self, target: BmcTarget, *, random: Callable[[int], bytes] = os.urandom,
                 logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log) -> None:
        self.target = target
        self._random = random
        self._log = logger
        self.state = SessionState.IDLE
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.last_received: float | None = None
        self.privilege: Privilege = Privilege.USER
        self.suite: CipherSuite | None = None
        self.console_session_id = 0
        self.bmc_session_id = 0
        self._events: deque[SessionEvent] = deque()
        self._out: list[bytes] = []
        # handshake
        self._suites: list[int] = []
        self._suite_index = 0
        self._attempts = 0  # Open Session attempts for the current suite / auth caps sends
        self._handshake_deadline: float | None = None
        self._auth_caps_data = bytes((0x80 | CURRENT_CHANNEL, target.privilege))
        self._tag = 0  # drawn at random in start()
        self._held_error_reply: _SetupReply | None = None
        self._rm = b""
        self._rakp1_role = 0
        self._kg_required = False
        self._sik = b""
        self._guid = b""
        self._pending_protector: PacketProtector | None = None
        # established
        self._protector: PacketProtector | None = None
        self._outbound = OutboundCounter()
        self._window = ReplayWindow()
        self._pending: dict[int, _Pending] = {}  # by rqSeq
        self._next_rq_seq = 0
        self._next_request_id = 1
        self._privilege_wanted: Privilege = target.privilege
        self._check_checksums = WORKAROUND_NO_CHECKSUM not in target.workarounds

    # ------------------------------------------------------------------ outputs

    def datagrams_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        if self.state is _TERMINATED:
            return None
        deadline = self._handshake_deadline
        for p in self._pending.values():
            if deadline is None or p.deadline < deadline:
                deadline = p.deadline
        return deadline

    @property
    def quiet(self) -> bool:
        """Established, with nothing queued to send or to report: the state the compiled
        fast path (fastpath.py) may take the sequence numbers over in."""
        return self.state is _ESTABLISHED and not self._out and not self._events

    def sequence_state(self) -> tuple[ReplayWindow, int]:
        """The replay window and the last outbound sequence number, for the fast path."""
        return self._window, self._outbound.value

    def set_sequence_state(self, highest: int | None, seen: int, outbound: int) -> None:
        """The sequence numbers back from the fast path."""
        self._window.restore(highest, seen)
        self._outbound.value = outbound

    @property
    def protector(self) -> PacketProtector | None:
        """The established session's packet keys (None before, and on suite 0's clear)."""
        return self._protector

    @property
    def established(self) -> bool:
        return self.state is _ESTABLISHED

    @property
    def terminated(self) -> bool:
        return self.state is _TERMINATED

    # ------------------------------------------------------------------ commands

    def start(self, now: float) -> None:
        """Begin the handshake; `SessionEstablished` or `SessionTerminated` follows."""
        if self.state is not SessionState.IDLE:
            raise LocalProtocolError(f"start() in state {self.state.name}")
        # A guessable tag lets one forged error reply end the handshake (module docstring).
        self._tag = self._random(1)[0]
        try:
            self._suites = self._usable_suites()
        except SolgateError as exc:
            self._fail(exc)
            return
        if WORKAROUND_SKIP_AUTH_CAPS in self.target.workarounds:
            self._move(SessionInput.START_WITHOUT_AUTH_CAPS)
            self._attempts = 0
            self._send_open_session(now)
        else:
            self._move(SessionInput.START)
            self._send_auth_caps(now)

    def send_request(self, netfn: int, cmd: int, data: bytes, now: float) -> int:
        """Queue an IPMI request; its answer comes as `ResponseReceived(request_id, ...)`."""
        if self.state is not _ESTABLISHED:
            raise LocalProtocolError(f"send_request() in state {self.state.name}")
        return self._request(netfn, cmd, data, now).request_id

    def send_sol(self, payload: bytes, now: float) -> None:
        """Seal and queue one SOL payload (header + characters, built by `sol.py`)."""
        if self.state is not _ESTABLISHED:
            raise LocalProtocolError(f"send_sol() in state {self.state.name}")
        self._seal(PayloadType.SOL, payload)

    def close(self, now: float) -> None:
        """Send Close Session once (no retry, no wait) and terminate."""
        if self.state is _TERMINATED:
            return
        if self._protector is not None:
            msg = IpmiMessage(NetFn.APP, Command.CLOSE_SESSION, self._take_rq_seq(),
                              self.bmc_session_id.to_bytes(4, "little"))
            self._seal(PayloadType.IPMI, codec.encode_ipmi_message(msg))
        self._pending.clear()
        self._handshake_deadline = None
        self._move(SessionInput.CLOSE)
        self._events.append(SessionTerminated("closed", None))

    # ------------------------------------------------------------------ timers

    def handle_timeout(self, now: float) -> None:
        if self.state is _TERMINATED:
            return
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._handshake_deadline = None
            held, self._held_error_reply = self._held_error_reply, None
            if held is not None:
                self._log.debug("%s: no genuine answer came; acting on the error reply "
                                "without a SIDm", self.target.label)
                self._setup_answered(held, now)
            else:
                self._handshake_timeout(now)
            if self.terminated:
                return
        for p in [p for p in self._pending.values() if now >= p.deadline]:
            if p.tries < self.target.max_tries:
                p.tries += 1
                p.deadline = now + self.target.retransmit_timeout
                self._seal_request(p)
                continue
            del self._pending[p.rq_seq]
            error = errors.request_timeout(self.target, p.tries, command_name(p.netfn, p.cmd))
            if p.internal:
                self._fail(error)
                return
            self._events.append(RequestTimedOut(p.request_id, error))

    def _handshake_timeout(self, now: float) -> None:
        if self._attempts >= self.target.max_tries:
            step = ("Get Channel Authentication Capabilities"
                    if self.state is SessionState.AUTH_CAPS else _STEP_NAMES[self.state])
            self._fail(errors.handshake_timeout(self.target, self._attempts, step))
        elif self.state is SessionState.AUTH_CAPS:
            self._send_auth_caps(now)
        else:
            self._log.debug("%s: no answer in %s, restarting from Open Session",
                            self.target.label, self.state.name)
            self._move(SessionInput.RESTART_OPEN_SESSION)
            self._send_open_session(now)

    # ------------------------------------------------------------------ receive

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Take one datagram from the BMC. Never raises for anything the BMC sent."""
        state = self.state
        if state is _TERMINATED or state is _IDLE:
            self._drop("unexpected")
        elif len(data) < 4 + 10:  # shorter than any IPMI 1.5 or RMCP+ header
            self._drop("malformed")
        elif self._protector is not None and data[4] == codec.AUTH_TYPE_RMCPPLUS:
            self._receive_session_packet(data, now)
        elif state is SessionState.AUTH_CAPS:
            self._receive_auth_caps(data, now)
        elif state in (SessionState.OPEN_SESSION, SessionState.RAKP2, SessionState.RAKP4):
            self._receive_setup(data, now)
        else:
            self._drop("unexpected")

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def _receive_session_packet(self, data: bytes, now: float) -> None:
        protector = self._protector
        assert protector is not None  # noqa: S101 - checked by the caller
        if int.from_bytes(data[6:10], "little") != self.console_session_id:
            self._drop("unexpected")
            return
        try:
            ptype, seq, payload = protector.unseal(data)
        except ProtocolError:
            try:
                codec.decode_rmcpplus_header(data)
            except ProtocolError:
                self._drop("malformed")
            else:
                self._drop("unauthenticated")
            return
        if not self._window.accept(seq):
            self._drop("replayed")
            return
        self.last_received = now
        if ptype == _SOL and self.state is _ESTABLISHED:
            self._events.append(SolPayloadReceived(payload))
        elif ptype == _IPMI:
            self._receive_ipmi(payload, now)
        else:
            self._drop("unexpected")

    def _receive_ipmi(self, payload: bytes, now: float) -> None:
        try:
            msg = codec.decode_ipmi_message(payload, check_checksums=self._check_checksums)
        except ProtocolError:
            self._drop("malformed")
            return
        if not msg.is_response:
            self._log.debug("%s: ignoring unsolicited request netfn 0x%02x cmd 0x%02x",
                            self.target.label, msg.netfn, msg.cmd)
            self._drop("unsolicited")
            return
        pending = self._pending.get(msg.rq_seq)
        if pending is None or pending.netfn | 1 != msg.netfn or pending.cmd != msg.cmd:
            self._drop("unexpected")
            return
        if msg.completion_code == CompletionCode.DUPLICATE_REQUEST:
            self._drop("duplicate")
            return
        del self._pending[msg.rq_seq]
        if pending.internal:
            self._privilege_answered(msg, now)
        else:
            self._events.append(ResponseReceived(pending.request_id, msg))

    # ------------------------------------------------------------------ handshake steps

    def _usable_suites(self) -> list[int]:
        target = self.target
        if not target.cipher_suites:
            raise errors.no_suites(target)
        for cs in target.cipher_suites:
            suite = CIPHER_SUITES.get(cs)
            if suite is None:
                raise errors.unsupported_suite(target, cs)
            if not suite.secure and not target.allow_insecure:
                raise errors.insecure_suite(target, cs)
        return list(target.cipher_suites)

    def _send_auth_caps(self, now: float) -> None:
        self._attempts += 1
        msg = IpmiMessage(NetFn.APP, Command.GET_CHANNEL_AUTH_CAPABILITIES, _AUTH_CAPS_RQ_SEQ,
                          self._auth_caps_data)
        self._out.append(codec.encode_ipmi15(codec.Ipmi15Packet(codec.encode_ipmi_message(msg))))
        self._handshake_deadline = now + self.target.retransmit_timeout

    def _receive_auth_caps(self, data: bytes, now: float) -> None:
        try:
            msg = codec.decode_ipmi_message(codec.decode_ipmi15(data).message,
                                            check_checksums=self._check_checksums)
            if (msg.netfn != NetFn.APP | 1 or msg.cmd != Command.GET_CHANNEL_AUTH_CAPABILITIES
                    or msg.rq_seq != _AUTH_CAPS_RQ_SEQ):
                self._drop("unexpected")
                return
            cc = msg.completion_code
            caps = codec.decode_channel_auth_capabilities(msg.body) if cc == 0 else None
        except ProtocolError:
            self._drop("malformed")
            return
        if caps is None:
            if self._auth_caps_data[0] & 0x80:
                # Some BMCs refuse the "IPMI v2.0 extended data" bit: ask without it.
                self._auth_caps_data = bytes((CURRENT_CHANNEL, self.target.privilege))
                self._attempts = 0
                self._send_auth_caps(now)
                return
            self._log.debug("%s: Get Channel Authentication Capabilities failed with %s",
                            self.target.label, CompletionCode.describe(cc))
        elif (caps.ipmi20_extended and not caps.supports_ipmi20
              and WORKAROUND_AUTHCAP not in self.target.workarounds):
            self._fail(errors.no_ipmi20(self.target))
            return
        else:
            self._kg_required = caps.kg_set and WORKAROUND_AUTHCAP not in self.target.workarounds
        self._move(SessionInput.RECV_AUTH_CAPS)
        self._attempts = 0
        self._send_open_session(now)

    def _next_tag(self) -> int:
        self._tag = (self._tag + 1) & 0xFF
        self._held_error_reply = None  # it answered the previous message, not this one
        return self._tag

    def _nonzero_session_id(self) -> int:
        for _ in range(16):
            sidm = int.from_bytes(self._random(4), "little")
            if sidm:
                return sidm
        raise LocalProtocolError("the random source returned only zeros")

    def _send_open_session(self, now: float) -> None:
        self._attempts += 1
        suite = CIPHER_SUITES[self._suites[self._suite_index]]
        self.suite = suite
        self.console_session_id = self._nonzero_session_id()
        if WORKAROUND_OPEN_SESSION_PRIV_HIGHEST in self.target.workarounds:
            priv = Privilege.HIGHEST
        else:
            priv = self._privilege_wanted
        req = codec.OpenSessionRequest(
            tag=self._next_tag(), privilege=priv, console_session_id=self.console_session_id,
            auth_alg=suite.auth, integrity_alg=suite.integrity, conf_alg=suite.confidentiality,
        )
        self._out.append(codec.encode_unauthenticated(
            PayloadType.OPEN_SESSION_REQUEST, codec.encode_open_session_request(req)))
        self._handshake_deadline = now + self.target.retransmit_timeout

    def _setup_payload(self, data: bytes, expected: PayloadType) -> bytes | None:
        """The payload of a session-setup datagram of type `expected`, or None (dropped)."""
        try:
            header, payload = codec.decode_unauthenticated(data)
        except ProtocolError:
            self._drop("malformed")
            return None
        if header.payload_type != expected or header.session_id != 0:
            self._drop("unexpected")
            return None
        return payload

    def _receive_setup(self, data: bytes, now: float) -> None:
        expected = {
            SessionState.OPEN_SESSION: PayloadType.OPEN_SESSION_RESPONSE,
            SessionState.RAKP2: PayloadType.RAKP_2,
            SessionState.RAKP4: PayloadType.RAKP_4,
        }[self.state]
        payload = self._setup_payload(data, expected)
        if payload is None:
            return
        reply: _SetupReply
        try:
            if expected is PayloadType.OPEN_SESSION_RESPONSE:
                reply = codec.decode_open_session_response(payload)
            elif expected is PayloadType.RAKP_2:
                reply = codec.decode_rakp2(payload)
            else:
                reply = codec.decode_rakp4(payload)
        except ProtocolError:
            self._drop("malformed")
            return
        match self._judge_reply(reply.tag, reply.console_session_id, reply.status):
            case _ReplyVerdict.ANSWER:
                self._setup_answered(reply, now)
            case _ReplyVerdict.UNVERIFIED_ERROR:
                self._log.debug("%s: holding a %s error reply without a SIDm (%s) until the "
                                "retransmit deadline", self.target.label, self.state.name,
                                RakpStatus.describe(reply.status))
                self._held_error_reply = reply
            case _ReplyVerdict.STALE:
                self._drop("unexpected")

    def _judge_reply(self, tag: int, sidm: int, status: int) -> _ReplyVerdict:
        """Check every field a setup reply carries against our outstanding message.

        Another tag, or a SIDm that is not ours, is an answer to an earlier attempt (or a
        forgery): stale. An error reply with no SIDm (absent or zero) cannot be tied to
        this attempt, so it is only believed if nothing genuine answers in time.
        """
        if tag != self._tag:
            return _ReplyVerdict.STALE
        if sidm == self.console_session_id:
            return _ReplyVerdict.ANSWER
        if status != RakpStatus.NO_ERRORS and sidm == 0:
            return _ReplyVerdict.UNVERIFIED_ERROR
        return _ReplyVerdict.STALE

    def _setup_answered(self, reply: _SetupReply, now: float) -> None:
        match reply:
            case codec.OpenSessionResponse():
                self._open_session_answered(reply, now)
            case codec.Rakp2():
                self._rakp2_answered(reply, now)
            case codec.Rakp4():
                self._rakp4_answered(reply, now)

    def _open_session_answered(self, osr: codec.OpenSessionResponse, now: float) -> None:
        label = self.target.label
        suite = self.suite
        assert suite is not None  # noqa: S101 - set when Open Session was sent
        if osr.status in SUITE_REJECTED:
            self._log.info("%s: cipher suite %d refused at Open Session (%s)", label, suite.id,
                           RakpStatus.describe(osr.status))
            if self._suite_index + 1 < len(self._suites):
                self._suite_index += 1
                self._attempts = 0
                self._move(SessionInput.RESTART_OPEN_SESSION)
                self._send_open_session(now)
                return
            self._fail(errors.no_suite_accepted(self.target, self._suites, osr.status))
            return
        if osr.status != RakpStatus.NO_ERRORS:
            self._fail(errors.status_error(self.target, "Open Session", osr.status,
                                           self._privilege_wanted))
            return
        if (osr.auth_alg, osr.integrity_alg, osr.conf_alg) != (
                suite.auth, suite.integrity, suite.confidentiality) or not osr.bmc_session_id:
            self._fail(errors.other_algorithms(
                self.target, suite.id, (osr.auth_alg, osr.integrity_alg, osr.conf_alg)))
            return
        if not suite.secure:
            self._log.warning("%s: using insecure cipher suite %d (allowed by configuration): "
                              "console traffic can be forged", label, suite.id)
        self.bmc_session_id = osr.bmc_session_id
        self._rm = self._random(16)
        self._rakp1_role = self._privilege_wanted | NAME_ONLY_LOOKUP
        rakp1 = codec.Rakp1(tag=self._next_tag(), bmc_session_id=self.bmc_session_id,
                            console_random=self._rm, role=self._rakp1_role,
                            username=self.target.username)
        self._out.append(codec.encode_unauthenticated(PayloadType.RAKP_1,
                                                      codec.encode_rakp1(rakp1)))
        self._handshake_deadline = now + self.target.retransmit_timeout
        self._move(SessionInput.RECV_OPEN_SESSION_OK)

    def _rakp2_answered(self, rakp2: codec.Rakp2, now: float) -> None:
        target, suite = self.target, self.suite
        assert suite is not None  # noqa: S101
        if rakp2.status != RakpStatus.NO_ERRORS:
            self._fail(errors.status_error(target, "RAKP2", rakp2.status,
                                           self._privilege_wanted))
            return
        kuid = password_key(target.password)
        expected = rakp2_auth_code(suite.auth, kuid, self.console_session_id,
                                   self.bmc_session_id, self._rm, rakp2.bmc_random,
                                   rakp2.bmc_guid, self._rakp1_role, target.username)
        got = rakp2.key_exchange_code
        if (len(got) == len(expected) + 1
                and any(w in target.workarounds for w in WORKAROUND_RAKP2_LONG)):
            got = got[: len(expected)]
        if not constant_time_equal(got, expected):
            # Tell the BMC we refuse it, then stop (digest section 9).
            rakp3 = codec.Rakp3(self._next_tag(), RakpStatus.INVALID_INTEGRITY_CHECK_VALUE,
                                self.bmc_session_id)
            self._out.append(codec.encode_unauthenticated(PayloadType.RAKP_3,
                                                          codec.encode_rakp3(rakp3)))
            self._fail(errors.rakp2_mismatch(target))
            return
        auth = suite.auth
        sik = session_integrity_key(auth, kuid, target.kg, self._rm, rakp2.bmc_random,
                                    self._rakp1_role, target.username)
        self._sik, self._guid = sik, rakp2.bmc_guid
        k1, k2 = derive_k1_k2(auth, sik)
        self._pending_protector = PacketProtector(suite, k1, k2, self._random)
        code = rakp3_auth_code(auth, kuid, self.console_session_id, rakp2.bmc_random,
                               self._rakp1_role, target.username)
        rakp3 = codec.Rakp3(self._next_tag(), RakpStatus.NO_ERRORS, self.bmc_session_id, code)
        self._out.append(codec.encode_unauthenticated(PayloadType.RAKP_3,
                                                      codec.encode_rakp3(rakp3)))
        self._handshake_deadline = now + self.target.retransmit_timeout
        self._move(SessionInput.RECV_RAKP2_OK)

    def _rakp4_answered(self, rakp4: codec.Rakp4, now: float) -> None:
        suite = self.suite
        assert suite is not None  # noqa: S101
        if rakp4.status != RakpStatus.NO_ERRORS:
            self._fail(errors.status_error(self.target, "RAKP4", rakp4.status,
                                           self._privilege_wanted))
            return
        expected = rakp4_icv(suite.auth, self._sik, self._rm, self.bmc_session_id, self._guid)
        if suite.auth == AuthAlgorithm.NONE and self.target.allow_insecure:
            expected = rakp4.integrity_check_value  # nothing to check without keys
        if not constant_time_equal(rakp4.integrity_check_value, expected):
            self._fail(errors.rakp4_mismatch(self.target, self._kg_required))
            return
        self._handshake_deadline = None
        self._protector = self._pending_protector
        self._outbound = OutboundCounter()
        self._window = ReplayWindow()
        self.last_received = now
        if self._privilege_wanted <= Privilege.USER:
            self.privilege = self._privilege_wanted
            self._move(SessionInput.SKIP_PRIVILEGE)
            self._established()
            return
        self._move(SessionInput.RECV_RAKP4_OK)
        self._request_privilege(now)

    def _request_privilege(self, now: float) -> None:
        p = self._request(NetFn.APP, Command.SET_SESSION_PRIVILEGE_LEVEL,
                          bytes((self._privilege_wanted,)), now)
        p.internal = True

    def _privilege_answered(self, msg: IpmiMessage, now: float) -> None:
        cc = msg.completion_code
        label, wanted = self.target.label, self._privilege_wanted
        if cc == CompletionCode.OK:
            self.privilege = wanted
            self._move(SessionInput.RECV_PRIVILEGE_OK)
            self._established()
            return
        if cc in PRIVILEGE_REFUSED and wanted == Privilege.ADMINISTRATOR:
            self._log.warning("%s refused ADMINISTRATOR privilege (%s); trying OPERATOR",
                              label, CompletionCode.describe(cc))
            self._privilege_wanted = Privilege.OPERATOR
            self._request_privilege(now)
            return
        self._fail(errors.privilege_refused(self.target, wanted, cc))

    def _established(self) -> None:
        suite = self.suite
        assert suite is not None  # noqa: S101
        self._log.info("%s: session established (cipher suite %d, %s)", self.target.label,
                       suite.id, self.privilege.name)
        self._events.append(SessionEstablished(suite.id, self.bmc_session_id, self.privilege))

    # ------------------------------------------------------------------ plumbing

    def _move(self, event: SessionInput) -> None:
        try:
            self.state = _TRANSITIONS[(self.state, event)]
        except KeyError:
            old, self.state = self.state, SessionState.TERMINATED
            raise LocalProtocolError(f"no transition from {old.name} on {event.name}") from None

    def _fail(self, error: SolgateError) -> None:
        self._log.debug("%s: session failed: %s", self.target.label, error)
        self._pending.clear()
        self._handshake_deadline = None
        self._move(SessionInput.FAIL)
        step = getattr(error, "step", "")
        self._events.append(SessionTerminated(f"failed at {step}" if step else "failed", error))

    def _take_rq_seq(self) -> int:
        for _ in range(64):
            self._next_rq_seq = (self._next_rq_seq + 1) & 0x3F
            if self._next_rq_seq not in self._pending:
                return self._next_rq_seq
        raise LocalProtocolError("64 IPMI requests are already outstanding")

    def _request(self, netfn: int, cmd: int, data: bytes, now: float) -> _Pending:
        pending = _Pending(self._next_request_id, netfn, cmd, self._take_rq_seq(), bytes(data),
                           now + self.target.retransmit_timeout)
        self._next_request_id += 1
        self._pending[pending.rq_seq] = pending
        self._seal_request(pending)
        return pending

    def _seal_request(self, p: _Pending) -> None:
        msg = IpmiMessage(p.netfn, p.cmd, p.rq_seq, p.data)
        self._seal(PayloadType.IPMI, codec.encode_ipmi_message(msg))

    def _seal(self, payload_type: int, payload: bytes) -> None:
        protector = self._protector
        assert protector is not None  # noqa: S101 - only called with keys
        self._out.append(protector.seal(payload_type, self.bmc_session_id,
                                        self._outbound.next(), payload))


_STEP_NAMES = {
    SessionState.OPEN_SESSION: "Open Session",
    SessionState.RAKP2: "RAKP1/RAKP2",
    SessionState.RAKP4: "RAKP3/RAKP4",
}
