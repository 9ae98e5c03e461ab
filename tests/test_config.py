"""solgate.toml: units, defaults, merging, secrets, refusals, and errors that point at the line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from solgate import cli
from solgate.cli.config import add_config_argument, config_from_args, duration_arg, size_arg
from solgate.config import Config, default_config_path, load_config, parse_config
from solgate.config.consoles import DEFAULT_PANIC_PATTERNS, WORKAROUNDS, ConsoleConfig
from solgate.config.server import ServerConfig
from solgate.errors import ConfigError
from solgate.ipmi.codec import Privilege
from solgate.ipmi.target import BmcTarget
from solgate.units import parse_duration, parse_size
from solgate.users import Role

REPO = Path(__file__).resolve().parents[1]
SECRET = "Zq9-s3cr3t-pw"  # distinctive, so a leak is easy to spot
KG = "kg-Secret-Key-77"
ENV = {"BMC_PW": SECRET}


def toml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def write(tmp_path: Path, text: str, name: str = "solgate.toml") -> Path:
    path = tmp_path / name
    path.write_text(toml(text))
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), environ=ENV if environ is None else environ)


def error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    """The one-line error message for a bad file, relative to tmp_path."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, environ)
    message = str(info.value)
    assert "\n" not in message
    assert SECRET not in message
    return message.replace(str(tmp_path) + "/", "")


MINIMAL = """
[consoles.web01]
host = "10.0.0.5"
username = "admin"
password_env = "BMC_PW"
"""


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("20s", 20.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0),
    ("1.5s", 1.5), (" 2 m ", 120.0), ("20", 20.0), (20, 20.0), (0.25, 0.25), ("1d", 86400.0),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "", "fast", "1h5", "-1s", "ms", True, -3, float("inf")])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "size"), [
    ("50MB", 50_000_000), ("64KiB", 65536), ("1GiB", 1 << 30), ("1.5GB", 1_500_000_000),
    ("10 mb", 10_000_000), ("100", 100), (4096, 4096), ("7B", 7), (0, 0),
])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["10 MiBs", "-5", -1, True, "", "lots", 1.5])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ConfigError, match="size"):
        parse_size(text)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- defaults and merging


def test_minimal_console_gets_documented_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    console = config.consoles["web01"]
    assert console == ConsoleConfig(
        name="web01", host="10.0.0.5", username="admin", password=SECRET.encode(),
        password_source="env BMC_PW",
    )
    assert console.port == 623
    assert console.cipher_suites == (17, 3)
    assert console.privilege is Privilege.ADMINISTRATOR
    assert console.allow_insecure is False
    assert console.workarounds == frozenset()
    assert (console.retransmit_timeout, console.max_tries) == (1.0, 4)
    assert (console.keepalive_interval, console.session_timeout) == (20.0, 60.0)
    assert (console.steal, console.reconnect_max, console.tags) == (True, 60.0, ())
    assert (console.log_max, console.log_keep, console.log_timestamps) == (50_000_000, 5, False)
    assert console.mark is None
    assert console.panic_patterns == DEFAULT_PANIC_PATTERNS
    assert console.escape == "~"
    assert console.kg is None
    assert config.server == ServerConfig()
    assert (config.server.host, config.server.port, config.server.auth) == (
        "127.0.0.1", 8080, "login")
    assert config.data_dir == tmp_path / "data"
    assert config.base_dir == tmp_path
    assert config.source == str(tmp_path / "solgate.toml")
    assert config.users == {}
    assert config.ssh is None


def test_every_console_key_is_read(tmp_path: Path) -> None:
    console = load(tmp_path, r"""
        [consoles.db1]
        host = "[fd00::5]"
        port = 6230
        username = "operator1"
        password = "inline-pw"
        kg_hex = "0x0102030405060708090a0b0c0d0e0f1011121314"
        cipher_suites = [3, 17, 8]
        privilege = "Operator"
        workarounds = ["solpayloadsize", "opensesspriv"]
        retransmit_timeout = "500ms"
        max_tries = 6
        keepalive_interval = "15s"
        session_timeout = "2m"
        steal = false
        reconnect_max = "5m"
        tags = ["rack7", "db"]
        log_max = "64KiB"
        log_keep = 0
        log_timestamps = true
        mark = "10m"
        panic_patterns = ['\bPANIC\b', 'MCE: ']
        escape = "&"
    """).consoles["db1"]
    assert console.host == "fd00::5"
    assert console.port == 6230
    assert console.username == "operator1"
    assert console.password == b"inline-pw"
    assert console.password_source == "inline"
    assert console.kg == bytes(range(1, 21))
    assert console.cipher_suites == (3, 17, 8)
    assert console.privilege is Privilege.OPERATOR
    assert console.workarounds == {"solpayloadsize", "opensesspriv"}
    assert (console.retransmit_timeout, console.max_tries) == (0.5, 6)
    assert (console.keepalive_interval, console.session_timeout) == (15.0, 120.0)
    assert (console.steal, console.reconnect_max, console.tags) == (False, 300.0, ("rack7", "db"))
    assert (console.log_max, console.log_keep, console.log_timestamps) == (65536, 0, True)
    assert console.mark == 600.0
    assert console.panic_patterns == (r"\bPANIC\b", "MCE: ")
    assert console.escape == "&"


