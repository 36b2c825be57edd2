"""Token counts for `POST /v1/messages/count_tokens`, and molt's estimate where none is known.

The estimate is the rule molt already uses for its skills budget: four
characters a token (`CHARS_PER_TOKEN`), counted over what the model is sent
as text, taken from the translated (internal-form) request: each message's
role, text and tool calls, and each offered tool's JSON. An image counts as
`IMAGE_TOKENS`, Anthropic's figure for an image of about a megapixel (its
size is not read: the bytes are not decoded for a count). A route whose
backend can render and tokenize the prompt itself (the local model) answers
with its tokenizer's exact count instead (`TokenCounter`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 1_600


@runtime_checkable
class TokenCounter(Protocol):
    """A backend that counts a chat body's prompt tokens exactly (its template and tokenizer)."""

    async def count_prompt_tokens(self, body: Mapping[str, Any]) -> int: ...


def estimate_tokens(chars: int) -> int:
    """Tokens for `chars` characters of text, by molt's rule."""
    return chars // CHARS_PER_TOKEN + (1 if chars else 0)


def _content_chars(content: Any) -> tuple[int, int]:
    """(characters of text, images) in a message's content."""
    if isinstance(content, str):
        return len(content), 0
    chars = images = 0
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, Mapping):
            continue
        if part.get("type") == "image_url":
            images += 1
        elif isinstance(part.get("text"), str):
            chars += len(part["text"])
    return chars, images


def estimate_chat_tokens(body: Mapping[str, Any]) -> int:
    """molt's estimate of a chat body's prompt tokens."""
    chars = images = 0
    messages = body.get("messages")
    for m in messages if isinstance(messages, list) else ():
        if not isinstance(m, Mapping):
            continue
        c, i = _content_chars(m.get("content"))
        chars += c + len(str(m.get("role") or ""))
        images += i
        calls = m.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            fn = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(fn, Mapping):
                chars += len(str(fn.get("name") or "")) + len(str(fn.get("arguments") or ""))
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        chars += len(json.dumps(tools, ensure_ascii=False, separators=(",", ":")))
    return estimate_tokens(chars) + images * IMAGE_TOKENS
