"""What every dashboard page shares: templates, HTML errors, forms, headers, static files.

Templates are Jinja2 with autoescape on for every template (the names end in
`.jinja`, which Jinja's default selection would not escape): transcripts,
skills and feedback are untrusted text. Errors raised anywhere in a UI route
(its dependencies included) come back as an HTML page with the same status
the REST routes answer, or, for a request with no valid login, a redirect
to the login page. Every UI response forbids framing, inline scripts and
caching. Static files are a fixed table of vendored files shipped in the
package: nothing is fetched from the internet, nothing is read by a path
the client names.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import Request, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.responses import FileResponse, RedirectResponse

from proxy.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFoundError,
    PayloadTooLarge,
    ProxyError,
)
from store.errors import Conflict, InvalidInput, NotFound, StoreError

HERE = Path(__file__).resolve().parent
STATIC: dict[str, tuple[Path, str]] = {
    "htmx.min.js": (HERE / "static" / "htmx.min.js", "text/javascript; charset=utf-8"),
    "molt.css": (HERE / "static" / "molt.css", "text/css; charset=utf-8"),
    "ui.js": (HERE / "static" / "ui.js", "text/javascript; charset=utf-8"),
}
FORM_MAX_BYTES = 1 << 20
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def _when(ts: object) -> str:
    if not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _score(v: object) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:+.2f}"


def _pretty(v: object) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # everything, whatever the file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["score"] = _score
    env.filters["pretty"] = _pretty
    env.filters["query"] = lambda d: urlencode({k: v for k, v in d.items() if v not in (None, "")})
    return env


templates = Jinja2Templates(env=_environment())


def page(request: Request, name: str, context: dict[str, Any], *, status: int = 200) -> Response:
    resp = templates.TemplateResponse(request, name, context, status_code=status)
    resp.headers.update(SECURITY_HEADERS)
    return resp


def redirect(url: str) -> Response:
    """After a POST: see the result with a GET (303), so a reload never repeats the action."""
    resp = RedirectResponse(url, status_code=303)
    resp.headers.update(SECURITY_HEADERS)
    return resp


def to_proxy_error(exc: StoreError) -> ProxyError:
    """The store's errors as the REST routes answer them."""
    if isinstance(exc, NotFound):
        return NotFoundError(str(exc))
    if isinstance(exc, Conflict):
        return InvalidRequest(str(exc), code="conflict", status=409)
    if isinstance(exc, InvalidInput):
        return InvalidRequest(str(exc))
    return ProxyError(str(exc), code="store_error")


def error_page(request: Request, exc: ProxyError) -> Response:
    if isinstance(exc, AuthenticationFailed):
        resp = redirect("/ui/login")
        if request.headers.get("hx-request"):
            resp.headers["hx-redirect"] = "/ui/login"
        return resp
    return page(request, "error.jinja", {"status": exc.status, "message": exc.message,
                                         "code": exc.code, "user": None}, status=exc.status)


class UiRoute(APIRoute):
    """An APIRoute whose errors are HTML pages, not JSON envelopes."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except ProxyError as exc:
                return error_page(request, exc)
            except StoreError as exc:
                return error_page(request, to_proxy_error(exc))

        return run


async def read_form(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (what an HTML form posts), size-limited."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequest("expected a form (application/x-www-form-urlencoded)",
                             code="invalid_form")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX_BYTES:
            raise PayloadTooLarge(f"form is larger than {FORM_MAX_BYTES} bytes")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise InvalidRequest("form is not UTF-8", code="invalid_form") from exc
    return {k: v[-1] for k, v in parsed.items()}


async def static_file(name: str) -> Response:
    found = STATIC.get(name)
    if found is None:
        raise NotFoundError(f"no static file {name!r}")
    path, media = found
    resp = FileResponse(path, media_type=media)
    resp.headers["x-content-type-options"] = "nosniff"
    resp.headers["cache-control"] = "public, max-age=3600"
    return resp
