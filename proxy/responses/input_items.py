"""Responses input items -> chat messages.

What translates (everything else is refused with a 400 naming the item):
- a message item (`{"role", "content"}`, `type` "message" or absent): roles
  user, system, developer and assistant; content a string or parts:
  `input_text` and an assistant's `output_text` become text, `input_image`
  with an `image_url` becomes an `image_url` part, `input_file` with
  `file_data` or `file_id` becomes a `file` part, an assistant's `refusal`
  becomes the message's `refusal`. Content of one text part is sent as a
  string, as chat clients do, so a conversation rebuilt from items keys the
  same as the one molt answered (see `proxy.sessions`);
- `function_call` -> a tool call on an assistant message: it joins the
  assistant message just before it (chat keeps an answer's text and calls in
  one message), else opens one with no content;
- `function_call_output` -> a `tool` message answering `call_id`;
- `reasoning` items are dropped: a chat upstream has no place for them.
"""

from __future__ import annotations

from typing import Any

from proxy.errors import InvalidRequest

JSON = dict[str, Any]
MESSAGE_ROLES = ("user", "system", "developer", "assistant")
_TEXT_PARTS = ("input_text", "output_text")


def _bad(param: str, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _string(item: JSON, key: str, where: str, *, required: bool = True) -> str | None:
    value = item.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise _bad(f"{where}.{key}", f"{where}.{key} must be a string", "invalid_type")
    return value


def _part(part: Any, where: str, role: str) -> tuple[str, Any]:
    """One content part as ("text", str) | ("refusal", str) | ("part", chat part)."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise _bad(where, f"{where} must be an object with a string 'type'", "invalid_type")
    kind = part["type"]
    if kind in _TEXT_PARTS:
        return "text", _string(part, "text", where)
    if kind == "refusal" and role == "assistant":
        return "refusal", _string(part, "refusal", where)
    if kind == "input_image" and role != "assistant":
        url = _string(part, "image_url", where, required=False)
        if url is None:
            raise _bad(f"{where}.image_url", f"{where}: molt forwards images by image_url "
                       "(a URL or a data: URL); file_id images are not supported")
        image: JSON = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return "part", {"type": "image_url", "image_url": image}
    if kind == "input_file" and role != "assistant":
        file: JSON = {}
        for key in ("file_data", "file_id", "filename"):
            value = _string(part, key, where, required=False)
            if value is not None:
                file[key] = value
        if "file_data" not in file and "file_id" not in file:
            raise _bad(where, f"{where}: molt forwards files given as file_data or file_id")
        return "part", {"type": "file", "file": file}
    raise _bad(f"{where}.type", f"{where}.type '{kind}' is not supported in a {role} message")


def _content(content: Any, where: str, role: str) -> tuple[str | list[JSON] | None, str | None]:
    """(chat content, refusal) of a message item's content."""
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        raise _bad(where, f"{where} must be a string or an array of content parts", "invalid_type")
    parts: list[JSON] = []
    refusals: list[str] = []
    for j, raw in enumerate(content):
        kind, value = _part(raw, f"{where}[{j}]", role)
        if kind == "refusal":
            refusals.append(value)
        elif kind == "text":
            parts.append({"type": "text", "text": value})
        else:
            parts.append(value)
    refusal = "".join(refusals) if refusals else None
    if not parts:
        return (None if refusal is not None else ""), refusal
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"]), refusal
    return parts, refusal


def _message(item: JSON, where: str) -> JSON:
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        raise _bad(f"{where}.role", f"{where}.role must be one of {', '.join(MESSAGE_ROLES)}")
    if "content" not in item:
        raise _bad(f"{where}.content", f"{where} has no content", "missing_required_parameter")
    content, refusal = _content(item["content"], f"{where}.content", role)
    msg: JSON = {"role": role, "content": content}
    if refusal is not None:
        msg["refusal"] = refusal
    return msg


def _tool_call(item: JSON, where: str) -> JSON:
    call_id = _string(item, "call_id", where)
    name = _string(item, "name", where)
    arguments = _string(item, "arguments", where)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_output(item: JSON, where: str) -> JSON:
    call_id = _string(item, "call_id", where)
    output = item.get("output")
    if isinstance(output, list):
        content, _ = _content(output, f"{where}.output", "user")
    elif isinstance(output, str):
        content = output
    else:
        raise _bad(f"{where}.output", f"{where}.output must be a string or an array of parts",
                   "invalid_type")
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def input_messages(value: Any) -> list[JSON]:
    """The chat messages of a request's `input` (a string or an array of items)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise _bad("input", "input must be a string or an array of input items", "invalid_type")
    out: list[JSON] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(where, f"{where} must be an object", "invalid_type")
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item, where))
        elif kind == "function_call":
            call = _tool_call(item, where)
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append(_tool_output(item, where))
        elif kind == "reasoning":
            continue
        else:
            raise _bad(f"{where}.type", f"{where}.type '{kind}' is not supported: molt translates "
                       "message, function_call and function_call_output items")
    return out
