"""`molt export` end to end: turns recorded through a real molt (openai SDK, uvicorn, the
scripted fake upstream), exported by the CLI, read back with `datasets`; OTLP spans
received by a collector on loopback, live from the recorder and in batch."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import datasets
import httpx
import openai
import pytest
from click.testing import CliRunner

from molt.cli import cli
from store.ids import new_id
from store.records import TurnRecord
from tests.fakes.fake_llm import FakeLLM, Reply
from tests.fakes.otlp_collector import OtlpCollector
from tests.fakes.server import ServerThread, free_port

SYSTEM = {"role": "system", "content": "You are terse."}
ASK = {"role": "user", "content": "Weather in Oslo?"}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def _cli(m: Any, tmp_path: Path, *args: str, toml: str = "") -> Any:
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'[store]\nurl = "{m.settings.store.url}"\n{toml}')
    return CliRunner().invoke(cli, ["--config", str(cfg), *args])


def _ok(r: Any) -> Any:
    assert r.exit_code == 0, r.output
    return r


def _record(m: Any, fake: FakeLLM, tmp_path: Path) -> dict[str, Any]:
    """acme: an episode with a tool call (streamed) then an answer, scored good; a second
    session, one answer scored bad and one the upstream failed. beta: one turn."""
    acme, beta = m.run(m.state.keys.create_key("acme"))[0], m.run(m.state.keys.create_key("beta"))[0]
    m.run(m.state.auth.mode(force=True))  # keys on now, not after the mode cache expires
    client = openai.OpenAI(base_url=m.base_url, api_key=acme, max_retries=0)

    # TAFC is on: what went upstream carries a `think` parameter the agent never saw
    fake.push(Reply(tool_calls=[("get_weather", {"think": "they asked for Oslo", "city": "Oslo"})]))
    stream = client.chat.completions.with_raw_response.create(
        model="gpt-fake", messages=[SYSTEM, ASK], tools=TOOLS, stream=True,
        extra_headers={"X-Session-Id": "ep-1"})
    calls: dict[int, dict[str, Any]] = {}
    for chunk in stream.parse():
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                slot["name"] += (tc.function.name or "") if tc.function else ""
                slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
    call = calls[0]
    assert json.loads(call["arguments"]) == {"city": "Oslo"}
    history = [SYSTEM, ASK,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": call["id"], "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]}}]},
               {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 12C"}]
    fake.push(Reply(content="Sunny, 12 degrees."))
    second = client.chat.completions.with_raw_response.create(
        model="gpt-fake", messages=history, tools=TOOLS, extra_headers={"X-Session-Id": "ep-1"})

    fake.push(Reply(content="Lyon."))
    wrong = client.chat.completions.with_raw_response.create(
        model="gpt-fake", messages=[{"role": "user", "content": "Capital of France?"}],
        extra_headers={"X-Session-Id": "ep-2"})
    fake.push(Reply(status=500))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="gpt-fake", messages=[{"role": "user", "content": "Try again?"}],
            extra_headers={"X-Session-Id": "ep-2"})

    beta_client = openai.OpenAI(base_url=m.base_url, api_key=beta, max_retries=0)
    fake.push(Reply(content="hello beta"))
    beta_turn = beta_client.chat.completions.with_raw_response.create(
        model="gpt-fake", messages=[{"role": "user", "content": "hi"}])

    ids = {"a1": stream.headers["x-molt-turn-id"], "a2": second.headers["x-molt-turn-id"],
           "b1": wrong.headers["x-molt-turn-id"], "beta": beta_turn.headers["x-molt-turn-id"],
           "ep1": second.headers["x-molt-session-id"], "history": history, "call": call}
    for key in ("a1", "a2", "b1", "beta"):
        m.wait_turn(ids[key])
    _ok(_cli(m, tmp_path, "feedback", ids["ep1"], "--score", "1"))
    _ok(_cli(m, tmp_path, "feedback", ids["b1"], "--score", "-1", "--text", "wrong city"))
    return ids


def _load(kind: str, path: Path, tmp_path: Path) -> Any:
    return datasets.load_dataset(kind, data_files=str(path), split="train",
                                 cache_dir=str(tmp_path / "hf-cache"))


def _export(m: Any, tmp_path: Path, name: str, *args: str) -> tuple[Path, dict[str, Any]]:
    out = tmp_path / name
    r = _ok(_cli(m, tmp_path, "export", str(out), "--json", *args))
    return out, json.loads(r.stdout)


@pytest.fixture
def recorded(molt_factory: Any, fake_llm: FakeLLM, tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    m = molt_factory(tafc={"mode": "function"})
    return m, _record(m, fake_llm, tmp_path)


def test_jsonl_is_chat_fine_tuning_data_and_filters(
        recorded: tuple[Any, dict[str, Any]], tmp_path: Path) -> None:
    m, ids = recorded
    out, counts = _export(m, tmp_path, "acme-ok.jsonl", "--tenant", "acme", "--outcome", "ok")
    assert counts["selected"] == counts["written"] == 3 and counts["skipped"] == 0
    rows = _load("json", out, tmp_path)
    assert rows.column_names == ["messages", "tools"]  # exactly the fine-tuning line
    first = json.loads(out.read_text().splitlines()[0])
    # the prompt as the agent sent it, then the answer it received (arguments as JSON text)
    assert first["messages"][:2] == [SYSTEM, ASK]
    assert first["messages"][2] == {"role": "assistant", "tool_calls": [
        {"id": ids["call"]["id"], "type": "function",
         "function": {"name": "get_weather", "arguments": ids["call"]["arguments"]}}]}
    assert first["tools"] == TOOLS  # the agent's tools, without TAFC's think parameter
    second = json.loads(out.read_text().splitlines()[1])
    assert second["messages"] == [*ids["history"],  # exactly as sent, `"content": null` too
                                  {"role": "assistant", "content": "Sunny, 12 degrees."}]
    assert rows[2]["messages"][-1]["content"] == "Lyon."

    # outcome by feedback: the session scored 1 is good; the answer scored -1 and the failed
    # turn of its session are bad (the failed one has no answer: no fine-tuning line)
    _, good = _export(m, tmp_path, "good.jsonl", "--outcome", "good")
    assert (good["selected"], good["written"]) == (2, 2)
    bad_out, bad = _export(m, tmp_path, "bad.jsonl", "--outcome", "bad", "--meta")
    assert (bad["selected"], bad["written"], bad["skipped"]) == (3 - 1, 1, 1)
    meta = json.loads(bad_out.read_text())["metadata"]
    assert (meta["turn_id"], meta["tenant"], meta["score"], meta["verdict"]) == (
        ids["b1"], "acme", -1.0, "bad")
    _, failed = _export(m, tmp_path, "err.jsonl", "--outcome", "error")
    assert (failed["selected"], failed["written"], failed["skipped"]) == (1, 0, 1)

    # one line per session: the whole episode, ending with its final answer
    per_session, n = _export(m, tmp_path, "sessions.jsonl", "--per", "session", "--outcome", "good")
    assert n["written"] == 1
    assert json.loads(per_session.read_text())["messages"] == second["messages"]

    # time: from between the episode's two turns on (a time with a zone; UTC without one)
    a1, a2 = (m.run(m.state.trajectories.get_turn(ids[k]))["created_at"] for k in ("a1", "a2"))
    since = datetime.fromtimestamp((a1 + a2) / 2, tz=UTC).isoformat()
    _, later = _export(m, tmp_path, "later.jsonl", "--tenant", "acme", "--since", since)
    assert later["selected"] == 3  # a2, b1 and the failed turn
    _, none = _export(m, tmp_path, "none.jsonl", "--until", "2020-01-01")
    assert none["selected"] == 0
    _, beta = _export(m, tmp_path, "beta.jsonl", "--tenant", "beta")
    assert beta["written"] == 1


def test_parquet_has_every_turn_typed(recorded: tuple[Any, dict[str, Any]], tmp_path: Path) -> None:
    m, ids = recorded
    tenant_id = m.run(m.state.keys.tenant_by_name("acme")).id
    # a turn a trained version served (written through the store API)
    served = TurnRecord(
        id=new_id("turn"), tenant_id=tenant_id, session_id=new_id("ses"), idx=0, turn_type="main",
        created_at=time.time(), request_model="gpt-fake", stream=False, weight_version="v0007",
        request={"model": "gpt-fake", "messages": [{"role": "user", "content": "v7?"}]},
        content="yes, v7", input_tokens=4, output_tokens=2)
    m.run(m.state.trajectories.write_turns([served]))

    out, counts = _export(m, tmp_path, "acme.parquet", "--tenant", "acme")
    assert counts["written"] == counts["selected"] == 5  # errors included
    rows = _load("parquet", out, tmp_path)
    by_id = {r["turn_id"]: r for r in rows}
    a1, b1 = by_id[ids["a1"]], by_id[ids["b1"]]
    assert a1["tenant"] == "acme" and a1["stream"] is True and a1["status"] == "ok"
    assert a1["verdict"] == "good" and a1["scored_by"] == "session" and a1["score"] == 1.0
    a2 = by_id[ids["a2"]]
    assert (a2["input_tokens"], a2["output_tokens"], a2["stream"]) == (11, 7, False)
    assert a1["input_tokens"] is None  # streamed without include_usage: no usage recorded
    assert isinstance(a1["created_at"], datetime)
    jsonl, _ = _export(m, tmp_path, "acme.jsonl", "--tenant", "acme")
    assert json.loads(a1["messages"]) == json.loads(jsonl.read_text().splitlines()[0])["messages"]
    assert json.loads(a1["tools"]) == TOOLS
    assert (b1["verdict"], json.loads(b1["answer"])["content"]) == ("bad", "Lyon.")
    failed = [r for r in rows if r["status"] != "ok"]
    assert len(failed) == 1 and failed[0]["answer"] is None and failed[0]["http_status"] == 502  # molt answered the upstream 500 with a 502
    assert json.loads(failed[0]["messages"])[-1] == {"role": "user", "content": "Try again?"}

    v7, n = _export(m, tmp_path, "v7.parquet", "--version", "v0007")
    assert n["selected"] == 1
    only = _load("parquet", v7, tmp_path)[0]
    assert (only["weight_version"], json.loads(only["answer"])["content"]) == ("v0007", "yes, v7")
    _, base = _export(m, tmp_path, "base.parquet", "--tenant", "acme", "--version", "base")
    assert base["selected"] == 4


def test_upstream_form_shows_what_molt_sent(recorded: tuple[Any, dict[str, Any]],
                                            tmp_path: Path) -> None:
    m, _ = recorded
    out, _ = _export(m, tmp_path, "up.jsonl", "--tenant", "acme", "--outcome", "good", "--upstream")
    line = json.loads(out.read_text().splitlines()[0])
    props = line["tools"][0]["function"]["parameters"]["properties"]
    assert next(iter(props)) == "think" and "city" in props  # TAFC's augmented schema
    # the answer is still the one the agent received
    assert json.loads(line["messages"][-1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}


def test_cli_refuses_bad_input(recorded: tuple[Any, dict[str, Any]], tmp_path: Path) -> None:
    m, _ = recorded
    bad_time = _cli(m, tmp_path, "export", str(tmp_path / "x.jsonl"), "--since", "yesterday")
    assert bad_time.exit_code == 2 and "ISO 8601" in bad_time.output
    both = _cli(m, tmp_path, "export", "-", "--outcome", "ok", "--outcome", "error")
    assert both.exit_code == 2 and "at most one" in both.output
    who = _cli(m, tmp_path, "export", "-", "--tenant", "nobody")
    assert who.exit_code == 1 and "no tenant 'nobody'" in who.output
    order = _cli(m, tmp_path, "export", "-", "--since", "2026-12-02", "--until", "2026-12-01")
    assert order.exit_code == 1 and "since must be before until" in order.output
    assert _cli(m, tmp_path, "export", "-", "--format", "parquet").exit_code == 2
    assert _cli(m, tmp_path, "export").exit_code == 2
    assert not list(tmp_path.glob("x.jsonl*"))  # nothing half-written is left behind
    to_stdout = _ok(_cli(m, tmp_path, "export", "-", "--tenant", "beta"))
    assert json.loads(to_stdout.stdout.splitlines()[0])["messages"][-1]["content"] == "hello beta"


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # the SDK's own knob: export within 50 ms
    c = OtlpCollector()
    with ServerThread(c.app) as srv:
        c.url = srv.url  # type: ignore[attr-defined]
        yield c


def test_spans_live_from_the_recorder_and_in_batch(
        molt_factory: Any, fake_llm: FakeLLM, collector: OtlpCollector, tmp_path: Path) -> None:
    m = molt_factory(tafc={"mode": "function"}, otel={"endpoint": collector.url})  # type: ignore[attr-defined]
    ids = _record(m, fake_llm, tmp_path)
    assert collector.wait_until(lambda: len(collector.spans) >= 5)
    live = collector.by_turn()
    a1 = live[ids["a1"]]
    attrs = a1["attributes"]
    assert a1["name"] == "chat gpt-fake" and a1["resource"]["service.name"] == "molt"
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-fake"
    assert attrs["gen_ai.response.finish_reasons"] == ["tool_calls"]
    usage = live[ids["a2"]]["attributes"]
    assert (usage["gen_ai.usage.input_tokens"], usage["gen_ai.usage.output_tokens"]) == (11, 7)
    assert attrs["gen_ai.conversation.id"] == ids["ep1"]
    assert attrs["server.address"] == "127.0.0.1"
    assert live[ids["a2"]]["trace_id"] == a1["trace_id"]  # one session, one trace
    failed = [s for s in collector.spans if s["attributes"].get("error.type")]
    assert len(failed) == 1 and failed[0]["status"] == 2  # STATUS_CODE_ERROR
    text = json.dumps(collector.spans)
    assert "Oslo" not in text and "sunny" not in text  # no prompt text by default

    # batch: the same turns again give the same spans (ids derived from the turns), and
    # with --otlp-content the conversation in the conventions' message shape
    collector.spans.clear()
    r = _ok(_cli(m, tmp_path, "export", "--otlp", collector.url, "--otlp-content",  # type: ignore[attr-defined]
                 "--tenant", "acme", "--json"))
    assert json.loads(r.stdout)["spans"] == 4
    batch = collector.by_turn()
    assert set(batch) == set(live) - {ids["beta"]}
    assert (batch[ids["a1"]]["trace_id"], batch[ids["a1"]]["span_id"]) == (a1["trace_id"], a1["span_id"])
    inputs = json.loads(batch[ids["a2"]]["attributes"]["gen_ai.input.messages"])
    assert inputs[-1] == {"role": "tool", "parts": [
        {"type": "tool_call_response", "id": ids["call"]["id"], "response": "sunny, 12C"}]}
    output = json.loads(batch[ids["a2"]]["attributes"]["gen_ai.output.messages"])
    assert output[0]["parts"] == [{"type": "text", "content": "Sunny, 12 degrees."}]
    assert batch[ids["a1"]]["attributes"]["molt.feedback.score"] == 1.0

    collector.fail_next = 10
    # a collector answering 503 is retried until `[otel] timeout_s`, then the export fails
    refused = _cli(m, tmp_path, "export", "--otlp", collector.url,  # type: ignore[attr-defined]
                   toml="[otel]\ntimeout_s = 1\n")
    assert refused.exit_code == 1 and "did not take" in refused.output


def test_a_dead_collector_costs_spans_never_turns(molt_factory: Any, fake_llm: FakeLLM) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    m = molt_factory(otel={"endpoint": dead, "timeout_s": 0.5})
    client = openai.OpenAI(base_url=m.base_url, api_key="x", max_retries=0)
    turn_ids = []
    for i in range(3):
        fake_llm.push(Reply(content=f"answer {i}"))
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-fake", messages=[{"role": "user", "content": f"q{i}"}])
        assert raw.parse().choices[0].message.content == f"answer {i}"
        turn_ids.append(raw.headers["x-molt-turn-id"])
    for tid in turn_ids:
        assert m.wait_turn(tid)["content"].startswith("answer")
    sink = m.state.recorder.sinks[0]
    assert sink.writer.flush(5) is True
    assert sink.writer.failed == 3 and sink.writer.exported == 0
    metrics = httpx.get(m.url + "/metrics").text
    assert 'molt_otel_spans_total{outcome="failed"} 3.0' in metrics
    assert m.run(m.state.trajectories.count_turns()) == 3
