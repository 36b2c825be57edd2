"""The eval gate: a candidate weight version replaces the active one only if it is better.

The candidate is a registry version with status `candidate` (`register`). It
is judged against the version the tenant is served now (or the base weights)
*through serving*: every step of the held-out and of the retention set is sent
as the agent sent it to `alias@<candidate>` and to `alias@<active>` (or
`alias@base`) by a `Generate` (molt: the proxy's own HTTP API), and a
`StepCheck` scores each produced assistant message in [-1, 1] or abstains.

Per set and model the figures are the mean score and the accuracy (share of
steps scored > 0), taken over the steps that both models got a score on, so
that the two are compared on the same steps. `decide` is the rule, a pure
function of the figures (see `GateConfig`): better on held-out by a margin,
not worse on retention by more than an allowance, no failed generation.

A pass promotes through `Registry.promote` (the artifact is validated against
the served base, the `active` pointer flips, every serving process hot-swaps
without dropping a request), unless the active version changed while the
candidate was being judged. Figures, decision and the config used go into the
candidate's `meta.json` (`eval_gate`); the decision is logged (figures only,
never prompt text) and returned as a `GateResult`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.errors import NotFound, StoreError
from store.registry import Registry, VersionMeta, version_name
from trainer.errors import GateError, GenerateFailed
from trainer.gate_config import GateConfig
from trainer.types import Generate, Split, Step, StepCheck

log = logging.getLogger("molt.trainer.gate")

BASE = "base"
_EPS = 1e-9  # 0.62 - 0.60 must pass a 0.02 margin


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
        return {
            "steps": self.steps, "paired": self.paired,
            "candidate": _figures_dict(self.candidate), "reference": _figures_dict(self.reference),
        }


def _figures_dict(f: Figures) -> dict[str, Any]:
    return {"model": f.model, "scored": f.scored, "mean": f.mean, "accuracy": f.accuracy,
            "failed": f.failed}


@dataclass(frozen=True, slots=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GateResult:
    tenant: str
    base: str
    candidate: str  # the version judged, "v0007"
    reference: str  # the version it was judged against, "v0006" or "base"
    heldout: SetResult
    retention: SetResult
    decision: Decision
    promoted: bool
    config: GateConfig
    at: float = field(default_factory=time.time)

    @property
    def status(self) -> str:
        if self.promoted:
            return "promoted"
        return "passed" if self.decision.promote else "rejected"

    def to_dict(self) -> dict[str, Any]:
        m = self.config.metric
        return {
            "at": self.at, "status": self.status, "promote": self.decision.promote,
            "promoted": self.promoted, "reasons": list(self.decision.reasons),
            "candidate": self.candidate, "reference": self.reference, "metric": m,
            "heldout_delta": self.heldout.delta(m), "retention_delta": self.retention.delta(m),
            "heldout": self.heldout.to_dict(), "retention": self.retention.to_dict(),
            "config": self.config.to_dict(),
        }


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def decide(heldout: SetResult, retention: SetResult, config: GateConfig) -> Decision:
    """The gate's rule on the figures: promote only with no reason against it."""
    m = config.metric
    against: list[str] = []
    for s in (heldout, retention):
        for who, f in (("candidate", s.candidate), ("active version", s.reference)):
            if f.failed:
                against.append(f"{who} failed {f.failed} of {s.steps} {s.name} generations")
    if heldout.paired < config.min_heldout:
        against.append(f"only {heldout.paired} held-out steps scored for both models "
                       f"(need {config.min_heldout})")
    gain = heldout.delta(m)
    if gain is not None and gain + _EPS < config.min_improvement:
        against.append(f"held-out {m} {_fmt(heldout.reference.value(m))} -> "
                       f"{_fmt(heldout.candidate.value(m))}: gain {gain:+.3f} is below the "
                       f"margin {config.min_improvement:.3f}")
    if retention.paired < config.min_retention:
        against.append(f"only {retention.paired} retention steps scored for both models "
                       f"(need {config.min_retention})")
    loss = retention.delta(m)
    if loss is not None and -loss > config.max_retention_drop + _EPS:
        against.append(f"retention {m} {_fmt(retention.reference.value(m))} -> "
                       f"{_fmt(retention.candidate.value(m))}: drop {-loss:.3f} is over the "
                       f"allowed {config.max_retention_drop:.3f}")
    if against:
        return Decision(False, tuple(against))
    summary = (f"held-out {m} {_fmt(heldout.reference.value(m))} -> "
               f"{_fmt(heldout.candidate.value(m))}, retention {m} "
               f"{_fmt(retention.reference.value(m))} -> {_fmt(retention.candidate.value(m))}")
    return Decision(True, (summary,))


class Failed:
    """The outcome of a generation that failed (kept apart from a check that abstained)."""


FAILED = Failed()
Outcome = float | None | Failed


