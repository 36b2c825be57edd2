"""GRPO with step rewards: trl's `GRPOTrainer`, subclassed where trl has no hook.

Why a subclass (trl 1.16):
- Step rewards. trl's reward functions return one float per completion and trl turns them
  into one advantage per completion, shape (B,). Its loss already accepts advantages of
  shape (B, T) (`_compute_loss` unsqueezes only 1-D ones), so
  `_generate_and_score_completions` is wrapped: after trl has sampled and scored, the
  per-step rewards the reward function kept are gathered across processes, normalised per
  group, and written back as per-token advantages (trainer/advantages.py). Groups whose
  rewards do not vary are dropped from the loss (their completion mask is zeroed and the
  token count trl normalises by is recomputed), except rows that distillation gives a
  signal.
- Per-row tools, rendered as served. trl renders every prompt with one trainer-wide tool
  list through the tokenizer; each recorded request has its own tools and must be
  tokenized exactly as serving did (modeling/chat.py), so `_tokenize_prompts` is replaced.
- Fast-slow training. Each rollout may draw one of the extra system blocks (e.g. the
  evolver's context Pareto front) before it is sampled; the G rollouts of a context may
  draw different blocks and share one group advantage (arXiv 2605.12484).
- Distillation (trainer/distill.py) adds a token-level term to the advantages.
- Hindsight samples (`hindsight=True`, off by default). When a context's recorded step has
  a hindsight fix (trainer/data.py `hindsight_fix`: the agent's own later call that ran,
  in place of the refused one), the last of its G samples is replaced by that fix,
  written as the model writes calls and ended with EOS. It is scored by the same reward
  function as the sampled ones (it earns nothing for being a fix), so it only helps when
  the rewards rank it above the samples. Rare right answers are what GRPO cannot learn
  from: a group whose samples all repeat the refused call has no variance. With the fix
  in the group and `num_iterations=1` (the sample's old log-probabilities are the
  current ones, ratio 1), its term is an advantage-weighted likelihood term on the fix:
  rejection-sampling / RAFT-style supervision on hindsight-relabelled data (HER),
  inside the GRPO loss. The metric `hindsight/share` is the share of rows replaced.
- Teacher samples (`teacher_samples=True`, off by default), for skill-conditioned
  distillation: a context whose recorded step was served with skills (`served_prompt`)
  and drew no negative step reward, and has no hindsight fix, gets its recorded answer as
  the last of its G samples, in the same way. That answer was written with the skills in
  context, so it is the teacher's own sample: the student's samples show the teacher only
  what the student already writes, and a rule the student never samples (a date format it
  was never told) gets no push toward it. With it, the distillation term is positive on
  the tokens the skilled teacher prefers (context distillation, Snell et al. 2022:
  "Learning by Distilling Context"). Metric `teacher_samples/share`.
Sampling, the clipped policy loss, the KL anchor (`beta`), logging and checkpoints are
trl's own, so one GPU and several (accelerate) work as trl does.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from accelerate.utils import gather_object
from trl.trainer.grpo_trainer import GRPOTrainer

from modeling.chat import render_prompt
from trainer.advantages import (
    Completion,
    message_steps,
    parse_completion,
    process_advantages,
    token_advantages,
    token_starts,
    token_steps,
)
from trainer.distill import completion_logprobs, distill_advantages
from trainer.types import JSON, Step

StepRewardFn = Callable[[Step, Completion], Sequence[float | None]]


class StepReward:
    """The reward function trl calls: keeps every completion's step rewards for the trainer,
    and gives trl their mean (what trl logs as `reward`)."""

    def __init__(self, fn: StepRewardFn, steps: Mapping[str, Step], tokenizer: Any) -> None:
        self.__name__ = "step_reward"  # trl names its reward metrics after this
        self.fn = fn
        self.steps = steps
        self.tokenizer = tokenizer
        self.kept: list[tuple[Completion, list[float | None]]] = []

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]],
                 turn_id: list[str], **_: Any) -> list[float | None]:
        self.kept = []
        out: list[float | None] = []
        for ids, tid in zip(completion_ids, turn_id, strict=True):
            comp = parse_completion(self.decode(ids))
            rewards = list(self.fn(self.steps[tid], comp))
            if len(rewards) != len(comp.steps):
                raise ValueError(f"the step reward gave {len(rewards)} rewards for "
                                 f"{len(comp.steps)} steps")
            self.kept.append((comp, rewards))
            known = [r for r in rewards if r is not None]
            out.append(sum(known) / len(known) if known else None)
        return out


def insert_block(messages: Sequence[Mapping[str, Any]], block: str) -> list[JSON]:
    """A system message right after the agent's own leading system messages (as the proxy)."""
    msgs = [dict(m) for m in messages]
    at = 0
    while at < len(msgs) and msgs[at].get("role") in ("system", "developer"):
        at += 1
    return msgs[:at] + [{"role": "system", "content": block}] + msgs[at:]


