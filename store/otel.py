"""Recorded turns as OTLP spans with the OpenTelemetry GenAI semantic conventions.

One turn is one span: name `chat {gen_ai.request.model}`, kind CLIENT (molt called
the upstream; INTERNAL for a model molt serves in-process), from the turn's start
to its end (`latency_ms`), status ERROR when the turn did not succeed. Attributes
(the GenAI conventions as of semconv 1.37+; `gen_ai.system`, their older name of
the provider, is kept for collectors that still read it):

- `gen_ai.operation.name` ("chat"), `gen_ai.provider.name`, `gen_ai.request.model`
  (the alias the agent asked for), `gen_ai.response.model`, `gen_ai.response.id`,
  `gen_ai.response.finish_reasons`, `gen_ai.usage.input_tokens` / `output_tokens`,
  `gen_ai.conversation.id` (molt's session id), the request's sampling settings
  (`gen_ai.request.temperature`, `top_p`, `max_tokens`, `seed`, ...),
  `server.address` / `server.port` of an HTTP upstream, `error.type`;
- molt's own under `molt.*`: turn id, index and type, tenant id, weight version,
  skill generation and the injected skills, context version, status, ttft;
- only with `capture_content` (opt-in: prompt text is user data):
  `gen_ai.input.messages`, `gen_ai.output.messages` and `gen_ai.tool.definitions`,
  as JSON in the conventions' message-parts shape.

Ids are derived, not random: the trace id from the session id and the span id
from the turn id, so a session is one trace and exporting a turn twice (the live
sink, then `molt export --otlp`) gives the same span, which collectors merge.

This module loads the SDK (`opentelemetry-sdk` and its OTLP/HTTP exporter); it is
imported only where spans are made (`proxy/otel_sink.py` when `[otel]` is set,
`molt export --otlp`), so a molt without them never loads it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode

from store.chat_examples import Form, answer, overlay_versions, prompt, tools
from store.chat_shapes import tool_calls
from store.export import ExportTurn
from store.records import JSON

Attrs = dict[str, str | bool | int | float | Sequence[str]]
TRACES_PATH = "/v1/traces"

# litellm's provider prefixes -> the conventions' gen_ai.provider.name values.
_LITELLM_PROVIDERS = {
    "openai": "openai", "text-completion-openai": "openai", "anthropic": "anthropic",
    "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference", "bedrock": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai", "gemini": "gcp.gemini", "groq": "groq", "mistral": "mistral_ai",
    "deepseek": "deepseek", "perplexity": "perplexity", "xai": "x_ai", "cohere": "cohere",
    "cohere_chat": "cohere", "watsonx": "ibm.watsonx.ai",
}
# Request fields -> gen_ai.request.* (numbers).
_REQUEST_NUMBERS = {
    "temperature": "gen_ai.request.temperature", "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k", "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
}
_REQUEST_INTS = {
    "max_tokens": "gen_ai.request.max_tokens", "max_completion_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
}


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector (`http://host:4318` -> `.../v1/traces`)."""
    base = endpoint.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def provider_name(upstream: str | None) -> str:
    """gen_ai.provider.name from the turn's upstream: litellm's prefix, `molt` for a local model,
    else `openai` (molt speaks the OpenAI API to URL and vLLM upstreams)."""
    if upstream is None:
        return "openai"
    if upstream.startswith("local:"):
        return "molt"
    if upstream.startswith("litellm:"):
        model = upstream.removeprefix("litellm:")
        if "/" in model:
            prefix = model.split("/", 1)[0].lower()
            return _LITELLM_PROVIDERS.get(prefix, prefix)
        return "anthropic" if model.startswith("claude") else "openai"
    return "openai"


