"""Step rewards: what each source says about a step, and how the sources combine.

Only what molt can see goes in, never the benchmark's hidden truth. Our instantiation:

(a) evidence (source "evidence"): per tool-call step, the call's result in the next
    request (trainer/evidence.py): an error scores `tool_error` (-1), a result that is not
    an error `tool_ok` (+0.5: the tool accepted it, weak evidence); plus the turn's feedback
    scores from users and tools (store/feedback.py sources "user", "tool"), given to every
    step of the turn; plus the `StepCheck` molt passes in (the evolver's checks, derived
    from the same evidence), which scores any candidate message, also new samples.
    A step's evidence is the mean of its observations.
(b) the learned PRM (source "prm", trainer/prm.py): a classifier trained on the labels of
    (a), so that samples the evidence never saw get a score.
(c) the judge (source "judge"): feedback rows with source "judge" (evolver/judge.py writes
    them, +1/0/-1 by majority vote), given to every step of the judged turn; for new
    samples, a `StepCheck` under the name "judge" when molt wires one.
(d) skill-conditioned distillation (source "distill", trainer/distill.py) is token level,
    not a step score: the trainer adds `distill_coef * (log p_teacher - log p_student)` to
    every token's advantage, the teacher being the base model with the turn's served skills
    in context. It never enters the step rewards below.
(-) "verifier": feedback rows with source "verifier" and a verifier `StepCheck`. This is
    the environment's truth; its weight is 0 unless a run is a labelled upper bound.

Combination: per step, the weighted mean of the sources that said something (weights in
`RewardWeights`; a source with weight 0 is ignored); None when none did. A sample's call
that equals the recorded call at the same position (same name, same arguments) inherits
the recorded evidence of that call; a sample equal to the recorded message inherits the
recorded turn's feedback and judge scores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from trainer.advantages import Completion, StepSpan, message_steps
from trainer.evidence import call_outcomes
from trainer.types import Step, StepCheck

JSON = dict[str, Any]

# feedback source (store/records.py FEEDBACK_SOURCES) -> step-reward source
FEEDBACK_SOURCE = {"user": "evidence", "tool": "evidence", "judge": "judge", "verifier": "verifier"}


@dataclass(frozen=True, slots=True)
class RewardWeights:
    evidence: float = 1.0
    prm: float = 0.5
    judge: float = 0.5
    verifier: float = 0.0
    tool_ok: float = 0.5
    tool_error: float = -1.0

    def of(self, source: str) -> float:
        return float(getattr(self, source, 0.0)) if source in SCALAR_SOURCES else 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


SCALAR_SOURCES = ("evidence", "prm", "judge", "verifier")


def combine(scores: Mapping[str, float], weights: RewardWeights) -> float | None:
    """The weighted mean of the sources present with a positive weight (None: none)."""
    num = den = 0.0
    for source, value in scores.items():
        w = weights.of(source)
        if w > 0:
            num += w * value
            den += w
    return num / den if den else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def turn_feedback(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Feedback scores of one turn, by step-reward source (rows without a score say nothing)."""
    out: dict[str, list[float]] = {}
    for r in rows:
        source = FEEDBACK_SOURCE.get(str(r.get("source")))
        if source is None or r.get("score") is None:
            continue
        out.setdefault(source, []).append(float(r["score"]))
    return out


def recorded_scores(completion: Mapping[str, Any], next_messages: Sequence[Mapping[str, Any]] | None,
                    feedback: Sequence[Mapping[str, Any]], weights: RewardWeights
                    ) -> list[dict[str, float]]:
    """Per step of a recorded assistant message: source -> score, from the recorded evidence."""
    steps = message_steps(completion).steps
    calls = [s.call for s in steps if s.call is not None]
    outcomes = call_outcomes(calls, next_messages) if calls else [None]
    fb = turn_feedback(feedback)
    out: list[dict[str, float]] = []
    for i, _ in enumerate(steps):
        evidence = list(fb.get("evidence", []))
        outcome = outcomes[i] if i < len(outcomes) else None
        if outcome is not None:
            evidence.append(weights.tool_error if outcome else weights.tool_ok)
        scores: dict[str, float] = {}
        for source, values in (("evidence", evidence), ("judge", fb.get("judge", [])),
                               ("verifier", fb.get("verifier", []))):
            m = _mean(values)
            if m is not None:
                scores[source] = m
        out.append(scores)
    return out


