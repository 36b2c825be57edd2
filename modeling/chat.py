"""Rendering a conversation and its tools into prompt tokens, with the model's chat template.

Serving and training both go through `render_prompt`, so that a recorded
trajectory is tokenized for training exactly as it was served. OpenAI-format
messages are normalised first to what Hugging Face chat templates expect:
content parts are joined into one string, and tool-call arguments (a JSON
string on the wire) become a mapping.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


class TemplateError(ValueError):
    """The conversation cannot be rendered with this model's chat template."""


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for p in content:
        if isinstance(p, dict) and isinstance(p.get("text"), str):
            parts.append(p["text"])
    return "".join(parts)


def _call(tc: dict[str, Any]) -> dict[str, Any]:
    fn = dict(tc.get("function") or {})
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            fn["arguments"] = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            pass
    return {**tc, "function": fn}


def normalize_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        msg = dict(m)
        msg["content"] = _text(m.get("content"))
        if m.get("tool_calls"):
            msg["tool_calls"] = [_call(tc) for tc in m["tool_calls"]]
        out.append(msg)
    return out


def render_text(
    tokenizer: Any, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError("the model's tokenizer has no chat_template")
    try:
        text = tokenizer.apply_chat_template(
            normalize_messages(messages), tools=list(tools) if tools else None,
            add_generation_prompt=True, tokenize=False,
        )
    except Exception as exc:  # jinja2 errors, raise_exception() in templates
        raise TemplateError(f"chat template failed: {exc}") from exc
    return str(text)


def render_prompt(
    tokenizer: Any, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
) -> list[int]:
    """Prompt token ids, generation prompt included."""
    text = render_text(tokenizer, messages, tools)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids
