"""The ssh gateway: `ssh -p 2222 web01@gateway` and you are on web01's console.

Theory of operation
-------------------
An asyncssh server inside the daemon, next to the web server, over the same engine:
each ssh session is one hub `Attachment`, exactly like a WebSocket, with the same
users, roles and console/tag access lists (`solgate.users.User`), the same escape
parser, and the same lag policy (a slow ssh client stops draining, its hub queue
overflows, it gets a repaint instead of stalling the console).

Only public keys log in. Keys belong to users in the configuration::

    [ssh]
    listen = "127.0.0.1:2222"
    host_key = "/var/lib/solgate/ssh_host_ed25519_key"   # default: <data_dir>/...

    [users.alice]
    role = "operator"
    ssh_keys = ["ssh-ed25519 AAAA... alice@laptop"]
    authorized_keys = "/etc/solgate/keys/alice"   # or a file (no options per line)

Three login forms, decided from the ssh user name:

* `alice@gateway`: a configured user; only alice's keys; a numbered menu of the
  consoles alice may see, with their state. `~.` in a console returns to the menu.
* `alice:web01@gateway`: alice's keys, straight to web01; `~.` ends the session.
* `web01@gateway`: a console name (a user of the same name wins); any configured
  user's key whose user may see web01 is accepted, and that user is who is recorded
  (the first such user in the file when one key is shared).

The user is recorded in the hub (who holds the write lock), in the attach/detach
events of events.jsonl, and in every BREAK or forced reconnect. A viewer watches; a
keystroke it types is refused with a note, never sent. The ssh client's own BREAK
(OpenSSH `~B`) is a serial BREAK, just like our `~B` (which, behind OpenSSH, is typed
`~~B`). The host key is generated on first start (ed25519, mode 0600) with its `.pub`
beside it, so operators can pin it in known_hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.utils import CryptographyDeprecationWarning

from solgate.access import Rights, Watched, enforce, user_rights
from solgate.config.ssh import DEFAULT_LISTEN, SshConfig
from solgate.console.actions import ConsoleActions, Help, Leave, Notice, Typed
from solgate.console.attachment import (
    AccessChanged,
    Attachment,
    Closed,
    Grant,
    Lagged,
    Snapshot,
    StateChanged,
    WriteLockChanged,
)
from solgate.console.escape import EscapeParser
from solgate.console.notices import TERM_LEAVE, TERM_PREPARE, WriteLockNotices, state_notice
from solgate.errors import ConfigError, SolgateError
from solgate.users import User

with warnings.catch_warnings():
    # asyncssh's type hints name cryptography's DSA classes, deprecated since cryptography
    # 43, so importing it prints five warnings; solgate never offers or accepts DSA keys.
    warnings.filterwarnings("ignore", message="DSA is deprecated",
                            category=CryptographyDeprecationWarning)
    import asyncssh

if TYPE_CHECKING:
    from solgate.cluster.shell import ClusterMember
    from solgate.config import Config
    from solgate.console.manager import ConsoleManager

__all__ = [
    "SshGateway",
    "load_or_create_host_key",
    "parse_user_keys",
    "start_ssh_gateway",
]

log = logging.getLogger("solgate.ssh")

KEEPALIVE_INTERVAL = 30.0
KEEPALIVE_COUNT_MAX = 4
LOGIN_TIMEOUT = 60.0
READ_SIZE = 4096
BREAK = object()  # the ssh client sent a BREAK request
EOF = object()


# --- keys and host key (`[ssh]` itself is solgate.config.ssh) --------------------------------


def _import_key(text: str, where: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError, TypeError):
        raise ConfigError(f"{where} is not an OpenSSH public key; paste the whole line of "
                          "id_ed25519.pub (\"ssh-ed25519 AAAA... comment\")") from None


def _authorized_keys_file(path: Path, where: str) -> list[asyncssh.SSHKey]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} = {str(path)!r} cannot be read ({exc}); check the "
                          "path") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        first = line.split(None, 1)[0]
        if not first.startswith(("ssh-", "ecdsa-", "sk-")):
            raise ConfigError(f"{where} {path} line {number} has options or is not a key; "
                              "solgate does not apply authorized_keys options: remove them")
        keys.append(_import_key(line, f"{where} {path} line {number}"))
    return keys


def parse_user_keys(config: Config) -> dict[str, tuple[asyncssh.SSHKey, ...]]:
    """Each user's public keys from `ssh_keys` and `authorized_keys` (read now)."""
    out: dict[str, tuple[asyncssh.SSHKey, ...]] = {}
    for name, user in config.users.items():
        keys = [_import_key(text, f"[users.{name}] ssh_keys[{i}]")
                for i, text in enumerate(user.ssh_keys)]
        if user.authorized_keys is not None:
            keys.extend(_authorized_keys_file(user.authorized_keys,
                                              f"[users.{name}] authorized_keys"))
        if keys:
            out[name] = tuple(keys)
    return out


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The gateway's host key; a new ed25519 key (0600, with a .pub) if the file is missing."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        key = asyncssh.generate_private_key("ssh-ed25519")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise ConfigError(f"[ssh] host_key {path} cannot be created ({exc.strerror}); "
                              "check the directory or set [ssh] host_key") from None
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key())
        with contextlib.suppress(OSError):
            path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
        log.warning("generated the ssh host key %s (%s)", path,
                    key.get_fingerprint("sha256"))
        return key
    except OSError as exc:
        raise ConfigError(f"[ssh] host_key {path} cannot be read ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the ssh host key %s is readable by other users; chmod 600 it", path)
    try:
        return asyncssh.read_private_key(path)
    except (asyncssh.KeyImportError, OSError, ValueError) as exc:
        raise ConfigError(f"[ssh] host_key {path} is not a private key ({exc}); remove it "
                          "to have a new one generated") from None