def test_defaults_apply_and_the_console_wins(tmp_path: Path) -> None:
    config = load(tmp_path, """
        [defaults]
        username = "admin"
        password_env = "BMC_PW"
        port = 6000
        tags = ["dc1"]
        workarounds = ["solstatus"]

        [consoles.zeta]
        host = "10.0.0.9"

        [consoles.alpha]
        host = "10.0.0.1"
        port = 7000
        tags = []

        [consoles.mid]
        host = "10.0.0.5"
        username = "root"
    """)
    assert list(config.consoles) == ["zeta", "alpha", "mid"]  # the file's order
    zeta, alpha, mid = config.consoles.values()
    assert (zeta.port, zeta.username, zeta.tags, zeta.workarounds) == (
        6000, "admin", ("dc1",), {"solstatus"})
    assert (alpha.port, alpha.tags) == (7000, ())
    assert (mid.port, mid.username) == (6000, "root")
    assert all(c.password == SECRET.encode() for c in config.consoles.values())


def test_console_password_source_replaces_the_defaults_one(tmp_path: Path) -> None:
    (tmp_path / "web02.pw").write_text("from-file\n")
    config = load(tmp_path, """
        [defaults]
        password_env = "BMC_PW"
        kg = "default-kg"

        [consoles.web01]
        host = "10.0.0.1"

        [consoles.web02]
        host = "10.0.0.2"
        password_file = "web02.pw"
        kg_hex = "aabb"
    """)
    assert config.consoles["web01"].password == SECRET.encode()
    assert config.consoles["web01"].kg == b"default-kg"
    assert config.consoles["web02"].password == b"from-file"
    assert config.consoles["web02"].password_source == f"file {tmp_path / 'web02.pw'}"
    assert config.consoles["web02"].kg == b"\xaa\xbb"


def test_same_host_and_port_twice_is_allowed(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL + """
        [consoles.web01-again]
        host = "10.0.0.5"
        password_env = "BMC_PW"
    """.replace("        ", ""))
    assert [c.host for c in config.consoles.values()] == ["10.0.0.5", "10.0.0.5"]


def test_users_and_ssh_tables_are_typed_at_load(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL + toml("""
        [users.alice]
        role = "admin"
        password_hash = "scrypt$16$1$1$c2FsdA$aGFzaA"
        ssh_keys = ["ssh-ed25519 AAAA alice@laptop"]
        authorized_keys = "keys/alice"

        [ssh]
        listen = "127.0.0.1:2222"
        host_key = "ssh/host_key"
    """))
    alice = config.users["alice"]
    assert (alice.role, alice.ssh_keys) == (Role.ADMIN, ("ssh-ed25519 AAAA alice@laptop",))
    assert alice.authorized_keys == tmp_path / "keys" / "alice"
    assert config.ssh is not None
    assert (config.ssh.host, config.ssh.port) == ("127.0.0.1", 2222)
    assert config.ssh.host_key == tmp_path / "ssh" / "host_key"
    assert "scrypt$" not in repr(config)


@pytest.mark.parametrize(("table", "message"), [
    ('[users.bob]\nrole = "boss"', r'line 6: \[users.bob\] role = "boss" is unknown; use viewer'),
    ('[users.bob]\nrole = "viewer"\npasword = "x"',
     r'line 7: \[users.bob\] pasword: unknown setting; did you mean "password_hash"\?'),
    ('[users.bob]\npassword_hash = 5', r"line 6: \[users.bob\] password_hash is not a solgate "
                                        "scrypt hash; create one with `solgate passwd`"),
    ('[users.bob]\nssh_keys = "ssh-ed25519 AAAA"',
     r"line 6: \[users.bob\] ssh_keys must be a list of public key lines"),
    ('[ssh]\nlisten = "127.0.0.1:2222"\nhost_key = ""',
     r"line 7: \[ssh\] host_key must be the path of a private key file"),
    ('[ssh]\nlisten = 2222', r'line 6: \[ssh\] listen must be a string like "127.0.0.1:2222"'),
])
def test_users_and_ssh_errors_name_the_line(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, MINIMAL + table + "\n")


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.consoles["web01"].port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server = ServerConfig()  # type: ignore[misc]