def _server(upstream: str | None) -> tuple[str, int] | None:
    if upstream is None:
        return None
    url = upstream.removeprefix("vllm:")
    if not url.startswith(("http://", "https://")):
        return None
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return parts.hostname, port


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _request_attrs(request: Mapping[str, Any], out: Attrs) -> None:
    for key, name in _REQUEST_NUMBERS.items():
        if _number(request.get(key)):
            out[name] = float(request[key])
    for key, name in _REQUEST_INTS.items():
        v = request.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            out[name] = v
    stop = request.get("stop")
    if isinstance(stop, str):
        out["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and stop:
        out["gen_ai.request.stop_sequences"] = list(stop)
    n = request.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        out["gen_ai.request.choice.count"] = n
    fmt = request.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema"):
        out["gen_ai.output.type"] = "json"


def _finish_reasons(turn: ExportTurn) -> list[str]:
    resp = turn.response if isinstance(turn.response, dict) else {}
    choices = resp.get("choices")
    reasons = [c.get("finish_reason") for c in choices if isinstance(c, dict)] \
        if isinstance(choices, list) else []
    found = [r for r in reasons if isinstance(r, str)]
    if found:
        return found
    return [turn.finish_reason] if turn.finish_reason else []


def error_type(turn: ExportTurn) -> str | None:
    """`error.type` of a turn that did not succeed: the error's type or code, else its status."""
    if turn.status == "ok":
        return None
    err = turn.error if isinstance(turn.error, dict) else {}
    for key in ("type", "code"):
        if isinstance(err.get(key), str) and err[key]:
            return str(err[key])
    return turn.status


def _parts(content: Any) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    if not isinstance(content, list):
        return []
    out: list[JSON] = []
    for p in content:
        if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str):
            out.append({"type": "text", "content": p["text"]})
        elif isinstance(p, dict) and isinstance(p.get("type"), str):
            out.append({"type": p["type"]})  # images, audio, files: their kind, not their bytes
    return out


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def semconv_message(m: Mapping[str, Any]) -> JSON:
    """An OpenAI chat message in the conventions' `{role, parts}` shape."""
    role = str(m.get("role") or "user")
    if role == "tool":
        return {"role": "tool", "parts": [{"type": "tool_call_response",
                                           "id": m.get("tool_call_id"),
                                           "response": m.get("content")}]}
    parts = _parts(m.get("content"))
    parts.extend({"type": "tool_call", "id": c.id, "name": c.name, "arguments": _arguments(c.arguments)}
                 for c in tool_calls(m))
    return {"role": role, "parts": parts}


def _dumps(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, default=str)


def _content_attrs(turn: ExportTurn, form: Form, out: Attrs) -> None:
    messages = prompt(turn, form)
    if messages is not None:
        out["gen_ai.input.messages"] = _dumps([semconv_message(m) for m in messages])
    reply = answer(turn)
    if reply is not None:
        msg = semconv_message(reply)
        msg["finish_reason"] = turn.finish_reason
        out["gen_ai.output.messages"] = _dumps([msg])
    offered = tools(turn, form)
    if offered is not None:
        out["gen_ai.tool.definitions"] = _dumps(offered)


def span_name(turn: ExportTurn) -> str:
    return f"chat {turn.request_model}"


def span_attributes(turn: ExportTurn, *, capture_content: bool = False,
                    form: Form = "agent") -> Attrs:
    """The span attributes of `turn` (see the module docstring)."""
    provider = provider_name(turn.upstream)
    out: Attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.request.model": turn.request_model,
        "gen_ai.conversation.id": turn.session_id,
        "molt.turn.id": turn.id,
        "molt.turn.index": turn.idx,
        "molt.turn.type": turn.turn_type,
        "molt.tenant.id": turn.tenant_id,
        "molt.status": turn.status,
        "molt.stream": turn.stream,
    }
    if turn.response_model:
        out["gen_ai.response.model"] = turn.response_model
    resp_id = turn.response.get("id") if isinstance(turn.response, dict) else None
    if isinstance(resp_id, str) and resp_id:
        out["gen_ai.response.id"] = resp_id
    reasons = _finish_reasons(turn)
    if reasons:
        out["gen_ai.response.finish_reasons"] = reasons
    if turn.input_tokens is not None:
        out["gen_ai.usage.input_tokens"] = turn.input_tokens
    if turn.output_tokens is not None:
        out["gen_ai.usage.output_tokens"] = turn.output_tokens
    _request_attrs(turn.request, out)
    server = _server(turn.upstream)
    if server is not None:
        out["server.address"], out["server.port"] = server
    err = error_type(turn)
    if err is not None:
        out["error.type"] = err
    if turn.tenant:
        out["molt.tenant.name"] = turn.tenant
    if turn.weight_version:
        out["molt.weight_version"] = turn.weight_version
    if turn.skill_generation is not None:
        out["molt.skill_generation"] = turn.skill_generation
    skills = [str(s["id"]) for s in turn.injected_skills or []
              if isinstance(s, dict) and s.get("id") is not None]
    if skills:
        out["molt.skills"] = skills
    overlays = overlay_versions(turn.tool_overlays)
    if overlays:
        out["molt.tool_overlays"] = overlays
    if turn.context_version:
        out["molt.context_version"] = turn.context_version
    if turn.ttft_ms is not None:
        out["molt.ttft_ms"] = float(turn.ttft_ms)
    if turn.score is not None:
        out["molt.feedback.score"] = turn.score
    if capture_content:
        _content_attrs(turn, form, out)
    return out


