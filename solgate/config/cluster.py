"""The `[cluster]` table: which etcd, who this member is, and how its lease is kept.

Without a `[cluster]` table `Config.cluster` is None and solgate runs every console itself,
as it always did. Every member reads the same `solgate.toml` (distributed by the operator's
own tooling); `digest()` hashes what must agree between members (the consoles and the
cluster settings, never a secret) so each member publishes it under its member key and the
others report a mismatch.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from solgate.config.checks import (
    Invalid,
    want_duration,
    want_file,
    want_nonempty_str,
    want_secret_str,
    want_str,
    want_str_list,
)
from solgate.config.source import Source
from solgate.units import SECONDS, toml_repr

CLUSTER_KEYS = ("etcd", "name", "advertise", "lease_ttl", "renew_interval", "prefix", "weight",
                "etcd_ca", "etcd_cert", "etcd_key", "etcd_user", "etcd_password",
                "etcd_password_env", "etcd_password_file", "member_secret_file",
                "member_secret_env")
DEFAULT_LEASE_TTL = 15 * SECONDS
DEFAULT_RENEW_INTERVAL = 5 * SECONDS
DEFAULT_PREFIX = "/solgate/"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """One member's view of the cluster settings. `etcd_password` is never in repr()."""

    etcd: tuple[str, ...]
    name: str
    advertise: str = ""
    lease_ttl: float = DEFAULT_LEASE_TTL
    renew_interval: float = DEFAULT_RENEW_INTERVAL
    prefix: str = DEFAULT_PREFIX
    weight: float = 1.0
    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    etcd_user: str = ""
    etcd_password: str = field(default="", repr=False)
    # Shared by every member: lets one member read the others' console states for the
    # fleet-wide list and events (`solgate/cluster/fleet.py`). Never in repr() or logs.
    member_secret: str = field(default="", repr=False)


def parse_cluster(src: Source, raw: Mapping[str, Any]) -> ClusterConfig:
    """Check `[cluster]`; every error is one line naming the key's line."""

    def fail(key: str, text: str) -> Exception:
        return src.fail(("cluster",), key or None, text)

    path, environ = src.path, src.environ
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in CLUSTER_KEYS:
            raise src.unknown(("cluster",), key, CLUSTER_KEYS)
        try:
            values[key] = _value(key, value, path, environ)
        except Invalid as exc:
            raise fail(key, f"{key}: {exc.text}") from None
    if "etcd" not in values:
        raise fail("", 'etcd: missing; list the etcd client URLs, like etcd = '
                   '["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"]')
    secrets = [k for k in ("etcd_password", "etcd_password_env", "etcd_password_file")
               if k in values]
    if len(secrets) > 1:
        raise fail(secrets[1], f"{secrets[1]}: conflicts with {secrets[0]}; keep one")
    if secrets and "etcd_user" not in values:
        raise fail(secrets[0], f"{secrets[0]}: set without etcd_user; name the etcd user")
    password = values.pop(secrets[0], "") if secrets else ""
    if "member_secret_file" in values and "member_secret_env" in values:
        raise fail("member_secret_env", "member_secret_env: conflicts with "
                   "member_secret_file; keep one")
    member_secret = values.pop("member_secret_file", "") or values.pop("member_secret_env", "")
    values.pop("member_secret_env", None)
    if ("etcd_cert" in values) != ("etcd_key" in values):
        raise fail("etcd_cert" if "etcd_cert" in values else "etcd_key",
                   "etcd_cert and etcd_key: set both for client certificates, or neither")
    ttl = values.get("lease_ttl", DEFAULT_LEASE_TTL)
    if ttl < 2:
        raise fail("lease_ttl", "lease_ttl: must be at least 2s (etcd counts whole seconds)")
    renew = values.get("renew_interval", min(DEFAULT_RENEW_INTERVAL, ttl / 3))
    if renew >= ttl * 2 / 3:
        raise fail("renew_interval" if "renew_interval" in values else "lease_ttl",
                   f"renew_interval ({renew:g}s) must be shorter than 2/3 of lease_ttl "
                   f"({ttl:g}s), when members fence themselves; use lease_ttl / 3")
    values["renew_interval"] = renew
    values.setdefault("name", socket.gethostname().split(".")[0] or "solgate")
    return ClusterConfig(etcd_password=password, member_secret=member_secret, **values)


def _value(key: str, value: object, path: Callable[[str], Path],
           environ: Mapping[str, str]) -> Any:
    if key == "etcd":
        urls = want_str_list([value] if isinstance(value, str) else value)
        if not urls:
            raise Invalid("is empty; list at least one etcd client URL")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise Invalid(f"{toml_repr(url)} is not an http:// or https:// URL; write "
                              'etcd client URLs like "http://127.0.0.1:2379"')
        return tuple(urls)
    if key in ("name", "etcd_user"):
        text = want_nonempty_str(value)
        if key == "name" and ("/" in text or len(text) > 128):
            raise Invalid("must not contain '/' and be at most 128 characters")
        return text
    if key == "advertise":
        url = want_str(value)
        if url and urlsplit(url).scheme not in ("http", "https"):
            raise Invalid(f"{toml_repr(url)}: use the URL of this member's web server, like "
                          '"https://gw1.example.com:8443/"')
        return url
    if key in ("lease_ttl", "renew_interval"):
        return want_duration()(value)
    if key == "prefix":
        text = want_nonempty_str(value)
        if not (text.startswith("/") and text.endswith("/")):
            raise Invalid(f"{toml_repr(text)} must start and end with \"/\", like \"/solgate/\"")
        return text
    if key == "weight":
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise Invalid("must be a positive number (1 is the default share)")
        return float(value)
    if key in ("etcd_ca", "etcd_cert", "etcd_key", "etcd_password_file",
               "member_secret_file"):
        file = want_file(value, path)
        if key == "member_secret_file":
            return _member_secret(file.read_text().strip(), str(file))
        if key == "etcd_password_file":
            secret = file.read_text().rstrip("\r\n")
            if not secret:
                raise Invalid(f"{file} is empty; put the etcd password on its first line")
            return secret
        return file
    if key == "member_secret_env":
        var = want_nonempty_str(value)
        return _member_secret(environ.get(var, "").strip(), f"environment variable {var}")
    if key == "etcd_password_env":
        var = want_nonempty_str(value)
        env_secret = environ.get(var)
        if not env_secret:
            raise Invalid(f"environment variable {var} is not set or empty; export it "
                          "before starting solgate")
        return env_secret
    return want_secret_str(value)  # etcd_password


def _member_secret(secret: str, where: str) -> str:
    """At least 32 characters: it lets a member read every console's state on the others."""
    if len(secret) < 32:
        raise Invalid(f"{where} holds {'no' if not secret else 'a too short'} secret; put "
                      "at least 32 random characters in it, the same on every member "
                      "(openssl rand -hex 32)")
    return secret


def digest(cluster: ClusterConfig, consoles: Mapping[str, object]) -> str:
    """What must agree between members: console settings (repr() leaves out passwords and
    K_g) and the shared cluster settings; not this member's name, advertise URL or weight."""
    h = hashlib.sha256()
    h.update(f"{cluster.prefix}\0{cluster.lease_ttl}\0".encode())
    for name in sorted(consoles):
        h.update(f"{name}\0{consoles[name]!r}\0".encode())
    return h.hexdigest()[:16]
