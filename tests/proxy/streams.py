"""Stream reassembly for tests: OpenAI SDK chunks back into text, tool calls, finishes, usage."""

from __future__ import annotations

from typing import Any


def rebuild(chunks: list[Any]) -> dict[str, Any]:
    """What a streamed completion said, assembled from its chunks (usage as SDK objects)."""
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
