"""Counters for `/metrics`, rendered in the Prometheus text format.

Plain attribute increments on the hot path; the text is built only when `/metrics` is read.
"""

import bisect

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self):
        self.connections_total = 0
        self.connections_refused = {}  # reason -> count
        self.messages_in = 0
        self.messages_out = 0
        self.errors = {}  # code -> count
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def error(self, code):
        self.errors[code] = self.errors.get(code, 0) + 1

    def refused(self, reason):
        self.connections_refused[reason] = self.connections_refused.get(reason, 0) + 1

    def observe_command(self, seconds):
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def render(self, clients, authenticated, cache_stats):
        lines = []

        def metric(name, kind, help_text, samples):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{labels} {value}")

        metric("zbifrost_connections", "gauge", "Open WebSocket connections.", [("", clients)])
        metric("zbifrost_authenticated_connections", "gauge", "Open connections with a valid token.",
               [("", authenticated)])
        metric("zbifrost_connections_total", "counter", "WebSocket connections accepted.",
               [("", self.connections_total)])
        metric("zbifrost_connections_refused_total", "counter", "Upgrades or sessions refused, by reason.",
               [(f'{{reason="{reason}"}}', count) for reason, count in sorted(self.connections_refused.items())])
        metric("zbifrost_messages_in_total", "counter", "Frames received from clients.", [("", self.messages_in)])
        metric("zbifrost_messages_out_total", "counter", "Frames sent to clients.", [("", self.messages_out)])
        metric("zbifrost_errors_total", "counter", "Error replies, by code.",
               [(f'{{code="{code}"}}', count) for code, count in sorted(self.errors.items())])
        cumulative, samples = 0, []
        for bound, count in zip(LATENCY_BUCKETS + (float("inf"),), self.latency_counts):
            cumulative += count
            samples.append((f'_bucket{{le="{"+Inf" if bound == float("inf") else bound}"}}', cumulative))
        samples += [("_sum", round(self.latency_sum, 6)), ("_count", self.latency_count)]
        metric("zbifrost_command_seconds", "histogram",
               "Time from dispatch to reply of asynchronous commands (plugins, dialogs, wizards).", samples)
        metric("zbifrost_cache_hits_total", "counter", "Query cache hits.", [("", cache_stats["hits"])])
        metric("zbifrost_cache_misses_total", "counter", "Query cache misses.", [("", cache_stats["misses"])])
        metric("zbifrost_cache_entries", "gauge", "Entries in the query cache.", [("", cache_stats["size"])])
        return "\n".join(lines) + "\n"
