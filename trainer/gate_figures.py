"""The eval gate's figures: one model against another on one evaluation set.

Each step's outcome is a score in [-1, 1], None (the `StepCheck` abstained) or
`FAILED` (the generation failed). Per set and model the figures are the mean
score and the accuracy (share of steps scored > 0), taken over the steps that
both models got a score on, so that the two are compared on the same steps.
Pure functions and plain records: trainer/gate.py and trainer/internalize.py
both judge with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainer.types import Step

EPS = 1e-9  # 0.62 - 0.60 must pass a 0.02 margin


@dataclass(frozen=True, slots=True)
class Figures:
    """One model on one evaluation set, over the steps both models were scored on."""

    model: str
    scored: int
    mean: float | None
    accuracy: float | None
    failed: int = 0  # generations that failed (any failure blocks promotion)

    def value(self, metric: str) -> float | None:
        return self.accuracy if metric == "accuracy" else self.mean

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "scored": self.scored, "mean": self.mean,
                "accuracy": self.accuracy, "failed": self.failed}


@dataclass(frozen=True, slots=True)
class SetResult:
    """Candidate and reference on one evaluation set (`heldout` or `retention`)."""

    name: str
    steps: int  # steps in the set
    paired: int  # steps scored for both models: what the figures are over
    candidate: Figures
    reference: Figures

    def delta(self, metric: str) -> float | None:
        c, r = self.candidate.value(metric), self.reference.value(metric)
        return None if c is None or r is None else c - r

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "paired": self.paired,
                "candidate": self.candidate.to_dict(), "reference": self.reference.to_dict()}


class Failed:
    """The outcome of a generation that failed (kept apart from a check that abstained)."""


FAILED = Failed()
Outcome = float | None | Failed


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def figures(model: str, scores: Sequence[float], failed: int = 0) -> Figures:
    """Mean and accuracy of the scores (None for both when there are none)."""
    if not scores:
        return Figures(model, 0, None, None, failed)
    mean = sum(scores) / len(scores)
    accuracy = sum(1 for s in scores if s > 0) / len(scores)
    return Figures(model, len(scores), mean, accuracy, failed)


def compare(name: str, candidate: str, reference: str, steps: Sequence[Step],
            cand: Sequence[Outcome], ref: Sequence[Outcome]) -> SetResult:
    """Figures of both models on one set, from each step's outcome (pure)."""
    pairs = [(c, r) for c, r in zip(cand, ref, strict=True)
             if isinstance(c, float) and isinstance(r, float)]
    return SetResult(
        name, len(steps), len(pairs),
        figures(candidate, [c for c, _ in pairs], sum(isinstance(c, Failed) for c in cand)),
        figures(reference, [r for _, r in pairs], sum(isinstance(r, Failed) for r in ref)),
    )