class StepGRPOTrainer(GRPOTrainer):
    def __init__(self, *, model: Any, step_reward: StepReward, blocks: Sequence[str] = (),
                 block_probability: float = 1.0, skip_constant_groups: bool = True,
                 distill_coef: float = 0.0, distill_clip: float = 5.0, seed: int = 0,
                 hindsight: bool = False, teacher_samples: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(model=model, reward_funcs=[step_reward], **kwargs)
        self.step_reward = step_reward
        self.blocks = list(blocks)
        self.block_probability = block_probability
        self.skip_constant_groups = skip_constant_groups
        self.distill_coef = distill_coef
        self.distill_clip = distill_clip
        self.hindsight = hindsight
        self.teacher_samples = teacher_samples
        self._rng = random.Random(seed)
        self._batch_inputs: list[dict[str, Any]] | None = None

    # -- prompts ---------------------------------------------------------------
    def _with_block(self, row: dict[str, Any]) -> dict[str, Any]:
        if not self.blocks or self._rng.random() >= self.block_probability:
            return row
        return {**row, "prompt": insert_block(row["prompt"], self._rng.choice(self.blocks))}

    def _tokenize_prompts(self, prompts: list[Any]) -> tuple[list[list[int]], None, dict[str, Any]]:
        rows = self._batch_inputs
        if rows is None or len(rows) != len(prompts):
            raise RuntimeError("prompts must be tokenized inside _generate_and_score_completions")
        ids = [render_prompt(self.processing_class, p, _tools(r)) for p, r in zip(prompts, rows, strict=True)]
        return ids, None, {}

    # -- hindsight samples -------------------------------------------------------
    def _generate_single_turn(self, prompt_ids: Any, images: Any, multimodal_fields: Any,
                              num_generations: Any, *args: Any, **kwargs: Any) -> Any:
        completion_ids, logprobs = super()._generate_single_turn(
            prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs)
        rows = self._batch_inputs
        wanted = self.hindsight or self.teacher_samples
        if not wanted or rows is None or len(rows) != len(completion_ids):
            return completion_ids, logprobs
        group = int(self.num_generations or 1)
        first = self.accelerator.process_index * len(rows)
        replaced = {"hindsight": 0, "teacher_samples": 0}
        for i, row in enumerate(rows):
            # the last member of each group (groups are consecutive across processes)
            if (first + i) % group != group - 1:
                continue
            kind, message = self._off_policy(row)
            if message is None:
                continue
            completion_ids[i] = self._message_ids(message)
            replaced[kind] += 1
            if logprobs is not None:  # sampling log-probabilities: not sampled, none known
                logprobs[i] = [0.0] * len(completion_ids[i])
        mode = "train" if getattr(self.model, "training", False) else "eval"
        for kind, on in (("hindsight", self.hindsight), ("teacher_samples", self.teacher_samples)):
            if on:
                self._metrics[mode][f"{kind}/share"].append(replaced[kind] / max(len(rows), 1))
        return completion_ids, logprobs

    def _off_policy(self, row: Mapping[str, Any]) -> tuple[str, JSON | None]:
        """The sample that replaces a group's last one: a hindsight fix, else a teacher's."""
        if self.hindsight and row.get("hindsight_json"):
            return "hindsight", json.loads(row["hindsight_json"])
        if (self.teacher_samples and row.get("served_prompt")
                and not any(r is not None and r < 0 for r in row.get("step_rewards") or [])):
            return "teacher_samples", json.loads(row["completion_json"])
        return "", None

    def _message_ids(self, message: Mapping[str, Any]) -> list[int]:
        text = message_steps(message).text
        ids = [int(t) for t in self.processing_class(text, add_special_tokens=False)["input_ids"]]
        ids = ids[: max(self.max_completion_length - 1, 1)]
        return ids + [int(self.eos_token_ids[0])]

    # -- advantages --------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        inputs = [self._with_block(x) for x in inputs]
        self._batch_inputs = inputs
        try:
            out: dict[str, Any] = super()._generate_and_score_completions(inputs)
        finally:
            self._batch_inputs = None
        kept = self.step_reward.kept
        self.step_reward.kept = []
        if len(kept) != len(inputs):
            raise RuntimeError("the step reward did not score every completion")
        all_rewards = gather_object([r for _, r in kept])
        group = self.num_generations
        if not group:
            raise RuntimeError("GRPO needs num_generations")
        groups = process_advantages(all_rewards, group)
        first = self.accelerator.process_index * len(inputs)
        ids, mask = out["completion_ids"], out["completion_mask"]
        adv = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
        for i in range(len(inputs)):
            n = int(mask[i].sum())
            row = [int(x) for x in ids[i, :n]]
            starts = token_starts(self.step_reward.decode, row)
            ends = [s.end for s in kept[i][0].steps]
            values = token_advantages(groups.steps[first + i], token_steps(ends, starts))
            adv[i, :n] = torch.tensor(values, dtype=torch.float32)
        if self.distill_coef:
            adv = adv + self._distill(out, inputs)
        # a row of a skipped group stays in the loss only when distillation gives it a signal
        keep_rows = [not groups.skipped[(first + i) // group]
                     or bool(self.distill_coef and inputs[i].get("served_prompt"))
                     for i in range(len(inputs))]
        if self.skip_constant_groups:  # on every process: the gather below is collective
            keep = torch.tensor(keep_rows, device=mask.device, dtype=mask.dtype)
            out["completion_mask"] = mask * keep.unsqueeze(1)
            loss_mask = out["completion_mask"]
            if "tool_mask" in out:
                loss_mask = loss_mask * out["tool_mask"]
            out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        out["advantages"] = adv
        mode = "train" if getattr(self.model, "training", False) else "eval"
        self._metrics[mode]["step_rewards/skipped_groups"].append(
            sum(groups.skipped) / max(len(groups.skipped), 1))
        self._metrics[mode]["step_rewards/steps_per_completion"].append(
            sum(len(c.steps) for c, _ in kept) / max(len(kept), 1))
        return out

    def _distill(self, out: dict[str, Any], inputs: list[dict[str, Any]]) -> torch.Tensor:
        ids, mask = out["completion_ids"], out["completion_mask"]
        extra = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
        rows = [i for i, x in enumerate(inputs) if x.get("served_prompt")]
        if not rows:
            return extra
        tok = self.processing_class
        comps = [[int(t) for t in ids[i, : int(mask[i].sum())]] for i in rows]
        teacher_prompts = [render_prompt(tok, json.loads(inputs[i]["served_prompt"]), _tools(inputs[i]))
                           for i in rows]
        pmask = out["prompt_mask"]
        student_prompts = [[int(t) for t, m in zip(out["prompt_ids"][i], pmask[i], strict=True) if m]
                           for i in rows]
        model = self.accelerator.unwrap_model(self.model)
        pad = int(self._tokenizer.pad_token_id)
        dev = ids.device
        student = completion_logprobs(model, student_prompts, comps, pad_id=pad, device=dev)
        with model.disable_adapter():
            teacher = completion_logprobs(model, teacher_prompts, comps, pad_id=pad, device=dev)
        terms = distill_advantages(teacher, student, coef=self.distill_coef, clip=self.distill_clip)
        for i, term in zip(rows, terms, strict=True):
            extra[i, : len(term)] = term
        mode = "train" if getattr(self.model, "training", False) else "eval"
        self._metrics[mode]["distill/teacher_minus_student"].append(
            float(torch.cat([t - s for t, s in zip(teacher, student, strict=True)]).mean()))
        return extra


def _tools(row: Mapping[str, Any]) -> list[JSON] | None:
    raw = row.get("tools")
    if not raw:
        return None
    tools = json.loads(raw) if isinstance(raw, str) else raw
    return list(tools) or None
