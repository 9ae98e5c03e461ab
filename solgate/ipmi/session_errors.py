"""The errors `ClientSession` ends a session with, worded for an operator.

Kept apart from the state machine so the wording (which names the BMC, the step and the
wire code, and says what to do) can be read and changed in one place. Never put a
password, K_g or key into these messages.
"""

from __future__ import annotations

from solgate.errors import (
    AuthenticationError,
    BmcError,
    CipherSuiteError,
    InsecureCipherSuiteError,
    PrivilegeError,
    SolgateTimeoutError,
)
from solgate.ipmi.codec import CompletionCode, Privilege, RakpStatus
from solgate.ipmi.target import BmcTarget

# RMCP+ statuses that are about the privilege or role asked for.
PRIVILEGE_STATUSES = frozenset({
    RakpStatus.INVALID_ROLE,
    RakpStatus.UNAUTHORIZED_ROLE_OR_PRIVILEGE,
    RakpStatus.INSUFFICIENT_RESOURCES_FOR_ROLE,
})
_CONFIG = "configuration"


def user_of(target: BmcTarget) -> str:
    return repr(target.username.decode("utf-8", "replace"))


def no_suites(target: BmcTarget) -> CipherSuiteError:
    return CipherSuiteError(f"no cipher suites configured for {target.label}",
                            host=target.label, step=_CONFIG)


def unsupported_suite(target: BmcTarget, cs: int) -> CipherSuiteError:
    return CipherSuiteError(
        f"cipher suite {cs} for {target.label} is not supported by solgate: use 17 or 3",
        host=target.label, step=_CONFIG, code=cs)


def insecure_suite(target: BmcTarget, cs: int) -> InsecureCipherSuiteError:
    return InsecureCipherSuiteError(
        f"cipher suite {cs} for {target.label} has no authentication or no integrity and "
        "is refused: use 17 or 3, or allow insecure cipher suites for this console",
        host=target.label, step=_CONFIG, code=cs)


def handshake_timeout(target: BmcTarget, tries: int, step: str) -> SolgateTimeoutError:
    return SolgateTimeoutError(
        f"no answer from {target.label} after {tries} tries ({step}): check host/port and "
        "that IPMI over LAN is enabled", host=target.label, step=step)


def request_timeout(target: BmcTarget, tries: int, command: str) -> SolgateTimeoutError:
    return SolgateTimeoutError(
        f"no answer from {target.label} to {command} after {tries} tries: the BMC or the "
        "network may be down", host=target.label, step=command)


def no_ipmi20(target: BmcTarget) -> BmcError:
    return BmcError(
        f"{target.label} does not offer IPMI v2.0 (RMCP+) on this channel: enable IPMI over "
        "LAN (v2.0) in the BMC settings", host=target.label,
        step="Get Channel Authentication Capabilities")


def no_suite_accepted(target: BmcTarget, suites: list[int], status: int) -> CipherSuiteError:
    tried = ", ".join(str(s) for s in suites)
    # 0x01 is also how most BMCs say their session table is full; some use it for a suite.
    full = ("its session table may be full: close idle IPMI sessions on it (or wait for "
            "them to time out) and retry; otherwise "
            if status == RakpStatus.INSUFFICIENT_RESOURCES else "")
    return CipherSuiteError(
        f"{target.label} accepted none of cipher suites {tried} (Open Session status "
        f"{RakpStatus.describe(status)}): {full}enable one of them on the BMC or list a "
        "cipher suite it supports for this console",
        host=target.label, step="Open Session", code=status)


def other_algorithms(target: BmcTarget, cs: int, algorithms: tuple[int, int, int]
                     ) -> CipherSuiteError:
    return CipherSuiteError(
        f"{target.label} answered Open Session for cipher suite {cs} with other algorithms "
        f"({'/'.join(str(a) for a in algorithms)}): list another cipher suite for this "
        "console", host=target.label, step="Open Session")


def rakp2_mismatch(target: BmcTarget) -> AuthenticationError:
    return AuthenticationError(
        f"{target.label} rejected the password for user {user_of(target)} (RAKP2 auth code "
        "does not match: wrong password, or the BMC failed to prove it knows it): check "
        "the password for this console",
        host=target.label, step="RAKP2", code=RakpStatus.INVALID_INTEGRITY_CHECK_VALUE)


def rakp4_mismatch(target: BmcTarget, kg_required: bool) -> AuthenticationError:
    hint = ("the BMC requires a K_g (BMC key): configure it for this console"
            if kg_required and not target.kg else "check the K_g (BMC key) for this console")
    return AuthenticationError(
        f"{target.label} failed to prove it derived the session key (RAKP4 integrity check "
        f"value does not match): {hint}",
        host=target.label, step="RAKP4", code=RakpStatus.INVALID_INTEGRITY_CHECK_VALUE)


def privilege_refused(target: BmcTarget, wanted: int, cc: int) -> PrivilegeError:
    return PrivilegeError(
        f"{target.label} refused privilege {Privilege.describe(wanted)} for user "
        f"{user_of(target)} (Set Session Privilege Level {CompletionCode.describe(cc)}): "
        "give the user that privilege on the BMC, or configure a lower privilege",
        host=target.label, step="Set Session Privilege Level", code=cc)


def status_error(target: BmcTarget, step: str, status: int, wanted: int) -> BmcError:
    """The error for a non-zero RMCP+ status in Open Session, RAKP2 or RAKP4."""
    label, user = target.label, user_of(target)
    desc = RakpStatus.describe(status)
    if status == RakpStatus.UNAUTHORIZED_NAME:
        return AuthenticationError(
            f"{label} does not know user {user} ({step} status {desc}): check the username "
            "for this console", host=label, step=step, code=status)
    if status == RakpStatus.INVALID_INTEGRITY_CHECK_VALUE:
        return AuthenticationError(
            f"{label} rejected the password for user {user} ({step} status {desc}): check "
            "the password for this console", host=label, step=step, code=status)
    if status in PRIVILEGE_STATUSES:
        return PrivilegeError(
            f"{label} refused privilege {Privilege.describe(wanted)} for user {user} ({step} "
            f"status {desc}): give the user that privilege on the BMC, or configure a lower "
            "privilege", host=label, step=step, code=status)
    return BmcError(f"{label} refused the session ({step} status {desc}): check the BMC's "
                    "LAN settings and session limits", host=label, step=step, code=status)
