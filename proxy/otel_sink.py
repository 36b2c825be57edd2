"""The live OTLP export: each turn the recorder has written becomes a span, off the request path.

The recorder's writer hands every stored batch to `OtelSink.turns_written`,
which only appends the turns to a bounded queue (never blocks, never raises;
when the queue is full the turns are dropped and counted). A thread of its own
turns them into spans (`store.otel.SpanWriter`: the GenAI attributes, the
content only with `[otel] capture_content`), and the SDK's batch processor
exports them to the collector from its thread. A slow, failing or absent
collector costs spans (counted in `molt_otel_spans{outcome}`), never a request
or a recording.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence

from proxy.metrics import Metrics
from store.export import ExportTurn
from store.otel import SpanWriter
from store.records import TurnRecord
from store.settings import OtelSettings

log = logging.getLogger("molt.otel")
_STOP = None


class OtelSink:
    """A `proxy.recorder.TurnSink` that sends turns to an OTLP collector."""

    def __init__(self, settings: OtelSettings, metrics: Metrics,
                 writer: SpanWriter | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.writer = writer or SpanWriter(
            settings.endpoint, service_name=settings.service_name,
            capture_content=settings.capture_content, timeout_s=settings.timeout_s,
            max_queue_size=settings.queue_size, on_result=self._exported)
        self._queue: queue.Queue[TurnRecord | None] = queue.Queue(maxsize=settings.queue_size)
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def _exported(self, ok: bool, n: int) -> None:
        self.metrics.otel_spans.labels("exported" if ok else "failed").inc(n)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="molt-otel", daemon=True)
            self._thread.start()

    def turns_written(self, batch: Sequence[TurnRecord]) -> None:
        for rec in batch:
            try:
                self._queue.put_nowait(rec)
            except queue.Full:
                self._drop(1)

    def _drop(self, n: int) -> None:
        self.dropped += n
        self.metrics.otel_spans.labels("dropped").inc(n)

    def _run(self) -> None:
        while True:
            rec = self._queue.get()
            if rec is _STOP:
                return
            try:
                self.writer.write(ExportTurn.from_record(rec))
            except Exception as exc:  # noqa: BLE001 - one bad turn costs its span, not the sink
                self._drop(1)
                log.error("otel: turn %s could not become a span (%s)", rec.id, type(exc).__name__)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Turn what is queued into spans, export them (at most `timeout_s`), stop. Blocking:
        call it from a thread (`asyncio.to_thread`)."""
        if self._thread is not None:
            try:
                self._queue.put(_STOP, timeout=timeout_s)
            except queue.Full:
                log.warning("otel: the span thread is not keeping up; stopping without it")
            self._thread.join(timeout_s)
            self._thread = None
        if not self.writer.flush(timeout_s):
            log.warning("otel: spans still unexported after %.1f s at stop", timeout_s)
        self.writer.shutdown()
