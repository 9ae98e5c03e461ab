"""One error hierarchy for solgate, so the CLI can print one line an operator can act on.

Every exception solgate raises on purpose descends from `SolgateError`. Errors about a BMC
carry `host`, `step` and `code`, and their message says what to do next.
"""

from __future__ import annotations


class SolgateError(Exception):
    """Base of every error solgate raises deliberately."""


class ConfigError(SolgateError):
    """The configuration file or a command-line value is wrong; the message names the fix."""


class ProtocolError(SolgateError):
    """A peer sent bytes we cannot accept; receive paths drop and count these, never raise."""


class LocalProtocolError(SolgateError):
    """solgate called a protocol core the wrong way: a bug in solgate, not in the BMC."""


class BmcError(SolgateError):
    """A failure talking to one BMC, naming the BMC, the protocol step and the wire code."""

    def __init__(
        self, message: str, *, host: str = "", step: str = "", code: object = None
    ) -> None:
        super().__init__(message)
        self.host = host
        self.step = step
        self.code = code


class AuthenticationError(BmcError):
    """Wrong password, unknown user, bad K_g or a BMC that failed to prove it knows the key."""


class CipherSuiteError(BmcError):
    """The BMC does not offer any cipher suite we are allowed to use."""


class InsecureCipherSuiteError(CipherSuiteError):
    """A cipher suite without authentication or integrity was asked for but not allowed."""


class PrivilegeError(BmcError):
    """The BMC refused the privilege level the console needs."""


class CommandError(BmcError):
    """An IPMI command came back with a non-zero completion code."""


class PayloadError(CommandError):
    """The SOL payload could not be activated or deactivated."""


class PayloadActiveElsewhere(PayloadError):
    """SOL is already active in another session (completion code 0x80 to Activate Payload)."""


class PayloadDisabled(PayloadError):
    """SOL is disabled on the BMC (completion code 0x81)."""


class SolgateTimeoutError(BmcError, TimeoutError):
    """The BMC did not answer after every retransmission: unreachable or wrong address."""


class SessionClosedError(BmcError):
    """The session ended (closed, timed out, or terminated) while a request was pending."""
