"""TAFC through the real proxy and the official openai SDK: the model sees augmented tools,
the agent gets exactly the calls its own schemas describe, the think text is in the store."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.fake_llm import FakeLLM, Reply

KEY = "tafc-admin-key-0123456789abcdef"
TOOLS = [
    {"type": "function", "function": {"name": "book", "parameters": {"type": "object", "properties": {
        "day": {"type": "string", "format": "date", "description": "a day the seats are free"},
        "seats": {"type": "integer"}}, "required": ["day", "seats"]}}},
    {"type": "function", "function": {"name": "note", "parameters": {"type": "object", "properties": {
        "think": {"type": "string"}, "text": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "plain", "parameters": {"type": "object", "properties": {
        "q": {"type": "string"}}}}},
]
# what the agent must receive: the calls in its own schemas
WANTED = [("book", {"day": "2026-05-03", "seats": 2}), ("note", {"think": "a real one", "text": "t"}),
          ("plain", {"q": "x"})]
# what a model writes against the augmented schemas ("parameter" mode, tau 0.6)
WRITTEN = [("book", {"think": "two seats", "day": {"think": "May 3rd", "value": "2026-05-03"},
                     "seats": 2}),
           ("note", {"_think": "write it down", "think": "a real one", "text": "t"}),
           ("plain", {"q": "x"})]


def _calls(msg: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls or []]


def _streamed_calls(stream: Any) -> list[tuple[str, dict[str, Any]]]:
    acc: dict[int, dict[str, Any]] = {}
    for chunk in stream:
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                slot = acc.setdefault(tc.index, {"id": None, "name": "", "args": ""})
                slot["id"] = tc.id or slot["id"]
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["args"] += tc.function.arguments
    assert [acc[i]["id"] for i in sorted(acc)] == [f"call_{i}" for i in sorted(acc)]
    return [(acc[i]["name"], json.loads(acc[i]["args"])) for i in sorted(acc)]


@pytest.mark.parametrize("stream", [False, True])
def test_agent_gets_its_own_calls_and_the_store_keeps_the_think(
        molt_factory: Any, fake_llm: FakeLLM, stream: bool) -> None:
    m = molt_factory(tafc={"mode": "parameter", "tau": 0.6})
    client = openai.OpenAI(base_url=m.base_url, api_key="x", max_retries=0)
    fake_llm.push(Reply(tool_calls=WRITTEN))
    kw: dict[str, Any] = {"model": "gpt-fake", "tools": TOOLS,
                          "messages": [{"role": "user", "content": "book 2 seats on May 3rd"}]}
    if stream:
        raw = client.chat.completions.with_raw_response.create(stream=True, **kw)
        calls = _streamed_calls(raw.parse())
    else:
        raw = client.chat.completions.with_raw_response.create(**kw)
        calls = _calls(raw.parse().choices[0].message)
    assert calls == WANTED
    sent = fake_llm.requests[-1]["tools"]
    props = [t["function"]["parameters"]["properties"] for t in sent]
    assert next(iter(props[0])) == "think" and set(props[0]["day"]["properties"]) == {"think", "value"}
    assert next(iter(props[1])) == "_think" and "think" in props[1]  # the real one survives
    turn = m.wait_turn(raw.headers["x-molt-turn-id"])
    texts = sorted(t["text"] for t in turn["think"] if "text" in t)
    assert texts == sorted(["two seats", "day: May 3rd", "write it down"])
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in turn["tool_calls"]] == WANTED  # the record holds what the agent got


def test_off_by_default_and_per_tenant_and_per_tool(molt_factory: Any, fake_llm: FakeLLM) -> None:
    m = molt_factory(server={"admin_key": KEY})
    client = openai.OpenAI(base_url=m.base_url, api_key=KEY, max_retries=0)
    fake_llm.push(Reply(tool_calls=[("plain", {"q": "x"})]))
    client.chat.completions.create(model="gpt-fake", tools=TOOLS,
                                   messages=[{"role": "user", "content": "hi"}])
    assert fake_llm.requests[-1]["tools"] == TOOLS  # off: the agent's tools as they were
    h = {"Authorization": f"Bearer {KEY}"}
    r = httpx.put(m.url + "/admin/tenants/default/settings", headers=h,
                  json={"tafc": {"mode": "function", "tools": ["plain"]}})
    assert r.status_code == 200 and r.json()["tafc"]["mode"] == "function"
    bad = httpx.put(m.url + "/admin/tenants/default/settings", headers=h,
                    json={"tafc": {"mode": "always"}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tafc"
    fake_llm.push(Reply(tool_calls=[("plain", {"think": "why", "q": "x"})]))
    out = client.chat.completions.create(model="gpt-fake", tools=TOOLS,
                                         messages=[{"role": "user", "content": "again"}])
    sent = fake_llm.requests[-1]["tools"]
    assert sent[0] == TOOLS[0] and "think" in sent[2]["function"]["parameters"]["properties"]
    assert _calls(out.choices[0].message) == [("plain", {"q": "x"})]
    got = httpx.get(m.url + "/admin/tenants/default/settings", headers=h).json()
    assert got["tafc"] == {"mode": "function", "tau": 0.6, "tools": ["plain"]}


def test_molt_tenants_settings_cli(molt_factory: Any, fake_llm: FakeLLM, tmp_path: Any) -> None:
    m = molt_factory()
    client = openai.OpenAI(base_url=m.base_url, api_key="x", max_retries=0)
    fake_llm.push(Reply(content="hi"))
    client.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "x"}])
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'[store]\nurl = "{m.settings.store.url}"\n')
    run = [sys.executable, "-m", "molt", "--config", str(cfg), "tenants", "settings", "default"]
    out = subprocess.run([*run, "--set", "tafc.mode=parameter", "--set", "tafc.tau=0.5", "--json"],
                         capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout)["tafc"]["mode"] == "parameter"
    bad = subprocess.run([*run, "--set", "tafc.tau=7"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode == 1 and "tau" in bad.stderr
    shown = subprocess.run(run, capture_output=True, text=True, check=True, timeout=120)
    assert "tafc.tau = 0.5" in shown.stdout
