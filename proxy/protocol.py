"""Checking OpenAI-protocol requests, cheaply.

The chat body is kept as the client's dict (unknown fields are forwarded);
only the fields molt relies on are type-checked here, each failure naming the
offending parameter as OpenAI does.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from starlette.requests import Request

from proxy.errors import InvalidRequest, PayloadTooLarge

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


async def read_json(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc


def _check(cond: bool, param: str, message: str) -> None:
    if not cond:
        raise InvalidRequest(message, param=param, code="invalid_type")


def validate_chat(body: Any) -> dict[str, Any]:
    _check(isinstance(body, dict), "", "request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise InvalidRequest("you must provide a model parameter", param="model", code="missing_required_parameter")
    _check(isinstance(model, str) and bool(model), "model", "model must be a non-empty string")
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest(
            "missing required parameter: 'messages'", param="messages", code="missing_required_parameter"
        )
    _check(isinstance(messages, list) and len(messages) > 0, "messages", "messages must be a non-empty array")
    for i, m in enumerate(messages):
        _check(isinstance(m, dict), f"messages[{i}]", f"messages[{i}] must be an object")
        role = m.get("role")
        _check(
            isinstance(role, str) and role in ROLES,
            f"messages[{i}].role",
            f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}",
        )
        content = m.get("content")
        _check(
            content is None or isinstance(content, (str, list)),
            f"messages[{i}].content",
            f"messages[{i}].content must be a string, an array of parts, or null",
        )
    stream = body.get("stream")
    _check(stream is None or isinstance(stream, bool), "stream", "stream must be a boolean")
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        v = body.get(name)
        _check(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
            name,
            f"{name} must be a number",
        )
    for name in ("max_tokens", "max_completion_tokens", "n", "seed"):
        v = body.get(name)
        _check(v is None or (isinstance(v, int) and not isinstance(v, bool)), name, f"{name} must be an integer")
    tools = body.get("tools")
    if tools is not None:
        _check(isinstance(tools, list), "tools", "tools must be an array")
        for i, t in enumerate(tools):
            ok = isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(
                t["function"].get("name"), str
            )
            _check(ok, f"tools[{i}]", f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}")
    so = body.get("stream_options")
    _check(so is None or isinstance(so, dict), "stream_options", "stream_options must be an object")
    checked: dict[str, Any] = body
    return checked


class FeedbackIn(BaseModel):
    """POST /v1/feedback: a score in [-1, 1] and/or a text, on a turn or a session."""

    turn_id: str | None = None
    session_id: str | None = None
    # strict: `true` is not a number; NaN and infinities are refused too.
    score: float | None = Field(default=None, ge=-1.0, le=1.0, strict=True, allow_inf_nan=False)
    text: str | None = Field(default=None, max_length=20_000)
    source: Literal["user", "verifier", "tool", "judge"] = "user"
    meta: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _target_and_content(self) -> FeedbackIn:
        if not self.turn_id and not self.session_id:
            raise ValueError("give turn_id or session_id")
        if self.score is None and not self.text:
            raise ValueError("give a score, a text, or both")
        return self
