"""`solgate.toml` -> frozen dataclasses, with errors that point at the line and name the fix.

tomllib parses the text; each table is then checked by its own module, one per concept:

    server.py    [server]                      -> ServerConfig
    consoles.py  [defaults], [consoles.NAME]   -> ConsoleConfig per console
    users.py     [users.NAME]                  -> solgate.users.User per user
    ssh.py       [ssh]                         -> SshConfig (None: no gateway)
    cluster.py   [cluster]                     -> ClusterConfig (None: no cluster)

`checks.py` holds the value checks the tables share and `source.py` places every error on
a line (tomllib gives no positions). Durations, sizes and listen addresses are read by
`solgate.units` and `solgate.addresses`, which the command line and the log tools use
too without loading this package. Every error is one `ConfigError` line:

    solgate.toml line 14: [consoles.web01] <key>: <problem>; <fix>

Relative paths (`data_dir`, `password_file`, `tls_cert`, `tls_key`, `[ssh] host_key`,
`authorized_keys`) are relative to the directory holding the configuration file, so the
daemon behaves the same whatever its working directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from solgate.config.checks import Invalid, did_you_mean, want_nonempty_str
from solgate.config.cluster import ClusterConfig, parse_cluster
from solgate.config.consoles import CONSOLE_KEYS, ConsoleConfig, parse_consoles
from solgate.config.server import SERVER_KEYS, ServerConfig, parse_server, with_flags
from solgate.config.source import Source
from solgate.config.ssh import SshConfig, parse_ssh
from solgate.config.users import parse_users
from solgate.errors import ConfigError
from solgate.users import User

__all__ = ["CONFIG_ENV", "CONFIG_SEARCH_PATH", "Config", "default_config_path", "load_config",
           "parse_config"]

CONFIG_ENV = "SOLGATE_CONFIG"
CONFIG_SEARCH_PATH = (Path("solgate.toml"), Path("/etc/solgate/solgate.toml"))
KNOWN_TOP_LEVEL = ("data_dir", "server", "defaults", "consoles", "users", "ssh", "cluster")
_TOP_LEVEL_HELP = ("known top-level keys and tables: data_dir, [server], [defaults], "
                   "[consoles.NAME], [users.NAME], [ssh], [cluster]")
_CONSOLE_SETTINGS = "console settings go in [defaults] or [consoles.NAME]"
_SERVER_SETTINGS = "web server settings go in [server]"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole file. `consoles` and `users` keep the file's order."""

    source: Path | str
    data_dir: Path
    server: ServerConfig
    consoles: dict[str, ConsoleConfig]
    base_dir: Path  # relative paths in the file are relative to this directory
    # Left out of repr: password and token hashes are not for the log.
    users: dict[str, User] = field(default_factory=dict, repr=False)
    ssh: SshConfig | None = None  # [ssh] listen: None runs no ssh gateway
    cluster: ClusterConfig | None = None  # [cluster]: None runs every console here

    def with_server(self, **flags: object) -> Config:
        """Apply `[server]` command-line flags over the file (None = flag not given).

        The result is checked by the same rules as the file, so `--listen 0.0.0.0:80` on a
        config with auth = "none" is refused too. Relative paths are relative to the cwd.
        """
        src = Source("", "command line", Path.cwd(), os.environ)
        return replace(self, server=with_flags(self.server, flags, src))


def _parse(src: Source, data: dict[str, Any]) -> Config:
    """Walk the top level; each table is its own module's."""
    for key in data:
        if key not in KNOWN_TOP_LEVEL:
            elsewhere = (_CONSOLE_SETTINGS if key in CONSOLE_KEYS
                         else _SERVER_SETTINGS if key in SERVER_KEYS else "")
            hint = did_you_mean(key, KNOWN_TOP_LEVEL)
            fix = "; ".join(x for x in (hint, elsewhere, _TOP_LEVEL_HELP) if x)
            raise src.fail((), key, f"{key}: unknown top-level setting; {fix}")
    data_dir = src.base_dir / "data"
    if "data_dir" in data:
        try:
            data_dir = src.path(want_nonempty_str(data["data_dir"]))
        except Invalid as exc:
            raise src.invalid((), "data_dir", data["data_dir"], exc) from None
    server = parse_server(src, src.table((), "server", data.get("server", {})),
                          elsewhere=dict.fromkeys(CONSOLE_KEYS, _CONSOLE_SETTINGS))
    consoles = parse_consoles(src, src.table((), "defaults", data.get("defaults", {})),
                              src.table((), "consoles", data.get("consoles", {})),
                              elsewhere=dict.fromkeys(SERVER_KEYS, _SERVER_SETTINGS))
    users_raw = src.table((), "users", data.get("users", {}))
    ssh_raw = src.table((), "ssh", data.get("ssh", {}))
    cluster = None
    if "cluster" in data:
        cluster = parse_cluster(src, src.table((), "cluster", data["cluster"]))
    users = parse_users(users_raw, src)
    ssh = parse_ssh(src, ssh_raw, data_dir)
    return Config(source=src.name, data_dir=data_dir, server=server, consoles=consoles,
                  base_dir=src.base_dir, users=users, ssh=ssh, cluster=cluster)


def parse_config(text: str, source: str = "<string>", *, base_dir: str | Path | None = None,
                 environ: Mapping[str, str] | None = None) -> Config:
    """Parse configuration text; `source` names it in errors. Paths are relative to
    `base_dir`, else to `source`'s directory when it is a file path, else to the cwd."""
    if base_dir is None:
        base_dir = Path(source).parent if not source.startswith("<") else Path()
    base = Path(base_dir).absolute()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        where = f"{source} line {m.group(1)}" if m else source
        raise ConfigError(f"{where}: not valid TOML: {exc}; fix the syntax") from None
    return _parse(Source(text, source, base, os.environ if environ is None else environ), data)


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and check a configuration file; raise `ConfigError` (one line) if anything is off."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file; pass -c FILE, set "
                          f"${CONFIG_ENV}, or create ./solgate.toml or "
                          "/etc/solgate/solgate.toml (see the example solgate.toml)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file "
                          f"({exc.strerror or exc}); check the path and its permissions"
                          ) from None
    return parse_config(text, str(path), environ=environ)


def default_config_path(explicit: str | None,
                        environ: Mapping[str, str] | None = None) -> Path:
    """Which file to load: -c/--config, then $SOLGATE_CONFIG, then ./solgate.toml, then
    /etc/solgate/solgate.toml (returned even when missing, so the error names it)."""
    if explicit:
        return Path(explicit)
    env = (os.environ if environ is None else environ).get(CONFIG_ENV)
    if env:
        return Path(env)
    for candidate in CONFIG_SEARCH_PATH:
        if candidate.is_file():
            return candidate
    return CONFIG_SEARCH_PATH[-1]
