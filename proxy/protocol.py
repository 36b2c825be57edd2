"""Checking OpenAI-protocol requests, cheaply.

The chat body is kept as the client's dict (unknown fields are forwarded);
only the fields molt relies on are type-checked here, each failure naming the
offending parameter as OpenAI does.

What molt refuses as "not valid JSON", with a 400, rather than passing on to
code that would fail later (the upstream call, the recorder's database):
text that is not UTF-8; `NaN`, `Infinity`, `-Infinity` and numbers too large
for a double (RFC 8259 has no such values); nesting deeper than
`MAX_JSON_DEPTH`; and lone UTF-16 surrogates (`"\\ud800"` not part of a
pair), which no UTF-8 store or tokenizer can hold. A lone surrogate is
refused, never replaced: the request is not silently changed.

The checks ride on the one parse the request needs: the constants and large
numbers through the decoder's hooks (called only for those tokens), the
surrogate walk only when the raw bytes hold a `\\uD...` escape, and the depth
walk over containers only (strings are not scanned).
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from starlette.requests import Request

from proxy.errors import InvalidRequest, PayloadTooLarge

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
TURN_TYPES = ("main", "side")
MAX_JSON_DEPTH = 64
# The store's columns: sessions.external_id and turns.request_model hold 256 characters.
MAX_SESSION_ID_CHARS = 256
MAX_MODEL_CHARS = 256
_INT64 = 2**63
_SURROGATE = re.compile("[\ud800-\udfff]")


def _not_json(why: str) -> InvalidRequest:
    return InvalidRequest(f"request body is not valid JSON: {why}", code="invalid_json")


def _refuse_constant(name: str) -> Any:
    raise _not_json(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _not_json(f"the number {text[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _walk(value: Any, depth: int, surrogates: bool) -> None:
    """Depth (containers only) and, when asked, lone surrogates in strings and keys."""
    if depth > MAX_JSON_DEPTH:
        raise _not_json(f"it is nested more than {MAX_JSON_DEPTH} levels deep")
    if type(value) is dict:
        if surrogates:
            for k in value:
                if _SURROGATE.search(k):
                    raise _lone_surrogate()
        items: Any = value.values()
    else:
        items = value
    for v in items:
        t = type(v)
        if t is dict or t is list:
            _walk(v, depth + 1, surrogates)
        elif surrogates and t is str and _SURROGATE.search(v):
            raise _lone_surrogate()


def _lone_surrogate() -> InvalidRequest:
    # json.loads pairs a high and a low surrogate escape into one character;
    # whatever surrogate is left was alone.
    return _not_json(
        "a string holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape that is not "
        "half of a pair); send valid Unicode"
    )


def parse_json(raw: bytes) -> Any:
    """Decode a JSON request body, refusing what the module docstring lists."""
    if not raw:
        raise InvalidRequest("request body is empty; expected a JSON object")
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_json(f"it is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        value = _DECODER.decode(text)
    except RecursionError as exc:
        raise _not_json(f"it is nested more than {MAX_JSON_DEPTH} levels deep") from exc
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        raise _not_json(str(exc)) from exc
    if type(value) is dict or type(value) is list:
        _walk(value, 1, b"\\ud" in raw or b"\\uD" in raw)
    elif type(value) is str and _SURROGATE.search(value):
        raise _lone_surrogate()
    return value


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
    return parse_json(b"".join(chunks))


@dataclass(frozen=True, slots=True)
class SessionHeaders:
    """MetaClaw's session headers, checked: `X-Session-Id`, `X-Turn-Type`, `X-Session-Done`."""

    external_id: str | None
    turn_type: str
    done: bool


def session_headers(headers: Mapping[str, str]) -> SessionHeaders:
    external = headers.get("x-session-id") or None
    if external is not None and len(external) > MAX_SESSION_ID_CHARS:
        raise InvalidRequest(
            f"X-Session-Id is {len(external)} characters; at most {MAX_SESSION_ID_CHARS} are allowed",
            param="X-Session-Id", code="invalid_value")
    turn_type = (headers.get("x-turn-type") or "main").strip().lower()
    if turn_type not in TURN_TYPES:
        raise InvalidRequest(
            f"X-Turn-Type must be one of {', '.join(TURN_TYPES)}", param="X-Turn-Type",
            code="invalid_value")
    done = (headers.get("x-session-done") or "").strip().lower() in ("true", "1", "yes")
    return SessionHeaders(external, turn_type, done)


def _check(cond: bool, param: str, message: str) -> None:
    if not cond:
        raise InvalidRequest(message, param=param, code="invalid_type")


def _is_int(v: Any) -> bool:
    return type(v) is int and -_INT64 <= v < _INT64


