"""Sinks of the recorder: told of every stored turn, unable to stop or slow recording."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from proxy.metrics import Metrics
from proxy.otel_sink import OtelSink
from proxy.recorder import Recorder
from store.database import Database
from store.ids import new_id
from store.otel import SpanWriter
from store.records import TurnRecord
from store.settings import OtelSettings, RecorderSettings, StoreSettings
from store.trajectories import TrajectoryStore


def _rec(i: int) -> TurnRecord:
    return TurnRecord(id=new_id("turn"), tenant_id="t", session_id=f"ses_{i % 3}", idx=i,
                      turn_type="main", created_at=time.time(), request_model="m", stream=False,
                      request={"messages": [{"role": "user", "content": f"q{i}"}]},
                      response_bytes=b'{"id":"c","model":"m-1","choices":[{"index":0,'
                                     b'"message":{"role":"assistant","content":"a"},'
                                     b'"finish_reason":"stop"}],"usage":{"prompt_tokens":3,'
                                     b'"completion_tokens":1}}')


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    def turns_written(self, batch: Sequence[TurnRecord]) -> None:
        self.calls += 1
        raise RuntimeError("sink bug")


async def test_spans_of_stored_turns_and_a_broken_sink_changes_nothing(tmp_path: Path) -> None:
    db = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{tmp_path}/r.db"))
    metrics = Metrics()
    memory = InMemorySpanExporter()
    sink = OtelSink(OtelSettings(endpoint="http://unused"), metrics,
                    writer=SpanWriter(exporter=memory))
    broken = Broken()
    rec = Recorder(TrajectoryStore(db), RecorderSettings(batch_size=4, linger_s=0), metrics,
                   sinks=[broken, sink])
    sink.start()
    rec.start()
    for i in range(10):
        assert rec.submit(_rec(i))
    assert await rec.flush()
    await rec.stop()
    sink.stop()
    assert await TrajectoryStore(db).count_turns() == 10
    assert broken.calls >= 3 and metrics.recorder_sink_errors._value.get() == broken.calls
    spans = memory.get_finished_spans()
    assert len(spans) == 10 and sink.dropped == 0
    # the span is made from the stored turn: its response read, its usage filled in
    attrs = spans[0].attributes
    assert attrs is not None
    assert (attrs["gen_ai.response.model"], attrs["gen_ai.usage.input_tokens"]) == ("m-1", 3)
    await db.close()


def test_a_full_queue_drops_and_counts() -> None:
    metrics = Metrics()
    sink = OtelSink(OtelSettings(endpoint="http://unused", queue_size=2), metrics,
                    writer=SpanWriter(exporter=InMemorySpanExporter()))
    sink.turns_written([_rec(i) for i in range(5)])  # not started: nothing takes from the queue
    assert sink.dropped == 3
    assert metrics.otel_spans.labels("dropped")._value.get() == 3
    sink.start()
    sink.stop()
