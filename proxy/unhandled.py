"""The last line: an unexpected exception becomes a 500 envelope and one safe log line.

The envelope is OpenAI's, or Anthropic's shape on the Messages paths.

An exception's message can hold request data: SQLAlchemy's carries the SQL
statement and its parameters (prompts, feedback text). So the log line names
only the exception types and where they were raised, and the exception is not
re-raised: Starlette's own last handler would re-raise it, and uvicorn would
then log the whole traceback, messages included.

A pure ASGI middleware (no `BaseHTTPMiddleware`): one wrapped `send` per
request to know whether the response has started.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.anthropic.errors import error_body, is_messages_path
from proxy.errors import error_envelope

log = logging.getLogger("molt.proxy")

_BODY = json.dumps(
    error_envelope("internal error in molt", "server_error", None, "internal_error")
).encode()
_MESSAGES_BODY = json.dumps(error_body("internal error in molt", 500)).encode()


def describe_error(exc: BaseException) -> str:
    """`Type at file:line in function`, then the same for each cause; never a message."""
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(parts) < 5:
        seen.add(id(cur))
        where = ""
        tb = cur.__traceback__
        if tb is not None:
            while tb.tb_next is not None:
                tb = tb.tb_next
            code = tb.tb_frame.f_code
            where = f" at {Path(code.co_filename).name}:{tb.tb_lineno} in {code.co_name}"
        parts.append(type(cur).__name__ + where)
        cur = cur.__cause__ or cur.__context__
    return " <- ".join(parts)


class UnhandledErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - the last line: answered and logged below
            log.error("unhandled error: %s", describe_error(exc))
            if started:
                return  # too late for an envelope; the server closes the response
            body = _MESSAGES_BODY if is_messages_path(scope.get("path", "")) else _BODY
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
