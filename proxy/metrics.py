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
        self.recorder_dropped = Counter(
            "molt_recorder_dropped", "Turns dropped because the recorder queue was full",
            registry=r,
        )
        self.recorder_written = Counter(
            "molt_recorder_written", "Turns written to the store", registry=r
        )
        self.recorder_write_errors = Counter(
            "molt_recorder_write_errors", "Failed batch writes (retried)", registry=r
        )
        self.recorder_queue_depth = Gauge(
            "molt_recorder_queue_depth", "Turns waiting to be written", registry=r
        )

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.recorder_queue_depth.set_function(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)
