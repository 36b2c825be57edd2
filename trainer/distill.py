"""Skill-conditioned on-policy distillation: token advantages from a teacher with skills.

The student is the policy being trained, which sees the agent's own messages. The
teacher is the same base model (adapters off) with the tenant's serving skills in context:
the turn's `served_messages`, what the proxy actually sent upstream. For a completion the
student sampled, each token's distillation advantage is

    coef * clip(log p_teacher(y_t | served, y_<t) - log p_student(y_t | messages, y_<t))

(on-policy distillation with the per-token reverse KL as a negative reward; our
instantiation clips each term to [-clip, clip]). Tokens the skilled teacher finds likelier
are pushed up, so what the skills say moves into the weights and no longer costs context.
Rows without a served context (no skills were served) get 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def completion_logprobs(model: Any, prompts: Sequence[Sequence[int]],
                        completions: Sequence[Sequence[int]], *, pad_id: int,
                        device: torch.device) -> list[torch.Tensor]:
    """Per row: log p(completion token | prompt, earlier tokens), one value per token."""
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, device=device)
        mask[i, : len(s)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    out = []
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        if not c:
            out.append(torch.zeros(0, device=device))
            continue
        pos = torch.arange(len(p) - 1, len(p) - 1 + len(c), device=device)
        tgt = torch.tensor(list(c), device=device)
        out.append(logp[i, pos, tgt])
    return out


def distill_advantages(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], *,
                       coef: float, clip: float) -> list[torch.Tensor]:
    """Per row: coef * clip(teacher - student), token by token."""
    return [coef * (t - s).clamp(-clip, clip) for t, s in zip(teacher, student, strict=True)]