# --- who may log in -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Directory:
    """Users and their keys from one configuration."""

    config: Config
    users: dict[str, User]
    keys: dict[bytes, list[User]]  # public key blob -> users holding it, in file order
    # (user, sha256 fingerprint) of every configured key: is a session's key still there?
    held: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def load(cls, config: Config) -> _Directory:
        users = config.users
        keys: dict[bytes, list[User]] = {}
        held: set[tuple[str, str]] = set()
        for name, user_keys in parse_user_keys(config).items():
            for key in user_keys:
                keys.setdefault(key.public_data, []).append(users[name])
                held.add((name, key.get_fingerprint("sha256")))
        return cls(config, users, keys, frozenset(held))

    def refusal(self, user: str, fingerprint: str) -> str:
        """Why a session of `user` logged in with that key may not go on, or ""."""
        if user not in self.users:
            return f"user {user} was removed from the configuration"
        if (user, fingerprint) not in self.held:
            return f"the ssh key {fingerprint} of {user} was removed from the configuration"
        return ""


@dataclass(frozen=True)
class _Target:
    user: str | None  # the user named in the login, if any
    console: str | None  # the console named in the login, if any


class _Server(asyncssh.SSHServer):
    """One ssh connection's authentication: which user, which console."""

    def __init__(self, gateway: SshGateway) -> None:
        self.gateway = gateway
        self.conn: asyncssh.SSHServerConnection | None = None
        self.target = _Target(None, None)
        self.user: User | None = None
        self.key_fingerprint = ""  # of the key the user logged in with
        self._candidate: User | None = None
        self._candidate_key = ""
        self.peer = "?"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.gateway._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.gateway._connections.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        self.target = self.gateway.resolve_login(username)
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        user = self.gateway.user_for_key(self.target, key)
        if user is None:
            return False
        self._candidate = user  # the signed attempt is the last call before success
        self._candidate_key = key.get_fingerprint("sha256")
        return True

    def auth_completed(self) -> None:
        self.user = self._candidate
        self.key_fingerprint = self._candidate_key
        log.info("ssh: %s logged in from %s", self.user.name if self.user else "?", self.peer)


class _Revoker(Protocol):
    def revoke(self, attachment: Any, why: str, /) -> object: ...


class Attached(Protocol):
    """What a session holds while attached: a local hub attachment or, in a cluster, the
    proxied socket to the owner (solgate/cluster/sshproxy.py); both resize and revoke."""

    @property
    def hub(self) -> _Revoker: ...

    def resize(self, cols: int, rows: int) -> None: ...


# --- the gateway ----------------------------------------------------------------------------


