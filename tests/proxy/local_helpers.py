"""What the local-backend tests share: molt serving the tiny model, and stream reassembly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai


def start_local(molt_factory: Any, base_dir: Path, lora_mode: str = "auto", **extra: Any) -> Any:
    """molt with one local alias `tiny` (skills off: the prompts must be exactly these)."""
    return molt_factory(models=[{"alias": "tiny", "local": str(base_dir), "lora_mode": lora_mode}],
                        skills={"enabled": False}, **extra)


def client(m: Any, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=m.base_url, api_key="x", max_retries=0, **kw)


def backend(m: Any) -> Any:
    return m.state.upstreams.resolve("tiny")[2]


def rebuild(chunks: list[Any]) -> dict[str, Any]:
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls: dict[int, dict[str, str]] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] += tc.id or ""
            slot["name"] += (tc.function.name or "") if tc.function else ""
            slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = [c.usage for c in chunks if c.usage]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    return {"text": text, "calls": calls, "finishes": finishes, "usage": usage, "pieces": pieces}
