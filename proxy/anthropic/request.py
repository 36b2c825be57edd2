"""A Messages request (`POST /v1/messages`) as molt's internal chat completions body.

One pass checks the fields molt relies on (a 400 naming the field, in
Anthropic's dotted-path style: `messages.1.content.0.type`) and builds the
chat body. The mapping:

- `system` (a string, or text blocks joined by a blank line) -> a leading
  `system` message;
- user `text` blocks -> text parts; `image` blocks (base64 or URL) ->
  `image_url` parts; `tool_result` blocks -> `tool` messages (one per result,
  before the rest of that user message), their text joined; `is_error: true`
  puts `Error: ` in front of a result that does not already say so (the
  internal form has no flag, and molt's error readers read the text);
- assistant `text` blocks -> `content` (joined, so a streamed answer split
  into several text blocks comes back as the one string it was), `tool_use`
  -> `tool_calls` (`input` as JSON text); `thinking` and `redacted_thinking`
  blocks are dropped: a model behind an OpenAI-form route never signs them;
- `tools` (custom tools) -> functions, `input_schema` -> `parameters`;
  `tool_choice` auto/any/tool/none -> "auto"/"required"/a function/"none",
  `disable_parallel_tool_use` -> `parallel_tool_calls: false`;
- `max_tokens`, `temperature`, `top_p`, `top_k` as they are;
  `stop_sequences` -> `stop`; `metadata.user_id` -> `user`;
  `output_config.format` (a JSON schema) -> `response_format`;
- `stream: true` -> `stream` with `stream_options.include_usage`, so the
  stream's final `message_delta` carries the upstream's token counts.

Refused with a clear 400 instead of being dropped silently: blocks the
internal form cannot carry (documents, files, images inside tool results,
Anthropic's server-side tools and their results). Other top-level fields
(`thinking`, `service_tier`, `cache_control`...) are Anthropic-side options
with no meaning for the upstream; they are left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from proxy.errors import InvalidRequest
from proxy.protocol import MAX_MODEL_CHARS

JSON = dict[str, Any]
_INT64 = 2**63
ROLES = ("user", "assistant")
ERROR_PREFIX = "Error: "


def _fail(path: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {message}" if path else message, param=path or None,
                          code="invalid_request")


def _check(cond: bool, path: str, message: str) -> None:
    if not cond:
        raise _fail(path, message)


def _is_int(v: Any) -> bool:
    return type(v) is int and -_INT64 <= v < _INT64


def _is_number(v: Any) -> bool:
    return type(v) is float or _is_int(v)


def _str_field(block: Mapping[str, Any], key: str, path: str) -> str:
    v = block.get(key)
    _check(isinstance(v, str), f"{path}.{key}", "Field required (a string)")
    assert isinstance(v, str)
    return v


def _text_blocks(blocks: list[Any], path: str) -> list[str]:
    """The texts of a list that may hold only text blocks (system prompts, tool results)."""
    texts = []
    for j, b in enumerate(blocks):
        p = f"{path}.{j}"
        _check(isinstance(b, dict), p, "must be a content block object")
        _check(b.get("type") == "text", f"{p}.type",
               f"expected a 'text' block here, got {b.get('type')!r}")
        texts.append(_str_field(b, "text", p))
    return texts


def _system(system: Any) -> str | None:
    if system is None:
        return None
    if isinstance(system, str):
        return system or None
    _check(isinstance(system, list), "system", "must be a string or an array of text blocks")
    text = "\n\n".join(_text_blocks(system, "system"))
    return text or None


def _image_part(block: Mapping[str, Any], path: str) -> JSON:
    source = block.get("source")
    _check(isinstance(source, dict), f"{path}.source", "Field required (an image source)")
    assert isinstance(source, dict)
    kind = source.get("type")
    if kind == "base64":
        media = _str_field(source, "media_type", f"{path}.source")
        data = _str_field(source, "data", f"{path}.source")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": _str_field(source, "url", f"{path}.source")}}
    raise _fail(f"{path}.source.type",
                f"image source {kind!r} cannot be sent on; use 'base64' or 'url'")


def _tool_result(block: Mapping[str, Any], path: str) -> JSON:
    tool_use_id = _str_field(block, "tool_use_id", path)
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        _check(isinstance(content, list), f"{path}.content", "must be a string or an array of blocks")
        for j, b in enumerate(content):
            if isinstance(b, dict) and b.get("type") == "image":
                raise _fail(f"{path}.content.{j}",
                            "images inside a tool_result cannot be sent on through molt's "
                            "translation; send the image in a user text/image block instead")
        text = "\n".join(_text_blocks(content, f"{path}.content"))
    is_error = block.get("is_error")
    _check(is_error is None or isinstance(is_error, bool), f"{path}.is_error", "must be a boolean")
    if is_error and not text.lstrip().lower().startswith("error"):
        text = ERROR_PREFIX + text
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}


_UNSENDABLE = "blocks cannot be sent on through molt's translation to the OpenAI chat form"


def _user(content: list[Any], path: str, out: list[JSON]) -> None:
    parts: list[JSON] = []
    for j, b in enumerate(content):
        p = f"{path}.{j}"
        _check(isinstance(b, dict) and isinstance(b.get("type"), str), p,
               "must be a content block object with a string 'type'")
        kind = b["type"]
        if kind == "text":
            parts.append({"type": "text", "text": _str_field(b, "text", p)})
        elif kind == "image":
            parts.append(_image_part(b, p))
        elif kind == "tool_result":
            out.append(_tool_result(b, p))
        else:
            raise _fail(f"{p}.type", f"{kind!r} {_UNSENDABLE}")
    if parts:
        out.append({"role": "user", "content": parts})


def tool_arguments(value: Any) -> str:
    """A tool_use `input` as the JSON text of an OpenAI tool call's `arguments`."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _assistant(content: list[Any], path: str, out: list[JSON]) -> None:
    texts: list[str] = []
    calls: list[JSON] = []
    for j, b in enumerate(content):
        p = f"{path}.{j}"
        _check(isinstance(b, dict) and isinstance(b.get("type"), str), p,
               "must be a content block object with a string 'type'")
        kind = b["type"]
        if kind == "text":
            texts.append(_str_field(b, "text", p))
        elif kind == "tool_use":
            call_id = _str_field(b, "id", p)
            name = _str_field(b, "name", p)
            args = b.get("input", {})
            _check(isinstance(args, dict), f"{p}.input", "must be an object")
            calls.append({"id": call_id, "type": "function",
                          "function": {"name": name, "arguments": tool_arguments(args)}})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise _fail(f"{p}.type", f"{kind!r} {_UNSENDABLE}")
    msg: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    if texts or calls:
        out.append(msg)