class SshGateway:
    """The listening ssh server; `stop()` ends every session and stops listening."""

    def __init__(self, config: Config, manager: ConsoleManager,
                 settings: SshConfig) -> None:
        self.manager = manager
        self.settings = settings
        self._directory = _Directory.load(config)
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._sessions: set[asyncio.Task[Any]] = set()
        self._live: set[_Session] = set()
        # The cluster member (solgate/cluster/sshproxy.py): consoles other members run.
        self.cluster: ClusterMember | None = None

    @property
    def port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        assert self._acceptor is not None
        return self._acceptor.get_port()

    async def start(self) -> None:
        host_key = load_or_create_host_key(self.settings.host_key)
        try:
            self._acceptor = await asyncssh.create_server(
                lambda: _Server(self), self.settings.host, self.settings.port,
                server_host_keys=[host_key], process_factory=self._session,
                encoding=None, line_editor=False, agent_forwarding=False,
                x11_forwarding=False, allow_scp=False, login_timeout=LOGIN_TIMEOUT,
                keepalive_interval=KEEPALIVE_INTERVAL, keepalive_count_max=KEEPALIVE_COUNT_MAX,
            )
        except OSError as exc:
            raise ConfigError(f"cannot listen for ssh on {self.settings.listen}: "
                              f"{exc.strerror or exc}; choose another [ssh] listen") from None
        log.info("ssh gateway listening on %s", self.settings.listen)

    async def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
        for conn in list(self._connections):
            conn.close()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 2.0)

    # -- authentication ------------------------------------------------------------------

    def directory(self) -> _Directory:
        """Users and keys of the running configuration (re-read after a reload)."""
        config = getattr(self.manager, "config", None)
        if config is not None and config is not self._directory.config:
            try:
                self._directory = _Directory.load(config)
            except SolgateError as exc:
                log.error("ssh: keeping the previous users and keys: %s", exc)  # noqa: TRY400
                self._directory = _Directory(config, self._directory.users,
                                             self._directory.keys, self._directory.held)
        return self._directory

    def recheck(self) -> int:
        """After a reload: end sessions whose user or key is gone, downgrade or detach the
        attachments whose user lost rights. Returns how many sessions or attachments changed.
        """
        directory = self.directory()
        changed = 0
        for session in list(self._live):
            why = directory.refusal(session.user.name, session.key_fingerprint)
            if why:
                session.end(why)
                changed += 1
            else:
                session.user = directory.users[session.user.name]

        def verdict(attachment: Attachment, console: Watched) -> Rights | None:
            grant = attachment.grant
            if grant is None or grant.how != "ssh-key":
                return None
            why = directory.refusal(attachment.user, grant.credential)
            if why:
                return Rights(False, False, why)
            return user_rights(directory.users.get(attachment.user), attachment.user,
                               console.name, console.tags)

        return changed + enforce(self.manager.consoles(), verdict)

    def resolve_login(self, username: str) -> _Target:
        if ":" in username:
            user, _, console = username.partition(":")
            return _Target(user, console)
        if username in self.directory().users:
            return _Target(username, None)
        return _Target(None, username)

    def user_for_key(self, target: _Target, key: asyncssh.SSHKey) -> User | None:
        for user in self.directory().keys.get(key.public_data, ()):
            if target.user is not None and user.name != target.user:
                continue
            if target.console is not None:
                # A console this member runs, or (in a cluster) one another member runs.
                known = (self.manager.get(target.console) is not None
                         or self.cluster is not None)
                console = self.manager.config.consoles.get(target.console) if known else None
                if console is None or not user.can_view(console.name, console.tags):
                    continue
            return user
        return None

    # -- sessions ------------------------------------------------------------------------

    async def _session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        status = 1
        try:
            server = process.get_extra_info("connection").get_owner()
            if not isinstance(server, _Server) or server.user is None:
                return  # cannot happen: asyncssh only opens sessions after auth
            status = await _Session(self, process, server.user, server.target,
                                    server.peer, server.key_fingerprint).run()
        except (asyncssh.Error, ConnectionError, BrokenPipeError):
            pass
        finally:
            self._sessions.discard(task)
            with contextlib.suppress(Exception):
                process.exit(status)