def test_target_carries_everything_the_ipmi_layer_needs(tmp_path: Path) -> None:
    console = load(tmp_path, MINIMAL.replace("[consoles.web01]", """[consoles.web01]
kg = "two-key"
port = 9001
cipher_suites = [3]
privilege = "user"
workarounds = ["solpayloadsize"]
retransmit_timeout = "2s"
max_tries = 3
keepalive_interval = "10s"
session_timeout = "30s"
""")).consoles["web01"]
    assert console.target() == BmcTarget(
        host="10.0.0.5", port=9001, username=b"admin", password=SECRET.encode(),
        kg=b"two-key", cipher_suites=(3,), privilege=Privilege.USER, allow_insecure=False,
        workarounds=frozenset({"solpayloadsize"}), retransmit_timeout=2.0, max_tries=3,
        keepalive_interval=10.0, session_timeout=30.0, name="web01",
    )
    assert console.target().label == "BMC web01 (10.0.0.5:9001)"


# --------------------------------------------------------------------------- secrets


def test_password_file_trailing_newline_is_stripped(tmp_path: Path) -> None:
    (tmp_path / "a.pw").write_bytes(b"pw-one\n")
    (tmp_path / "b.pw").write_bytes(b"pw-two\r\n")
    (tmp_path / "c.pw").write_bytes(b"pw three \t")
    config = load(tmp_path, """
        [defaults]
        host = "127.0.0.1"
        [consoles.a]
        password_file = "a.pw"
        [consoles.b]
        password_file = "b.pw"
        [consoles.c]
        password_file = "c.pw"
    """)
    assert [c.password for c in config.consoles.values()] == [b"pw-one", b"pw-two", b"pw three \t"]


def test_password_file_is_relative_to_the_config_file_not_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "bmc.pw").write_text("relative\n")
    path = write(etc, '[consoles.a]\nhost = "h"\npassword_file = "bmc.pw"\ndata_dir = "x"\n'
                 .replace('data_dir = "x"\n', ""))
    monkeypatch.chdir(tmp_path)
    config = load_config(path)
    assert config.consoles["a"].password == b"relative"
    assert config.data_dir == etc / "data"


def test_password_env(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL, environ={"BMC_PW": "from-env"})
    assert config.consoles["web01"].password == b"from-env"


def test_environ_defaults_to_the_process_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BMC_PW", "process-env")
    assert load_config(write(tmp_path, MINIMAL)).consoles["web01"].password == b"process-env"


def test_secrets_never_appear_in_repr(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL.replace("[consoles.web01]", f'[consoles.web01]\nkg = "{KG}"'))
    console = config.consoles["web01"]
    assert console.password == SECRET.encode()
    assert console.kg == KG.encode()
    for text in (repr(console), str(console), repr(config), repr(console.target())):
        assert SECRET not in text
        assert KG not in text
        assert "web01" in text


@pytest.mark.parametrize("line", ["password = 73815296", "kg = 73815296", "kg_hex = 73815296",
                                  "password = 7381.5296"])
def test_a_secret_of_the_wrong_type_is_not_echoed(tmp_path: Path, line: str) -> None:
    """An unquoted numeric password is a likely typo; the error must not print it."""
    message = error(tmp_path, f'[consoles.web01]\nhost = "10.0.0.5"\n{line}\n')
    assert "7381" not in message
    assert "line 3" in message
    assert "put the value in quotes" in message


# --------------------------------------------------------------------------- error lines


def test_insecure_suite_error_names_file_line_key_and_fix(tmp_path: Path) -> None:
    message = error(tmp_path, """
        # a comment

        [server]
        listen = "127.0.0.1:8080"

        [defaults]
        username = "admin"
        password_env = "BMC_PW"

        [consoles.web01]
        host = "10.0.0.5"
        port = 623
        # suite 0 is what the old script used
        cipher_suites = [0]
    """)
    assert message == (
        "solgate.toml line 14: [consoles.web01] cipher_suites = [0] is refused: suite 0 has "
        "no authentication; use 17 or 3, or set allow_insecure = true")


@pytest.mark.parametrize(("suites", "reason"), [
    ("[17, 1]", "suite 1 has no integrity check"),
    ("[6]", "suite 6 has no integrity check"),
    ("[15, 3]", "suite 15 has no integrity check"),
])
def test_suites_without_integrity_are_refused(tmp_path: Path, suites: str, reason: str) -> None:
    message = error(tmp_path, MINIMAL + f"cipher_suites = {suites}\n")
    assert message.startswith(f"solgate.toml line 5: [consoles.web01] cipher_suites = {suites} "
                              f"is refused: {reason};")


def test_allow_insecure_lets_suite_0_through(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL + "cipher_suites = [0]\nallow_insecure = true\n")
    assert config.consoles["web01"].cipher_suites == (0,)
    assert config.consoles["web01"].target().allow_insecure is True


def test_insecure_suite_from_defaults_points_at_defaults(tmp_path: Path) -> None:
    message = error(tmp_path, """
        [defaults]
        cipher_suites = [3, 0]
        password_env = "BMC_PW"

        [consoles.web01]
        host = "10.0.0.5"
    """)
    assert message.startswith("solgate.toml line 2: [defaults] cipher_suites = [3, 0] is refused")
    assert message.endswith("(inherited by [consoles.web01])")