def _messages(messages: Any) -> list[JSON]:
    _check(isinstance(messages, list) and len(messages) > 0, "messages",
           "Field required (a non-empty array of messages)")
    out: list[JSON] = []
    for i, m in enumerate(messages):
        path = f"messages.{i}"
        _check(isinstance(m, dict), path, "must be an object with a role and content")
        role = m.get("role")
        _check(role in ROLES, f"{path}.role", "must be 'user' or 'assistant'")
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        _check(isinstance(content, list), f"{path}.content",
               "Field required (a string or an array of content blocks)")
        if role == "user":
            _user(content, f"{path}.content", out)
        else:
            _assistant(content, f"{path}.content", out)
    return out


def _tools(tools: Any) -> list[JSON]:
    _check(isinstance(tools, list), "tools", "must be an array")
    out = []
    for i, t in enumerate(tools):
        path = f"tools.{i}"
        _check(isinstance(t, dict), path, "must be a tool object")
        kind = t.get("type")
        _check(kind in (None, "custom"), f"{path}.type",
               f"{kind!r} is one of Anthropic's server tools, which molt cannot run; "
               "only custom tools (name, description, input_schema) are translated")
        name = _str_field(t, "name", path)
        schema = t.get("input_schema")
        _check(isinstance(schema, dict), f"{path}.input_schema", "Field required (a JSON schema object)")
        fn: JSON = {"name": name}  # in OpenAI's order: chat templates render the JSON as it is
        desc = t.get("description")
        if desc is not None:
            _check(isinstance(desc, str), f"{path}.description", "must be a string")
            fn["description"] = desc
        fn["parameters"] = schema
        if t.get("strict") is not None:
            _check(isinstance(t["strict"], bool), f"{path}.strict", "must be a boolean")
            fn["strict"] = t["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, body: JSON) -> None:
    _check(isinstance(choice, dict), "tool_choice", "must be an object with a 'type'")
    kind = choice.get("type")
    if kind == "auto":
        body["tool_choice"] = "auto"
    elif kind == "any":
        body["tool_choice"] = "required"
    elif kind == "none":
        body["tool_choice"] = "none"
    elif kind == "tool":
        name = _str_field(choice, "name", "tool_choice")
        body["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise _fail("tool_choice.type", "must be one of auto, any, tool, none")
    flag = choice.get("disable_parallel_tool_use")
    _check(flag is None or isinstance(flag, bool), "tool_choice.disable_parallel_tool_use",
           "must be a boolean")
    if flag and kind != "none" and body.get("tools"):
        body["parallel_tool_calls"] = False


def _output_format(config: Any, body: JSON) -> None:
    _check(isinstance(config, dict), "output_config", "must be an object")
    fmt = config.get("format")
    if fmt is None:
        return
    _check(isinstance(fmt, dict) and fmt.get("type") == "json_schema", "output_config.format",
           "must be {'type': 'json_schema', 'schema': {...}}")
    schema = fmt.get("schema")
    _check(isinstance(schema, dict), "output_config.format.schema", "Field required (an object)")
    body["response_format"] = {"type": "json_schema",
                               "json_schema": {"name": "output", "schema": schema}}


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    _check(isinstance(model, str) and bool(model), "model", "Field required (a non-empty string)")
    assert isinstance(model, str)
    _check(len(model) <= MAX_MODEL_CHARS, "model",
           f"is {len(model)} characters; at most {MAX_MODEL_CHARS} are allowed")
    return model


def to_chat(body: Any, *, need_max_tokens: bool = True) -> JSON:
    """The chat completions body for a Messages request; InvalidRequest names what is wrong.

    `need_max_tokens=False` is for `count_tokens`, whose requests have none.
    """
    _check(isinstance(body, dict), "", "request body must be a JSON object")
    out: JSON = {"model": _model(body)}
    max_tokens = body.get("max_tokens")
    if max_tokens is not None or need_max_tokens:
        _check(_is_int(max_tokens) and max_tokens >= 1, "max_tokens",
               "Field required (an integer of at least 1)")
    messages = _messages(body.get("messages"))
    system = _system(body.get("system"))
    out["messages"] = [{"role": "system", "content": system}, *messages] if system else messages
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        v = body.get(name)
        if v is not None:
            _check(_is_number(v), name, "must be a number")
            out[name] = v
    if body.get("top_k") is not None:
        _check(_is_int(body["top_k"]), "top_k", "must be an integer")
        out["top_k"] = body["top_k"]
    stop = body.get("stop_sequences")
    if stop is not None:
        _check(isinstance(stop, list) and all(isinstance(s, str) for s in stop), "stop_sequences",
               "must be an array of strings")
        if stop:
            out["stop"] = list(stop)
    stream = body.get("stream")
    _check(stream is None or isinstance(stream, bool), "stream", "must be a boolean")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    metadata = body.get("metadata")
    if metadata is not None:
        _check(isinstance(metadata, dict), "metadata", "must be an object")
        user = metadata.get("user_id")
        _check(user is None or isinstance(user, str), "metadata.user_id", "must be a string")
        if user:
            out["user"] = user
    if body.get("tools") is not None:
        tools = _tools(body["tools"])
        if tools:
            out["tools"] = tools
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], out)
    if body.get("output_config") is not None:
        _output_format(body["output_config"], out)
    return out
