"""`/metrics`: the engine's counters in the Prometheus exposition format, via prometheus-client.

Nothing is counted here: a custom collector reads the manager when Prometheus scrapes,
so the numbers are the engine's own (bytes, reconnects, panics, SOL retransmits, dropped
datagrams, log and events write errors) and nothing can drift.  Each app gets its own
`CollectorRegistry` (never the library's global one), so tests and several apps in one
process do not collide.

Per-console series carry the console name as their only label and are limited to the
consoles the scraping user may see; daemon-wide totals (consoles by state, events file)
count every console, as `/healthz` does.  Hosts, users and credentials are never labels.

The web layer sees the engine only through `solgate.web.model.ConsoleManager`; the
extra counters (`bytes_in`, `sol_counters()`, `log.write_errors`, ...) are read when the
console object has them, so a stand-in engine simply exports fewer series.
"""

from __future__ import annotations

import contextvars
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

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
}

# Which consoles the current scrape may see; set by the handler around one synchronous
# generate call, so concurrent scrapes of different users never mix.
_visible: contextvars.ContextVar[Callable[[ConsoleView], bool] | None] = (
    contextvars.ContextVar("solgate_metrics_visible", default=None))


class SolgateCollector(Collector):
    """Reads a `ConsoleManager` at scrape time and yields metric families."""

    def __init__(self, manager: ConsoleManager, *,
                 web_sessions: Callable[[], int] | None = None) -> None:
        self.manager = manager
        self.web_sessions = web_sessions

    def collect(self) -> Iterator[Metric]:
        consoles = list(self.manager.consoles())
        yield from self._daemon_wide(consoles)
        visible = _visible.get()
        shown = [c for c in consoles if visible is None or visible(c)]
        yield from self._per_console(shown)

    # --- daemon-wide -------------------------------------------------------------------

    def _daemon_wide(self, consoles: list[ConsoleView]) -> Iterator[Metric]:
        states: Counter[str] = Counter()
        counts_by_state = getattr(self.manager, "counts_by_state", None)
        if callable(counts_by_state):  # every state the engine knows, zeros included
            states.update(dict.fromkeys(counts_by_state(), 0))
        states.update(str(c.state) for c in consoles)
        family = GaugeMetricFamily("solgate_consoles", "Configured consoles by state.",
                                   labels=["state"])
        for state, n in sorted(states.items()):
            family.add_metric([state], n)
        yield family
        yield GaugeMetricFamily("solgate_viewers", "Attached viewers over all consoles.",
                                value=sum(c.hub.viewers for c in consoles))
        yield GaugeMetricFamily("solgate_writers", "Consoles with a write-lock holder.",
                                value=sum(1 for c in consoles if c.hub.writer))
        yield CounterMetricFamily("solgate_panics", "Kernel panics seen over all consoles "
                                  "since their workers started.",
                                  value=sum(c.panic_count for c in consoles))
        if self.web_sessions is not None:
            yield GaugeMetricFamily("solgate_web_sessions", "Logged-in browser sessions.",
                                    value=self.web_sessions())
        events = getattr(self.manager, "events", None)
        if events is not None:
            yield CounterMetricFamily(
                "solgate_events_write_errors",
                "Failed writes to events.jsonl (records wait in memory and are retried).",
                value=events.write_errors)
            yield CounterMetricFamily(
                "solgate_events_records_dropped",
                "Event records lost because the disk refused them for too long.",
                value=events.records_dropped)
            yield GaugeMetricFamily("solgate_events_file_ok",
                                    "1 while events.jsonl is writable, 0 while it fails.",
                                    value=0 if events.error else 1)

    # --- per console ---------------------------------------------------------------------

    def _per_console(self, consoles: list[ConsoleView]) -> Iterator[Metric]:
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
        slow = counter("solgate_console_viewers_dropped",
                       "Viewers disconnected for being too slow.")
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
            up.add_metric(name, 1 if c.state == "active" else 0)
            since.add_metric(name, c.state_since)
            if c.last_output is not None:
                last.add_metric(name, c.last_output)
            viewers.add_metric(name, c.hub.viewers)
            panics.add_metric(name, c.panic_count)
            resyncs.add_metric(name, getattr(c.hub, "lagged_total", 0))
            slow.add_metric(name, getattr(c.hub, "dropped_total", 0))
            _maybe(bytes_in, c, "bytes_in")
            _maybe(bytes_out, c, "bytes_out")
            _maybe(reconnects, c, "reconnects")
            log = getattr(c, "log", None)
            if log is not None:
                log_errors.add_metric(name, log.write_errors)
                log_lost.add_metric(name, log.bytes_lost)
                log_ok.add_metric(name, 0 if log.error else 1)
            sol_counters = getattr(c, "sol_counters", None)
            if callable(sol_counters):
                counts = sol_counters()
                for key, family in sol.items():
                    family.add_metric(name, counts.get(key, 0))
            datagram_drops = getattr(c, "datagram_drops", None)
            if callable(datagram_drops):
                for reason, n in sorted(datagram_drops().items()):
                    drops.add_metric([c.name, reason], n)

        yield from (up, since, last, viewers, panics, resyncs, slow, bytes_in, bytes_out,
                    reconnects, log_errors, log_lost, log_ok, *sol.values(), drops)


def _maybe(family: CounterMetricFamily, console: Any, attr: str) -> None:
    value = getattr(console, attr, None)
    if isinstance(value, int | float):
        family.add_metric([console.name], value)


_registries: weakref.WeakKeyDictionary[web.Application, CollectorRegistry] = (
    weakref.WeakKeyDictionary())


def registry_for(app: web.Application) -> CollectorRegistry:
    """The app's own registry, made on first use (never prometheus-client's global one)."""
    registry = _registries.get(app)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        sessions = app[auth_key].sessions
        registry.register(SolgateCollector(app[manager_key],
                                           web_sessions=lambda: len(sessions)))
        _registries[app] = registry
    return registry


async def metrics(request: web.Request) -> web.Response:
    """Prometheus scrape endpoint; needs a login or a bearer token like the rest of the API."""
    ident = require_identity(request)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    token = _visible.set(ident.user.can_view)
    try:
        body = encoder(registry_for(request.app))
    finally:
        _visible.reset(token)
    return web.Response(body=body, headers={"Content-Type": content_type,
                                            "Cache-Control": "no-store"})