@pytest.mark.parametrize(("extra", "expected"), [
    ('cipher_suite = [17]',
     'solgate.toml line 5: [consoles.web01] cipher_suite: unknown setting; '
     'did you mean "cipher_suites"?'),
    ('port = "623"',
     'solgate.toml line 5: [consoles.web01] port: expected an integer, got a string ("623")'),
    ('port = 70000',
     "solgate.toml line 5: [consoles.web01] port: 70000 is out of range; use a whole number "
     "from 1 to 65535"),
    ('steal = "yes"',
     'solgate.toml line 5: [consoles.web01] steal: expected true or false, got a string ("yes")'),
    ('tags = "web"',
     'solgate.toml line 5: [consoles.web01] tags: expected a list of strings, like ["a", "b"], '
     'got a string ("web")'),
    ('keepalive_interval = "20 seconds"',
     'solgate.toml line 5: [consoles.web01] keepalive_interval: "20 seconds" is not a duration; '
     'write a number with a unit, like "500ms", "20s", "5m" or "1h"'),
    ('log_max = "50 megs"',
     'solgate.toml line 5: [consoles.web01] log_max: "50 megs" is not a size; write a number '
     'with a unit, like "64KiB", "50MB" or "1GiB"'),
    ('privilege = "admin"',
     'solgate.toml line 5: [consoles.web01] privilege: "admin" is not a privilege level; use '
     '"administrator", "operator" or "user"'),
    ('cipher_suites = [12]',
     "solgate.toml line 5: [consoles.web01] cipher_suites = [12] is not supported: solgate has "
     "no suite 12; use 17 or 3 (supported: 0, 1, 2, 3, 6, 7, 8, 15, 16, 17)"),
    ('escape = "~~"',
     'solgate.toml line 5: [consoles.web01] escape: "~~" is not one punctuation character; use '
     'a single character such as "~" or "&"'),
    ('session_timeout = "10s"',
     "solgate.toml line 5: [consoles.web01] session_timeout: keepalive_interval (20s) must be "
     'shorter than session_timeout (10s); keepalives keep the session alive, e.g. '
     'keepalive_interval = "20s"'),
])
def test_console_mistakes(tmp_path: Path, extra: str, expected: str) -> None:
    message = error(tmp_path, MINIMAL + extra + "\n")
    assert message == expected or message.startswith(expected + " ("), message


@pytest.mark.parametrize(("extra", "needle"), [
    ("cipher_suites = []", "cipher_suites: expected a non-empty list of cipher suite numbers"),
    ("cipher_suites = [17, 17]", "cipher_suites = [17, 17] lists suite 17 twice"),
    ("max_tries = 0", "max_tries: 0 is out of range"),
    ('retransmit_timeout = "0s"', "retransmit_timeout: \"0s\" is too short"),
    ("panic_patterns = ['(unclosed']", "panic_patterns: \"(unclosed\" is not a valid regular"),
    ('escape = "a"', "escape: \"a\" is not one punctuation character"),
    ('username = "a-user-name-longer-than-16"', "username: is longer than 16 bytes"),
    ('kg_hex = "xyz"', "kg_hex: is not hexadecimal"),
    (f'kg_hex = "{"ab" * 21}"', "kg_hex: is 21 bytes; K_g is at most 20 bytes"),
    (f'kg = "{"k" * 21}"', "kg: is longer than 20 bytes"),
    ('kg = "a"\nkg_hex = "61"', "kg_hex: conflicts with kg in the same table"),
    ('host = ""', 'host: "" is not a host'),
    ("mark = true", "mark: expected a duration, got a boolean (true)"),
    ("[consoles.web01.serial]\nspeed = 115200", "serial: unknown setting"),
])
def test_more_console_mistakes(tmp_path: Path, extra: str, needle: str) -> None:
    text = toml(MINIMAL)
    for line in extra.splitlines():  # replace a key MINIMAL already sets
        key = line.split("=")[0].strip()
        text = re.sub(rf"^{key} = .*$", "", text, flags=re.MULTILINE)
    message = error(tmp_path, text + extra + "\n")
    assert message.startswith("solgate.toml line ")
    assert "[consoles.web01] " + needle in message, message


def test_unknown_workaround_lists_the_valid_ones(tmp_path: Path) -> None:
    message = error(tmp_path, MINIMAL + 'workarounds = ["solpayloadsiz"]\n')
    assert message.startswith('solgate.toml line 5: [consoles.web01] workarounds: unknown '
                              'workaround "solpayloadsiz" (did you mean "solpayloadsize"?)')
    assert message.endswith("valid names: " + ", ".join(WORKAROUNDS))


def test_mark_can_be_off(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL + 'mark = ""\n')
    assert config.consoles["web01"].mark is None


