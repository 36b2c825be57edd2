"""An OTLP/HTTP trace collector on loopback: the stand-in for Jaeger, Tempo or Langfuse.

It decodes each `POST /v1/traces` body as the protobuf `ExportTraceServiceRequest`
(opentelemetry-proto, the collector's own wire format) and keeps the spans as
plain dicts, attributes decoded from their `AnyValue`s. `fail_next` makes the
next requests answer 503, as a collector under load does.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return None if kind is None else getattr(v, kind)


class OtlpCollector:
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        self.fail_next = 0
        self._changed = threading.Condition()
        self.app = Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])])

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout_s)

    def by_turn(self) -> dict[str, dict[str, Any]]:
        return {str(s["attributes"]["molt.turn.id"]): s for s in self.spans}

    async def _traces(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        with self._changed:
            self.requests += 1
            if self.fail_next:
                self.fail_next -= 1
                self._changed.notify_all()
                return Response(status_code=503)
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(body)
        got = []
        for rs in msg.resource_spans:
            resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    got.append({
                        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "name": span.name,
                        "kind": span.kind, "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano, "status": span.status.code,
                        "attributes": {kv.key: any_value(kv.value) for kv in span.attributes},
                        "resource": resource, "scope": ss.scope.name,
                    })
        with self._changed:
            self.spans.extend(got)
            self._changed.notify_all()
        return Response(ExportTraceServiceResponse().SerializeToString(),
                        media_type="application/x-protobuf")
