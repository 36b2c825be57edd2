"""Skills become weights: which served skills a candidate version no longer needs in context.

Skill-conditioned distillation (trainer/distill.py) moves what the served
skills say into the weights; this is how the gate finds out whether it did, so
that a promoted version stops paying context for it. Serving then leaves those
skills out of every request the version serves (proxy/skills_internalized.py);
the library keeps them, and a rollback brings them back.

Our instantiation, all through serving and scored by the gate's own
`StepCheck`:

- The skills tested are those served on the evaluation steps (held-out and
  retention): `Step.injected_skills`, what the proxy injected when the turn
  was served. A skill is tested on the steps that were served it, and only
  when there are at least `internalize_min_steps` of them.
- With the skill: the gate's ordinary answers (serving injects what it would).
  Without it: the same request with the skill left out (`exclude_skills`, the
  rest of the block unchanged). A step counts when all four answers (candidate
  and reference, with and without) got a score.
- A skill is internalized by the candidate when, over at least
  `internalize_min_steps` such steps, the candidate without it is at least as
  good as with it, less `internalize_margin`, and at least `internalize_floor`;
  and, with `internalize_needed`, the reference *is* worse without it: the
  skill mattered. A skill that changes no answer (irrelevant where it was
  retrieved, or no longer retrieved at all) is never claimed.
- Skills the reference version internalized are inherited: its steps were
  served without them, so they cannot be tested one by one, but they are in
  the joint test below.
- Joint test: the candidate answers the held-out and retention sets once more
  with every one of those skills left out, as it would be served. Those
  figures, against the reference as served, are what `trainer.gate.decide`
  judges an internalizing candidate by.

The saving is estimated from the records: the mean, over the evaluation steps,
of the tokens (`Step.skill_tokens`, the proxy's estimate) of the internalized
skills each step was injected with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from trainer.gate_config import GateConfig
from trainer.gate_figures import EPS, Failed, Outcome, SetResult, compare, figures, fmt
from trainer.types import Split, Step

# (model, steps, skills to leave out) -> one outcome per step, through serving
Run = Callable[[str, Sequence[Step], Sequence[str]], Awaitable[list[Outcome]]]


@dataclass(frozen=True, slots=True)
class SkillTest:
    """One skill, on the evaluation steps that were served it."""

    name: str
    steps: int  # evaluation steps served the skill
    paired: int  # of those, the steps all four answers were scored on
    candidate_with: float | None
    candidate_without: float | None
    reference_with: float | None
    reference_without: float | None  # None also when the candidate already failed the test
    tokens: float | None  # its mean estimated cost where it was injected
    internalized: bool
    reason: str
    failed: int = 0  # generations without the skill that failed

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "paired": self.paired,
                "candidate_with": self.candidate_with,
                "candidate_without": self.candidate_without,
                "reference_with": self.reference_with,
                "reference_without": self.reference_without, "tokens": self.tokens,
                "internalized": self.internalized, "reason": self.reason, "failed": self.failed}


@dataclass(frozen=True, slots=True)
class Internalization:
    """What the candidate was found to carry, and how it does served without it."""

    tested: tuple[SkillTest, ...]
    inherited: tuple[str, ...]  # the reference version's internalized skills
    skills: tuple[str, ...]  # tested and internalized, plus inherited: the joint test's
    tokens_per_request: float  # estimated skill tokens `skills` cost an evaluation request
    heldout: SetResult | None = None  # the candidate without `skills` vs the reference
    retention: SetResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tested": [t.to_dict() for t in self.tested], "inherited": list(self.inherited),
                "skills": list(self.skills), "tokens_per_request": self.tokens_per_request,
                "heldout": self.heldout.to_dict() if self.heldout else None,
                "retention": self.retention.to_dict() if self.retention else None}


def served_skills(steps: Sequence[Step]) -> dict[str, list[Step]]:
    """Skill name -> the steps it was injected into, in step order."""
    out: dict[str, list[Step]] = {}
    for s in steps:
        for name in s.injected_skills:
            out.setdefault(name, []).append(s)
    return out


def tokens_per_request(steps: Sequence[Step], skills: Sequence[str]) -> float:
    """Mean over `steps` of the recorded tokens of `skills` each step was injected with."""
    if not steps:
        return 0.0
    wanted = set(skills)
    total = sum(cost for s in steps for name, cost in s.skill_tokens.items() if name in wanted)
    return total / len(steps)


def _value(scores: Sequence[float], metric: str) -> float | None:
    return figures("", scores).value(metric)


def verdict(name: str, steps: int, four: Sequence[tuple[float, float, float | None, float | None]],
            config: GateConfig, *, tokens: float | None = None, failed: int = 0) -> SkillTest:
    """The rule for one skill on its paired steps (pure).

    `four`: per step (candidate with, candidate without, reference with, reference
    without); the reference's pair may be None when it was not needed to decide.
    """
    m = config.metric
    cw = _value([f[0] for f in four], m)
    co = _value([f[1] for f in four], m)
    refs = [(f[2], f[3]) for f in four if f[2] is not None and f[3] is not None]
    rw = _value([r[0] for r in refs if r[0] is not None], m) if refs else None
    ro = _value([r[1] for r in refs if r[1] is not None], m) if refs else None

    def test(ok: bool, reason: str) -> SkillTest:
        return SkillTest(name, steps, len(four), cw, co, rw, ro, tokens, ok, reason, failed)

    if failed:
        return test(False, f"{failed} generations without it failed")
    if len(four) < config.internalize_min_steps:
        return test(False, f"only {len(four)} steps served it were scored "
                           f"(need {config.internalize_min_steps})")
    assert cw is not None and co is not None
    if co + EPS < cw - config.internalize_margin:
        return test(False, f"the candidate needs it: {m} {fmt(cw)} with it, {fmt(co)} without")
    if co + EPS < config.internalize_floor:
        return test(False, f"without it {m} {fmt(co)} is under the floor "
                           f"{config.internalize_floor:.3f}")
    if config.internalize_needed:
        if rw is None or ro is None or len(refs) < len(four):
            return test(False, "the reference was not scored both ways on every step")
        if ro + EPS >= rw:
            return test(False, f"it changes no answer of the reference ({m} {fmt(rw)} with it, "
                               f"{fmt(ro)} without): nothing to internalize")
    return test(True, f"{m} {fmt(cw)} with it, {fmt(co)} without"
                + (f" (the reference: {fmt(rw)} -> {fmt(ro)})" if rw is not None else ""))


async def test_skill(run: Run, name: str, steps: Sequence[Step], cand_model: str, ref_model: str,
                     cand_with: Mapping[str, Outcome], ref_with: Mapping[str, Outcome],
                     config: GateConfig) -> SkillTest:
    """One skill through serving: the candidate without it, then (if needed) the reference."""
    costs = [s.skill_tokens[name] for s in steps if name in s.skill_tokens]
    tokens = sum(costs) / len(costs) if costs else None
    if len(steps) < config.internalize_min_steps:
        return SkillTest(name, len(steps), 0, None, None, None, None, tokens, False,
                         f"served on only {len(steps)} evaluation steps "
                         f"(need {config.internalize_min_steps})")
    without = await run(cand_model, steps, (name,))
    failed = sum(isinstance(o, Failed) for o in without)
    # the steps with a score for the candidate with and without, and the reference with
    rows: list[tuple[Step, float, float, float]] = []
    for s, o in zip(steps, without, strict=True):
        c, r = cand_with.get(s.turn_id), ref_with.get(s.turn_id)
        if isinstance(c, float) and isinstance(o, float) and isinstance(r, float):
            rows.append((s, c, o, r))
    first = verdict(name, len(steps), [(c, o, None, None) for _, c, o, _ in rows],
                    replace(config, internalize_needed=False), tokens=tokens, failed=failed)
    if not first.internalized or not config.internalize_needed:
        return first
    ref_without = await run(ref_model, [row[0] for row in rows], (name,))
    failed += sum(isinstance(o, Failed) for o in ref_without)
    four: list[tuple[float, float, float | None, float | None]] = [
        (c, o, r, ro) for (_, c, o, r), ro in zip(rows, ref_without, strict=True)
        if isinstance(ro, float)]
    return verdict(name, len(steps), four, config, tokens=tokens, failed=failed)


async def internalization(
    run: Run, split: Split, cand_model: str, ref_model: str,
    cand_with: Mapping[str, Outcome], ref_with: Mapping[str, Outcome],
    inherited: Sequence[str], config: GateConfig,
) -> Internalization:
    """Test every skill served on the evaluation steps, then the candidate without them all.

    `cand_with` / `ref_with`: the gate's ordinary outcomes per turn id (held-out and
    retention). The joint figures pair the candidate without the skills with the
    reference's ordinary outcomes.
    """
    steps = [*split.heldout, *split.retention]
    tested = []
    for name, served in sorted(served_skills(steps).items()):
        if name in inherited:
            continue
        tested.append(await test_skill(run, name, served, cand_model, ref_model, cand_with,
                                       ref_with, config))
    skills = tuple(sorted({*inherited, *(t.name for t in tested if t.internalized)}))
    result = Internalization(tuple(tested), tuple(sorted(inherited)), skills,
                             tokens_per_request(steps, skills))
    if not skills:
        return result
    label = f"{cand_model} without {', '.join(skills)}"
    sets = []
    for name, part in (("heldout", split.heldout), ("retention", split.retention)):
        outcomes = await run(cand_model, part, skills) if part else []
        sets.append(compare(name, label, ref_model, part, outcomes,
                            [ref_with.get(s.turn_id) for s in part]))
    return Internalization(result.tested, result.inherited, skills, result.tokens_per_request,
                           sets[0], sets[1])
