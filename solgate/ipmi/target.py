"""What the IPMI layer needs to know to reach one BMC, independent of solgate.toml."""

from __future__ import annotations

from dataclasses import dataclass, field

from solgate.addresses import join_host_port
from solgate.ipmi.codec import Privilege

DEFAULT_CIPHER_SUITES = (17, 3)


@dataclass(frozen=True, slots=True)
class BmcTarget:
    """One BMC and how to log in to it. `password` and `kg` are secrets: never log them."""

    host: str
    port: int = 623
    username: bytes = b""
    password: bytes = field(default=b"", repr=False)
    kg: bytes | None = field(default=None, repr=False)
    cipher_suites: tuple[int, ...] = DEFAULT_CIPHER_SUITES
    privilege: Privilege = Privilege.ADMINISTRATOR
    allow_insecure: bool = False
    # FreeIPMI workaround flag names (digest section 8.1), e.g. "solpayloadsize".
    workarounds: frozenset[str] = frozenset()
    # Seconds before an IPMI request is retransmitted, and how many tries in all.
    retransmit_timeout: float = 1.0
    max_tries: int = 4
    # Seconds; keepalives go out well under the BMC's session timeout.
    keepalive_interval: float = 20.0
    # Seconds without any packet from the BMC before the session is declared dead.
    session_timeout: float = 60.0
    name: str = ""  # the console name, for messages

    @property
    def label(self) -> str:
        """How errors name the BMC: 'BMC 10.0.0.5:623' or 'BMC web01 (10.0.0.5:623)'."""
        where = join_host_port(self.host, self.port)
        return f"BMC {self.name} ({where})" if self.name else f"BMC {where}"
