"""The retrieval query: what the task is, without the noise around it.

MetaClaw embeds the raw last user message, so chat-channel headers,
timestamps and ids dominate the vector and every request gets the same
skills back. Our instantiation: the text of the latest user message (text
parts only), with channel headers (`[Slack #general 10:32]`,
`[Telegram @bob 2024-05-01]`), timestamps, dates, UUIDs, long hex or numeric
ids, mentions and URLs removed, whitespace collapsed, cut to a few hundred
characters (MiniLM reads 256 word pieces at most), then the names of the
tools the agent offers. Tool results and earlier assistant turns are left
out: in an agent loop they change every turn while the task does not, so
continuation turns produce the same query and hit the cache.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from store.chat_shapes import tool_names

MAX_TASK_CHARS = 600
MAX_TOOLS = 24

_NOISE = [
    # id: 123, msg_id=..., thread #42
    re.compile(r"\b(?:msg|message|id|ts|thread|ref)[_ -]?(?:id)?\s*[:=#]\s*[^\s)\]]+", re.IGNORECASE),
    # [Slack #general 10:32], [Discord user 2024-05-01 09:00], (WhatsApp 10:32 PM)
    re.compile(r"^\s*[\[(](?:[^\])\n]{0,80}?)(?:\d{1,2}:\d{2}|\d{4}-\d{2}-\d{2}|#\w|@\w)"
               r"[^\])\n]{0,80}[\])]\s*[:\-]?", re.MULTILINE),
    re.compile(r"<@!?[A-Za-z0-9_]+>|<#[A-Za-z0-9_]+(?:\|[^>]*)?>"),  # Slack/Discord mentions
    re.compile(r"https?://\S+"),
    re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"),
    re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?\b"),
    re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
    re.compile(r"\b(?:[a-z]+_)?[0-9a-fA-F]{12,}\b"),
    re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b"),  # ULIDs
    re.compile(r"\b\d{9,}\b"),
]
_EMPTY = re.compile(r"[(\[{]\s*[)\]}]")
# A lone UTF-16 surrogate (JSON "\ud800" not half of a pair) cannot be encoded,
# embedded or stored: it becomes U+FFFD in the query.
_SURROGATE = re.compile("[\ud800-\udfff]")
_SPACE = re.compile(r"\s+")


def clean_task_text(text: str) -> str:
    text = _SURROGATE.sub("\ufffd", text)
    for pattern in _NOISE:
        text = pattern.sub(" ", text)
    text = _EMPTY.sub(" ", text)
    return _SPACE.sub(" ", text).strip()[:MAX_TASK_CHARS]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", "")) for p in content
            if isinstance(p, Mapping) and p.get("type") in ("text", "input_text")
        )
    return ""


def latest_user_text(messages: Sequence[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, Mapping) and m.get("role") == "user":
            text = _text_of(m.get("content"))
            if text.strip():
                return text
    return ""


def _tool_names(tools: Any) -> list[str]:
    return tool_names(tools)[:MAX_TOOLS]


def _build(raw: str, tools: list[str]) -> str:
    task = clean_task_text(raw)
    if not task:
        return ""
    return f"{task}\ntools: {', '.join(tools)}" if tools else task


def task_query(body: Mapping[str, Any]) -> str:
    """The query text for a chat request: cleaned latest user text, then the tool names."""
    # Cleaning is linear in the text: look at the head of a huge message only.
    raw = latest_user_text(body.get("messages") or ())[: MAX_TASK_CHARS * 8]
    return _build(raw, _tool_names(body.get("tools")))


class QueryCache:
    """`task_query` with the cleaning skipped when the raw task was seen before.

    The continuation turns of an agent loop repeat the same user message and
    tools: hashing them is cheaper than running the noise patterns again.
    """

    def __init__(self, capacity: int = 8192) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, str] = OrderedDict()

    def __call__(self, body: Mapping[str, Any]) -> str:
        raw = latest_user_text(body.get("messages") or ())[: MAX_TASK_CHARS * 8]
        tools = _tool_names(body.get("tools"))
        h = hashlib.blake2b(raw.encode("utf-8", "replace"), digest_size=16)
        h.update("\x00".join(tools).encode("utf-8", "replace"))
        key = h.digest()
        found = self._seen.get(key)
        if found is None:
            found = _build(raw, tools)
            self._seen[key] = found
            if len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
        return found


def query_key(query: str) -> str:
    return hashlib.blake2b(query.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
