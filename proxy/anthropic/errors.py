"""molt's errors in Anthropic's shape: `{"type": "error", "error": {"type", "message"}}`.

The HTTP status is the one molt chose (`ProxyError.status`); the error type is
the one Anthropic's API documents for that status, so an Anthropic SDK raises
the exception class a user expects (`AuthenticationError` for 401,
`RateLimitError` for 429...). A status Anthropic does not list takes the type
of its class: another 4xx is `invalid_request_error`, another 5xx `api_error`.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.errors import ProxyError

# Anthropic's documented status -> error type (docs.claude.com/en/api/errors).
STATUS_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_TYPES = frozenset(STATUS_TYPES.values())
# The paths of Anthropic's protocol: errors there are in its shape, even those raised
# outside the route (an unknown method, an unhandled exception).
MESSAGES_PATH = "/v1/messages"


def is_messages_path(path: str) -> bool:
    return path == MESSAGES_PATH or path.startswith(MESSAGES_PATH + "/")


def error_type(status: int) -> str:
    """The Anthropic error type for an HTTP status."""
    found = STATUS_TYPES.get(status)
    if found is not None:
        return found
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(message: str, status: int, request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type(status), "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def proxy_error_body(exc: ProxyError, request_id: str | None = None) -> dict[str, Any]:
    """A ProxyError as an Anthropic error body (the OpenAI `param`, if any, leads the message)."""
    message = exc.message
    if exc.param and not message.startswith(exc.param):
        message = f"{exc.param}: {message}"
    return error_body(message, exc.status, request_id)


def in_band_type(error: Any) -> str:
    """The Anthropic type for an OpenAI-style error object an upstream sent inside a stream."""
    if isinstance(error, dict):
        etype = error.get("type")
        if isinstance(etype, str) and etype in ERROR_TYPES:
            return etype
        code = error.get("code")
        status = code if isinstance(code, int) and not isinstance(code, bool) else None
        if etype == "rate_limit_error" or code == "rate_limit_exceeded":
            return "rate_limit_error"
        if status is not None:
            return error_type(status)
    return "api_error"


def error_event(etype: str, message: str) -> bytes:
    """An SSE `error` event: how a Messages stream reports a failure after its 200."""
    data = {"type": "error", "error": {"type": etype, "message": message}}
    return b"event: error\ndata: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"
