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

With `GateConfig.internalize` (the default) the gate also finds the served
skills the candidate answers as well without (trainer/internalize.py) and
judges it as it would then be served, without them: equal held-out accuracy
(within `internalize_margin`) and kept retention, with fewer skill tokens in
context, is a gain. The skills go into the candidate's `meta.json`
(`internalized_skills`) before it is promoted, so serving never injects them
into a request the new version answers.

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
from trainer.gate_figures import (
    EPS,
    FAILED,
    Figures,
    Outcome,
    SetResult,
    compare,
    fmt,
)
from trainer.internalize import Internalization, internalization
from trainer.types import Generate, Split, Step, StepCheck

log = logging.getLogger("molt.trainer.gate")
BASE = "base"

__all__ = ["BASE", "FAILED", "Decision", "EvalGate", "Figures", "GateResult", "SetResult",
           "compare", "decide", "register_candidate"]


@dataclass(frozen=True, slots=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]
    # the skills the version is to be served without (trainer/internalize.py)
    internalized: tuple[str, ...] = ()


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
    internalization: Internalization | None = None
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
            "internalized_skills": list(self.decision.internalized),
            "internalization": self.internalization.to_dict() if self.internalization else None,
            "config": self.config.to_dict(),
        }


def _against(heldout: SetResult, retention: SetResult, config: GateConfig, need: float,
             who: str = "candidate") -> list[str]:
    """The reasons against promoting on these figures, `need` the held-out gain required."""
    m = config.metric
    against: list[str] = []
    for s in (heldout, retention):
        for name, f in ((who, s.candidate), ("active version", s.reference)):
            if f.failed:
                against.append(f"{name} failed {f.failed} of {s.steps} {s.name} generations")
    if heldout.paired < config.min_heldout:
        against.append(f"only {heldout.paired} held-out steps scored for both models "
                       f"(need {config.min_heldout})")
    gain = heldout.delta(m)
    if gain is not None and gain + EPS < need:
        against.append(f"held-out {m} {fmt(heldout.reference.value(m))} -> "
                       f"{fmt(heldout.candidate.value(m))}: gain {gain:+.3f} is below the "
                       f"margin {need + 0.0:.3f}")
    if retention.paired < config.min_retention:
        against.append(f"only {retention.paired} retention steps scored for both models "
                       f"(need {config.min_retention})")
    loss = retention.delta(m)
    if loss is not None and -loss > config.max_retention_drop + EPS:
        against.append(f"retention {m} {fmt(retention.reference.value(m))} -> "
                       f"{fmt(retention.candidate.value(m))}: drop {-loss:.3f} is over the "
                       f"allowed {config.max_retention_drop:.3f}")
    return against


def _summary(heldout: SetResult, retention: SetResult, metric: str) -> str:
    m = metric
    return (f"held-out {m} {fmt(heldout.reference.value(m))} -> "
            f"{fmt(heldout.candidate.value(m))}, retention {m} "
            f"{fmt(retention.reference.value(m))} -> {fmt(retention.candidate.value(m))}")


