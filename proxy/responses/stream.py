"""Chat SSE chunks -> the Responses streaming events.

`ResponsesStream` is fed the upstream's chat SSE bytes as they come, cut
anywhere, and returns the Responses events they complete, each one
`event: <type>` + `data: <json>` with a rising `sequence_number`:

    response.created, response.in_progress
    per output item: response.output_item.added, then
      text:   response.content_part.added, response.output_text.delta...,
              response.output_text.done, response.content_part.done
              (a refusal the same way, as response.refusal.*)
      call:   response.function_call_arguments.delta...,
              response.function_call_arguments.done
    response.output_item.done
    response.completed | response.incomplete (finish reason length or
      content_filter) | error + response.failed (an error chunk, or a stream
      that ended before its finish reason and [DONE])

One item is open at a time, in the order the upstream streams them: text
opens a message item, the first delta of a new tool call closes what was open
and opens a function_call item. A fragment for a call already closed (no
upstream known to molt interleaves calls) still joins that call in the final
object, which is the reference. Only choice 0 is read. The final object is
`output.response_object`, as for a non-streamed answer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import ProxyError
from proxy.responses.output import (
    call_item,
    item_id,
    message_item,
    refusal_part,
    response_object,
    status_of,
    text_part,
    usage,
)
from proxy.responses.request import ResponsesRequest
from proxy.sse_assembly import SSEEvents

JSON = dict[str, Any]
# A content part's kind -> (event prefix, the field that holds its text).
_PARTS = {"output_text": ("response.output_text", "text"), "refusal": ("response.refusal", "refusal")}


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def encode_event(event: JSON) -> bytes:
    return (f"event: {event['type']}\ndata: "
            f"{json.dumps(event, ensure_ascii=False, separators=(',', ':'))}\n\n").encode()


@dataclass(slots=True)
class _Item:
    kind: str  # "message" | "function_call"
    index: int
    id: str
    parts: list[list[str]] = field(default_factory=list)  # [part kind, text]
    part_open: bool = False
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    done: bool = False

    def final(self, status: str = "completed") -> JSON:
        if self.kind == "message":
            parts = [text_part(t) if k == "output_text" else refusal_part(t) for k, t in self.parts]
            return message_item(self.id, parts, status)
        return call_item(self.id, self.call_id, self.name, self.arguments, status)


class ResponsesStream:
    """One streamed Response: feed chat SSE bytes, get Responses SSE bytes."""

    def __init__(self, resp_id: str, req: ResponsesRequest, created_at: float | None = None) -> None:
        self.resp_id = resp_id
        self.req = req
        self.created_at = created_at if created_at is not None else time.time()
        self.response: JSON | None = None  # the final object, once closed
        self._seq = 0
        self._out: list[bytes] = []
        self._items: list[_Item] = []
        self._open: _Item | None = None
        self._calls: dict[int, _Item] = {}
        self._decoder = SSEEvents()
        self._finish_reason: str | None = None
        self._saw_done = False
        self._usage: JSON | None = None
        self._model: str | None = None
        self._error: JSON | None = None

    # -- events ------------------------------------------------------------------------
    def _emit(self, type_: str, **fields: Any) -> None:
        self._out.append(encode_event({"type": type_, "sequence_number": self._seq, **fields}))
        self._seq += 1

    def _take(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    def _snapshot(self, status: str, **kw: Any) -> JSON:
        return response_object(self.resp_id, self.req, self.created_at, status=status,
                               model=self._model, **kw)

    # -- the public steps ----------------------------------------------------------------
    def start(self) -> bytes:
        """response.created and response.in_progress."""
        self._emit("response.created", response=self._snapshot("in_progress", output=[]))
        self._emit("response.in_progress", response=self._snapshot("in_progress", output=[]))
        return self._take()

    def feed(self, raw: bytes) -> bytes:
        for data in self._decoder.feed(raw):
            self._chunk(data)
        return self._take()

    def close(self) -> bytes:
        """The closing events, once the upstream stream has ended (however it ended)."""
        if self.response is not None:
            return b""
        for data in self._decoder.close():
            self._chunk(data)
        self._finish()
        return self._take()

    def fail(self, message: str, code: str | None = None) -> bytes:
        """End the stream with an error that molt saw (the upstream failed or vanished)."""
        if self.response is None:
            self._error = {"message": message, "code": code}
        return self.close()

    # -- chat chunks -----------------------------------------------------------------------
    def _chunk(self, data: str) -> None:
        if self.response is not None:
            return
        if data.strip() == "[DONE]":
            self._saw_done = True
            return
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            err = chunk["error"]
            self._error = err if isinstance(err, dict) else {"message": str(err)}
            return
        if isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice)

    def _choice(self, choice: JSON) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for kind, key in (("output_text", "content"), ("refusal", "refusal")):
                piece = delta.get(key)
                if isinstance(piece, str) and piece:
                    self._text(kind, piece)
            calls = delta.get("tool_calls")
            for tc in calls if isinstance(calls, list) else ():
                if isinstance(tc, dict):
                    self._call(tc)
        if isinstance(choice.get("finish_reason"), str):
            self._finish_reason = choice["finish_reason"]

    def _text(self, kind: str, piece: str) -> None:
        item = self._open
        if item is None or item.kind != "message":
            item = self._open_item("message")
        if not item.parts or item.parts[-1][0] != kind or not item.part_open:
            self._close_part(item)
            item.parts.append([kind, ""])
            item.part_open = True
            self._emit("response.content_part.added", item_id=item.id, output_index=item.index,
                       content_index=len(item.parts) - 1,
                       part=text_part("") if kind == "output_text" else refusal_part(""))
        item.parts[-1][1] += piece
        prefix, _ = _PARTS[kind]
        extra: JSON = {"logprobs": []} if kind == "output_text" else {}
        self._emit(f"{prefix}.delta", item_id=item.id, output_index=item.index,
                   content_index=len(item.parts) - 1, delta=piece, **extra)

    def _call(self, tc: JSON) -> None:
        index = tc.get("index")
        if type(index) is not int:
            index = max(self._calls, default=0)
        fn = tc.get("function")
        name, args = (_str(fn.get("name")), _str(fn.get("arguments"))) if isinstance(fn, dict) else ("", "")
        item = self._calls.get(index)
        if item is None:
            item = self._open_item("function_call")
            self._calls[index] = item
            item.call_id = _str(tc.get("id")) or item_id(self.resp_id, "call", item.index)
            item.name = name
            self._emit("response.output_item.added", output_index=item.index,
                       item=item.final("in_progress") | {"arguments": ""})
        else:
            item.name += name
        item.arguments += args
        if args and not item.done:
            self._emit("response.function_call_arguments.delta", item_id=item.id,
                       output_index=item.index, delta=args)

    # -- items -----------------------------------------------------------------------------
    def _open_item(self, kind: str) -> _Item:
        self._close_item()
        index = len(self._items)
        item = _Item(kind, index, item_id(self.resp_id, "msg" if kind == "message" else "fc", index))
        self._items.append(item)
        self._open = item
        if kind == "message":
            self._emit("response.output_item.added", output_index=index,
                       item=message_item(item.id, [], "in_progress"))
        return item

    def _close_part(self, item: _Item) -> None:
        if not item.part_open:
            return
        item.part_open = False
        kind, text = item.parts[-1]
        prefix, key = _PARTS[kind]
        index = len(item.parts) - 1
        extra: JSON = {"logprobs": []} if kind == "output_text" else {}
        self._emit(f"{prefix}.done", item_id=item.id, output_index=item.index,
                   content_index=index, **{key: text}, **extra)
        self._emit("response.content_part.done", item_id=item.id, output_index=item.index,
                   content_index=index, part=text_part(text) if kind == "output_text" else refusal_part(text))

    def _close_item(self, status: str = "completed") -> None:
        item, self._open = self._open, None
        if item is None:
            return
        if item.kind == "message":
            self._close_part(item)
        else:
            self._emit("response.function_call_arguments.done", item_id=item.id,
                       output_index=item.index, name=item.name, arguments=item.arguments)
        item.done = True
        self._emit("response.output_item.done", output_index=item.index, item=item.final(status))

    def _finish(self) -> None:
        failed = self._error is not None or (self._finish_reason is None and not self._saw_done)
        self._close_item("incomplete" if failed else "completed")
        use = usage(self._usage)
        if failed:
            err = self._error or {"message": "the upstream stream ended before it finished"}
            message = err.get("message") if isinstance(err.get("message"), str) else "upstream error"
            code = err.get("code") if isinstance(err.get("code"), str) else None
            self._emit("error", code=code, message=message,
                       param=err.get("param") if isinstance(err.get("param"), str) else None)
            final = self._snapshot("failed", output=self._final_items("incomplete"), usage=use,
                                   error={"code": "server_error", "message": message})
            self._emit("response.failed", response=final)
        else:
            status, incomplete = status_of(self._finish_reason)
            final = self._snapshot(status, output=self._final_items("completed"), usage=use,
                                   incomplete_details=incomplete)
            self._emit(f"response.{status}", response=final)
        self.response = final

    def _final_items(self, status: str) -> list[JSON]:
        return [item.final(status) for item in self._items]


class ResponsesEncoder:
    """A `ResponsesStream` as the streaming response drives it (`proxy.streaming.StreamEncoder`).

    The opening events go out with the first bytes, whichever call comes first.
    """

    def __init__(self, stream: ResponsesStream) -> None:
        self.stream = stream
        self._started = False

    def _lead(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self.stream.start()

    def chunk(self, piece: bytes) -> bytes:
        return self._lead() + self.stream.feed(piece)

    def error(self, exc: ProxyError) -> bytes:
        return self._lead() + self.stream.fail(exc.message, exc.code)

    def end(self) -> bytes:
        return self._lead() + self.stream.close()