def test_missing_host_and_password_point_at_the_console(tmp_path: Path) -> None:
    assert error(tmp_path, """
        [consoles.a]
        host = "h"
        password = "x"

        [consoles.b]
        port = 623
    """) == ('solgate.toml line 5: [consoles.b] host: missing; every console needs the address '
             'of its BMC, like host = "10.0.0.5"')
    assert error(tmp_path, '[consoles.c]\nhost = "h"\n').startswith(
        "solgate.toml line 1: [consoles.c] password: missing; set one of password_env")


def test_two_password_sources_in_one_table(tmp_path: Path) -> None:
    assert error(tmp_path, MINIMAL + 'password = "also"\n') == (
        "solgate.toml line 5: [consoles.web01] password: conflicts with password_env in the "
        "same table; keep exactly one of password, password_file, password_env")


@pytest.mark.parametrize(("source", "environ", "needle"), [
    ('password_env = "NOPE"', {}, "password_env: environment variable NOPE is not set; "
                                  "export NOPE before starting solgate"),
    ('password_env = "EMPTY"', {"EMPTY": ""}, "password_env: environment variable EMPTY is "
                                              "empty"),
    ('password_env = "LONG"', {"LONG": "x" * 21}, "password_env: the password is 21 bytes; "
                                                   "IPMI v2.0 passwords are at most 20 bytes"),
    ('password_env = "bad name"', {}, 'password_env: "bad name" is not an environment variable'),
    ('password_file = "missing.pw"', {}, "password_file: cannot read "),
    ('password_file = "empty.pw"', {}, "password_file: empty.pw is empty"),
    ('password = "' + "p" * 21 + '"', {}, "password: is longer than 20 bytes"),
])
def test_bad_password_sources(tmp_path: Path, source: str, environ: dict[str, str],
                              needle: str) -> None:
    (tmp_path / "empty.pw").write_text("\n")
    message = error(tmp_path, f'[consoles.web01]\nhost = "h"\n{source}\n', environ)
    assert message.startswith("solgate.toml line 3: [consoles.web01] " + needle), message


def test_unset_env_in_defaults_points_at_defaults(tmp_path: Path) -> None:
    message = error(tmp_path, """
        [defaults]
        password_env = "NOT_SET"

        [consoles.web01]
        host = "h"
    """, environ={})
    assert message.startswith("solgate.toml line 2: [defaults] password_env: environment "
                              "variable NOT_SET is not set")
    assert message.endswith("(inherited by [consoles.web01])")


def test_unknown_top_level_table_names_the_known_ones(tmp_path: Path) -> None:
    message = error(tmp_path, MINIMAL + '\n[consoels.web02]\nhost = "x"\n')
    assert message == (
        'solgate.toml line 6: consoels: unknown top-level setting; did you mean "consoles"?; '
        "known top-level keys and tables: data_dir, [server], [defaults], [consoles.NAME], "
        "[users.NAME], [ssh], [cluster]")


def test_console_key_at_top_level_says_where_it_goes(tmp_path: Path) -> None:
    message = error(tmp_path, 'host = "10.0.0.5"\n' + MINIMAL)
    assert message.startswith("solgate.toml line 1: host: unknown top-level setting; console "
                              "settings go in [defaults] or [consoles.NAME]")


def test_unknown_defaults_key(tmp_path: Path) -> None:
    message = error(tmp_path, '[defaults]\nusrname = "admin"\n' + MINIMAL)
    assert message == ('solgate.toml line 2: [defaults] usrname: unknown setting; did you mean '
                       '"username"?')


def test_bad_console_name(tmp_path: Path) -> None:
    message = error(tmp_path, '[consoles."../../etc"]\nhost = "h"\npassword = "x"\n')
    assert message.startswith('solgate.toml line 1: [consoles."../../etc"] console name '
                              '"../../etc" cannot be used in file names and URLs')


def test_console_as_inline_table_still_gets_a_line(tmp_path: Path) -> None:
    message = error(tmp_path, """
        [defaults]
        password = "x"

        [consoles]
        web01 = { host = "h" }
        web02 = { host = "h", port = "bad" }
    """)
    assert message.startswith("solgate.toml line 6: [consoles.web02] port: expected an integer")


def test_dotted_keys_still_get_a_line(tmp_path: Path) -> None:
    message = error(tmp_path, """
        consoles.web01.host = "h"
        consoles.web01.password = "x"
        consoles.web01.steal = 1
    """)
    assert message.startswith("solgate.toml line 3: [consoles.web01] steal: expected true or")


def test_line_is_omitted_when_it_cannot_be_found(tmp_path: Path) -> None:
    # A key spelled with a quoted-key escape that the line scanner does not decode.
    message = error(tmp_path, '[consoles.web01]\nhost = "h"\npassword = "x"\n"p\\u006frt" = "1"\n')
    assert message.startswith("solgate.toml line 1: [consoles.web01] port: expected an integer")
    message = error(tmp_path, '"d\\u0061ta_dir" = 5\n')
    assert message.startswith("solgate.toml: data_dir: expected a string")


