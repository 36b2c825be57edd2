"""Which session a request belongs to.

MetaClaw's header protocol first: `X-Session-Id` names the session,
`X-Turn-Type: main|side`, `X-Session-Done: true` closes it. Without a header,
a request whose messages extend an earlier request's messages (same tenant)
continues that session: each request's messages are hashed prefix by prefix,
and the longest earlier request found among the prefixes wins.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from store.ids import new_id
from store.trajectories import TrajectoryStore

TURN_TYPES = ("main", "side")


@dataclass(slots=True)
class SessionRef:
    id: str
    idx: int
    external_id: str | None
    turn_type: str
    done: bool
    request_hash: str


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return json.dumps(content, sort_keys=True, separators=(",", ":"))


def message_key(msg: Mapping[str, Any]) -> bytes:
    """A canonical form of one message: what makes two messages the same turn."""
    parts = [str(msg.get("role", "")), _content_text(msg.get("content"))]
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {} if isinstance(call, Mapping) else {}
        args = fn.get("arguments", "")
        if isinstance(args, str):
            try:
                args = json.dumps(json.loads(args), sort_keys=True, separators=(",", ":"))
            except (json.JSONDecodeError, TypeError):
                pass
        else:
            args = json.dumps(args, sort_keys=True, separators=(",", ":"))
        parts.append(f"{fn.get('name', '')}({args})")
    if msg.get("tool_call_id"):
        parts.append(str(msg["tool_call_id"]))
    return "\x1f".join(parts).encode("utf-8", "replace")


def prefix_hashes(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """hashes[k] identifies messages[: k + 1]."""
    out: list[str] = []
    h = hashlib.blake2b(digest_size=16)
    for m in messages:
        h.update(message_key(m) if isinstance(m, Mapping) else b"?")
        h.update(b"\x1e")
        out.append(h.copy().hexdigest())
    return out


class _LRU(OrderedDict[Any, Any]):
    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.cap:
            self.popitem(last=False)


class SessionTracker:
    def __init__(self, store: TrajectoryStore, *, capacity: int = 200_000) -> None:
        self.store = store
        self._by_hash = _LRU(capacity)  # (tenant, request hash) -> session id
        self._by_external = _LRU(capacity)  # (tenant, external id) -> session id
        self._next_idx = _LRU(capacity)  # session id -> next turn index

    async def resolve(
        self, tenant_id: str, headers: Mapping[str, str], messages: Sequence[Mapping[str, Any]]
    ) -> SessionRef:
        turn_type = (headers.get("x-turn-type") or "main").strip().lower()
        done = (headers.get("x-session-done") or "").strip().lower() in ("true", "1", "yes")
        external = headers.get("x-session-id")
        hashes = prefix_hashes(messages)
        has_answer = any(
            isinstance(m, Mapping) and m.get("role") == "assistant" for m in messages
        )
        request_hash = hashes[-1] if hashes else ""
        if external:
            sid, idx = await self._external(tenant_id, external)
        else:
            sid, idx = await self._continuation(tenant_id, hashes, has_answer)
        self._next_idx.put(sid, idx + 1)
        if request_hash:
            self._by_hash.put((tenant_id, request_hash), sid)
        return SessionRef(sid, idx, external, turn_type, done, request_hash)

    async def _external(self, tenant_id: str, external: str) -> tuple[str, int]:
        sid = self._by_external.get((tenant_id, external))
        if sid is not None:
            return sid, self._next_idx.get(sid, 0)
        found = await self.store.find_by_external_id(tenant_id, external)
        sid, idx = found if found else (new_id("ses"), 0)
        self._by_external.put((tenant_id, external), sid)
        return sid, max(idx, self._next_idx.get(sid, 0))

    async def _continuation(
        self, tenant_id: str, hashes: list[str], has_answer: bool
    ) -> tuple[str, int]:
        # Longest strict prefix first: the request this one extends.
        for h in reversed(hashes[:-1]):
            sid = self._by_hash.get((tenant_id, h))
            if sid is not None:
                return sid, self._next_idx.get(sid, 0)
        # Only a request that carries an earlier answer can continue a session we
        # forgot (restart, eviction); first turns never pay for a database lookup.
        if len(hashes) > 1 and has_answer:
            found = await self.store.find_by_request_hash(tenant_id, hashes[:-1])
            if found is not None:
                sid, idx = found
                return sid, max(idx, self._next_idx.get(sid, 0))
        return new_id("ses"), 0

    def forget(self, tenant_id: str, ref: SessionRef) -> None:
        """After `X-Session-Done`: later requests start a new session."""
        if ref.external_id:
            self._by_external.pop((tenant_id, ref.external_id), None)
        self._by_hash.pop((tenant_id, ref.request_hash), None)