def _is_number(v: Any) -> bool:
    return (type(v) is float) or _is_int(v)


def _check_tool_calls(calls: Any, where: str) -> None:
    _check(isinstance(calls, list), where, f"{where} must be an array")
    for j, call in enumerate(calls):
        p = f"{where}[{j}]"
        _check(isinstance(call, dict), p, f"{p} must be an object")
        fn = call.get("function")
        _check(isinstance(fn, dict), f"{p}.function",
               f"{p}.function must be an object with a name and arguments")
        _check(isinstance(fn.get("name"), str), f"{p}.function.name",
               f"{p}.function.name must be a string")
        args = fn.get("arguments")
        _check(args is None or isinstance(args, str), f"{p}.function.arguments",
               f"{p}.function.arguments must be a string (JSON text)")
        for key in ("id", "type"):
            _check(call.get(key) is None or isinstance(call[key], str), f"{p}.{key}",
                   f"{p}.{key} must be a string")


def _check_message(i: int, m: Any) -> None:
    where = f"messages[{i}]"
    _check(isinstance(m, dict), where, f"{where} must be an object")
    role = m.get("role")
    _check(
        isinstance(role, str) and role in ROLES,
        f"{where}.role",
        f"{where}.role must be one of {', '.join(sorted(ROLES))}",
    )
    content = m.get("content")
    _check(
        content is None or isinstance(content, (str, list)),
        f"{where}.content",
        f"{where}.content must be a string, an array of parts, or null",
    )
    if isinstance(content, list):
        for j, part in enumerate(content):
            _check(isinstance(part, dict) and isinstance(part.get("type"), str),
                   f"{where}.content[{j}]",
                   f"{where}.content[{j}] must be an object with a string 'type'")
    for key in ("name", "tool_call_id"):
        _check(m.get(key) is None or isinstance(m[key], str), f"{where}.{key}",
               f"{where}.{key} must be a string")
    calls = m.get("tool_calls")
    if calls is not None:
        _check_tool_calls(calls, f"{where}.tool_calls")
    fc = m.get("function_call")
    _check(fc is None or (isinstance(fc, dict) and isinstance(fc.get("name"), str)),
           f"{where}.function_call", f"{where}.function_call must be an object with a name")


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        _check(isinstance(tools, list), "tools", "tools must be an array")
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            ok = isinstance(fn, dict) and isinstance(fn.get("name"), str)
            _check(ok, f"tools[{i}]", f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}")
            assert isinstance(fn, dict)
            _check(fn.get("description") is None or isinstance(fn["description"], str),
                   f"tools[{i}].function.description", f"tools[{i}].function.description must be a string")
            _check(fn.get("parameters") is None or isinstance(fn["parameters"], dict),
                   f"tools[{i}].function.parameters", f"tools[{i}].function.parameters must be an object")
    functions = body.get("functions")
    if functions is not None:
        _check(isinstance(functions, list), "functions", "functions must be an array")
        for i, f in enumerate(functions):
            _check(isinstance(f, dict) and isinstance(f.get("name"), str), f"functions[{i}]",
                   f"functions[{i}] must be an object with a string 'name'")
    choice = body.get("tool_choice")
    _check(choice is None or isinstance(choice, (str, dict)), "tool_choice",
           "tool_choice must be a string or an object")


def validate_chat(body: Any) -> dict[str, Any]:
    _check(isinstance(body, dict), "", "request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise InvalidRequest("you must provide a model parameter", param="model", code="missing_required_parameter")
    _check(isinstance(model, str) and bool(model), "model", "model must be a non-empty string")
    if len(model) > MAX_MODEL_CHARS:
        raise InvalidRequest(f"model is {len(model)} characters; at most {MAX_MODEL_CHARS} are allowed",
                             param="model", code="invalid_value")
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest(
            "missing required parameter: 'messages'", param="messages", code="missing_required_parameter"
        )
    _check(isinstance(messages, list) and len(messages) > 0, "messages", "messages must be a non-empty array")
    for i, m in enumerate(messages):
        _check_message(i, m)
    stream = body.get("stream")
    _check(stream is None or isinstance(stream, bool), "stream", "stream must be a boolean")
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        v = body.get(name)
        _check(v is None or _is_number(v), name, f"{name} must be a number")
    for name in ("max_tokens", "max_completion_tokens", "n", "seed"):
        v = body.get(name)
        _check(v is None or _is_int(v), name, f"{name} must be a 64-bit integer")
    _check_tools(body)
    stop = body.get("stop")
    _check(stop is None or isinstance(stop, str)
           or (isinstance(stop, list) and all(isinstance(s, str) for s in stop)),
           "stop", "stop must be a string or an array of strings")
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