def _id(text: str, nbytes: int) -> int:
    value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=nbytes).digest(), "big")
    return value or 1  # 0 is the invalid id


def span_ids(turn: ExportTurn) -> tuple[int, int]:
    """(trace id, span id): the session's trace, the turn's span."""
    return _id(turn.session_id, 16), _id(turn.id, 8)


class _NextIds(IdGenerator):
    """Hands out the ids set just before a span starts (see `span_ids`)."""

    def __init__(self) -> None:
        self.trace_id = 1
        self.span_id = 1

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


class CountingExporter(SpanExporter):
    """An exporter that counts the spans its inner exporter took and refused (and tells
    `on_result(ok, n)`, from the SDK's export thread)."""

    def __init__(self, inner: SpanExporter,
                 on_result: Callable[[bool, int], None] | None = None) -> None:
        self.inner = inner
        self.on_result = on_result
        self.exported = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # noqa: BLE001 - an exporter bug must not kill the SDK's thread
            result = SpanExportResult.FAILURE
        ok = result == SpanExportResult.SUCCESS
        if ok:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
        if self.on_result is not None:
            self.on_result(ok, len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class SpanWriter:
    """Turns to spans through the OpenTelemetry SDK, batched to an exporter.

    `exporter` defaults to the OTLP/HTTP exporter for `endpoint`. `write` is safe
    from any thread (the ids of the next span travel on the id generator, under a
    lock); exporting runs on the SDK's own thread, `max_export_batch_size` spans
    a request; past `max_queue_size` waiting spans the SDK drops new ones.
    """

    def __init__(self, endpoint: str | None = None, *, service_name: str = "molt",
                 capture_content: bool = False, timeout_s: float = 10.0,
                 exporter: SpanExporter | None = None, max_queue_size: int = 4096,
                 max_export_batch_size: int = 512,
                 on_result: Callable[[bool, int], None] | None = None) -> None:
        if exporter is None:
            if endpoint is None:
                raise ValueError("SpanWriter needs an endpoint or an exporter")
            exporter = OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=timeout_s)
        self.exporter = CountingExporter(exporter, on_result)
        self.capture_content = capture_content
        self.batch_size = max_export_batch_size
        self._ids = _NextIds()
        self._root = Context()
        self._lock = threading.Lock()
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}), id_generator=self._ids,
            sampler=ALWAYS_ON)
        self._provider.add_span_processor(BatchSpanProcessor(
            self.exporter, max_queue_size=max_queue_size,
            max_export_batch_size=max_export_batch_size,
            export_timeout_millis=timeout_s * 1000))
        self._tracer = self._provider.get_tracer("molt")

    def write(self, turn: ExportTurn) -> None:
        attrs = span_attributes(turn, capture_content=self.capture_content)
        start = int(turn.created_at * 1e9)
        end = start + int((turn.latency_ms or 0.0) * 1e6)
        kind = SpanKind.INTERNAL if (turn.upstream or "").startswith("local:") else SpanKind.CLIENT
        with self._lock:
            self._ids.trace_id, self._ids.span_id = span_ids(turn)
            span = self._tracer.start_span(span_name(turn), context=self._root, kind=kind,
                                           attributes=attrs, start_time=start)
        err = attrs.get("error.type")
        if isinstance(err, str):
            span.set_status(Status(StatusCode.ERROR, err))
        span.end(end_time=end)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Export every span written so far; False if that did not finish in time."""
        return self._provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        self._provider.shutdown()

    @property
    def exported(self) -> int:
        return self.exporter.exported

    @property
    def failed(self) -> int:
        return self.exporter.failed
