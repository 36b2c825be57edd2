"""A turn as an OTLP span: the GenAI attributes, opt-in content, ids, kinds and errors.

The spans go through the real SDK pipeline (TracerProvider, BatchSpanProcessor)
into the SDK's own in-memory exporter.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from store.export import ExportTurn
from store.otel import SpanWriter, provider_name, span_ids, traces_url

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]


def _turn(**kw: Any) -> ExportTurn:
    fields: dict[str, Any] = {
        "id": "turn_1", "tenant_id": "ten_a", "session_id": "ses_1", "idx": 2, "turn_type": "main",
        "created_at": 1_790_000_000.5, "request_model": "gpt-fake", "stream": True,
        "request": {"model": "gpt-fake", "temperature": 0.2, "max_tokens": 64, "stop": "END",
                    "tools": TOOLS, "messages": [
                        {"role": "system", "content": "Be terse."},
                        {"role": "user", "content": "Weather in Oslo?"},
                        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]},
        "status": "ok", "tenant": "acme", "response_model": "gpt-fake-0613",
        "upstream": "http://127.0.0.1:9000/v1",
        "response": {"id": "chatcmpl-9", "choices": [{"finish_reason": "stop"}]},
        "content": "Sunny in Oslo.", "finish_reason": "stop", "latency_ms": 250.0, "ttft_ms": 40.0,
        "input_tokens": 30, "output_tokens": 5, "weight_version": "v0003", "skill_generation": 4,
        "injected_skills": [{"id": "weather-basics"}], "score": 0.5,
        "tool_overlays": [{"id": "tov_1", "version": 2, "tool": "get_weather", "param": "city"}],
    }
    fields.update(kw)
    return ExportTurn(**fields)


def _spans(*turns: ExportTurn, capture_content: bool = False) -> list[Any]:
    memory = InMemorySpanExporter()
    writer = SpanWriter(exporter=memory, capture_content=capture_content)
    for turn in turns:
        writer.write(turn)
    assert writer.flush(5)
    writer.shutdown()
    assert writer.exported == len(turns) and writer.failed == 0
    return list(memory.get_finished_spans())


def test_genai_attributes_without_content() -> None:
    (span,) = _spans(_turn())
    a = dict(span.attributes)
    assert span.name == "chat gpt-fake" and span.kind == SpanKind.CLIENT
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-fake" and a["gen_ai.response.model"] == "gpt-fake-0613"
    assert a["gen_ai.response.id"] == "chatcmpl-9"
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("stop",)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (30, 5)
    assert a["gen_ai.conversation.id"] == "ses_1"
    assert (a["gen_ai.request.temperature"], a["gen_ai.request.max_tokens"]) == (0.2, 64)
    assert tuple(a["gen_ai.request.stop_sequences"]) == ("END",)
    assert (a["server.address"], a["server.port"]) == ("127.0.0.1", 9000)
    assert a["molt.turn.id"] == "turn_1" and a["molt.weight_version"] == "v0003"
    assert tuple(a["molt.skills"]) == ("weather-basics",) and a["molt.feedback.score"] == 0.5
    assert tuple(a["molt.tool_overlays"]) == ("tov_1@v2",)  # the overlay version that served it
    assert span.status.status_code == StatusCode.UNSET and "error.type" not in a
    # the span covers the call: from its start to start + latency
    assert span.start_time == 1_790_000_000_500_000_000
    assert span.end_time - span.start_time == 250_000_000
    assert span.resource.attributes["service.name"] == "molt"
    # no prompt text unless asked for
    assert not any(k in a for k in ("gen_ai.input.messages", "gen_ai.output.messages",
                                    "gen_ai.tool.definitions"))
    assert not any("Oslo" in str(v) for v in a.values())


def test_content_is_opt_in_in_the_conventions_shape() -> None:
    (span,) = _spans(_turn(), capture_content=True)
    a = dict(span.attributes)
    inputs = json.loads(str(a["gen_ai.input.messages"]))
    assert inputs[0] == {"role": "system", "parts": [{"type": "text", "content": "Be terse."}]}
    assert inputs[2]["parts"] == [{"type": "tool_call", "id": "c1", "name": "get_weather",
                                   "arguments": {"city": "Oslo"}}]
    assert inputs[3] == {"role": "tool", "parts": [
        {"type": "tool_call_response", "id": "c1", "response": "sunny"}]}
    assert json.loads(str(a["gen_ai.output.messages"])) == [{
        "role": "assistant", "parts": [{"type": "text", "content": "Sunny in Oslo."}],
        "finish_reason": "stop"}]
    assert json.loads(str(a["gen_ai.tool.definitions"])) == TOOLS


def test_a_session_is_one_trace_and_ids_are_stable() -> None:
    a, b = _turn(), _turn(id="turn_2", idx=3)
    spans = _spans(a, b)
    assert spans[0].context.trace_id == spans[1].context.trace_id == span_ids(a)[0]
    assert [s.context.span_id for s in spans] == [span_ids(a)[1], span_ids(b)[1]]
    assert all(s.parent is None for s in spans)
    again = _spans(a)  # exporting the same turn again gives the same span
    assert again[0].context.span_id == spans[0].context.span_id


def test_errors_and_local_models() -> None:
    failed = _turn(status="upstream_error", content=None, finish_reason=None, response=None,
                   error={"type": "server_error", "message": "upstream said no: secret prompt"})
    local = _turn(id="turn_3", upstream="local:tiny", weight_version=None)
    err_span, local_span = _spans(failed, local)
    assert err_span.attributes["error.type"] == "server_error"
    assert err_span.status.status_code == StatusCode.ERROR
    assert "secret prompt" not in (err_span.status.description or "")
    assert local_span.kind == SpanKind.INTERNAL
    assert local_span.attributes["gen_ai.provider.name"] == "molt"
    assert "molt.weight_version" not in local_span.attributes


def test_provider_names_and_urls() -> None:
    assert provider_name("litellm:anthropic/claude-sonnet-4") == "anthropic"
    assert provider_name("litellm:bedrock/meta.llama3") == "aws.bedrock"
    assert provider_name("litellm:gpt-4o") == "openai"
    assert provider_name("vllm:http://gpu:8000/v1") == "openai"
    assert provider_name(None) == "openai"
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/v1/traces/") == "http://c:4318/v1/traces"