class _Session:
    """One ssh session: the menu and attachments, fed by one input reader."""

    # What `inq` carries besides bytes; code that reads `inq` elsewhere (the cluster's
    # proxy to another member) compares with these without importing this module.
    BREAK = BREAK
    EOF = EOF

    def __init__(self, gateway: SshGateway, process: asyncssh.SSHServerProcess[bytes], user: User,
                 target: _Target, peer: str, key_fingerprint: str = "") -> None:
        self.gateway = gateway
        self.key_fingerprint = key_fingerprint
        self.manager = gateway.manager
        self.process = process
        self.user = user
        self.target = target
        self.peer = peer
        size = process.term_size
        self.cols, self.rows = (size[0] or 80, size[1] or 25) if size else (80, 25)
        self.attachment: Attached | None = None
        self.inq: asyncio.Queue[Any] = asyncio.Queue()
        self._last_note = ""
        self.ended = ""  # why the gateway ended this session (its user or key went)

    # -- plumbing ------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        self.process.stdout.write(data)
        await self.process.stdout.drain()

    async def note(self, text: str) -> None:
        if text == self._last_note:
            return
        self._last_note = text
        await self.write(f"\r\n[solgate: {text}]\r\n".encode())

    def end(self, why: str) -> None:
        """The user's key or the user is gone: say why and close the session now."""
        self.ended = why
        attachment = self.attachment
        if attachment is not None:
            attachment.hub.revoke(attachment, why)
        with contextlib.suppress(Exception):
            self.process.stdout.write(TERM_LEAVE + f"\r\n[solgate: access revoked: {why}]\r\n"
                                      .encode())
        self.inq.put_nowait(EOF)  # the menu or the console loop ends with it
        log.warning("ssh: ended %s's session from %s: %s", self.user.name, self.peer, why)

    async def _reader(self) -> None:
        """The only reader of the channel: keys, BREAKs and window sizes, in order."""
        while True:
            try:
                data = await self.process.stdin.read(READ_SIZE)
            except asyncssh.TerminalSizeChanged as exc:
                self.cols, self.rows = max(exc.width, 1), max(exc.height, 1)
                if self.attachment is not None and exc.width and exc.height:
                    self.attachment.resize(exc.width, exc.height)
                continue
            except asyncssh.BreakReceived:
                await self.inq.put(BREAK)
                continue
            except asyncssh.SignalReceived:
                continue
            except (asyncssh.Error, ConnectionError):
                data = b""
            if not data:
                await self.inq.put(EOF)
                return
            await self.inq.put(data)

    async def run(self) -> int:
        reader = asyncio.ensure_future(self._reader())
        self.gateway._live.add(self)
        try:
            if self.process.subsystem:
                await self.note(f"no {self.process.subsystem} here: this is a console gateway")
                return 1
            console = self.target.console
            command = (self.process.command or "").strip()
            if command:
                if console is not None and command != console:
                    await self.note(f"this login is for console {console}, not {command}")
                    return 1
                console = command
            if console is not None:
                status, _ = await self.attach(console)
                return status
            return await self.menu()
        finally:
            self.gateway._live.discard(self)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    # -- the menu ------------------------------------------------------------------------

    def visible(self) -> list[Any]:
        here = [c for c in self.manager.consoles() if self.user.can_view(c.name, c.tags)]
        member = self.gateway.cluster
        if member is None:
            return here
        from solgate.cluster.sshproxy import remote_consoles

        return sorted(here + remote_consoles(member, self.user, {c.name for c in here}),
                      key=lambda c: c.name)

    async def menu(self) -> int:
        while True:
            consoles = self.visible()
            if not consoles:
                await self.note(f"no consoles for {self.user.name}")
                return 1
            width = max(len(c.name) for c in consoles)
            lines = [f"solgate: consoles for {self.user.name}"]
            for i, c in enumerate(consoles, 1):
                shown = c.state_detail and self.user.sees_bmc_details  # BMC address, user
                detail = f"  {shown}" if shown else ""
                lines.append(f"  {i:>3}) {c.name:<{width}}  {c.state}{detail}")
            await self.write(("\r\n".join(lines) + "\r\n").encode())
            choice = await self.read_line("console number or name (q quits): ")
            if self.ended:
                return 1
            if choice is None or choice.lower() in ("q", "quit", "exit"):
                await self.write(b"\r\n")
                return 0
            if not choice:
                continue
            if choice.isdigit() and 1 <= int(choice) <= len(consoles):
                name = consoles[int(choice) - 1].name
            else:
                name = choice
            self._last_note = ""
            status, eof = await self.attach(name)
            if eof:
                return status
            self._last_note = ""

    async def read_line(self, prompt: str) -> str | None:
        """A line typed by the user, echoed by us (the pty is raw); None on EOF or Ctrl-C/D."""
        await self.write(prompt.encode())
        line = bytearray()
        while True:
            item = await self.inq.get()
            if item is EOF:
                return None
            if item is BREAK:
                continue
            for byte in item:
                if byte in (0x0D, 0x0A):
                    await self.write(b"\r\n")
                    return line.decode("utf-8", "replace").strip()
                if byte in (0x03, 0x04):
                    return None
                if byte in (0x08, 0x7F):
                    if line:
                        line.pop()
                        await self.write(b"\b \b")
                elif 0x20 <= byte < 0x7F and len(line) < 200:
                    line.append(byte)
                    await self.write(bytes((byte,)))

    # -- one console ---------------------------------------------------------------------

    async def attach(self, name: str) -> tuple[int, bool]:
        """Attach to `name` until `~.`, EOF or the console closes; (status, input ended)."""
        if self.ended:
            return 1, True
        console = self.manager.get(name)
        if console is None and self.gateway.cluster is not None:
            from solgate.cluster.sshproxy import attach_remote

            remote = await attach_remote(self, self.gateway.cluster, name)
            if remote is not None:
                return remote
        if console is None or not self.user.can_view(console.name, console.tags):
            await self.note(f"no console {name} or no access")
            return 1, False
        escape = getattr(getattr(self.gateway.directory().config, "consoles", {}).get(name),
                         "escape", "~")
        parser = EscapeParser(escape)
        attachment = console.hub.attach(self.user.name, can_write=self.user.can_write(console.name,
                                                                               console.tags),
                                        cols=self.cols, rows=self.rows,
                                        via=f"over ssh from {self.peer}",
                                        grant=Grant("ssh-key", self.key_fingerprint),
                                        details=self.user.sees_bmc_details)
        self.attachment = attachment
        log.info("ssh: %s attached to %s from %s", self.user.name, name, self.peer)
        actions = ConsoleActions(self.manager, attachment, parser)
        pump = asyncio.ensure_future(self._pump(name, attachment, parser))
        try:
            while True:
                getter = asyncio.ensure_future(self.inq.get())
                await asyncio.wait({getter, pump}, return_when=asyncio.FIRST_COMPLETED)
                if self.ended:
                    getter.cancel()
                    return 1, True
                if not getter.done():
                    getter.cancel()
                    return 0, False  # the console closed this attachment
                item = getter.result()
                if item is EOF:
                    return (1 if self.ended else 0), True
                if item is BREAK:
                    await self._tell(await actions.send_break())
                    continue
                if not await self._keys(item, actions):
                    await self.write(TERM_LEAVE + f"\r\n[solgate: left {name}]\r\n".encode())
                    return 0, False
        finally:
            self.attachment = None
            attachment.detach()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump

    async def _keys(self, data: bytes, actions: ConsoleActions) -> bool:
        """Handle typed bytes; False when the user typed `~.`."""
        async for outcome in actions.keyboard(data):
            match outcome:
                case Leave():
                    return False
                case Help(text=text):
                    await self.write(text.encode())
                case Notice():
                    await self._tell(outcome)
                case Typed():
                    self._last_note = ""
        return True

    async def _tell(self, notice: Notice | None) -> None:
        if notice is not None:
            await self.note(notice.text)

    async def _pump(self, name: str, attachment: Any, parser: EscapeParser) -> None:
        """Hub output to the ssh channel; drain() is the back-pressure the hub turns into lag."""
        greeted = False
        lock = WriteLockNotices(name, self.user.name, parser.escape_char)
        state: str | None = None
        async for item in attachment:
            can_write = attachment.can_write
            match item:
                case bytes():
                    await self.write(item)
                case Snapshot(data=data):
                    await self.write(TERM_PREPARE + data)
                case Lagged():
                    pass  # a Snapshot follows at once
                case WriteLockChanged(holder=new):
                    if not greeted:
                        greeted = True
                        lock.holder = new
                        await self.note(lock.banner(can_write))
                    elif (line := lock.moved(new, can_write)) is not None:
                        await self.note(line)
                case StateChanged(state=new_state, detail=detail):
                    if state is not None and new_state != state:
                        await self.note(state_notice(name, new_state, detail))
                    state = new_state
                case AccessChanged(reason=reason):
                    await self.note(f"{name}: read-only now: {reason}")
                case Closed(reason=reason, revoked=revoked):
                    if revoked and not self.ended:
                        await self.note(f"{name}: access revoked: {reason}")
                    elif reason != "detached" and not revoked:
                        await self.note(f"{name}: {reason}")
                    return


async def start_ssh_gateway(config: Config, manager: ConsoleManager) -> SshGateway:
    """Start listening per `[ssh]`; raises `ConfigError` (one line) when it cannot."""
    settings = config.ssh
    if settings is None:
        raise ConfigError(f"{config.source}: [ssh] listen is not set; add "
                          f'listen = "{DEFAULT_LISTEN}" to [ssh]')
    gateway = SshGateway(config, manager, settings)
    await gateway.start()
    return gateway