def fill_rewards(step: Step, scores: list[dict[str, float]], weights: RewardWeights) -> Step:
    """Set a step's per-step scores, its per-step rewards, its per-source and combined reward."""
    step.step_scores = scores
    step.step_rewards = [combine(s, weights) for s in scores]
    by_source: dict[str, list[float]] = {}
    for s in scores:
        for source, v in s.items():
            by_source.setdefault(source, []).append(v)
    step.rewards = {k: sum(v) / len(v) for k, v in by_source.items()}
    known = [r for r in step.step_rewards if r is not None]
    step.reward = sum(known) / len(known) if known else None
    return step


class StepScorer(Protocol):
    """Scores every step of a candidate completion (the learned PRM, trainer/prm.py)."""

    def score(self, step: Step, completion: Completion) -> list[float | None]: ...


def _same_call(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    fa, fb = a.get("function") or {}, b.get("function") or {}
    return bool(fa.get("name") == fb.get("name") and _args(fa) == _args(fb))


def _args(fn: Mapping[str, Any]) -> Any:
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            return json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return args
    return args


def _same_message(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    ca, cb = a.get("tool_calls") or [], b.get("tool_calls") or []
    if len(ca) != len(cb) or not all(_same_call(x, y) for x, y in zip(ca, cb, strict=True)):
        return False
    return bool((a.get("content") or "").strip() == (b.get("content") or "").strip())


class StepRewards:
    """The rollout reward: per step of a sampled completion, the combined score of all sources."""

    def __init__(self, weights: RewardWeights | None = None, *,
                 checks: Mapping[str, StepCheck] | None = None, prm: StepScorer | None = None) -> None:
        self.weights = weights or RewardWeights()
        self.checks = dict(checks or {})
        unknown = set(self.checks) - set(SCALAR_SOURCES)
        if unknown:
            raise ValueError(f"checks must be named after a source in {SCALAR_SOURCES}: {sorted(unknown)}")
        self.prm = prm

    def scores(self, step: Step, completion: Completion) -> list[dict[str, float]]:
        """Per step of `completion`: source -> score."""
        recorded = message_steps(step.completion).steps
        whole = _same_message(completion.message, step.completion)
        out: list[dict[str, float]] = [{} for _ in completion.steps]
        for i, span in enumerate(completion.steps):
            if i < len(step.step_scores) and i < len(recorded) and _inherits(span, recorded[i], whole):
                out[i].update(step.step_scores[i])
        for source, check in self.checks.items():
            if self.weights.of(source) <= 0:
                continue
            value = check(step, completion.message)
            if value is None:
                continue
            for s in out:
                s[source] = (s[source] + value) / 2 if source in s else float(value)
        if self.prm is not None and self.weights.prm > 0:
            for s, value in zip(out, self.prm.score(step, completion), strict=True):
                if value is not None:
                    s["prm"] = value
        return out

    def __call__(self, step: Step, completion: Completion) -> list[float | None]:
        return [combine(s, self.weights) for s in self.scores(step, completion)]


def _inherits(span: StepSpan, recorded: StepSpan, whole: bool) -> bool:
    if span.call is not None:
        return _same_call(span.call, recorded.call)
    return whole and recorded.call is None


def source_agreement(steps: Sequence[Step], reference: str = "verifier") -> dict[str, JSON]:
    """How often each source's sign agrees with `reference`'s, over the steps both scored.

    Source -> {"steps": n, "agreement": fraction}; a zero score counts as its own sign.
    """
    counts: dict[str, list[int]] = {}
    for step in steps:
        for scores in step.step_scores:
            if reference not in scores:
                continue
            ref = _sign(scores[reference])
            for source, value in scores.items():
                if source == reference:
                    continue
                c = counts.setdefault(source, [0, 0])
                c[0] += 1
                c[1] += int(_sign(value) == ref)
    return {k: {"steps": n, "agreement": ok / n} for k, (n, ok) in sorted(counts.items())}


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)
