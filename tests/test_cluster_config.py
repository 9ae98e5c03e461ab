"""The `[cluster]` table: defaults, the errors an operator sees, and the shared digest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from solgate.config import parse_config
from solgate.config.cluster import CLUSTER_KEYS, digest
from solgate.errors import ConfigError

CONSOLE = '[consoles.web01]\nhost = "127.0.0.1"\npassword = "x"\n'


def test_without_cluster_table_nothing_changes() -> None:
    assert parse_config(CONSOLE).cluster is None


def test_defaults() -> None:
    cfg = parse_config('[cluster]\netcd = ["http://127.0.0.1:2379"]\nname = "gw1"\n' + CONSOLE)
    cluster = cfg.cluster
    assert cluster is not None
    assert (cluster.name, cluster.lease_ttl, cluster.renew_interval, cluster.prefix,
            cluster.weight) == ("gw1", 15.0, 5.0, "/solgate/", 1.0)


def test_short_ttl_renews_at_a_third() -> None:
    cfg = parse_config('[cluster]\netcd = "http://127.0.0.1:2379"\nlease_ttl = "3s"\n')
    assert cfg.cluster is not None
    assert cfg.cluster.renew_interval == 1.0


@pytest.mark.parametrize(("text", "message"), [
    ('lease_ttl = "3s"', "line 1: [cluster] etcd: missing"),
    ('etcd = ["10.0.0.1:2379"]', 'line 2: [cluster] etcd: "10.0.0.1:2379" is not an http'),
    ('etcd = ["http://e:2379"]\nrenew_interval = "10s"', "line 3: [cluster] renew_interval "
     "(10s) must be shorter than 2/3 of lease_ttl (15s)"),
    ('etcd = ["http://e:2379"]\netcd_password = "pw"', "etcd_password: set without etcd_user"),
    ('etcd = ["http://e:2379"]\netcd_user = "u"\netcd_password_env = "NOPE_UNSET"',
     "environment variable NOPE_UNSET is not set"),
    ('etcd = ["http://e:2379"]\nprefix = "solgate"', 'must start and end with "/"'),
    ('etcd = ["http://e:2379"]\nleas_ttl = 3', "leas_ttl: unknown setting"),
])
def test_errors_name_the_line_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[cluster]\n" + text + "\n", environ={})
    assert message in str(info.value)


def test_password_never_in_repr_and_digest_ignores_member_identity() -> None:
    a = parse_config('[cluster]\netcd = ["http://e:2379"]\nname = "a"\netcd_user = "u"\n'
                     'etcd_password = "s3cret"\n' + CONSOLE)
    b = parse_config('[cluster]\netcd = ["http://e:2379"]\nname = "b"\nweight = 2\n' + CONSOLE)
    other = parse_config('[cluster]\netcd = ["http://e:2379"]\n' + CONSOLE.replace(
        "127.0.0.1", "127.0.0.2"))
    assert a.cluster is not None
    assert b.cluster is not None
    assert other.cluster is not None
    assert "s3cret" not in repr(a)
    assert digest(a.cluster, a.consoles) == digest(b.cluster, b.consoles)
    assert digest(a.cluster, a.consoles) != digest(other.cluster, other.consoles)


def test_example_file_documents_every_cluster_key() -> None:
    text = (Path(__file__).resolve().parents[1] / "solgate.toml").read_text()
    assert "# [cluster]" in text
    for key in CLUSTER_KEYS:
        assert re.search(rf"^# {key} = ", text, re.MULTILINE), key


# check-config loads the ssh layer: asyncssh touches cryptography's deprecated DSA names.
@pytest.mark.filterwarnings("ignore:DSA is deprecated")
def test_check_config_prints_the_member_and_its_digest(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    from solgate.cli import main

    path = tmp_path / "solgate.toml"
    path.write_text('[cluster]\netcd = ["http://127.0.0.1:2379"]\nname = "gw1"\n' + CONSOLE)
    assert main(["check-config", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cluster: member gw1, etcd http://127.0.0.1:2379, prefix /solgate/, lease 15s " \
           "renewed every 5s, weight 1, configuration digest " in out


def test_member_secret_from_file_or_env_never_in_repr(tmp_path: Path) -> None:
    secret = "s3cret-" + "a" * 40
    (tmp_path / "cluster.secret").write_text(secret + "\n")
    cfg = parse_config(f'[cluster]\netcd = "http://e:2379"\nmember_secret_file = '
                       f'"{tmp_path / "cluster.secret"}"\n')
    assert cfg.cluster is not None
    assert cfg.cluster.member_secret == secret
    assert secret not in repr(cfg.cluster)
    cfg = parse_config('[cluster]\netcd = "http://e:2379"\nmember_secret_env = "S"\n',
                       environ={"S": secret})
    assert cfg.cluster is not None
    assert cfg.cluster.member_secret == secret
    with pytest.raises(ConfigError, match="too short secret.*openssl rand -hex 32"):
        parse_config('[cluster]\netcd = "http://e:2379"\nmember_secret_env = "S"\n',
                      environ={"S": "short"})
