"""Users, roles and what each may do on a console: one rule for every front end.

Theory of operation
-------------------
Users live in the configuration, one `[users.NAME]` table each::

    [users.alice]
    password_hash = "scrypt$16384$8$1$<salt>$<hash>"   # from `solgate passwd`
    role = "operator"                  # viewer | operator | admin
    consoles = ["web*", "db01"]        # shell-style patterns of console names
    tags = ["rack12"]                  # or any console carrying one of these tags
    api_tokens = ["sha256$<hex>"]      # hashes of bearer tokens for scripts
    ssh_keys = ["ssh-ed25519 AAAA..."] # keys solgate.ssh turns into logins

`solgate.config.users` reads these tables into `User`s when the file is loaded.
A user sees a console when its name matches one of `consoles` or it carries one of
`tags`; a user with neither key sees every console (a small site's natural default),
and `consoles = []` with no tags sees none.  Roles are ordered: a viewer watches, an
operator also types (once holding the write lock), sends BREAK and forces a
deactivate; an admin also runs power actions.  The rules take a console's name and
tags, so the web, the ssh gateway and the live re-checks of `solgate.access` share
them without knowing each other.

Passwords are stored as stdlib scrypt hashes with a random salt; verification is
constant-time and an unknown user costs the same as a wrong password
(`password_matches`).  Bearer tokens are random strings of which only a SHA-256 hash
is stored (they carry 256 bits of entropy, so a slow hash adds nothing).
"""

from __future__ import annotations

import base64
import enum
import fnmatch
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from solgate.errors import ConfigError

__all__ = [
    "LOCAL_USER",
    "TOKEN_PREFIX",
    "Role",
    "User",
    "hash_api_token",
    "hash_password",
    "new_api_token",
    "is_password_hash",
    "password_matches",
    "verify_password",
]

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAX_N = 2**20  # refuse absurd cost parameters from a hand-edited hash
SALT_BYTES = 16
HASH_BYTES = 32
TOKEN_PREFIX = "sgt_"  # noqa: S105 - a marker, not a secret

class Role(enum.IntEnum):
    """What a user may do; higher includes lower."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
        maxmem=256 * r * n + 1024 * 1024, dklen=HASH_BYTES,
    )


def hash_password(
    password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> str:
    """Hash a password for `[users.NAME] password_hash` (used by `solgate passwd`)."""
    if not password:
        raise ConfigError("an empty password cannot be hashed; choose a password")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not an scrypt$n$r$p$salt$hash string")
    n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    if not (2 <= n <= SCRYPT_MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt cost parameters out of range")
    return n, r, p, _unb64(parts[4]), _unb64(parts[5])


def is_password_hash(encoded: object) -> bool:
    """Whether `encoded` is a hash `solgate passwd` could have written."""
    if not isinstance(encoded, str):
        return False
    try:
        _parse_hash(encoded)
    except ValueError:
        return False
    return True


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches the stored hash; malformed hashes never match."""
    try:
        n, r, p, salt, expected = _parse_hash(encoded)
    except ValueError:
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), expected)


# Verified against when the user does not exist, so timing does not reveal user names: the
# default cost, a random salt and a random digest no password yields. Built without running
# scrypt, so importing this module (and so loading the configuration) costs no hash.
_DUMMY_HASH = (f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
               f"{_b64(secrets.token_bytes(SALT_BYTES))}${_b64(secrets.token_bytes(HASH_BYTES))}")


def password_matches(user: User | None, password: str) -> bool:
    """Whether `password` is `user`'s (blocking: scrypt); costs the same when there is no
    such user or it has no password, so timing does not reveal user names."""
    stored = user.password_hash if user is not None else ""
    ok = verify_password(password, stored or _DUMMY_HASH)
    return user is not None and bool(stored) and ok


def hash_api_token(token: str) -> str:
    """The form of a bearer token stored in `[users.NAME] api_tokens`."""
    return "sha256$" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_api_token() -> tuple[str, str]:
    """A fresh bearer token and the hash to put in the configuration."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_api_token(token)


@dataclass(frozen=True)
class User:
    """A configured user (or the implicit admin "local" when auth is off)."""

    name: str
    role: Role
    password_hash: str = ""
    consoles: tuple[str, ...] | None = None  # None: no restriction by name given
    tags: tuple[str, ...] = ()
    api_token_hashes: frozenset[str] = frozenset()
    # Public keys for the ssh gateway, as written: key lines, and a file of them.
    ssh_keys: tuple[str, ...] = ()
    authorized_keys: Path | None = None

    def can_view(self, console: str, tags: Sequence[str] = ()) -> bool:
        """Whether the user may see the console named `console`, carrying `tags`, at all."""
        if self.role >= Role.ADMIN:
            return True
        if self.consoles is None and not self.tags:
            return True
        if any(fnmatch.fnmatchcase(console, pat) for pat in self.consoles or ()):
            return True
        return any(tag in self.tags for tag in tags)

    def can_write(self, console: str, tags: Sequence[str] = ()) -> bool:
        """Whether the user may type, send BREAK and force a deactivate."""
        return self.role >= Role.OPERATOR and self.can_view(console, tags)

    def can_power(self, console: str, tags: Sequence[str] = ()) -> bool:
        """Whether the user may run power actions that change state."""
        return self.role >= Role.ADMIN and self.can_view(console, tags)

    @property
    def sees_bmc_details(self) -> bool:
        """Whether state details (BMC address, port, IPMI user) are shown: operators up."""
        return self.role >= Role.OPERATOR

    @property
    def is_admin(self) -> bool:
        return self.role >= Role.ADMIN


LOCAL_USER = User(name="local", role=Role.ADMIN)