def decide(heldout: SetResult, retention: SetResult, config: GateConfig,
           internalization: Internalization | None = None) -> Decision:
    """The gate's rule on the figures: promote only with no reason against it.

    With an `internalization` that found skills, the candidate is first judged as it
    would be served, without them: no worse on held-out than the active version by more
    than `internalize_margin`, retention kept; a pass internalizes them. Otherwise (or
    when that fails) the candidate is judged served with every skill, and must beat the
    active version by `min_improvement`.
    """
    m = config.metric
    extra: tuple[str, ...] = ()
    i = internalization
    if i is not None and i.skills and i.heldout is not None and i.retention is not None:
        names = ", ".join(i.skills)
        against = _against(i.heldout, i.retention, config, -config.internalize_margin,
                           who="candidate without them")
        if not against:
            gain = i.heldout.delta(m)
            better = gain is not None and gain + EPS >= config.min_improvement
            return Decision(True, (
                _summary(i.heldout, i.retention, m) + f" served without {names}",
                f"internalizes skills {names}: -{i.tokens_per_request:.0f} tokens a request"
                + ("" if better else " at no loss"),
            ), i.skills)
        extra = (f"without skills {names}: " + "; ".join(against) + "; they stay served",)
    against = _against(heldout, retention, config, config.min_improvement)
    if against:
        return Decision(False, (*against, *extra))
    return Decision(True, (_summary(heldout, retention, m), *extra))


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
        if meta.internalized_skills:  # judged before: judge it served with every skill again
            await asyncio.to_thread(self.registry.update_internalized, tenant, base, target, [])
        reference = await asyncio.to_thread(self.registry.active, tenant, base) or BASE
        cand_model, ref_model = f"{model}@{target}", f"{model}@{reference}"
        steps = [*split.heldout, *split.retention]
        cand, ref = await asyncio.gather(self._run(cand_model, steps),
                                         self._run(ref_model, steps))
        n = len(split.heldout)
        heldout = compare("heldout", cand_model, ref_model, split.heldout, cand[:n], ref[:n])
        retention = compare("retention", cand_model, ref_model, split.retention, cand[n:],
                            ref[n:])
        found = None
        if self.config.internalize:
            inherited = await self._internalized(tenant, base, reference)
            found = await internalization(
                self._run, split, cand_model, ref_model,
                {s.turn_id: o for s, o in zip(steps, cand, strict=True)},
                {s.turn_id: o for s, o in zip(steps, ref, strict=True)}, inherited, self.config)
        decision = decide(heldout, retention, self.config, found)
        if decision.internalized:
            await asyncio.to_thread(self.registry.update_internalized, tenant, base, target,
                                    list(decision.internalized))
        promoted = False
        if decision.promote and self.config.promote:
            decision, promoted = await self._promote(tenant, base, target, reference, decision)
        result = GateResult(tenant, base, target, reference, heldout, retention, decision,
                            promoted, self.config, found)
        await asyncio.to_thread(self.registry.update_eval_gate, tenant, base, target,
                                result.to_dict())
        self._log(result)
        return result

    async def _internalized(self, tenant: str, base: str, version: str) -> list[str]:
        """The skills `version` is served without (none for the base weights)."""
        if version == BASE:
            return []
        try:
            meta = await asyncio.to_thread(self.registry.get, tenant, base, version)
        except StoreError:
            return []
        return list(meta.internalized_skills)

    async def _run(self, model: str, steps: Sequence[Step],
                   exclude: Sequence[str] = ()) -> list[Outcome]:
        """Each step's outcome with `model` through serving, `exclude` left out of its skills."""
        gate = asyncio.Semaphore(self.config.concurrency)
        kw = {"exclude_skills": tuple(exclude)} if exclude else {}

        async def one(step: Step) -> Outcome:
            async with gate:
                try:
                    message = await self.generate(model, step.messages, step.tools, **kw)
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

        return list(await asyncio.gather(*(one(s) for s in steps)))

    async def _promote(self, tenant: str, base: str, target: str, reference: str,
                       decision: Decision) -> tuple[Decision, bool]:
        now = await asyncio.to_thread(self.registry.active, tenant, base) or BASE
        if now != reference:
            why = (f"the active version changed from {reference} to {now} while the candidate "
                   "was judged; judge it again")
            return Decision(False, (why,), decision.internalized), False
        reason = "eval gate: " + "; ".join(decision.reasons)
        try:
            await asyncio.to_thread(self.registry.promote, tenant, base, target,
                                    base_dir=self.base_dirs.get(base), reason=reason)
        except StoreError as exc:
            return Decision(False, (f"promotion refused: {exc}",), decision.internalized), False
        return decision, True

    def _log(self, r: GateResult) -> None:
        m = r.config.metric
        log.info(
            "eval gate %s/%s %s vs %s: %s; held-out %s %s -> %s (n=%d), retention %s %s -> %s "
            "(n=%d); %s",
            r.tenant, r.base, r.candidate, r.reference, r.status,
            m, fmt(r.heldout.reference.value(m)), fmt(r.heldout.candidate.value(m)),
            r.heldout.paired, m, fmt(r.retention.reference.value(m)),
            fmt(r.retention.candidate.value(m)), r.retention.paired,
            " | ".join(r.decision.reasons),
        )
        for t in r.internalization.tested if r.internalization else ():
            log.info("eval gate %s/%s %s: skill %s %s on %d of %d steps served it: %s",
                     r.tenant, r.base, r.candidate, t.name,
                     "internalized" if t.internalized else "kept", t.paired, t.steps, t.reason)
