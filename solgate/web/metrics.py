"""`/metrics`: the engine's counters in the Prometheus exposition format, via prometheus-client.

Nothing is counted here: a custom collector reads the manager when Prometheus scrapes,
so the numbers are the engine's own (bytes, reconnects, panics, SOL retransmits, dropped
datagrams, log and events write errors) and nothing can drift.  Each app gets its own
`CollectorRegistry` (never the library's global one), so tests and several apps in one
process do not collide.

Per-console series carry the console name as their only label and are limited to the
consoles the scraping user may see; daemon-wide totals (consoles by state, events file)
count every console, as `/healthz` does.  Hosts, users and credentials are never labels.

The web layer sees the engine only through `solgate.web.model.ConsoleManager`, whose
protocol names every counter read here (`bytes_in`, `sol_counters()`, `log`, ...).
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from solgate.web.keys import auth_key, manager_key
from solgate.web.middleware import require_identity
from solgate.web.model import ConsoleManager, ConsoleView

# SolStream counters worth a series of their own (the rest are protocol trivia).
SOL_COUNTERS = {
    "retransmits": "SOL packets we resent because the BMC did not acknowledge them in time.",
    "stalls": "SOL packets given up after every retry (the activation ends).",
    "dropped_bytes": "Keystroke characters lost with packets given up after every retry.",
    "nacks_received": "SOL packets the BMC refused (NACK).",
    "overruns": "BMC packets flagged 'transmit overrun': the BMC lost host output.",
    "malformed": "SOL payloads that did not decode (dropped).",
    "fast_path_packets": "SOL data packets taken whole by the compiled fast path "
                         "(ipmi/fastpath.py); 0 on the pure-Python path.",
    "fast_path_ack_failures": "ACKs the compiled fast path could not hand to the socket "
                              "(its send buffer was full, see solgate_udp_sends_dropped; "
                              "the BMC resends those packets); 0 on the pure-Python path.",
}

# The shared UDP sockets' counters (solgate.ipmi.udp_pool.COUNTERS), daemon-wide: one
# socket carries up to 64 consoles, so they have no console label.
UDP_COUNTERS = {
    "send_dropped": ("solgate_udp_sends_dropped",
                     "Datagrams to BMCs dropped because a UDP socket's send buffer was full "
                     "(lost ACKs and requests: the protocol resends them). A steady rise "
                     "means the host cannot send as fast as its consoles need: look at "
                     "its CPU load and network, or raise net.core.wmem_default. "
                     "0 on the pure-Python path."),
    "truncated": ("solgate_udp_truncated_datagrams",
                  "Datagrams longer than 4096 bytes, dropped unread (IPMI datagrams are a "
                  "few hundred). A rise means something other than a BMC sends to "
                  "solgate's UDP ports, or a BMC's firmware is broken. "
                  "0 on the pure-Python path."),
    "errors": ("solgate_udp_errors",
               "Errors the UDP sockets reported on a send or a read, such as no route to "
               "a BMC's network or a link-local address the kernel cannot send to: the "
               "consoles behind them do not connect. Look at their state detail, and at "
               "the log of solgate.ipmi.transport at debug level for the error."),
    "stray": ("solgate_udp_stray_datagrams",
              "Datagrams from an address with no session, dropped. A few come late after a "
              "reconnect; a steady rise means something else sends to solgate's UDP ports "
              "(a BMC configured under another address, a scan): find the source with "
              "tcpdump."),
}

# The numbers of the scrape under way: read on the event loop, formatted in a thread.
_snapshot: contextvars.ContextVar[Snapshot | None] = contextvars.ContextVar(
    "solgate_metrics_snapshot", default=None)


@dataclass(frozen=True, slots=True)
class ConsoleStats:
    """One console's numbers at scrape time."""

    name: str
    up: bool
    state_since: float
    last_output: float | None
    viewers: int
    panics: int
    resyncs: int
    viewers_dropped: int
    bytes_in: int
    bytes_out: int
    reconnects: int
    log: tuple[int, int, bool]  # write errors, bytes lost, writable
    sol: Mapping[str, int]
    drops: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Snapshot:
    states: dict[str, int]
    viewers: int
    writers: int
    panics: int
    web_sessions: int | None
    events: tuple[int, int, bool]  # write errors, records dropped, writable
    udp: Mapping[str, int]
    consoles: list[ConsoleStats]


