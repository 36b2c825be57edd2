"""Chat template rendering, incremental detokenization, and loading versions from folders."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from modeling.chat import TemplateError, normalize_messages, render_prompt, render_text
from modeling.detokenize import IncrementalDetokenizer
from modeling.loading import (
    LoadError,
    LoraHost,
    forward_step,
    load_base,
    load_with_delta,
    read_lora,
)
from tests.fakes.tiny_model import TEXT_PROMPT, TOOL_ANSWER, TOOL_PROMPT, WEATHER_TOOL


def test_template_renders_tools_and_generation_prompt(tiny_base: Path) -> None:
    base = load_base(tiny_base)
    text = render_text(base.tokenizer, TOOL_PROMPT, [WEATHER_TOOL])
    assert '"name": "get_weather"' in text
    assert text.endswith("<|assistant|>")
    ids = render_prompt(base.tokenizer, TOOL_PROMPT, [WEATHER_TOOL])
    assert base.tokenizer.decode(ids) == text


def test_openai_messages_are_normalised() -> None:
    msgs = normalize_messages([
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]},
    ])
    assert msgs[0]["content"] == "ab"
    assert msgs[1]["tool_calls"][0]["function"]["arguments"] == {"x": 1}


def test_template_errors_are_clear() -> None:
    class NoTemplate:
        chat_template = None

    with pytest.raises(TemplateError, match="no chat_template"):
        render_text(NoTemplate(), TEXT_PROMPT)


@pytest.mark.parametrize("text", ["Hello there, friend! Ça va?", TOOL_ANSWER, "日本語 ok ✓ émoji 🙂"])
def test_incremental_detokenization_is_exact_per_piece(tiny_base: Path, text: str) -> None:
    tok = load_base(tiny_base).tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    d = IncrementalDetokenizer(tok)
    pieces = [d.push(i) for i in ids] + [d.flush()]
    assert "".join(pieces) == tok.decode(ids)
    assert "\ufffd" not in "".join(pieces)
    # pieces come per token, not per word: a word split in tokens streams in parts
    assert sum(1 for p in pieces if p) > len(text.split())


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits  # type: ignore[no-any-return]


def test_a_cached_step_equals_a_full_pass_without_deprecation_warnings(tiny_base: Path) -> None:
    """The KV cache goes through the current transformers API: under warnings-as-errors
    (pytest's filterwarnings) the old `past_key_values` keyword raised a FutureWarning."""
    base = load_base(tiny_base)
    ids = render_prompt(base.tokenizer, TEXT_PROMPT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.inference_mode():
            first, cache = forward_step(base.model, torch.tensor([ids[:-1]]), None)
            last, cache = forward_step(base.model, torch.tensor([ids[-1:]]), cache)
    assert cache.get_seq_length() == len(ids)
    whole = _logits(base.model, torch.tensor([ids]))
    assert torch.allclose(last[0, -1], whole[0, -1], atol=1e-5)
    assert torch.allclose(first[0, -1], whole[0, -2], atol=1e-5)


def test_lora_rows_are_independent(tiny_base: Path, tiny_artifacts: dict[str, Path]) -> None:
    base = load_base(tiny_base)
    ids = torch.tensor([render_prompt(base.tokenizer, TEXT_PROMPT)])
    host = LoraHost(base)
    plain = _logits(base.model, ids)
    host.attach("a", read_lora(tiny_artifacts["lora1"], base.device))
    host.attach("b", read_lora(tiny_artifacts["lora2"], base.device))
    la = _logits(host.model_for("a"), ids)
    lb = _logits(host.model_for("b"), ids)
    l0 = _logits(host.model_for(None), ids)
    assert torch.equal(l0, plain)
    assert not torch.allclose(la, lb)
    host.detach("a")
    assert torch.equal(_logits(host.model_for("b"), ids), lb)
    host.detach("b")
    assert torch.equal(_logits(host.model_for(None), ids), plain)


def test_delta_version_is_a_separate_model(tiny_base: Path, tiny_artifacts: dict[str, Path]) -> None:
    base = load_base(tiny_base)
    ids = torch.tensor([render_prompt(base.tokenizer, TEXT_PROMPT)])
    before = _logits(base.model, ids)
    model = load_with_delta(base, tiny_artifacts["delta"])
    assert not torch.allclose(_logits(model, ids), before)
    assert torch.equal(_logits(base.model, ids), before)


def test_broken_folders_raise_load_error(tmp_path: Path, tiny_base: Path) -> None:
    with pytest.raises(LoadError, match="not a model folder"):
        load_base(tmp_path)
    with pytest.raises(LoadError, match="cannot read the LoRA adapter"):
        read_lora(tmp_path, torch.device("cpu"))
