"""Prometheus metrics, one registry per app (so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "molt_requests", "Chat requests by model alias and HTTP status", ["model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "molt_request_latency_seconds", "Wall time of chat requests", ["model", "stream"],
            buckets=_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "molt_time_to_first_token_seconds", "Time to the first streamed byte", ["model"],
            buckets=_BUCKETS, registry=r,
        )
        self.upstream_errors = Counter(
            "molt_upstream_errors", "Upstream failures by model alias and kind", ["model", "kind"],
            registry=r,
        )
        self.rate_limited = Counter(
            "molt_rate_limited", "Requests refused with 429 by a key's limit", ["limit"],
            registry=r,
        )
        self.recorder_dropped = Counter(
            "molt_recorder_dropped", "Turns dropped because the recorder queue was full",
            registry=r,
        )
        self.recorder_written = Counter(
            "molt_recorder_written", "Turns written to the store", registry=r
        )
        self.recorder_write_errors = Counter(
            "molt_recorder_write_errors", "Writes the store could not take now (retried)",
            registry=r,
        )
        self.recorder_dead_letters = Counter(
            "molt_recorder_dead_letters",
            "Turns the store refused whole, kept in dead_letters (a minimal turn is stored)",
            registry=r,
        )
        self.recorder_restarts = Counter(
            "molt_recorder_restarts", "Times the writer task died and was restarted", registry=r
        )
        self.recorder_finalize_errors = Counter(
            "molt_recorder_finalize_errors", "Turns whose response could not be read", registry=r
        )
        self.recorder_spilled = Counter(
            "molt_recorder_spilled", "Turns spilled to a local file at a stop past its deadline",
            registry=r,
        )
        self.recorder_replayed = Counter(
            "molt_recorder_replayed", "Turns replayed from spool and spill files at start",
            registry=r,
        )
        self.recorder_spool_errors = Counter(
            "molt_recorder_spool_errors", "Turns that could not be appended to the spool",
            registry=r,
        )
        self.recorder_lost = Counter(
            "molt_recorder_lost", "Turns neither stored, dead-lettered nor spilled", registry=r
        )
        self.recorder_queue_depth = Gauge(
            "molt_recorder_queue_depth", "Turns waiting to be written", registry=r
        )
        self.recorder_oldest_age = Gauge(
            "molt_recorder_oldest_queued_seconds", "How long the oldest queued turn has waited",
            registry=r,
        )

        self.recorder_sink_errors = Counter(
            "molt_recorder_sink_errors", "Stored batches a sink (the OTLP export) failed to take",
            registry=r,
        )
        self.otel_spans = Counter(
            "molt_otel_spans", "Turns sent as OTLP spans, by outcome (exported, failed, dropped)",
            ["outcome"], registry=r,
        )

    def watch_recorder(self, depth: Callable[[], int], oldest_age: Callable[[], float]) -> None:
        self.recorder_queue_depth.set_function(depth)
        self.recorder_oldest_age.set_function(oldest_age)

    def render(self) -> bytes:
        return generate_latest(self.registry)
