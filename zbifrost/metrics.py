"""Counters for `/metrics`, exposed through prometheus_client.

Plain attribute increments on the hot path; a prometheus_client collector turns them into
metric families only when `/metrics` is read, next to prometheus_client's process_* metrics.
Counter families are named without `_total` (prometheus_client adds it to the samples), so no
two families share a name.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from .hub import Hub

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """What the connections count; `registry(hub)` exposes it."""

    def __init__(self) -> None:
        self.connections_total = 0
        self.connections_refused: dict[str, int] = {}  # reason -> count
        self.messages_in = 0
        self.messages_out = 0
        self.errors: dict[str, int] = {}  # code -> count
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def refused(self, reason: str) -> None:
        self.connections_refused[reason] = self.connections_refused.get(reason, 0) + 1

    def observe_command(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def registry(self, hub: Hub) -> CollectorRegistry:
        """A prometheus_client registry for `hub`: these counters, the live gauges and the
        standard process_* metrics (one registry per hub, so several servers can share a
        process, as in the tests)."""
        registry = CollectorRegistry(auto_describe=True)
        registry.register(_Collector(self, hub))
        ProcessCollector(registry=registry)
        return registry


class _Collector:
    """Turns Metrics and the hub's live state into metric families at scrape time."""

    def __init__(self, metrics: Metrics, hub: Hub) -> None:
        self.metrics = metrics
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        metrics, hub = self.metrics, self.hub
        cache_stats = hub.cache.stats()
        yield GaugeMetricFamily("zbifrost_connections", "Open WebSocket connections.", value=len(hub.clients))
        yield GaugeMetricFamily("zbifrost_authenticated_connections", "Open connections with a valid token.",
                                value=hub.authenticated_clients)
        yield CounterMetricFamily("zbifrost_connections_accepted", "WebSocket connections accepted.",
                                  value=metrics.connections_total)
        yield _labelled(CounterMetricFamily("zbifrost_connections_refused", "Upgrades or sessions refused, by reason.",
                                            labels=["reason"]), metrics.connections_refused)
        yield CounterMetricFamily("zbifrost_messages_in", "Frames received from clients.", value=metrics.messages_in)
        yield CounterMetricFamily("zbifrost_messages_out", "Frames sent to clients.", value=metrics.messages_out)
        yield _labelled(CounterMetricFamily("zbifrost_errors", "Error replies, by code.", labels=["code"]),
                        metrics.errors)
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), metrics.latency_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        yield HistogramMetricFamily("zbifrost_command_seconds",
                                    "Time from dispatch to reply of asynchronous commands (plugins, dialogs, wizards).",
                                    buckets=buckets, sum_value=metrics.latency_sum)
        yield CounterMetricFamily("zbifrost_cache_hits", "Query cache hits.", value=cache_stats["hits"])
        yield CounterMetricFamily("zbifrost_cache_misses", "Query cache misses.", value=cache_stats["misses"])
        yield GaugeMetricFamily("zbifrost_cache_entries", "Entries in the query cache.", value=cache_stats["size"])


def _labelled(family: CounterMetricFamily, counts: dict[str, int]) -> CounterMetricFamily:
    for label, count in sorted(counts.items()):
        family.add_metric([label], count)
    return family