class SolgateCollector(Collector):
    """Reads a `ConsoleManager` at scrape time and yields metric families.

    `snapshot()` only reads attributes (cheap, on the event loop); turning a snapshot
    into families and text is the costly part and may run in a thread.
    """

    def __init__(self, manager: ConsoleManager, *,
                 web_sessions: Callable[[], int] | None = None) -> None:
        self.manager = manager
        self.web_sessions = web_sessions

    def snapshot(self, visible: Callable[[ConsoleView], bool] | None = None) -> Snapshot:
        """Daemon-wide totals over every console; per-console stats for the visible ones."""
        consoles = list(self.manager.consoles())
        states: Counter[str] = Counter()
        # Every state the engine knows, zeros included.
        states.update(dict.fromkeys(self.manager.counts_by_state(), 0))
        states.update(str(c.state) for c in consoles)
        events = self.manager.events
        return Snapshot(
            states=dict(states),
            viewers=sum(c.hub.viewers for c in consoles),
            writers=sum(1 for c in consoles if c.hub.writer),
            panics=sum(c.panic_count for c in consoles),
            web_sessions=self.web_sessions() if self.web_sessions is not None else None,
            events=(events.write_errors, events.records_dropped, not events.error),
            udp=self.manager.udp_counters(),
            consoles=[_console_stats(c) for c in consoles if visible is None or visible(c)],
        )

    def collect(self) -> Iterator[Metric]:
        snap = _snapshot.get()
        if snap is None:  # a scrape outside the handler (tests, a registry dump): read now
            snap = self.snapshot()
        yield from _daemon_families(snap)
        yield from _console_families(snap.consoles)


def _console_stats(c: ConsoleView) -> ConsoleStats:
    log = c.log
    return ConsoleStats(
        name=c.name, up=c.state == "active", state_since=c.state_since,
        last_output=c.last_output, viewers=c.hub.viewers, panics=c.panic_count,
        resyncs=c.hub.lagged_total, viewers_dropped=c.hub.dropped_total,
        bytes_in=c.bytes_in, bytes_out=c.bytes_out, reconnects=c.reconnects,
        log=(log.write_errors, log.bytes_lost, not log.error),
        sol=c.sol_counters(), drops=c.datagram_drops(),
    )


def _daemon_families(snap: Snapshot) -> Iterator[Metric]:
    family = GaugeMetricFamily("solgate_consoles", "Configured consoles by state.",
                               labels=["state"])
    for state, n in sorted(snap.states.items()):
        family.add_metric([state], n)
    yield family
    yield GaugeMetricFamily("solgate_viewers", "Attached viewers over all consoles.",
                            value=snap.viewers)
    yield GaugeMetricFamily("solgate_writers", "Consoles with a write-lock holder.",
                            value=snap.writers)
    yield CounterMetricFamily("solgate_panics", "Kernel panics seen over all consoles "
                              "since their workers started.", value=snap.panics)
    if snap.web_sessions is not None:
        yield GaugeMetricFamily("solgate_web_sessions", "Logged-in browser sessions.",
                                value=snap.web_sessions)
    write_errors, dropped, ok = snap.events
    yield CounterMetricFamily(
        "solgate_events_write_errors",
        "Failed writes to events.jsonl (records wait in memory and are retried).",
        value=write_errors)
    yield CounterMetricFamily(
        "solgate_events_records_dropped",
        "Event records lost because the disk refused them for too long.", value=dropped)
    yield GaugeMetricFamily("solgate_events_file_ok",
                            "1 while events.jsonl is writable, 0 while it fails.",
                            value=1 if ok else 0)
    for key, (name, doc) in UDP_COUNTERS.items():
        yield CounterMetricFamily(name, doc, value=snap.udp.get(key, 0))


