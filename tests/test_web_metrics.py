"""`/metrics`: what a Prometheus scrape sees, from the stand-in engine and the real one.

The real-engine test runs `ConsoleManager` against a simulated BMC over loopback UDP and
checks the counters an operator alerts on: bytes, SOL retransmits (under injected packet
loss), and that counters keep counting across a reconnect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families
from web_fakes import (
    PASSWORDS,
    TOKENS,
    StaticConsoles,
    login,
    make_app,
    start_client,
    users_raw,
)

from solgate.config import parse_config
from solgate.config.users import parse_users
from solgate.console.manager import ConsoleManager
from solgate.ipmi.udp_pool import SocketPool
from solgate.sim.bmc import SimBmcConfig
from solgate.sim.fleet import SimFleet
from solgate.sim.host import SimHost
from solgate.web.app import create_app
from tests.engine_helpers import wait_for

ALICE = {"Authorization": f"Bearer {TOKENS['alice']}"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and sorted labels (parses the real format)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def per_console(values: dict, name: str) -> dict[str, float]:
    return {dict(labels)["console"]: v for (n, labels), v in values.items() if n == name}


async def test_scrape_parses_and_per_console_series_follow_the_acl(tmp_path: Path) -> None:
    manager = StaticConsoles(tmp_path)
    manager.add("web01", tags=("rack1",))
    manager.add("db01", state="auth-failed", panic_count=3)
    client = await start_client(make_app(tmp_path, manager))
    try:
        assert (await client.get("/metrics")).status == 401
        resp = await client.get("/metrics", headers=ALICE)
        assert resp.status == 200
        values = samples(await resp.text())
        assert values[("solgate_consoles", (("state", "active"),))] == 1
        assert values[("solgate_consoles", (("state", "auth-failed"),))] == 1
        assert values[("solgate_panics_total", ())] == 3
        assert per_console(values, "solgate_console_up") == {"web01": 1, "db01": 0}
        assert per_console(values, "solgate_console_panics_total") == {"web01": 0, "db01": 3}

        # rita may see web* only: db01's series are not hers to read, totals stay totals.
        await login(client, "rita")
        values = samples(await (await client.get("/metrics")).text())
        assert per_console(values, "solgate_console_up") == {"web01": 1}
        assert values[("solgate_consoles", (("state", "auth-failed"),))] == 1
        assert values[("solgate_web_sessions", ())] == 1
    finally:
        await client.close()


async def test_openmetrics_on_request_and_no_secrets_in_the_output(tmp_path: Path) -> None:
    manager = StaticConsoles(tmp_path)
    manager.add("web01")
    app = make_app(tmp_path, manager)
    client = await start_client(app)
    try:
        resp = await client.get("/metrics", headers={
            **ALICE, "Accept": "application/openmetrics-text; version=1.0.0"})
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        text = await resp.text()
        assert text.rstrip().endswith("# EOF")
        plain = await (await client.get("/metrics", headers=ALICE)).text()
        for secret in (*PASSWORDS.values(), *TOKENS.values(), "scrypt$"):
            assert secret not in text
            assert secret not in plain
    finally:
        await client.close()


async def test_the_shared_udp_sockets_counters_are_daemon_wide_series(tmp_path: Path) -> None:
    """What the shared UDP sockets lost or refused (one socket carries 64 consoles, so no
    console label), with help that says what a rise means, for every user who may scrape."""
    manager = StaticConsoles(tmp_path)
    manager.add("web01")
    manager.add("db01")
    manager.udp = {"send_dropped": 7, "truncated": 1, "errors": 2, "stray": 40}
    client = await start_client(make_app(tmp_path, manager))
    try:
        await login(client, "rita")  # sees web* only: the totals are still totals
        resp = await client.get("/metrics")
        text = await resp.text()
        values = samples(text)
        assert {name: v for (name, labels), v in values.items()
                if name.startswith("solgate_udp_")} == {
            "solgate_udp_sends_dropped_total": 7,
            "solgate_udp_truncated_datagrams_total": 1,
            "solgate_udp_errors_total": 2,
            "solgate_udp_stray_datagrams_total": 40,
        }
        helps = {family.name: family.documentation
                 for family in text_string_to_metric_families(text)}
        assert "send buffer was full" in helps["solgate_udp_sends_dropped"]
        assert "no session" in helps["solgate_udp_stray_datagrams"]
        assert "send buffer was full" in helps["solgate_sol_fast_path_ack_failures"]
    finally:
        await client.close()


async def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    one, two = StaticConsoles(tmp_path / "a"), StaticConsoles(tmp_path / "b")
    one.add("web01")
    two.add("db01")
    two.add("db02")
    clients = [await start_client(make_app(tmp_path, m)) for m in (one, two)]
    try:
        seen = []
        for client in clients:
            values = samples(await (await client.get("/metrics", headers=ALICE)).text())
            seen.append(sorted(per_console(values, "solgate_console_up")))
        assert seen == [["web01"], ["db01", "db02"]]
        # Nothing leaked into the library's process-wide registry.
        assert b"solgate_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)
    finally:
        for client in clients:
            await client.close()


def _engine_config(data_dir: Path, port: int) -> object:
    text = "\n".join([
        f'data_dir = "{data_dir}"',
        "[server]", 'listen = "127.0.0.1:0"', 'auth = "login"',
        "[defaults]", 'username = "admin"', 'password = "password"',
        "cipher_suites = [17, 3]", 'reconnect_max = "1s"', 'retransmit_timeout = "0.5s"',
        "[consoles.sim001]", 'host = "127.0.0.1"', f"port = {port}",
    ])
    return dataclasses.replace(parse_config(text, "<test>"), users=parse_users(users_raw()))


async def test_real_engine_counters_survive_loss_and_a_reconnect(tmp_path: Path) -> None:
    fleet = SimFleet(1, base_port=0, config_factory=lambda i, name: SimBmcConfig(
        name=name, host=SimHost(name, seed=i, powered=True)))
    await fleet.start()
    manager = ConsoleManager(_engine_config(tmp_path, fleet.ports[0]))  # type: ignore[arg-type]
    await manager.start()
    client = await start_client(create_app(manager.config, manager))
    try:
        worker = manager.get("sim001")
        assert worker is not None
        await wait_for(lambda: worker.state == "active", 5.0)

        async def scrape() -> dict:
            return samples(await (await client.get("/metrics", headers=ALICE)).text())

        worker.send_input(b"uname\r")
        await wait_for(lambda: b"Linux" in worker.log_path.read_bytes(), 5.0)
        values = await scrape()
        assert per_console(values, "solgate_console_up") == {"sim001": 1}
        assert per_console(values, "solgate_console_bytes_out_total") == {"sim001": 6}
        assert per_console(values, "solgate_console_bytes_in_total")["sim001"] >= 6
        assert per_console(values, "solgate_sol_retransmits_total") == {"sim001": 0}
        # the compiled fast path's own counts are series too (0 on the pure-Python path)
        assert per_console(values, "solgate_sol_fast_path_ack_failures_total") == {"sim001": 0}
        assert "sim001" in per_console(values, "solgate_sol_fast_path_packets_total")
        assert values[("solgate_consoles", (("state", "active"),))] == 1
        assert values[("solgate_consoles", (("state", "unreachable"),))] == 0
        # the engine's own shared sockets: nothing lost, nobody else talking to them ...
        assert values[("solgate_udp_sends_dropped_total", ())] == 0
        assert values[("solgate_udp_stray_datagrams_total", ())] == 0
        assert values[("solgate_udp_errors_total", ())] == 0
        # ... until someone does
        (shared,) = SocketPool.of(asyncio.get_running_loop()).sockets
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.sendto(b"hello?", ("127.0.0.1", shared.sock.getsockname()[1]))
        await wait_for(lambda: shared.stray == 1, 5.0)
        assert (await scrape())[("solgate_udp_stray_datagrams_total", ())] == 1
        assert "password" not in str(values)

        # The BMC stops hearing us: our keystroke packet is resent, and /metrics says so.
        fleet.bmcs[0].faults.inbound.drop = 1.0
        worker.send_input(b"x")
        await wait_for(lambda: worker.sol_counters()["retransmits"] >= 1, 5.0)
        fleet.bmcs[0].faults.inbound.drop = 0.0
        before = per_console(await scrape(), "solgate_sol_retransmits_total")["sim001"]
        assert before >= 1

        # A reconnect starts a new SOL stream; the counter keeps what the old one counted.
        worker.reconnect(force_deactivate=False, user="alice")
        await wait_for(lambda: worker.reconnects >= 1 and worker.state == "active", 10.0)
        values = await scrape()
        assert per_console(values, "solgate_sol_retransmits_total")["sim001"] >= before
        assert per_console(values, "solgate_console_reconnects_total")["sim001"] >= 1
        assert per_console(values, "solgate_console_log_write_errors_total") == {"sim001": 0}
        assert values[("solgate_events_write_errors_total", ())] == 0
    finally:
        await client.close()
        await manager.stop()
        await fleet.stop()