def test_toml_syntax_error_keeps_line_and_column(tmp_path: Path) -> None:
    message = error(tmp_path, '[consoles.web01]\nhost = "h"\nport 623\n')
    assert message.startswith("solgate.toml line 3: not valid TOML: ")
    assert "(at line 3, column 6)" in message


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such configuration file; pass -c"):
        load_config(tmp_path / "nope.toml")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "solgate.toml"
    path.write_bytes(b'[consoles.a]\nhost = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_parse_config_from_a_string(tmp_path: Path) -> None:
    config = parse_config(toml(MINIMAL), base_dir=tmp_path, environ=ENV)
    assert config.source == "<string>"
    assert config.data_dir == tmp_path / "data"
    with pytest.raises(ConfigError, match=r"^<string> line 5: \[consoles.web01\] port"):
        parse_config(toml(MINIMAL) + "port = -1\n", environ=ENV)


# --------------------------------------------------------------------------- [server], data_dir


@pytest.mark.parametrize(("listen", "host", "port"), [
    ("127.0.0.1:8080", "127.0.0.1", 8080), ("[::1]:9000", "::1", 9000),
    ("localhost:0", "localhost", 0), ("0.0.0.0:443", "0.0.0.0", 443),  # noqa: S104
])
def test_listen(tmp_path: Path, listen: str, host: str, port: int) -> None:
    server = load(tmp_path, f'[server]\nlisten = "{listen}"\n' + MINIMAL).server
    assert (server.listen, server.host, server.port) == (listen, host, port)


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "[::1]:8080", "localhost:8080"])
def test_auth_none_on_loopback(tmp_path: Path, listen: str) -> None:
    server = load(tmp_path, f'[server]\nlisten = "{listen}"\nauth = "none"\n').server
    assert server.auth == "none"


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:80", "web:80"])
def test_auth_none_off_loopback_is_refused(tmp_path: Path, listen: str) -> None:
    message = error(tmp_path, f'[server]\nlisten = "{listen}"\nauth = "none"\n')
    assert message == (f'solgate.toml line 3: [server] auth = "none" is refused: listen = '
                       f'"{listen}" is reachable from other machines; set auth = "login", or '
                       'listen on "127.0.0.1:PORT"')


@pytest.mark.parametrize(("body", "needle"), [
    ('listen = "8080"', 'listen: "8080" is not HOST:PORT'),
    ('listen = "host:99999"', 'listen: "host:99999" is not HOST:PORT'),
    ('auth = "basic"', 'auth: "basic" is not an auth mode; use "login"'),
    ("setup_concurrency = 0", "setup_concurrency: 0 is out of range"),
    ('lisen = "127.0.0.1:1"', 'lisen: unknown setting; did you mean "listen"?'),
    ('host = "x"', "host: unknown setting; console settings go in [defaults] or"),
    ('tls_cert = "nope.pem"\ntls_key = "nope.pem"', "tls_cert: "),
])
def test_server_mistakes(tmp_path: Path, body: str, needle: str) -> None:
    message = error(tmp_path, f"[server]\n{body}\n")
    assert message.startswith("solgate.toml line 2: [server] " + needle), message


