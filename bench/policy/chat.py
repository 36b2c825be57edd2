"""The tiny policy's chat format: special tokens, Jinja chat template, tool-call parser.

Rendering, for OpenAI-format messages and tools::

    <|tools|>
    find_contact(name)
    send_message(to_id,text,notify?)
    ...
    <|system|>
    You are a helpful assistant...
    <|system|>
    <molt-skills> ... </molt-skills>
    <|user|>
    Tell Ann Berg: running late
    <|assistant|>
    <tool_call>{"name": "find_contact", "arguments": {"name": "Ann Berg"}}</tool_call><|end|>
    <|tool|>
    {"id": "c42"}
    <|assistant|>
    Done.<|end|>

Tools are rendered as compact signatures (``?`` marks an optional argument)
to keep prompts short; the descriptions are not shown to this small model.
Every assistant turn ends with ``<|end|>``, the tokenizer's EOS token.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

END = "<|end|>"
PAD = "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|tools|>")
SPECIAL_TOKENS = (PAD, END, *ROLE_TOKENS)
CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
ASSISTANT_HEAD = "<|assistant|>\n"

CHAT_TEMPLATE = (
    "{%- macro text(c) -%}"
    "{%- if c is string -%}{{ c }}"
    "{%- elif c -%}{%- for p in c -%}{%- if p.text is defined -%}{{ p.text }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if tools -%}{{ '<|tools|>\\n' }}"
    "{%- for t in tools -%}{%- set f = t.function if t.function is defined else t -%}"
    "{%- set req = f.parameters.required if f.parameters and f.parameters.required else [] -%}"
    "{{ f.name }}("
    "{%- if f.parameters and f.parameters.properties -%}"
    "{%- for k in f.parameters.properties -%}{{ k }}{%- if k not in req -%}?{%- endif -%}"
    "{%- if not loop.last -%},{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ ')\\n' }}"
    "{%- endfor -%}{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'system' or m.role == 'developer' -%}"
    "{{ '<|system|>\\n' }}{{ text(m.content) }}{{ '\\n' }}"
    "{%- elif m.role == 'user' -%}{{ '<|user|>\\n' }}{{ text(m.content) }}{{ '\\n' }}"
    "{%- elif m.role == 'assistant' -%}{{ '<|assistant|>\\n' }}{{ text(m.content) }}"
    "{%- if m.tool_calls -%}{%- for tc in m.tool_calls -%}"
    "{%- set fn = tc.function if tc.function is defined else tc -%}"
    "{{ '<tool_call>{\"name\": ' }}{{ fn.name | tojson }}{{ ', \"arguments\": ' }}"
    "{%- if fn.arguments is string -%}{{ fn.arguments }}{%- else -%}{{ fn.arguments | tojson }}"
    "{%- endif -%}{{ '}</tool_call>' }}"
    "{%- endfor -%}{%- endif -%}{{ '<|end|>\\n' }}"
    "{%- elif m.role == 'tool' -%}{{ '<|tool|>\\n' }}{{ text(m.content) }}{{ '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)

_CALL = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.DOTALL)


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ParsedReply:
    content: str  # text outside the tool calls
    calls: list[ParsedCall]
    errors: list[str]  # tool-call blocks that were not valid JSON calls


def parse_reply(text: str) -> ParsedReply:
    """Split generated text into plain content and ``<tool_call>{...}</tool_call>`` calls.

    bench's own minimal parser for evaluation; serving uses the one in ``modeling``.
    """
    text = text.split(END, 1)[0]
    calls: list[ParsedCall] = []
    errors: list[str] = []
    for block in _CALL.findall(text):
        try:
            obj = json.loads(block)
        except json.JSONDecodeError as exc:
            errors.append(f"invalid JSON in tool call: {exc.msg}")
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            errors.append("tool call without a name")
            continue
        args = obj.get("arguments", {})
        if not isinstance(args, dict):
            errors.append("tool call arguments are not an object")
            continue
        calls.append(ParsedCall(obj["name"], args))
    content = _CALL.sub("", text)
    if CALL_OPEN in content:
        errors.append("unterminated tool call")
        content = content.split(CALL_OPEN, 1)[0]
    return ParsedReply(content.strip(), calls, errors)
