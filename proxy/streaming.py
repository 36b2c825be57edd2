"""A pure ASGI response that passes upstream SSE bytes through as they arrive.

No re-chunking, no buffering (with a `StreamEncoder`, a route of another
protocol sends its translation of each chunk instead; the turn still keeps
the upstream's chunks). A task watches for the client's disconnect and
cancels the copy at once (even while waiting for the next upstream chunk); the
upstream response is then closed, shielded from the cancellation. An upstream
failure after the first byte becomes an error event and `data: [DONE]`.
Before the first byte, `unless_client_leaves` does the same for the upstream
call itself, streamed or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.errors import ProxyError, UpstreamError

StreamStatus = Literal["ok", "upstream_error", "client_disconnected"]
# (status, chunks kept, time to first chunk in s, upstream failure after the first byte)
FinishCallback = Callable[[StreamStatus, list[bytes], float | None, ProxyError | None], None]
T = TypeVar("T")


class ClientGone(Exception):
    """The client closed its connection while molt waited for the upstream."""


# An upstream that answers sooner than this is never watched: the watcher task would
# cost more than it could save (the fast path pays one timer, set and cancelled).
WATCH_AFTER_S = 0.05


async def unless_client_leaves(receive: Receive, call: Awaitable[T]) -> T:
    """Await `call` (the upstream request), cancelling it if the client disconnects.

    The request body has been read, so the next ASGI message can only be
    `http.disconnect`; a watcher task, started once the call has taken
    WATCH_AFTER_S, waits for it and cancels the waiting task, which then raises
    ClientGone. The backend's own cleanup (closing the upstream connection,
    stopping a local generation) runs on that cancellation.
    """
    task = asyncio.current_task()
    assert task is not None
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
                task.cancel()
                return

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.create_task(watch())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
    try:
        return await call
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
        raise ClientGone("the client closed the connection before the upstream answered") from None
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()  # not awaited: that would cost the request a loop iteration


def error_event(exc: ProxyError) -> bytes:
    return b"data: " + json.dumps(exc.envelope()).encode() + b"\n\ndata: [DONE]\n\n"


@dataclass(slots=True)
class TurnStream:
    """A streamed turn as the shared core (`proxy.turn_flow`) hands it to a route.

    `chunks` are OpenAI `chat.completion.chunk` SSE bytes, as the upstream cut
    them (less what TAFC added). `on_finish` records the turn; the response
    calls it exactly once, before the client sees the end of the body (or
    after a disconnect). `kept` fills with every chunk as it is sent.
    """

    chunks: AsyncIterator[bytes]
    aclose: Callable[[], Awaitable[None]]
    headers: dict[str, str]
    on_finish: FinishCallback
    started: float  # perf_counter at the request's start (for time to first token)
    kept: list[bytes] = field(default_factory=list)
    # `chunks` are in the client's own protocol (a native upstream), not OpenAI chunks
    native: bool = False


class StreamEncoder(Protocol):
    """What a client of another protocol is sent for the internal SSE stream.

    One instance per response (it may keep state across chunks). Each method
    returns the bytes to send, b"" for nothing.
    """

    def chunk(self, piece: bytes) -> bytes:
        """One upstream chunk (may hold several SSE events, or part of one)."""
        ...

    def error(self, exc: ProxyError) -> bytes:
        """The upstream failed after the first byte: the last bytes the client gets."""
        ...

    def end(self) -> bytes:
        """The upstream stream ended in order: the last bytes the client gets."""
        ...


# The last event of each protocol's stream: OpenAI's `[DONE]`, Anthropic's `message_stop`,
# the Responses API's terminal events
_LAST = re.compile(rb'^(?:data: \[DONE\]|event: (?:message_stop|response\.(?:completed|failed|incomplete)))\s*$',
                   re.MULTILINE)


def ends_stream(recent: bytes) -> bool:
    """Whether `recent`, the last bytes forwarded of an upstream's SSE stream, ends with the
    stream's last event, complete (its blank line included)."""
    text = recent.replace(b"\r\n", b"\n")
    if text.rstrip().endswith(b"[DONE]"):
        return True
    if not text.endswith(b"\n\n"):
        return False
    block = text[:-2].rsplit(b"\n\n", 1)[-1]
    return _LAST.search(block) is not None


class PassThroughStream(Response):
    """Sends `turn.chunks` as they come: unchanged, or through `encoder`."""

    def __init__(self, turn: TurnStream, encoder: StreamEncoder | None = None) -> None:
        self.status_code = 200
        self.background: BackgroundTask | None = None
        self.chunks = turn.chunks
        self.aclose = turn.aclose
        self.extra_headers = [(k.lower().encode(), v.encode()) for k, v in turn.headers.items()]
        self.on_finish = turn.on_finish
        self.started = turn.started
        self.encoder = encoder
        self.kept: list[bytes] = turn.kept

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kept = self.kept
        encoder = self.encoder
        ttft: float | None = None
        status: StreamStatus = "ok"
        error: ProxyError | None = None
        client_gone = False
        finished = False
        # the client has every byte of the answer (the stream's last event, `ends_stream`, or the
        # encoder's end): a hang-up after that (an SDK closes there) is not a disconnect
        delivered = False
        recent = b""
        task = asyncio.current_task()
        assert task is not None

        async def watch() -> None:
            nonlocal client_gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    client_gone = True
                    task.cancel()
                    return

        watcher = asyncio.create_task(watch())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                        *self.extra_headers,
                    ],
                }
            )
            try:
                async for piece in self.chunks:
                    if ttft is None:
                        ttft = time.perf_counter() - self.started
                    kept.append(piece)
                    out = piece if encoder is None else encoder.chunk(piece)
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                        recent = (recent + out)[-1024:]  # an event may come in several pieces
                        delivered = ends_stream(recent)
                tail = b"" if encoder is None else encoder.end()
            except UpstreamError as exc:
                status, error = "upstream_error", exc
                tail = error_event(exc) if encoder is None else encoder.error(exc)
            if tail:
                await send({"type": "http.response.body", "body": tail, "more_body": True})
                delivered = True
            # Recorded before the client can see the end of the response: a turn whose
            # response a client received is always in the recorder (and its spool).
            finished = True
            self.on_finish(status, kept, ttft, error)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not client_gone:
                raise
            task.uncancel()
            if not delivered:
                status = "client_disconnected"
        except OSError:
            if not delivered:
                status = "client_disconnected"
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            with contextlib.suppress(Exception):
                await asyncio.shield(self._close())
            if not finished:
                self.on_finish(status, kept, ttft, error)

    async def _close(self) -> None:
        aclose = getattr(self.chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        await self.aclose()