def test_tls_needs_both_files(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("cert")
    (tmp_path / "key.pem").write_text("key")
    assert error(tmp_path, '[server]\ntls_cert = "cert.pem"\n') == (
        "solgate.toml line 2: [server] tls_cert: set without tls_key; set both for HTTPS, or "
        "neither for plain HTTP")
    server = load(tmp_path, '[server]\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n').server
    assert (server.tls, server.tls_cert, server.tls_key) == (
        True, tmp_path / "cert.pem", tmp_path / "key.pem")


def test_command_line_flags_override_the_file_by_the_same_rules(tmp_path: Path) -> None:
    config = load(tmp_path, '[server]\nlisten = "127.0.0.1:8080"\nauth = "none"\n')
    assert config.with_server(listen=None, auth=None) == config  # flags not given
    moved = config.with_server(listen="[::1]:9999")
    assert (moved.server.host, moved.server.port, moved.server.auth) == ("::1", 9999, "none")
    assert config.server.port == 8080  # the original is untouched
    with pytest.raises(ConfigError, match=r'^command line: \[server\] auth = "none" is refused'):
        config.with_server(listen="0.0.0.0:8080")
    with pytest.raises(ConfigError, match=r"^command line: \[server\] listen: \"80\" is not HOST"):
        config.with_server(listen="80")
    assert config.with_server(listen="0.0.0.0:8080", auth="login").server.auth == "login"


def test_data_dir(tmp_path: Path) -> None:
    assert load(tmp_path, 'data_dir = "var/sol"\n').data_dir == tmp_path / "var" / "sol"
    assert load(tmp_path, f'data_dir = "{tmp_path}/abs"\n').data_dir == tmp_path / "abs"
    assert error(tmp_path, "data_dir = 5\n") == (
        "solgate.toml line 1: data_dir: expected a string, got a number (5)")


def test_a_table_where_a_value_was_expected(tmp_path: Path) -> None:
    assert error(tmp_path, 'server = "x"\n').startswith(
        'solgate.toml line 1: server: expected a table [server], got a string ("x")')
    assert error(tmp_path, '[consoles]\nweb01 = "x"\n').startswith(
        "solgate.toml line 2: [consoles] web01: expected a table [consoles.web01]")


# --------------------------------------------------------------------------- where the file is


def test_default_config_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SOLGATE_CONFIG", raising=False)
    assert default_config_path(None) == Path("/etc/solgate/solgate.toml")
    (tmp_path / "solgate.toml").write_text("")
    assert default_config_path(None) == Path("solgate.toml")
    monkeypatch.setenv("SOLGATE_CONFIG", "/srv/sol.toml")
    assert default_config_path(None) == Path("/srv/sol.toml")
    assert default_config_path("mine.toml") == Path("mine.toml")


# --------------------------------------------------------------------------- check-config


def test_check_config_prints_a_summary_without_secrets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BMC_PW", SECRET)
    (tmp_path / "b.pw").write_text(SECRET + "\n")
    path = write(tmp_path, f"""
        [server]
        listen = "127.0.0.1:8181"

        [consoles.web01]
        host = "10.0.0.5"
        port = 6230
        username = "admin"
        password_env = "BMC_PW"
        kg = "{KG}"

        [consoles.web02]
        host = "10.0.0.6"
        username = "ops"
        cipher_suites = [3]
        password_file = "b.pw"
    """)
    assert cli.main(["check-config", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert KG not in out + err
    assert "2 consoles" in out
    assert f"data_dir: {tmp_path / 'data'}" in out
    assert "listen 127.0.0.1:8181, auth login" in out
    assert re.search(r"web01\s+10\.0\.0\.5:6230\s+user admin\s+suites 17,3\s+password from env "
                     r"BMC_PW", out)
    assert re.search(r"web02\s+10\.0\.0\.6:623\s+user ops\s+suites 3\s+password from file", out)


def test_check_config_error_is_one_line_and_exit_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, MINIMAL.replace('password_env = "BMC_PW"', f'password = "{SECRET}"')
                 + "cipher_suites = [0]\n")
    assert cli.main(["check-config", "-c", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"solgate: {path} line 5: [consoles.web01] cipher_suites = [0] is refused: "
                   "suite 0 has no authentication; use 17 or 3, or set allow_insecure = true\n")
    assert SECRET not in err


def test_check_config_finds_the_file_through_the_environment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLGATE_CONFIG", str(write(tmp_path, MINIMAL)))
    monkeypatch.setenv("BMC_PW", "pw")
    assert cli.main(["check-config"]) == 0
    assert "1 console" in capsys.readouterr().out
    monkeypatch.setenv("SOLGATE_CONFIG", str(tmp_path / "missing.toml"))
    assert cli.main(["check-config"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "missing.toml: no such configuration file" in err


def test_reload_says_what_to_do_when_serve_is_not_there(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BMC_PW", "pw")
    path = write(tmp_path, MINIMAL)
    assert cli.main(["reload", "-c", str(path)]) == 1
    assert "start it with `solgate serve`" in capsys.readouterr().err
    (tmp_path / "data").mkdir()
    pid_file = tmp_path / "data" / "solgate.pid"
    pid_file.write_text("not a pid\n")
    assert cli.main(["reload", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no pid in it" in err

    def refuse(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    pid_file.write_text("1\n")
    monkeypatch.setattr("solgate.cli.serve.os.kill", refuse)
    assert cli.main(["reload", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "as the user solgate serve runs as" in err


# --------------------------------------------------------------------------- the example file


def test_example_solgate_toml_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLGATE_BMC_PASSWORD", "example-pw")
    config = load_config(REPO / "solgate.toml")
    assert list(config.consoles) == ["web01", "web02"]
    assert [(c.host, c.port) for c in config.consoles.values()] == [
        ("127.0.0.1", 9001), ("127.0.0.1", 9002)]
    assert all(c.password == b"example-pw" for c in config.consoles.values())
    assert config.data_dir == REPO / "data"


def test_example_documents_the_real_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example writes out [server] and [defaults] with the built-in values: keep them so."""
    monkeypatch.setenv("SOLGATE_BMC_PASSWORD", "example-pw")
    text = (REPO / "solgate.toml").read_text()
    head = text[: text.index("[consoles.")]
    probe = '[consoles.probe]\nhost = "h"\npassword_env = "SOLGATE_BMC_PASSWORD"\n'
    documented = parse_config(head + probe, base_dir=REPO)
    built_in = parse_config(probe, base_dir=REPO)
    assert documented.server == built_in.server
    assert documented.consoles == built_in.consoles
    # Every console key is mentioned in the example, set or commented.
    for key in dataclasses.fields(ConsoleConfig):
        if key.name not in ("name", "password_source"):
            assert re.search(rf"^#?\s*{key.name}\s*=", head, re.MULTILINE), key.name
    for key in ("password_file", "password", "kg_hex", "tls_cert", "tls_key"):
        assert re.search(rf"{key}\s*=", head), key


def test_argument_helpers_for_other_subcommands(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="solgate x")
    add_config_argument(parser)
    parser.add_argument("--wait", type=duration_arg)
    parser.add_argument("--max", type=size_arg)
    args = parser.parse_args(["-c", "a.toml", "--wait", "1m30s", "--max", "1KiB"])
    assert (args.config, args.wait, args.max) == ("a.toml", 90.0, 1024)
    assert parser.parse_args([]).config is None
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--wait", "soon"])
    assert info.value.code == 2
    assert '"soon" is not a duration' in capsys.readouterr().err
    path = write(tmp_path, MINIMAL)
    args = parser.parse_args(["--config", str(path)])
    assert list(config_from_args(args, environ=ENV).consoles) == ["web01"]


def test_check_config_also_checks_users_and_ssh_tables(tmp_path, capsys):
    from solgate.cli import main

    path = tmp_path / "solgate.toml"
    base = ('[consoles.web01]\nhost = "127.0.0.1"\npassword = "x"\n'
            '[ssh]\nlisten = "127.0.0.1:2222"\n')
    path.write_text(base + '[users.alice]\nrole = "admin"\nssh_keys = ["not a key"]\n')
    assert main(["check-config", "-c", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "[users.alice] ssh_keys[0] is not an OpenSSH public key" in err[0]
    path.write_text(base + '[users.alice]\nrole = "admin"\n')
    assert main(["check-config", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "web users: alice (admin)" in out
    assert "ssh gateway: 127.0.0.1:2222, 0 public keys" in out


def test_workarounds_solgate_cannot_honour_are_refused():
    with pytest.raises(ConfigError, match="does not work around yet"):
        parse_config('[consoles.a]\nhost = "h"\npassword = "p"\nworkarounds = ["intel20"]\n')
    config = parse_config('[consoles.a]\nhost = "h"\npassword = "p"\n'
                          'workarounds = ["opensesspriv", "skip_auth_caps"]\n')
    assert config.consoles["a"].target().workarounds == {"opensesspriv", "skip_auth_caps"}


# --------------------------------------------------------------------------- link-local hosts

LINK_LOCAL = """
    [defaults]
    password = "pw"

    [consoles.bmc13]
    host = "fe80::13"

    [consoles.bmc14]
    host = "fe80::14%eth0"

    [consoles.bmc15]
    host = "[FE80::15]"

    [consoles.web01]
    host = "2001:db8::1"

    [consoles.web02]
    host = "bmc-web02.example"
"""


def test_a_link_local_host_without_a_scope_is_loaded_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """It works on a machine with one interface (the kernel's link-local route picks it),
    so it is not refused; but the operator is told which console, which address, and how
    to write it, on the line it is on. `serve` loads the file the same way (load_config),
    so it logs the same lines."""
    path = write(tmp_path, LINK_LOCAL)
    with caplog.at_level("WARNING", logger="solgate.config"):
        config = load_config(path)
    assert config.consoles["bmc13"].host == "fe80::13"
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} line 5: [consoles.bmc13] host: fe80::13 is a link-local IPv6 address with no "
        "scope ID: console bmc13 reaches it through whichever interface the kernel picks, "
        'the wrong one on a machine with several; write host = "fe80::13%IFACE" with the '
        'interface the BMC is on (e.g. "fe80::13%eth0")',
        f"{path} line 11: [consoles.bmc15] host: FE80::15 is a link-local IPv6 address with "
        "no scope ID: console bmc15 reaches it through whichever interface the kernel picks, "
        'the wrong one on a machine with several; write host = "FE80::15%IFACE" with the '
        'interface the BMC is on (e.g. "FE80::15%eth0")',
    ]


def test_a_link_local_host_in_defaults_is_warned_about_for_each_console(
        caplog: pytest.LogCaptureFixture) -> None:
    text = toml("""
        [defaults]
        host = "fe80::1"
        password = "pw"
        [consoles.a]
        [consoles.b]
        host = "fe80::2%br0"
    """)
    with caplog.at_level("WARNING", logger="solgate.config"):
        parse_config(text, "solgate.toml")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith("solgate.toml line 2: [defaults] host: fe80::1 is a "
                                  "link-local IPv6 address with no scope ID: console a ")


def test_check_config_prints_the_link_local_warning_and_passes(tmp_path: Path) -> None:
    """What an operator running `solgate check-config` sees: the summary on stdout, exit
    status 0, and the warning on stderr."""
    path = write(tmp_path, LINK_LOCAL)
    result = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "solgate.cli", "check-config", "-c", str(path)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "5 consoles" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, result.stderr
    assert "console bmc13" in warnings[0]
    assert "fe80::13 is a link-local IPv6 address with no scope ID" in warnings[0]
    assert 'write host = "fe80::13%IFACE"' in warnings[0]
    assert "console bmc15" in warnings[1]
