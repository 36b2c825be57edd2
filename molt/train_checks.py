"""Step rewards from recorded evidence: the evolver's checks, offered to the trainer.

The trainer may not import the evolver (DESIGN.md), so molt builds the checks
here and hands the trainer a `trainer.types.StepCheck`. The checks are the ones
the evolver's validation gate already derives from the trajectories (a tool
error's hindsight fix or the form it states, a complaint naming a parameter,
and, for turns that went well, the same call again, re-read in the light of
newer failures). Nothing here reads the benchmark's hidden truth.

A candidate assistant message scores +1 when it passes every check recorded for
its turn and -1 when it fails one; a turn with no check gets None (no evidence).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from evolver.checks import Check, evidence_check, keep_check, supersede
from evolver.mining import mine
from store.feedback import FeedbackStore
from store.trajectories import TrajectoryStore
from trainer.types import Step


def completion_calls(completion: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, arguments) of an assistant message's tool calls; unparsable arguments -> {}."""
    out: list[tuple[str, dict[str, Any]]] = []
    for c in completion.get("tool_calls") or []:
        if not isinstance(c, Mapping):
            continue
        fn = c.get("function") or {}
        if not isinstance(fn, Mapping):
            continue
        raw = fn.get("arguments")
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            args = None
        out.append((str(fn.get("name") or ""), args if isinstance(args, dict) else {}))
    return out


class EvidenceChecks:
    """A `StepCheck` over the checks mined from a tenant's recorded turns."""

    def __init__(self, checks: Mapping[str, list[Check]]) -> None:
        self.checks = dict(checks)

    def __call__(self, step: Step, completion: Mapping[str, Any]) -> float | None:
        checks = self.checks.get(step.turn_id)
        if not checks:
            return None
        calls = completion_calls(completion)
        return 1.0 if all(c.passes(calls) for c in checks) else -1.0

    def __len__(self) -> int:
        return len(self.checks)

    @classmethod
    async def mine(
        cls, trajectories: TrajectoryStore, feedback: FeedbackStore, tenant_id: str,
        since: float = 0.0, *, good_sample: int = 10_000,
    ) -> EvidenceChecks:
        """Checks for every turn of the tenant since `since` that the evidence speaks about."""
        mined = await mine(trajectories, feedback, tenant_id, since, good_sample=good_sample)
        fixes: list[Check] = []
        by_turn: dict[str, list[Check]] = defaultdict(list)
        for group in mined.groups:
            for case in group.cases:
                check = evidence_check(case)
                if check is not None:
                    fixes.append(check)
                    by_turn[case.turn_id].append(check)
        for case in mined.good:
            keep = keep_check(case)
            if keep is not None and case.turn_id not in by_turn:
                by_turn[case.turn_id].append(supersede(keep, fixes))
        return cls(by_turn)
