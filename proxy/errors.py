"""Errors of the proxy, each rendered as the OpenAI error envelope.

`headers` go out with the error response (the turn and session ids of a
turn that failed after it was recorded).

ProxyError
├── InvalidRequest        400 invalid_request_error
├── AuthenticationFailed  401 authentication_error
├── PermissionDenied      403 permission_error
├── NotFoundError         404 invalid_request_error (model_not_found, not_found)
├── PayloadTooLarge       413 invalid_request_error
├── RateLimited           429 rate_limit_error
└── UpstreamError         502 upstream_error (or the upstream's own 4xx status)
    └── UpstreamTimeout   504 timeout
"""

from __future__ import annotations

import json
from typing import Any


class ProxyError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = dict(headers) if headers else {}
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.message, self.type, self.param, self.code)

    def body(self) -> bytes:
        return json.dumps(self.envelope()).encode()


class InvalidRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(ProxyError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ProxyError):
    status = 403
    type = "permission_error"


class NotFoundError(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(ProxyError):
    """Over a rate limit; `retry-after` says in how many whole seconds to try again."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, headers={"retry-after": str(retry_after_s)})
        self.retry_after_s = retry_after_s


class UpstreamError(ProxyError):
    status = 502
    type = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"


def error_envelope(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def from_upstream(status: int, body: bytes, upstream: str) -> UpstreamError:
    """Map an upstream HTTP error to ours, keeping its message when it has one.

    4xx from the upstream (bad request, auth at the provider, rate limit) keep
    their status: the client did something the provider refuses. 5xx become 502.
    """
    message = f"upstream {upstream} returned HTTP {status}"
    etype, code, param = "upstream_error", None, None
    try:
        data = json.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            message = f"{message}: {err.get('message') or ''}".rstrip(": ")
            etype = str(err.get("type") or etype)
            code = err.get("code")
            param = err.get("param")
        elif isinstance(err, str):
            message = f"{message}: {err}"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        pass
    if 400 <= status < 500:
        if status == 429:
            etype = "rate_limit_error"
        return UpstreamError(message, status=status, type=etype, code=code, param=param)
    return UpstreamError(message, code=code or "upstream_error")