def _console_families(consoles: list[ConsoleStats]) -> Iterator[Metric]:
    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=["console"])

    def counter(name: str, doc: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=["console"])

    up = gauge("solgate_console_up", "1 while the console's SOL session is active.")
    since = gauge("solgate_console_state_since_seconds",
                  "Epoch time of the console's last state change.")
    last = gauge("solgate_console_last_output_seconds",
                 "Epoch time of the last byte from the host (absent: none yet).")
    viewers = gauge("solgate_console_viewers", "Viewers attached to the console.")
    panics = counter("solgate_console_panics", "Kernel panics seen on the console.")
    resyncs = counter("solgate_console_viewer_resyncs",
                      "Times a slow viewer fell behind and was repainted.")
    slow = counter("solgate_console_viewers_dropped", "Viewers disconnected for being too slow.")
    bytes_in = counter("solgate_console_bytes_in", "Console output bytes from the host.")
    bytes_out = counter("solgate_console_bytes_out", "Keystroke bytes sent to the host.")
    reconnects = counter("solgate_console_reconnects", "SOL reconnect attempts.")
    log_errors = counter("solgate_console_log_write_errors",
                         "Failed writes to the console log (bytes wait and are retried).")
    log_lost = counter("solgate_console_log_bytes_lost",
                       "Console bytes lost because the disk refused them for too long.")
    log_ok = gauge("solgate_console_log_ok", "1 while the console log is writable.")
    sol = {key: counter(f"solgate_sol_{key}", doc) for key, doc in SOL_COUNTERS.items()}
    drops = CounterMetricFamily(
        "solgate_datagrams_dropped",
        "Datagrams from the BMC dropped by the session layer, by reason.",
        labels=["console", "reason"])

    for c in consoles:
        name = [c.name]
        up.add_metric(name, 1 if c.up else 0)
        since.add_metric(name, c.state_since)
        if c.last_output is not None:
            last.add_metric(name, c.last_output)
        viewers.add_metric(name, c.viewers)
        panics.add_metric(name, c.panics)
        resyncs.add_metric(name, c.resyncs)
        slow.add_metric(name, c.viewers_dropped)
        bytes_in.add_metric(name, c.bytes_in)
        bytes_out.add_metric(name, c.bytes_out)
        reconnects.add_metric(name, c.reconnects)
        log_errors.add_metric(name, c.log[0])
        log_lost.add_metric(name, c.log[1])
        log_ok.add_metric(name, 1 if c.log[2] else 0)
        for key, family in sol.items():
            family.add_metric(name, c.sol.get(key, 0))
        for reason, n in sorted(c.drops.items()):
            drops.add_metric([c.name, reason], n)

    yield from (up, since, last, viewers, panics, resyncs, slow, bytes_in, bytes_out,
                reconnects, log_errors, log_lost, log_ok, *sol.values(), drops)


_registries: weakref.WeakKeyDictionary[
    web.Application, tuple[CollectorRegistry, SolgateCollector]] = weakref.WeakKeyDictionary()


def registry_for(app: web.Application) -> tuple[CollectorRegistry, SolgateCollector]:
    """The app's own registry, made on first use (never prometheus-client's global one)."""
    entry = _registries.get(app)
    if entry is None:
        sessions = app[auth_key].sessions
        collector = SolgateCollector(app[manager_key], web_sessions=lambda: len(sessions))
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        entry = _registries[app] = (registry, collector)
    return entry


async def metrics(request: web.Request) -> web.Response:
    """Prometheus scrape endpoint; needs a login or a bearer token like the rest of the API."""
    ident = require_identity(request)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    registry, collector = registry_for(request.app)
    # Read the engine here, on its own loop; format in a thread (thousands of consoles
    # make megabytes of text), which sees this snapshot through the copied context.
    user = ident.user
    token = _snapshot.set(collector.snapshot(lambda c: user.can_view(c.name, c.tags)))
    try:
        body = await asyncio.to_thread(encoder, registry)
    finally:
        _snapshot.reset(token)
    return web.Response(body=body, headers={"Content-Type": content_type,
                                            "Cache-Control": "no-store"})
