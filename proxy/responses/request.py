"""A Responses request, checked, and the chat body molt sends for it.

`parse_request` checks the fields molt translates (each failure names its
parameter, as OpenAI does) and keeps what the Response object echoes back;
`chat_body` builds the internal chat body from it and the conversation a
`previous_response_id` names.

Translated: `input`, `instructions` (a system message ahead of everything,
never carried into a follow-up, as OpenAI does), function `tools` (flat
name/description/parameters/strict), `tool_choice`, `max_output_tokens`,
`temperature`, `top_p`, `parallel_tool_calls`, `text.format` (->
`response_format`), `text.verbosity`, `reasoning.effort` (->
`reasoning_effort`), `user`, `service_tier`, `prompt_cache_key`, `stream`
(streams ask for usage, which `response.completed` reports).
Kept by molt, not sent: `store` (whether a follow-up may continue this
response), `metadata`, `previous_response_id`, `include`, `truncation`
"disabled", `stream_options`, `max_tool_calls` (built-in tools only: molt
has none).
Refused: what molt cannot honour (`background`, `conversation`, `prompt`,
`top_logprobs`, `context_management`, `moderation`, `truncation` "auto",
tools other than functions).
Any other field is forwarded to the upstream untouched, as on the chat route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.errors import InvalidRequest
from proxy.protocol import MAX_MODEL_CHARS
from proxy.responses.input_items import input_messages

JSON = dict[str, Any]
_INT64 = 2**63

# Responses fields molt reads, keeps or refuses; everything else is forwarded.
_HANDLED = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "max_output_tokens", "temperature",
    "top_p", "parallel_tool_calls", "text", "reasoning", "user", "stream", "stream_options",
    "store", "metadata", "previous_response_id", "include", "truncation", "background",
    "conversation", "prompt", "service_tier", "prompt_cache_key", "max_tool_calls",
    "top_logprobs", "context_management", "moderation",
})
_REFUSED = ("background", "conversation", "prompt", "top_logprobs", "context_management",
            "moderation")
_TOOL_CHOICES = ("auto", "none", "required")


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """What molt needs of a Responses request: for the chat body and for the echo."""

    model: str
    messages: list[JSON]  # the input alone, as chat messages
    stream: bool = False
    store: bool = True
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[JSON] = field(default_factory=list)  # the Responses form, echoed back
    tool_choice: str | JSON = "auto"
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    text: JSON = field(default_factory=lambda: {"format": {"type": "text"}})
    reasoning: JSON | None = None
    metadata: JSON | None = None
    user: str | None = None
    chat: JSON = field(default_factory=dict)  # chat fields besides model, messages, stream


def _bad(param: str, message: str, code: str = "invalid_type") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _is_int(v: Any) -> bool:
    return type(v) is int and -_INT64 <= v < _INT64


def _number(body: JSON, name: str) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if type(v) is not float and not _is_int(v):
        raise _bad(name, f"{name} must be a number")
    return float(v)


def _bool(body: JSON, name: str, default: bool) -> bool:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise _bad(name, f"{name} must be a boolean")
    return v


def _optional_str(body: JSON, name: str) -> str | None:
    v = body.get(name)
    if v is not None and not isinstance(v, str):
        raise _bad(name, f"{name} must be a string")
    return v


def _tools(value: Any) -> tuple[list[JSON], list[JSON]]:
    """(the tools as sent, the chat tools)."""
    if value is None:
        return [], []
    if not isinstance(value, list):
        raise _bad("tools", "tools must be an array")
    chat: list[JSON] = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad(where, f"{where} must be an object")
        if tool.get("type") != "function":
            raise _bad(f"{where}.type", f"{where}.type '{tool.get('type')}' is not supported: "
                       "molt serves function tools", "invalid_value")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(f"{where}.name", f"{where}.name must be a non-empty string")
        fn: JSON = {"name": tool["name"]}
        for key, kind in (("description", str), ("parameters", dict), ("strict", bool)):
            v = tool.get(key)
            if v is None:
                continue
            if not isinstance(v, kind):
                raise _bad(f"{where}.{key}", f"{where}.{key} must be a {_KIND_NAMES[kind]}")
            fn[key] = v
        chat.append({"type": "function", "function": fn})
    return list(value), chat


_KIND_NAMES = {str: "string", dict: "object", bool: "boolean"}


def _tool_choice(value: Any) -> tuple[str | JSON, str | JSON | None]:
    """(the choice as sent, the chat choice)."""
    if value is None:
        return "auto", None
    if isinstance(value, str):
        if value not in _TOOL_CHOICES:
            raise _bad("tool_choice", f"tool_choice must be one of {', '.join(_TOOL_CHOICES)} "
                       "or {'type': 'function', 'name': ...}", "invalid_value")
        return value, value
    if (isinstance(value, dict) and value.get("type") == "function"
            and isinstance(value.get("name"), str)):
        return value, {"type": "function", "function": {"name": value["name"]}}
    raise _bad("tool_choice", "tool_choice must be one of auto, none, required "
               "or {'type': 'function', 'name': ...}", "invalid_value")


def _text(value: Any) -> tuple[JSON, JSON]:
    """(the text config echoed, the chat fields it sets)."""
    if value is None:
        return {"format": {"type": "text"}}, {}
    if not isinstance(value, dict):
        raise _bad("text", "text must be an object")
    chat: JSON = {}
    fmt = value.get("format")
    if fmt is None:
        fmt = {"type": "text"}
    if not isinstance(fmt, dict):
        raise _bad("text.format", "text.format must be an object")
    kind = fmt.get("type")
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise _bad("text.format", "text.format of type json_schema needs a string name "
                       "and an object schema")
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif kind != "text":
        raise _bad("text.format.type", "text.format.type must be text, json_object or "
                   "json_schema", "invalid_value")
    verbosity = value.get("verbosity")
    if verbosity is not None:
        if not isinstance(verbosity, str):
            raise _bad("text.verbosity", "text.verbosity must be a string")
        chat["verbosity"] = verbosity
    return {**value, "format": fmt}, chat


def _reasoning(value: Any) -> tuple[JSON | None, JSON]:
    if value is None:
        return None, {}
    if not isinstance(value, dict):
        raise _bad("reasoning", "reasoning must be an object")
    effort = value.get("effort")
    if effort is not None and not isinstance(effort, str):
        raise _bad("reasoning.effort", "reasoning.effort must be a string")
    return value, ({"reasoning_effort": effort} if effort is not None else {})


def _model(body: JSON) -> str:
    model = body.get("model")
    if model is None:
        raise _bad("model", "you must provide a model parameter", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise _bad("model", "model must be a non-empty string")
    if len(model) > MAX_MODEL_CHARS:
        raise _bad("model", f"model is {len(model)} characters; at most {MAX_MODEL_CHARS} are "
                   "allowed", "invalid_value")
    return model


def _refuse_unsupported(body: JSON) -> None:
    for name in _REFUSED:
        if body.get(name) not in (None, False):
            raise _bad(name, f"{name} is not supported by molt's /v1/responses", "unsupported_parameter")
    truncation = body.get("truncation")
    if truncation not in (None, "disabled"):
        raise _bad("truncation", "truncation must be 'disabled': molt does not cut conversations",
                   "unsupported_parameter")


def parse_request(body: Any) -> ResponsesRequest:
    """Check a decoded Responses body; InvalidRequest (400) names what is wrong."""
    if not isinstance(body, dict):
        raise _bad("", "request body must be a JSON object")
    model = _model(body)
    _refuse_unsupported(body)
    if "input" not in body and body.get("previous_response_id") is None:
        raise _bad("input", "missing required parameter: 'input'", "missing_required_parameter")
    messages = input_messages(body.get("input", []))
    instructions = _optional_str(body, "instructions")
    previous = _optional_str(body, "previous_response_id")
    if not messages and instructions is None and previous is None:
        raise _bad("input", "input must not be empty", "invalid_value")
    tools, chat_tools = _tools(body.get("tools"))
    choice, chat_choice = _tool_choice(body.get("tool_choice"))
    text, text_chat = _text(body.get("text"))
    reasoning, reasoning_chat = _reasoning(body.get("reasoning"))
    max_out = body.get("max_output_tokens")
    if max_out is not None and not (_is_int(max_out) and max_out > 0):
        raise _bad("max_output_tokens", "max_output_tokens must be a positive integer")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad("metadata", "metadata must be an object")
    chat: JSON = {k: v for k, v in body.items() if k not in _HANDLED}
    if chat_tools:
        chat["tools"] = chat_tools
    if chat_choice is not None:
        chat["tool_choice"] = chat_choice
    if max_out is not None:
        chat["max_completion_tokens"] = max_out
    temperature, top_p = _number(body, "temperature"), _number(body, "top_p")
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if value is not None:
            chat[name] = body[name]
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        chat["parallel_tool_calls"] = _bool(body, "parallel_tool_calls", True)
    for name in ("user", "service_tier", "prompt_cache_key"):
        if _optional_str(body, name) is not None:
            chat[name] = body[name]
    chat.update(text_chat)
    chat.update(reasoning_chat)
    return ResponsesRequest(
        model=model, messages=messages, stream=_bool(body, "stream", False),
        store=_bool(body, "store", True), instructions=instructions, previous_response_id=previous,
        tools=tools, tool_choice=choice, parallel_tool_calls=_bool(body, "parallel_tool_calls", True),
        temperature=temperature, top_p=top_p, max_output_tokens=max_out, text=text,
        reasoning=reasoning, metadata=metadata, user=_optional_str(body, "user"), chat=chat,
    )


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """The chat body for a Responses request, and where a follow-up's history starts in it."""

    body: JSON
    # Index in body["messages"] from which a follow-up carries the conversation
    # (past the instructions); None when `store` is false: no follow-up may continue it.
    followup_from: int | None


def chat_body(req: ResponsesRequest, history: list[JSON] | None = None) -> ChatTurn:
    """The internal chat body: instructions, then the continued conversation, then the input."""
    lead = [{"role": "system", "content": req.instructions}] if req.instructions is not None else []
    messages = [*lead, *(history or ()), *req.messages]
    body: JSON = {"model": req.model, "messages": messages, **req.chat}
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return ChatTurn(body, len(lead) if req.store else None)
