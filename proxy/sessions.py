"""Which session a request belongs to.

MetaClaw's header protocol first: `X-Session-Id` names the session,
`X-Turn-Type: main|side`, `X-Session-Done: true` closes it; a later request
with the same id starts a new session (in this process at once, in others
once the closing turn is recorded: the store finds open sessions only).

Without a header, a request continues a session when it extends an earlier
request *and the answer molt returned to it*: its messages start with that
request's messages followed by that assistant message. Each answered request
leaves one continuation ticket, keyed by (request, answer); a continuation
takes the ticket, so two runs that continue the same prefix get two sessions
(N agents opening with the same messages become N sessions, even when the
answers are the same).

Cost on the request path: one incremental hash over the messages, and a
dict lookup per prefix; an answer's key is computed only for a prefix that
has a ticket. A streamed answer is known to the proxy only as SSE bytes, so
its key is computed lazily, from the turn the recorder has assembled by then
(or, for a continuation that arrives first, from the chunks).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.protocol import SessionHeaders
from proxy.sse_assembly import assemble_stream
from store.chat_shapes import answer_message, tool_calls
from store.ids import new_id
from store.records import TurnRecord
from store.trajectories import TrajectoryStore

# Marks an external id whose session was closed: the next request opens a new one.
_CLOSED = ""


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


def _canonical_args(args: Any) -> str:
    if isinstance(args, str):
        try:
            return json.dumps(json.loads(args), sort_keys=True, separators=(",", ":"))
        except ValueError:
            return args
    return json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)


def message_key(msg: Mapping[str, Any]) -> bytes:
    """A canonical form of one message: what makes two messages the same turn."""
    parts = [str(msg.get("role", "")), _content_text(msg.get("content"))]
    if msg.get("tool_calls"):
        parts += [f"{c.name}({_canonical_args(c.arguments)})" for c in tool_calls(msg)]
    if msg.get("tool_call_id"):
        parts.append(str(msg["tool_call_id"]))
    return "\x1f".join(parts).encode("utf-8", "surrogatepass")


def prefix_hashes(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """hashes[k] identifies messages[: k + 1]."""
    out: list[str] = []
    h = hashlib.blake2b(digest_size=16)
    for m in messages:
        h.update(message_key(m) if isinstance(m, Mapping) else b"?")
        h.update(b"\x1e")
        out.append(h.copy().hexdigest())
    return out


def continuation_key(request_hash: str, answer: Mapping[str, Any]) -> str:
    """Identifies a request followed by one assistant answer."""
    h = hashlib.blake2b(request_hash.encode(), digest_size=16)
    h.update(b"\x1d")
    h.update(message_key({**answer, "role": "assistant"}))
    return h.hexdigest()


def _ended(chunks: list[bytes]) -> bool:
    return bool(chunks) and chunks[-1].rstrip().endswith(b"[DONE]")


def recorded_answer(rec: TurnRecord) -> Mapping[str, Any] | None | bool:
    """The answer of a streamed turn; False while it is still streaming."""
    response, chunks = rec.response, rec.stream_chunks
    if isinstance(response, dict):  # assembled by the recorder
        return answer_message(response)
    if chunks is None:
        return None
    if not _ended(chunks):
        return False
    try:
        completion, _, _ = assemble_stream(chunks)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError):
        return None  # an odd stream: the recorder marks it; it continues nothing
    return answer_message(completion)


@dataclass(slots=True)
class _Ticket:
    """One answered request that a later request may continue."""

    session_id: str
    request_hash: str
    key: str | None
    rec: TurnRecord | None = None  # a streamed answer not yet keyed

    def resolve(self) -> str | None:
        """The continuation key; None while the answer is still streaming."""
        if self.key is None:
            answer = recorded_answer(self.rec) if self.rec is not None else None
            if answer is False:
                return None
            self.rec = None
            self.key = (continuation_key(self.request_hash, answer)
                        if isinstance(answer, Mapping) else "")
        return self.key


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
    def __init__(
        self, store: TrajectoryStore, *, capacity: int = 200_000, unkeyed: int = 256
    ) -> None:
        self.store = store
        self._tickets = _LRU(capacity)  # (tenant, request hash) -> [_Ticket], oldest first
        self._by_external = _LRU(capacity)  # (tenant, external id) -> session id or _CLOSED
        self._next_idx = _LRU(capacity)  # session id -> next turn index
        # Streamed tickets still holding their turn; the oldest are keyed past this many.
        self._unkeyed: deque[_Ticket] = deque()
        self._unkeyed_cap = unkeyed

    async def resolve(
        self, tenant_id: str, headers: SessionHeaders, messages: Sequence[Mapping[str, Any]]
    ) -> SessionRef:
        hashes = prefix_hashes(messages)
        request_hash = hashes[-1] if hashes else ""
        if headers.external_id:
            sid, idx = await self._external(tenant_id, headers.external_id)
        else:
            sid, idx = await self._continuation(tenant_id, messages, hashes)
        self._next_idx.put(sid, idx + 1)
        return SessionRef(sid, idx, headers.external_id, headers.turn_type, headers.done,
                          request_hash)

    async def _external(self, tenant_id: str, external: str) -> tuple[str, int]:
        key = (tenant_id, external)
        sid = self._by_external.get(key)
        if sid == _CLOSED:
            sid = new_id("ses")
            self._by_external.put(key, sid)
            return sid, 0
        if sid is not None:
            return sid, self._next_idx.get(sid, 0)
        found = await self.store.find_by_external_id(tenant_id, external)
        again = self._by_external.get(key)  # a concurrent first request may have named it
        if again:
            return again, self._next_idx.get(again, 0)
        sid, idx = found if found else (new_id("ses"), 0)
        self._by_external.put(key, sid)
        return sid, max(idx, self._next_idx.get(sid, 0))

    async def _continuation(
        self, tenant_id: str, messages: Sequence[Mapping[str, Any]], hashes: list[str]
    ) -> tuple[str, int]:
        # Longest prefix first: the request this one extends, then the answer after it.
        answered_at: list[int] = []
        for k in range(len(messages) - 2, -1, -1):
            nxt = messages[k + 1]
            if not (isinstance(nxt, Mapping) and nxt.get("role") == "assistant"):
                continue
            answered_at.append(k)
            tickets = self._tickets.get((tenant_id, hashes[k]))
            if not tickets:
                continue
            want = continuation_key(hashes[k], nxt)
            for j, ticket in enumerate(tickets):
                if ticket.resolve() == want:  # None (still streaming) never matches
                    del tickets[j]
                    if not tickets:
                        del self._tickets[(tenant_id, hashes[k])]
                    return ticket.session_id, self._next_idx.get(ticket.session_id, 0)
        # Only a request that carries an earlier answer can continue a session we
        # forgot (restart, eviction); first turns never pay for a database lookup.
        if answered_at:
            found = await self._recorded_continuation(tenant_id, messages, hashes, answered_at)
            if found is not None:
                return found
        return new_id("ses"), 0

    async def _recorded_continuation(
        self, tenant_id: str, messages: Sequence[Mapping[str, Any]], hashes: list[str],
        answered_at: list[int],
    ) -> tuple[str, int] | None:
        wanted = {hashes[k]: continuation_key(hashes[k], messages[k + 1]) for k in answered_at}
        rows = await self.store.continuation_candidates(tenant_id, list(wanted))
        order = {hashes[k]: i for i, k in enumerate(answered_at)}  # longest prefix first
        for row in sorted(rows, key=lambda r: order[r["request_hash"]]):
            sid = str(row["session_id"])
            if sid in self._next_idx or row["done"] or row["idx"] != row["turn_count"] - 1:
                continue  # known here (its ticket was taken), closed, or already continued
            answer = {"content": row["content"], "tool_calls": row["tool_calls"]}
            if continuation_key(row["request_hash"], answer) == wanted[row["request_hash"]]:
                return sid, int(row["turn_count"])
        return None

    @staticmethod
    def _continuable(ref: SessionRef) -> bool:
        # Header sessions follow their header; a closed one continues nothing.
        return not (ref.external_id or ref.done or not ref.request_hash)

    def _ticket(self, tenant_id: str, ref: SessionRef, ticket: _Ticket) -> None:
        key = (tenant_id, ref.request_hash)
        tickets = self._tickets.get(key)
        if tickets is None:
            self._tickets.put(key, [ticket])
        else:
            tickets.append(ticket)

    def answered(self, tenant_id: str, ref: SessionRef, answer: Mapping[str, Any] | None) -> None:
        """A non-streamed answer went back to the client: later requests may continue it."""
        if answer is not None and self._continuable(ref):
            self._ticket(tenant_id, ref, _Ticket(ref.id, ref.request_hash,
                                                 continuation_key(ref.request_hash, answer)))

    def answered_stream(self, tenant_id: str, ref: SessionRef, rec: TurnRecord) -> None:
        """A streamed answer is going back (`rec.stream_chunks` fills as it goes out);
        its key is computed when first needed, once the stream has ended."""
        if not self._continuable(ref):
            return
        ticket = _Ticket(ref.id, ref.request_hash, None, rec)
        self._ticket(tenant_id, ref, ticket)
        self._unkeyed.append(ticket)
        for _ in range(len(self._unkeyed) - self._unkeyed_cap):
            oldest = self._unkeyed.popleft()
            if oldest.resolve() is None:  # by now mostly recorded: cheap, and frees the turn
                self._unkeyed.append(oldest)  # still streaming: later

    def forget(self, tenant_id: str, ref: SessionRef) -> None:
        """After `X-Session-Done`: later requests start a new session."""
        if ref.external_id:
            self._by_external.put((tenant_id, ref.external_id), _CLOSED)
