"""Writing exported turns to files: JSONL fine-tuning lines, or Parquet rows.

- JSONL: one `store.chat_examples.example` per line (with `--meta`, also a
  `metadata` object); a turn without a chat prompt or without an answer (an
  error) has no example and is counted as skipped.
- Parquet: one row per selected turn, errors included, for analysis: ids,
  times, models, versions, usage, status, score and verdict as typed columns;
  `messages` (the example's messages: prompt and answer), `tools`, `answer` and
  `error` as JSON text, because the messages and tool schemas of different turns
  have different shapes that one Arrow struct cannot hold.

Both write to `<path>.partial` and rename it into place on `close()`, so a
failed export never leaves a truncated file under the asked name. Parquet is
written one row group at a time: memory stays one row group, whatever the size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from store.chat_examples import Form, answer, example, metadata, prompt, tools
from store.export import ExportTurn
from store.records import JSON


class TurnWriter(Protocol):
    def write(self, turn: ExportTurn) -> bool:
        """Write `turn`; False when it has nothing to write in this format."""
        ...

    def close(self) -> None: ...

    def abort(self) -> None:
        """Stop without keeping what was written."""
        ...


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _partial(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".partial")


class JsonlWriter:
    """Fine-tuning lines to a file (`path`) or an open text stream (`stream`, e.g. stdout)."""

    def __init__(self, *, path: Path | None = None, stream: IO[str] | None = None,
                 form: Form = "agent", meta: bool = False) -> None:
        if (path is None) == (stream is None):
            raise ValueError("give exactly one of path or stream")
        self.path = path
        self._tmp = _partial(path) if path is not None else None
        self._out: IO[str] = stream if stream is not None else open(  # noqa: SIM115 - closed in close()
            self._tmp, "w", encoding="utf-8")  # type: ignore[arg-type]
        self.form = form
        self.meta = meta

    def write(self, turn: ExportTurn) -> bool:
        line = example(turn, self.form)
        if line is None:
            return False
        if self.meta:
            line = {**line, "metadata": metadata(turn)}
        self._out.write(_dumps(line) + "\n")
        return True

    def close(self) -> None:
        if self._tmp is None:
            self._out.flush()
            return
        self._out.close()
        assert self.path is not None
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._tmp is None:
            return
        self._out.close()
        self._tmp.unlink(missing_ok=True)


def _parquet_schema() -> Any:
    import pyarrow as pa

    s, i32, i64, f64 = pa.string(), pa.int32(), pa.int64(), pa.float64()
    return pa.schema([
        ("turn_id", s), ("session_id", s), ("tenant_id", s), ("tenant", s), ("idx", i32),
        ("turn_type", s), ("created_at", pa.timestamp("us", tz="UTC")), ("request_model", s),
        ("response_model", s), ("upstream", s), ("stream", pa.bool_()), ("status", s),
        ("http_status", i32), ("finish_reason", s), ("latency_ms", f64), ("ttft_ms", f64),
        ("input_tokens", i64), ("output_tokens", i64), ("weight_version", s),
        ("skill_generation", i64), ("context_version", s), ("injected_skills", pa.list_(s)),
        ("tool_overlays", pa.list_(pa.struct([("id", s), ("version", i64), ("tool", s), ("param", s)]))),
        ("score", f64), ("scored_by", s), ("verdict", s),
        ("messages", s), ("tools", s), ("answer", s), ("error", s),
    ])


def _skill_names(injected: Sequence[Any] | None) -> list[str] | None:
    if not injected:
        return None
    return [str(s.get("id")) for s in injected if isinstance(s, dict) and s.get("id") is not None]


def served_overlays(recorded: Sequence[Any] | None) -> list[JSON]:
    """The overlay versions a turn records ({id, version, tool, param}), malformed entries left out."""
    return [{"id": str(o["id"]), "version": o.get("version"), "tool": o.get("tool"), "param": o.get("param")}
            for o in recorded or () if isinstance(o, dict) and o.get("id") is not None]


def parquet_row(turn: ExportTurn, form: Form = "agent") -> JSON:
    """One Parquet row of `turn` (the columns of `_parquet_schema`)."""
    messages, reply, offered = prompt(turn, form), answer(turn), tools(turn, form)
    if messages is not None and reply is not None:
        messages = [*messages, reply]
    return {
        "turn_id": turn.id, "session_id": turn.session_id, "tenant_id": turn.tenant_id,
        "tenant": turn.tenant, "idx": turn.idx, "turn_type": turn.turn_type,
        "created_at": datetime.fromtimestamp(turn.created_at, tz=UTC),
        "request_model": turn.request_model, "response_model": turn.response_model,
        "upstream": turn.upstream, "stream": turn.stream, "status": turn.status,
        "http_status": turn.http_status, "finish_reason": turn.finish_reason,
        "latency_ms": turn.latency_ms, "ttft_ms": turn.ttft_ms,
        "input_tokens": turn.input_tokens, "output_tokens": turn.output_tokens,
        "weight_version": turn.weight_version, "skill_generation": turn.skill_generation,
        "context_version": turn.context_version,
        "injected_skills": _skill_names(turn.injected_skills),
        "tool_overlays": served_overlays(turn.tool_overlays) or None,
        "score": turn.score, "scored_by": turn.scored_by, "verdict": turn.verdict,
        "messages": None if messages is None else _dumps(messages),
        "tools": None if offered is None else _dumps(offered),
        "answer": None if reply is None else _dumps(reply),
        "error": None if turn.error is None else _dumps(turn.error),
    }


class ParquetWriter:
    """Rows to a Parquet file, `row_group` rows at a time (pyarrow is imported here only)."""

    def __init__(self, path: Path, *, form: Form = "agent", row_group: int = 1000) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.form = form
        self.row_group = row_group
        self._schema = _parquet_schema()
        self._tmp = _partial(path)
        self._writer = pq.ParquetWriter(self._tmp, self._schema, compression="zstd")
        self._rows: list[JSON] = []

    def write(self, turn: ExportTurn) -> bool:
        self._rows.append(parquet_row(turn, self.form))
        if len(self._rows) >= self.row_group:
            self._flush()
        return True

    def _flush(self) -> None:
        import pyarrow as pa

        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self._schema))
            self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._rows = []
        self._writer.close()
        self._tmp.unlink(missing_ok=True)
