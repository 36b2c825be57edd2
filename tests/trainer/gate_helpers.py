"""What the gate tests share: recorded steps, a step check, and LoRA candidates really trained.

The scenario: the tenant's convention drifted. To "Say hello." the agent's
users now want "Goodbye, friend." (the held-out steps), and the weather tool
call must keep working (the retention steps). The tiny base answers the old
way, so it fails the held-out steps and passes the retention ones.

Candidates are trained here on rollouts with rewards, by reward-weighted
fine-tuning of a LoRA adapter (each rollout's likelihood weighted by its reward
normalised within its prompt's group, negative weights clipped to 0): with the
true rewards the adapter learns the new convention and keeps the tool call;
with the same rewards shuffled it learns the opposite. The gate must tell
them apart through serving.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from tests.fakes.tiny_model import (
    END,
    TEXT_ANSWER,
    TEXT_PROMPT,
    TOOL_ANSWER,
    TOOL_PROMPT,
    WEATHER_TOOL,
)
from trainer.types import Split, Step

NEW_ANSWER = "Goodbye, friend."
TOOL_CALL = {"id": "call_0", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": "Oslo"})}}

# (messages, tools, rollout text, true reward): two rollouts per prompt.
ROLLOUTS: list[tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str, float]] = [
    (TEXT_PROMPT, None, NEW_ANSWER, 1.0),
    (TEXT_PROMPT, None, TEXT_ANSWER, -1.0),
    (TOOL_PROMPT, [WEATHER_TOOL], TOOL_ANSWER, 1.0),
    (TOOL_PROMPT, [WEATHER_TOOL], NEW_ANSWER, -1.0),
]


def shuffled(rewards: list[float]) -> list[float]:
    """The rewards permuted (rotated by one): each rollout gets another rollout's reward."""
    return rewards[1:] + rewards[:1]


def step(i: int, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
         completion: dict[str, Any]) -> Step:
    return Step(turn_id=f"turn_{i}", session_id=f"ses_{i}", tenant_id="ten", idx=0,
                created_at=0.0, model="tiny", messages=messages, tools=tools,
                completion=completion, reward=1.0)


def drift_split() -> Split:
    """Held-out: the new text convention; retention: the tool call the base already makes."""
    text = {"role": "assistant", "content": NEW_ANSWER}
    call = {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}
    return Split(heldout=[step(0, TEXT_PROMPT, None, text), step(1, TEXT_PROMPT, None, text)],
                 retention=[step(2, TOOL_PROMPT, [WEATHER_TOOL], call)])


def _calls(message: Any) -> list[tuple[str, Any]]:
    out = []
    for c in message.get("tool_calls") or []:
        fn = c.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except json.JSONDecodeError:
            args = fn.get("arguments")
        out.append((fn.get("name"), args))
    return out


def matches_recorded(s: Step, completion: Any) -> float | None:
    """A `StepCheck`: +1 when the produced message does what the good recorded one did, else -1."""
    want = s.completion
    if want.get("tool_calls"):
        return 1.0 if _calls(completion) == _calls(want) else -1.0
    got = (completion.get("content") or "").strip()
    return 1.0 if got == want["content"] and not completion.get("tool_calls") else -1.0


def train_candidate(base_dir: Path, out: Path, rewards: list[float], *, steps: int = 80,
                    lr: float = 2e-2, seed: int = 0) -> Path:
    """A LoRA adapter trained on `ROLLOUTS` with `rewards` (see the module doc)."""
    with warnings.catch_warnings():  # peft calls a transformers 5 API deprecated for v6
        warnings.simplefilter("ignore", FutureWarning)
        return _train(base_dir, out, rewards, steps=steps, lr=lr, seed=seed)


def _train(base_dir: Path, out: Path, rewards: list[float], *, steps: int, lr: float,
           seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    tok = PreTrainedTokenizerFast.from_pretrained(str(base_dir))
    model = LlamaForCausalLM.from_pretrained(base_dir)
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj",
                                     "down_proj", "gate_proj"])
    peft_model = get_peft_model(model, cfg)
    weights: list[float] = []
    examples: list[tuple[list[int], list[int]]] = []
    for (messages, tools, text, _), r in zip(ROLLOUTS, rewards, strict=True):
        group = [rr for (m, _, _, _), rr in zip(ROLLOUTS, rewards, strict=True) if m is messages]
        mean = sum(group) / len(group)
        weights.append(max(0.0, r - mean))
        prompt = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                         tokenize=False)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(text + END, add_special_tokens=False)["input_ids"]
        examples.append((p + a, [-100] * len(p) + a))
    width = max(len(ids) for ids, _ in examples)
    pad = int(tok.pad_token_id)
    ids = torch.tensor([[pad] * (width - len(i)) + i for i, _ in examples])
    labels = torch.tensor([[-100] * (width - len(lab)) + lab for _, lab in examples])
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i, _ in examples])
    w = torch.tensor(weights)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    peft_model.train()
    for _ in range(steps):
        logits = peft_model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1).clamp(min=0),
            reduction="none").view(target.shape)
        per_seq = (nll * (target != -100)).sum(1) / (target != -100).sum(1)
        loss = (w * per_seq).sum() / w.sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
    peft_model.save_pretrained(out)
    return out
