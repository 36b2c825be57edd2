"""RL on the tiny policy: real trl/peft steps on CPU, per-token step advantages."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from store.registry import Registry
from tests.trainer.conftest import POLICY, hashed_reward, make_step
from trainer.advantages import (
    parse_completion,
    process_advantages,
    token_advantages,
    token_starts,
    token_steps,
)
from trainer.grpo import insert_block
from trainer.rl import build, latest_checkpoint, train
from trainer.rl_config import CONFIG_FILE, RLConfig
from trainer.types import Split

SMALL: dict[str, Any] = {"focus": False, "batch_size": 8, "num_generations": 4, "max_completion_length": 24,
                         "temperature": 1.5, "learning_rate": 5e-3, "kl_samples": 2}


def _split(n: int = 8) -> Split:
    return Split(train=[make_step(i) for i in range(n)])


def _train_quietly(trainer: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trainer.train()  # type: ignore[attr-defined]


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_real_steps_change_every_lora_parameter_and_nothing_else(tmp_path: Path) -> None:
    run = build(_split(), POLICY, tmp_path, RLConfig(max_steps=3, **SMALL), hashed_reward)
    model = run.trainer.model
    before = _snapshot(model)
    lora = [n for n in before if "lora_" in n]
    assert lora and all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
    _train_quietly(run.trainer)
    after = _snapshot(model)
    assert set(after) == set(before)
    unchanged_lora = [n for n in lora if torch.equal(before[n], after[n])]
    changed_other = [n for n in before if "lora_" not in n and not torch.equal(before[n], after[n])]
    assert unchanged_lora == []
    assert changed_other == []
    skipped = [r["step_rewards/skipped_groups"] for r in run.trainer.state.log_history
               if "step_rewards/skipped_groups" in r]
    assert len(skipped) == 3


def test_constant_rewards_skip_every_group_and_leave_the_adapter_unchanged(tmp_path: Path) -> None:
    def constant(step: object, completion: object) -> list[float | None]:
        return [0.5] * len(completion.steps)  # type: ignore[attr-defined]

    run = build(_split(), POLICY, tmp_path, RLConfig(max_steps=2, **SMALL), constant)
    before = _snapshot(run.trainer.model)
    _train_quietly(run.trainer)
    after = _snapshot(run.trainer.model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    skipped = [r["step_rewards/skipped_groups"] for r in run.trainer.state.log_history
               if "step_rewards/skipped_groups" in r]
    assert skipped == [1.0, 1.0]


def test_pause_checkpoint_resume_and_registry_layout(tmp_path: Path) -> None:
    cfg = RLConfig(max_steps=3, save_steps=100, **SMALL)
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= 2  # the check after the first step says: traffic is back

    out = tmp_path / "run"
    first = train(_split(), POLICY, out, cfg, hashed_reward, should_stop=should_stop)
    assert first.stopped_early and first.steps == 1
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "checkpoint-1"
    assert json.loads((ckpt / CONFIG_FILE).read_text())["max_steps"] == 3

    second = train(_split(), POLICY, out, cfg, hashed_reward, resume_from=ckpt)
    assert (second.steps, second.stopped_early) == (3, False)
    assert second.kl is not None and second.kl >= -0.05
    assert second.mean_reward is not None
    adapter = second.adapter_dir
    assert adapter is not None
    assert RLConfig.load(adapter).max_steps == 3
    reg = Registry(tmp_path / "registry")
    meta = reg.create("ten_a", "tiny", kind="lora", files_from=adapter, base_model=str(POLICY),
                      base_hash=None, config=RLConfig.load(adapter).to_dict())
    assert reg.validate("ten_a", "tiny", meta.version, POLICY).kind == "lora"


def test_fast_slow_blocks_go_after_the_agents_system_prompt() -> None:
    msgs = [{"role": "system", "content": "agent"}, {"role": "user", "content": "hi"}]
    out = insert_block(msgs, "<molt-context>\nbe brief\n</molt-context>")
    assert [m["content"] for m in out] == ["agent", "<molt-context>\nbe brief\n</molt-context>", "hi"]
    assert msgs[1]["content"] == "hi" and len(msgs) == 2


# -- per-token advantages (pure) -----------------------------------------------

def test_process_advantages_on_a_hand_built_group() -> None:
    # One group of three completions: [call ok, call bad], [call bad], [reply unscored]
    group = [[1.0, -1.0], [-1.0], [None]]
    adv = process_advantages(group, 3, eps=0.0)
    mean, std = -1.0 / 3.0, (4.0 / 3.0) ** 0.5  # over the three rewarded steps (sample std)
    good, bad = (1.0 - mean) / std, (-1.0 - mean) / std
    assert adv.skipped == [False]
    assert adv.steps[0] == pytest.approx([good + bad, bad])
    assert adv.steps[1] == pytest.approx([bad])
    assert adv.steps[2] == [0.0]
    # tokens 0-2 belong to step 0, 3-5 to step 1 (its end at char 20), the rest too
    of_tokens = token_steps([10, 20], [0, 4, 8, 10, 15, 19, 20, 21])
    assert of_tokens == [0, 0, 0, 1, 1, 1, 1, 1]
    assert token_advantages(adv.steps[0], of_tokens) == pytest.approx(
        [good + bad] * 3 + [bad] * 5)


def test_constant_group_is_skipped_and_other_groups_kept() -> None:
    adv = process_advantages([[0.5], [0.5], [1.0], [0.0]], 2)
    assert adv.skipped == [True, False]
    assert adv.steps[:2] == [[0.0], [0.0]]
    assert adv.steps[2][0] > 0 > adv.steps[3][0]
    with pytest.raises(ValueError):
        process_advantages([[1.0]] * 3, 2)


def test_steps_of_a_multi_call_completion_map_to_its_tokens() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(POLICY))
    text = ('checking <tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call>'
            '<tool_call>{"name": "b", "arguments": {}}</tool_call> done')
    comp = parse_completion(text)
    assert [s.call["function"]["name"] if s.call else None for s in comp.steps] == ["a", "b", None]
    assert [c["function"]["name"] for c in comp.message["tool_calls"]] == ["a", "b"]
    assert comp.message["content"] == "checking  done"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    starts = token_starts(lambda x: tok.decode(x, skip_special_tokens=True), ids)
    of_tokens = token_steps([s.end for s in comp.steps], starts)
    closes = [i for i, t in enumerate(ids) if tok.convert_ids_to_tokens(t) == "</tool_call>"]
    assert len(closes) == 2
    assert set(of_tokens[: closes[0] + 1]) == {0}
    assert set(of_tokens[closes[0] + 1: closes[1] + 1]) == {1}
    assert set(of_tokens[closes[1] + 1:]) == {2}
    # a bad block is text, a reply without calls is one step
    assert len(parse_completion("<tool_call>{bad</tool_call>").steps) == 1
    assert parse_completion("<tool_call>{bad</tool_call>").message.get("tool_calls") is None


def test_config_checks_batch_and_round_trips(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple"):
        RLConfig(batch_size=6, num_generations=4)
    cfg = RLConfig(beta=0.04, target_modules=["q_proj", "v_proj"])
    assert RLConfig.load(cfg.save(tmp_path).parent) == cfg
    with pytest.raises(ValueError, match="unknown"):
        RLConfig.from_dict({"nope": 1})


def test_distillation_kl_anchor_and_context_blocks_in_a_real_step(tmp_path: Path) -> None:
    def constant(step: object, completion: object) -> list[float | None]:
        return [0.0] * len(completion.steps)  # type: ignore[attr-defined]

    block = "<molt-context>\nAlways call a tool.\n</molt-context>"
    cfg = RLConfig(max_steps=1, distill_coef=0.5, beta=0.05, **SMALL)
    run = build(_split(), POLICY, tmp_path, cfg, constant, blocks=[block])
    before = _snapshot(run.trainer.model)
    _train_quietly(run.trainer)
    after = _snapshot(run.trainer.model)
    # rewards carry no signal, but the skilled teacher does: the adapter moves
    moved = [n for n in before if not torch.equal(before[n], after[n])]
    assert moved and all("lora_B" in n for n in moved)
    (row,) = [r for r in run.trainer.state.log_history if "reward" in r]
    assert row["step_rewards/skipped_groups"] == 1.0
    assert "distill/teacher_minus_student" in row and "kl" in row
    prompts = list(run.trainer._logs["prompt"])
    assert prompts and all(any(m["content"] == block for m in p) for p in prompts)


def test_training_stops_once_no_step_carries_a_learning_signal() -> None:
    """`stop_idle_steps`: logged steps whose groups were all skipped and whose teacher and
    student agree end the run as done (not paused); one step with a signal resets the count."""
    from transformers import TrainerControl

    from trainer.rl import _callbacks

    stop, _ = _callbacks(RLConfig(stop_idle_steps=3, idle_distill_eps=1e-3), None)
    control = TrainerControl()
    quiet = {"step_rewards/skipped_groups": 1.0, "distill/teacher_minus_student": 2e-7,
             "reward": 0.75}
    signal = {**quiet, "distill/teacher_minus_student": 0.4}
    for logs in (quiet, quiet, signal, quiet, quiet):
        stop.on_log(None, None, control, logs=logs)
        assert not control.should_training_stop
    stop.on_log(None, None, control, logs=quiet)
    assert control.should_training_stop and stop.saturated and not stop.stopped

    never, _ = _callbacks(RLConfig(), None)  # off by default
    control = TrainerControl()
    for _ in range(10):
        never.on_log(None, None, control, logs=quiet)
    assert not control.should_training_stop
