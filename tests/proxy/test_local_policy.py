"""The shipped tiny policy (bench/policy/checkpoint) served by the local backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.local_helpers import client, start_local
from tests.proxy.streams import rebuild

CHECKPOINT = Path(__file__).resolve().parents[2] / "bench" / "policy" / "checkpoint"

pytestmark = pytest.mark.skipif(
    not (CHECKPOINT / "model.safetensors").is_file(),
    reason="bench/policy/checkpoint/ does not exist yet (train it: python -m bench.policy.pretrain)",
)


def test_the_tiny_policy_answers_with_valid_tool_calls(molt_factory: Any) -> None:
    from bench.toolworld.tools import tool_schemas

    tools = tool_schemas()
    names = {t["function"]["name"] for t in tools}
    m = start_local(molt_factory, CHECKPOINT)
    c = client(m)
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Tell Ann Berg: running late"}]
    r = c.chat.completions.create(model="tiny", messages=messages, tools=tools, temperature=0,
                                  max_tokens=96)
    choice = r.choices[0]
    assert choice.finish_reason in ("stop", "tool_calls", "length")
    for call in choice.message.tool_calls or []:
        assert call.function.name in names
        assert isinstance(json.loads(call.function.arguments), dict)
    got = rebuild(list(c.chat.completions.create(
        model="tiny", messages=messages, tools=tools, temperature=0, max_tokens=96, stream=True)))
    assert got["text"] == (choice.message.content or "")
    assert [v["name"] for v in got["calls"].values()] == [
        tc.function.name for tc in choice.message.tool_calls or []]
