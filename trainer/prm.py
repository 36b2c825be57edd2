"""The learned process reward model: a classifier on the frozen policy's hidden states.

trl 1.16 has no PRM trainer any more (`trl.experimental` ships none; the older
`PRMTrainer` trained a token classifier with a label on each step's last token). We keep
its idea with what is already loaded (our instantiation):
- features: the last hidden layer of the frozen base model at the last token of each step
  (trainer/advantages.py), for the context rendered with the chat template
  (modeling/chat.py, exactly as served) followed by the completion text;
- labels: the sign of the step's recorded evidence (trainer/rewards.py source
  "evidence"): > 0 good, < 0 bad, 0 or absent: unlabelled;
- model: one linear layer (logistic regression) on the standardised features, trained
  full batch with AdamW and class-balanced binary cross-entropy;
- score: 2 * sigmoid(logit) - 1, in [-1, 1].
It is saved as `prm.safetensors` (weight, bias, feature mean and scale) and `prm.json`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from modeling.chat import render_prompt
from modeling.loading import LoadedBase
from trainer.advantages import Completion, message_steps, token_starts, token_steps
from trainer.errors import NotEnoughData
from trainer.types import Step


@dataclass(frozen=True, slots=True)
class PRMReport:
    examples: int
    positives: int
    negatives: int
    train_accuracy: float
    label_source: str


def step_features(base: LoadedBase, step: Step, completion: Completion) -> torch.Tensor:
    """(steps, hidden): the base model's last hidden state at the end of every step."""
    tok = base.tokenizer
    prompt = render_prompt(tok, step.messages, step.tools)
    ids = tok(completion.text, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
    starts = token_starts(lambda x: tok.decode(x, skip_special_tokens=True), ids)
    of_token = token_steps([s.end for s in completion.steps], starts)
    last = [max(i for i, k in enumerate(of_token) if k == j) if j in of_token else len(ids) - 1
            for j in range(len(completion.steps))]
    x = torch.tensor([prompt + ids], device=base.device)
    with torch.no_grad():
        out = base.model(input_ids=x, output_hidden_states=True)
    hidden = out.hidden_states[-1][0].float()
    picked: torch.Tensor = hidden[[len(prompt) + i for i in last]].cpu()
    return picked


class LearnedPRM:
    """Scores every step of a completion; `fit` trains it from recorded evidence."""

    def __init__(self, base: LoadedBase, hidden: int | None = None) -> None:
        self.base = base
        size = hidden or int(base.model.config.hidden_size)
        self.linear = torch.nn.Linear(size, 1)
        self.mean = torch.zeros(size)
        self.scale = torch.ones(size)
        self.fitted = False

    def fit(self, steps: Sequence[Step], *, source: str = "evidence", epochs: int = 300,
            lr: float = 0.05, weight_decay: float = 1e-3, seed: int = 0) -> PRMReport:
        feats: list[torch.Tensor] = []
        labels: list[float] = []
        for step in steps:
            comp = message_steps(step.completion)
            picked = [i for i, s in enumerate(step.step_scores[: len(comp.steps)])
                      if s.get(source, 0.0) != 0.0]
            if not picked:
                continue
            f = step_features(self.base, step, comp)
            for i in picked:
                feats.append(f[i])
                labels.append(1.0 if step.step_scores[i][source] > 0 else 0.0)
        pos = int(sum(labels))
        neg = len(labels) - pos
        if pos == 0 or neg == 0:
            raise NotEnoughData(f"the PRM needs good and bad steps; got {pos} good, {neg} bad")
        x = torch.stack(feats)
        y = torch.tensor(labels)
        self.mean = x.mean(0)
        self.scale = x.std(0).clamp(min=1e-4) if len(x) > 1 else torch.ones(x.shape[1])
        xs = (x - self.mean) / self.scale
        torch.manual_seed(seed)
        self.linear.reset_parameters()
        opt = torch.optim.AdamW(self.linear.parameters(), lr=lr, weight_decay=weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(neg / pos))
        for _ in range(epochs):
            opt.zero_grad()
            loss = loss_fn(self.linear(xs).squeeze(-1), y)
            loss.backward()
            opt.step()
        self.fitted = True
        with torch.no_grad():
            acc = float(((self.linear(xs).squeeze(-1) > 0).float() == y).float().mean())
        return PRMReport(len(labels), pos, neg, acc, source)

    def score(self, step: Step, completion: Completion) -> list[float | None]:
        if not self.fitted:
            return [None] * len(completion.steps)
        f = step_features(self.base, step, completion)
        with torch.no_grad():
            logits = self.linear((f - self.mean) / self.scale).squeeze(-1)
        return [float(2 * torch.sigmoid(v) - 1) for v in logits]

    def save(self, folder: Path, report: PRMReport | None = None) -> Path:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({"weight": self.linear.weight.detach().contiguous(),
                   "bias": self.linear.bias.detach().contiguous(),
                   "mean": self.mean.contiguous(), "scale": self.scale.contiguous()},
                  str(folder / "prm.safetensors"))
        meta: dict[str, Any] = {"kind": "linear-probe", "base": str(self.base.path),
                                "hidden": int(self.mean.shape[0])}
        if report is not None:
            meta["report"] = asdict(report)
        (folder / "prm.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, base: LoadedBase, folder: Path) -> LearnedPRM:
        from safetensors.torch import load_file

        state = load_file(str(folder / "prm.safetensors"))
        prm = cls(base, int(state["mean"].shape[0]))
        with torch.no_grad():
            prm.linear.weight.copy_(state["weight"])
            prm.linear.bias.copy_(state["bias"])
        prm.mean, prm.scale, prm.fitted = state["mean"], state["scale"], True
        return prm


def fit_or_none(base: LoadedBase, steps: Sequence[Step], **kw: Any
                ) -> tuple[LearnedPRM | None, PRMReport | None]:
    """A PRM fitted on `steps`, or (None, None) while their evidence lacks good or bad steps."""
    prm = LearnedPRM(base)
    try:
        return prm, prm.fit(steps, **kw)
    except NotEnoughData:
        return None, None
