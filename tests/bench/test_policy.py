"""The shipped tiny policy: files load from the local path, the chat template
renders OpenAI-format conversations, and a small fixed evaluation reproduces
the figures recorded in ``meta.json`` when the checkpoint was made."""

from __future__ import annotations

import json
from typing import Any

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.policy.chat import parse_reply
from bench.policy.evaluate import evaluate
from bench.policy.model import CHECKPOINT_DIR
from bench.toolworld import BASE, state_conventions, tool_schemas
from modeling.blocks import render_skills_block

# Greedy decoding is deterministic on one machine; across CPUs float rounding can
# flip a near-tie, so a figure may move by a step or two of the small set.
TOLERANCE = 0.09
TEST_STEPS = 24


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(CHECKPOINT_DIR)


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    return json.loads((CHECKPOINT_DIR / "meta.json").read_text())  # type: ignore[no-any-return]


def test_checkpoint_files_are_small_and_load(tokenizer: Any) -> None:
    names = {p.name for p in CHECKPOINT_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "meta.json"} <= names
    assert sum(p.stat().st_size for p in CHECKPOINT_DIR.iterdir()) <= 15 * 2**20
    config = json.loads((CHECKPOINT_DIR / "tokenizer_config.json").read_text())
    assert "<tool_call>" in config["chat_template"]
    model = AutoModelForCausalLM.from_pretrained(CHECKPOINT_DIR)
    assert model.config.model_type == "llama"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.eos_token == "<|end|>"


def test_chat_template_renders_openai_messages(tokenizer: Any) -> None:
    skills = render_skills_block(state_conventions({**BASE, "date": "dmy"}, families=["date"]))
    call = {"id": "call_1", "type": "function",
            "function": {"name": "find_contact", "arguments": '{"name": "Ann Berg"}'}}
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "system", "content": skills},
        {"role": "user", "content": "Tell Ann Berg: hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"id": "c42"}'},
    ]
    text = tokenizer.apply_chat_template(messages, tools=tool_schemas(),
                                         add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|tools|>\nfind_contact(name)\nsend_message(to_id,text,notify?)\n")
    assert "<|system|>\nYou are a helpful assistant.\n<|system|>\n<molt-skills>\n" in text
    assert ('<|assistant|>\n<tool_call>{"name": "find_contact", "arguments": '
            '{"name": "Ann Berg"}}</tool_call><|end|>\n<|tool|>\n{"id": "c42"}\n') in text
    assert text.endswith("<|assistant|>\n")
    # dict arguments render exactly like the JSON string the OpenAI SDK sends
    as_dict = [*messages[:3], {"role": "assistant", "content": "",
                               "tool_calls": [{**call, "function": {
                                   "name": "find_contact", "arguments": {"name": "Ann Berg"}}}]},
               messages[4]]
    assert tokenizer.apply_chat_template(as_dict, tools=tool_schemas(),
                                         add_generation_prompt=True, tokenize=False) == text
    final = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": "Done."}], tokenize=False)
    assert final.endswith("<|assistant|>\nDone.<|end|>\n")


def test_parse_reply() -> None:
    text = ('Looking.<tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call>'
            '<tool_call>{"name": "b", "arguments": {}}</tool_call><|end|><pad>')
    reply = parse_reply(text)
    assert reply.content == "Looking."
    assert [(c.name, c.arguments) for c in reply.calls] == [("a", {"x": 1}), ("b", {})]
    broken = parse_reply('<tool_call>{"name": "a", "arguments": {</tool_call>')
    assert not broken.calls and broken.errors
    assert parse_reply("It is 4C.<|end|>").content == "It is 4C."


def test_shipped_policy_reproduces_its_figures(meta: dict[str, Any]) -> None:
    recorded = meta["figures"]["test_set"]
    figures = evaluate(CHECKPOINT_DIR, n_steps=TEST_STEPS,
                       conditions=("base", "stated", "unstated"))
    for condition in ("base", "stated", "unstated"):
        for key in (condition, f"{condition}_conventions"):
            assert abs(figures[key] - recorded[key]) <= TOLERANCE, (key, figures)
    # issue 5's targets, on the small set (one step of 24 is 4 points)
    assert figures["base"] >= 0.95 - TOLERANCE
    assert figures["stated"] >= 0.85 - TOLERANCE
    assert figures["unstated"] <= 0.25
    # and as recorded on the full evaluation (200 steps per condition) with this checkpoint
    full = meta["figures"]
    assert full["steps_per_condition"] == 200
    assert full["base"] >= 0.95 and full["stated"] >= 0.85 and full["unstated"] <= 0.25
