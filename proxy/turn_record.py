"""A turn's record, from the request to the recorder: one way in, one way out.

`open_record` builds the TurnRecord once the hooks have run; `TurnFinish`
completes it, whatever the ending (answered, failed, client gone, stream
ended), and hands it to the recorder with the request metrics. Every ending
goes through `TurnFinish.__call__`, so a status, a latency or a counter is set
in one place for every protocol's route.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout
from proxy.hooks import TurnContext
from proxy.state import ProxyState
from store.records import TurnRecord

# nginx's "client closed request": recorded, never sent (nobody is there to read it).
CLIENT_CLOSED = 499

TurnStatus = Literal["ok", "error", "upstream_error", "client_disconnected"]


def open_record(ctx: TurnContext, body: dict[str, Any], upstream_body: dict[str, Any],
                stream: bool) -> TurnRecord:
    """The turn as the agent sent it and as it goes upstream (after the hooks)."""
    return TurnRecord(
        id=ctx.turn_id,
        tenant_id=ctx.principal.tenant_id,
        session_id=ctx.session.id,
        idx=ctx.session.idx,
        turn_type=ctx.turn_type,
        created_at=time.time(),
        request_model=body["model"],
        stream=stream,
        request=body,
        session_external_id=ctx.session.external_id,
        session_done=ctx.session.done,
        upstream_request=upstream_body if upstream_body is not body else None,
        skill_generation=ctx.skill_generation,
        injected_skills=ctx.injected_skills,
        tool_overlays=ctx.tool_overlays,
        context_version=ctx.context_version,
        request_hash=ctx.session.request_hash,
    )


def status_of(exc: ProxyError) -> TurnStatus:
    return "upstream_error" if isinstance(exc, UpstreamError) else "error"


@dataclass(slots=True)
class TurnFinish:
    """Completes `rec` and submits it; call exactly once per turn."""

    state: ProxyState
    rec: TurnRecord
    alias: str
    started: float  # perf_counter at the request's start

    def __call__(self, status: TurnStatus, http_status: int, *,
                 error: ProxyError | None = None, ttft: float | None = None,
                 message: str | None = None) -> None:
        """`error`: the failure to record (also an upstream failure mid-stream, with status
        200 already sent); `message`: why a client-gone turn ended; `ttft` in seconds."""
        rec, m, alias = self.rec, self.state.metrics, self.alias
        elapsed = time.perf_counter() - self.started
        rec.status = status
        rec.http_status = http_status
        rec.latency_ms = elapsed * 1000
        if ttft is not None:
            rec.ttft_ms = ttft * 1000
        if error is not None:
            rec.error = error.envelope()["error"]
        elif status == "client_disconnected" and message is not None:
            rec.error = {"message": message, "type": "client_disconnected", "param": None,
                         "code": None}
        self.state.recorder.submit(rec)
        m.requests.labels(alias, str(http_status)).inc()
        if http_status == 200:
            m.latency.labels(alias, "true" if rec.stream else "false").observe(elapsed)
            if ttft is not None:
                m.ttft.labels(alias).observe(ttft)
            if error is not None:
                m.upstream_errors.labels(alias, "stream").inc()
        elif error is not None:
            m.upstream_errors.labels(
                alias, "timeout" if isinstance(error, UpstreamTimeout) else "error").inc()
