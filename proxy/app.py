"""`create_app(settings, ...)`: the proxy as a FastAPI app.

Nothing is created at import time: the database, the upstream clients, the
recorder and any extra services (skills, evolver, scheduler) are opened in the
lifespan and closed in reverse order; the recorder drains before the store
closes, so an orderly shutdown loses no turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from proxy import heap
from proxy.anthropic.errors import error_body, is_messages_path, proxy_error_body
from proxy.auth import Authenticator
from proxy.errors import ProxyError, error_envelope
from proxy.hooks import RequestHook, ResponseHook
from proxy.limits import Limiter, ReleaseTickets
from proxy.metrics import Metrics
from proxy.recorder import Recorder
from proxy.routes import chat, feedback, health, messages, models, responses
from proxy.sessions import SessionTracker
from proxy.state import ProxyState
from proxy.unhandled import UnhandledErrors
from proxy.upstream.routing import BackendFactory, Upstreams
from store.database import Database
from store.feedback import FeedbackStore
from store.keys import KeyStore
from store.settings import MoltSettings
from store.trajectories import TrajectoryStore

if TYPE_CHECKING:
    from proxy.otel_sink import OtelSink

log = logging.getLogger("molt.proxy")


class Service(Protocol):
    """Something that lives as long as the app (skill index, evolver loop...)."""

    async def start(self, state: ProxyState) -> None: ...

    async def stop(self) -> None: ...


def _error_response(exc: ProxyError, path: str = "") -> JSONResponse:
    body = proxy_error_body(exc) if is_messages_path(path) else exc.envelope()
    return JSONResponse(body, status_code=exc.status, headers=exc.headers or None)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProxyError)
    async def _proxy_error(req: Request, exc: ProxyError) -> JSONResponse:
        return _error_response(exc, req.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        message = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            message = "request body is not valid JSON"
        body = error_envelope(message, "invalid_request_error", ".".join(loc) or None, "invalid_value")
        return JSONResponse(body, status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(req: Request, exc: HTTPException) -> JSONResponse:
        if is_messages_path(req.url.path):
            return JSONResponse(error_body(str(exc.detail), exc.status_code), status_code=exc.status_code)
        etype = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(
            error_envelope(str(exc.detail), etype, None, code), status_code=exc.status_code
        )


def _sinks(settings: MoltSettings, metrics: Metrics) -> list[OtelSink]:
    """What hears of stored turns: the OTLP export when `[otel] endpoint` is set (the SDK
    is imported only then)."""
    if settings.otel.endpoint is None:
        return []
    from proxy.otel_sink import OtelSink

    return [OtelSink(settings.otel, metrics)]


def create_app(
    settings: MoltSettings,
    *,
    backend_factories: dict[str, BackendFactory] | None = None,
    request_hooks: Sequence[RequestHook] = (),
    response_hooks: Sequence[ResponseHook] = (),
    routers: Sequence[APIRouter] = (),
    services: Sequence[Service] = (),
    serve_api: bool = True,
    settle_heap: bool = False,
) -> FastAPI:
    """The app. With `serve_api=False` (a `molt worker`) it answers only /healthz and /metrics:
    no model routes and no upstream clients; the services still get the store.
    `settle_heap`: once started, freeze the heap for the collector (`proxy.heap`; a server
    process only)."""
    routes = settings.models if serve_api else []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = await Database.open(settings.store)
        metrics = Metrics()
        trajectories = TrajectoryStore(db)
        keys = KeyStore(db)
        auth = Authenticator(keys, settings.server)
        await auth.start()
        upstreams = Upstreams.from_routes(routes, factories=backend_factories)
        sinks = _sinks(settings, metrics) if serve_api else []
        recorder = Recorder(trajectories, settings.recorder, metrics, data_dir=settings.data_dir,
                            sinks=sinks)
        state = ProxyState(
            settings=settings, db=db, trajectories=trajectories, feedback=FeedbackStore(db),
            keys=keys, auth=auth, sessions=SessionTracker(trajectories), recorder=recorder,
            upstreams=upstreams, metrics=metrics, limiter=Limiter(settings.limits, metrics),
            request_hooks=list(request_hooks),
            response_hooks=list(response_hooks),
        )
        app.state.molt = state
        for sink in sinks:
            sink.start()
        recorder.start()
        started: list[Service] = []
        try:
            for svc in services:
                await svc.start(state)
                started.append(svc)
            if settle_heap:
                log.info("heap settled: %d objects frozen", heap.settle())
            yield
        finally:
            for svc in reversed(started):
                await svc.stop()
            await recorder.stop()
            for sink in sinks:
                await asyncio.to_thread(sink.stop)
            await upstreams.aclose()
            await db.close()

    app = FastAPI(
        title="molt", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
        openapi_url="/openapi.json",
    )
    _install_error_handlers(app)
    app.add_middleware(UnhandledErrors)  # anything else: a 500 envelope, one safe log line
    app.add_middleware(ReleaseTickets)  # a rate-limit ticket lasts as long as its exchange
    api = (chat.router, messages.router, responses.router, models.router, feedback.router) if serve_api else ()
    for r in (*api, health.router, *routers):
        app.include_router(r)
    return app


def app_state(app: Any) -> ProxyState:
    state: ProxyState = app.state.molt
    return state
