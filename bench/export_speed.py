"""`molt export` and the live OTLP sink: how fast, and what they cost.

    python -m bench.export_speed [--turns 20000] [--store URL]

Writes `--turns` synthetic agent turns (a 6-message conversation with a tool
call and tools each, the shape an agent loop records) into a fresh SQLite store
(or the PostgreSQL `--store`, whose schema it drops first), then measures:

- the export query alone (`store.export.iter_turns`), per turn and per session;
- JSONL and Parquet written through the same writers `molt export` uses;
- peak Python memory during each (tracemalloc, a second run), to show it streams;
- the live sink: CPU on the recorder's writer (`OtelSink.turns_written`, per
  stored batch of 256) and in the span thread (`SpanWriter.write`, per turn, with
  and without content, into the SDK's in-memory exporter).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import create_async_engine

from proxy.metrics import Metrics
from proxy.otel_sink import OtelSink
from store.database import Database
from store.export import ExportTurn, Selection, iter_turns
from store.export_files import JsonlWriter, ParquetWriter, TurnWriter
from store.ids import new_id
from store.otel import SpanWriter
from store.records import TurnRecord
from store.settings import OtelSettings, StoreSettings
from store.trajectories import TrajectoryStore

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def _turn(i: int, session: str, idx: int) -> TurnRecord:
    messages = [
        {"role": "system", "content": "You are a helpful agent. " * 20},
        {"role": "user", "content": f"What is the weather in city {i}?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": f"c{i}", "type": "function",
         "function": {"name": "get_weather", "arguments": f'{{"city": "c{i}"}}'}}]},
        {"role": "tool", "tool_call_id": f"c{i}", "content": "sunny, 12C " * 10},
        {"role": "user", "content": "And tomorrow?"},
    ]
    return TurnRecord(
        id=new_id("turn"), tenant_id="ten_bench", session_id=session, idx=idx, turn_type="main",
        created_at=1_790_000_000.0 + i, request_model="gpt-fake", stream=False,
        request={"model": "gpt-fake", "messages": messages, "tools": TOOLS},
        response={"id": f"chatcmpl-{i}", "model": "gpt-fake",
                  "choices": [{"finish_reason": "stop"}]},
        content="Rain tomorrow, 9 degrees.", finish_reason="stop", status="ok",
        input_tokens=120, output_tokens=9, latency_ms=200.0, upstream="http://127.0.0.1:9/v1")


async def _fill(db: Database, n: int) -> list[TurnRecord]:
    store, out = TrajectoryStore(db), []
    for start in range(0, n, 1000):
        batch = [_turn(i, f"ses_{i // 4:08d}", i % 4) for i in range(start, min(n, start + 1000))]
        await store.write_turns(batch)
        out.extend(batch)
    return out


async def _timed(label: str, n: int, work: Callable[[], Awaitable[int]]) -> None:
    """Run `work` twice: timed, then under tracemalloc (which slows Python) for its peak."""
    t0, c0 = time.perf_counter(), time.process_time()
    rows = await work()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    tracemalloc.start()
    await work()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{label:<28} {rows:>7} rows  {rows / wall:>8.0f} rows/s  "
          f"{cpu / max(n, 1) * 1e6:>6.1f} us CPU/turn  peak {peak / 2**20:>6.1f} MiB")


async def _drain(db: Database, sel: Selection, writer: TurnWriter | None = None) -> int:
    n = 0
    async for turn in iter_turns(db, sel):
        if writer is None or writer.write(turn):
            n += 1
    if writer is not None:
        writer.close()
    return n


def _sink_costs(records: list[TurnRecord]) -> None:
    metrics = Metrics()
    sink = OtelSink(OtelSettings(endpoint="http://unused", queue_size=len(records) + 1), metrics,
                    writer=SpanWriter(exporter=InMemorySpanExporter(),
                                      max_queue_size=len(records) + 1))
    batches = [records[i:i + 256] for i in range(0, len(records), 256)]
    c0 = time.process_time()
    for b in batches:
        sink.turns_written(b)
    on_loop = (time.process_time() - c0) / len(records)
    print(f"sink on the writer's loop    {on_loop * 1e6:6.2f} us CPU/turn "
          f"({on_loop * 256 * 1e3:.2f} ms per batch of 256)")
    sink.writer.shutdown()
    for content in (False, True):
        writer = SpanWriter(exporter=InMemorySpanExporter(), capture_content=content,
                            max_queue_size=len(records) + 1)
        turns = [ExportTurn.from_record(r) for r in records]
        c0 = time.process_time()
        for t in turns:
            writer.write(t)
        per = (time.process_time() - c0) / len(turns)
        writer.shutdown()
        print(f"span thread, content={'on ' if content else 'off'}     {per * 1e6:6.1f} us CPU/turn")


async def _reset_pg(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        await conn.execute(sa.text("CREATE SCHEMA public"))
    await engine.dispose()


async def main(args: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or f"sqlite+aiosqlite:///{tmp}/bench.db"
        if url.startswith("postgresql"):
            await _reset_pg(url)
        db = await Database.open(StoreSettings(url=url))
        records = await _fill(db, args.turns)
        print(f"{args.turns} turns in {db.dialect}; peak memory is Python allocations only")
        n = args.turns
        await _timed("query, per turn", n, lambda: _drain(db, Selection()))
        await _timed("query, per session", n, lambda: _drain(db, Selection(per="session")))
        await _timed("query, --outcome good", n, lambda: _drain(db, Selection(feedback="good")))
        await _timed("JSONL", n, lambda: _drain(db, Selection(), JsonlWriter(
            path=Path(tmp) / "o.jsonl")))
        await _timed("Parquet", n, lambda: _drain(db, Selection(), ParquetWriter(
            Path(tmp) / "o.parquet")))
        for name in ("o.jsonl", "o.parquet"):
            print(f"{name:<9} {(Path(tmp) / name).stat().st_size / 2**20:6.1f} MiB")
        await db.close()
        _sink_costs(records[: min(n, 5000)])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--turns", type=int, default=20_000)
    p.add_argument("--store", default=None, help="a PostgreSQL URL (its schema is dropped)")
    asyncio.run(main(p.parse_args()))