def _figures(model: str, scores: Sequence[float], failed: int) -> Figures:
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
        _figures(candidate, [c for c, _ in pairs], sum(isinstance(c, Failed) for c in cand)),
        _figures(reference, [r for _, r in pairs], sum(isinstance(r, Failed) for r in ref)),
    )


def register_candidate(
    registry: Registry, tenant: str, base: str, artifact: str | Path, *, kind: str,
    base_model: str, base_hash: str | None, **meta: Any,
) -> VersionMeta:
    """Add a trained artifact as the next `candidate` version, a child of the active one."""
    parent = meta.pop("parent", None) or registry.active(tenant, base)
    return registry.create(tenant, base, kind=kind, files_from=artifact, base_model=base_model,
                           base_hash=base_hash, parent=parent, **meta)


class EvalGate:
    """Judges candidates of one registry through serving, and promotes the ones that pass."""

    def __init__(
        self, registry: Registry, generate: Generate, check: StepCheck,
        config: GateConfig | None = None, *, base_dirs: Mapping[str, Path | None] | None = None,
    ) -> None:
        self.registry = registry
        self.generate = generate
        self.check = check
        self.config = config or GateConfig()
        # registry base name -> the base weights promotion validates against (molt:
        # `store.registry.served_base_dirs`); a base not named is checked for completeness only
        self.base_dirs = dict(base_dirs or {})

    async def judge(self, tenant: str, base: str, model: str, version: str,
                    split: Split) -> GateResult:
        """Evaluate candidate `version` of `tenant`/`base`, served as `model@...`; maybe promote."""
        target = version_name(version)
        try:
            meta = await asyncio.to_thread(self.registry.get, tenant, base, target)
        except NotFound as exc:
            raise GateError(str(exc)) from exc
        if meta.status != "candidate":
            raise GateError(f"{tenant}/{base} {target} is {meta.status}, not a candidate")
        reference = await asyncio.to_thread(self.registry.active, tenant, base) or BASE
        cand_model, ref_model = f"{model}@{target}", f"{model}@{reference}"
        heldout = await self._score("heldout", split.heldout, cand_model, ref_model)
        retention = await self._score("retention", split.retention, cand_model, ref_model)
        decision = decide(heldout, retention, self.config)
        promoted = False
        if decision.promote and self.config.promote:
            decision, promoted = await self._promote(tenant, base, target, reference, decision)
        result = GateResult(tenant, base, target, reference, heldout, retention, decision,
                            promoted, self.config)
        await asyncio.to_thread(self.registry.update_eval_gate, tenant, base, target,
                                result.to_dict())
        self._log(result)
        return result

    async def _score(self, name: str, steps: Sequence[Step], cand_model: str,
                     ref_model: str) -> SetResult:
        gate = asyncio.Semaphore(self.config.concurrency)

        async def one(model: str, step: Step) -> Outcome:
            async with gate:
                try:
                    message = await self.generate(model, step.messages, step.tools)
                except GenerateFailed as exc:
                    log.warning("eval gate: %s failed on turn %s: %s", model, step.turn_id, exc)
                    return FAILED
            score = self.check(step, message)
            if score is None:
                return None
            if not isinstance(score, (int, float)) or math.isnan(score) or not -1 <= score <= 1:
                raise GateError(f"the step check returned {score!r} for turn {step.turn_id}; "
                                "a score must be in [-1, 1] or None")
            return float(score)

        outcomes = await asyncio.gather(*(one(m, s) for m in (cand_model, ref_model)
                                          for s in steps))
        n = len(steps)
        return compare(name, cand_model, ref_model, steps, outcomes[:n], outcomes[n:])

    async def _promote(self, tenant: str, base: str, target: str, reference: str,
                       decision: Decision) -> tuple[Decision, bool]:
        now = await asyncio.to_thread(self.registry.active, tenant, base) or BASE
        if now != reference:
            why = (f"the active version changed from {reference} to {now} while the candidate "
                   "was judged; judge it again")
            return Decision(False, (why,)), False
        reason = "eval gate: " + "; ".join(decision.reasons)
        try:
            await asyncio.to_thread(self.registry.promote, tenant, base, target,
                                    base_dir=self.base_dirs.get(base), reason=reason)
        except StoreError as exc:
            return Decision(False, (f"promotion refused: {exc}",)), False
        return decision, True

    def _log(self, r: GateResult) -> None:
        m = r.config.metric
        log.info(
            "eval gate %s/%s %s vs %s: %s; held-out %s %s -> %s (n=%d), retention %s %s -> %s "
            "(n=%d); %s",
            r.tenant, r.base, r.candidate, r.reference, r.status,
            m, _fmt(r.heldout.reference.value(m)), _fmt(r.heldout.candidate.value(m)),
            r.heldout.paired, m, _fmt(r.retention.reference.value(m)),
            _fmt(r.retention.candidate.value(m)), r.retention.paired,
            " | ".join(r.decision.reasons),
        )
