"""Settings of the eval gate (before promotion) and of the live watch (after it).

Both are plain dataclasses: `molt` builds them from its settings tree, and the
gate saves the one it used beside its figures in the version's `meta.json`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

METRICS = ("accuracy", "mean")


@dataclass(frozen=True, slots=True)
class GateConfig:
    """When a candidate replaces the active version.

    The metric is computed per evaluation set over the steps that both models
    got a score on (the `StepCheck` can abstain): `accuracy` is the share of
    steps scored > 0, `mean` the mean score in [-1, 1]. The candidate is
    promoted only if, on the held-out set, it beats the active version by at
    least `min_improvement`, and, on the retention set, it loses no more than
    `max_retention_drop` (both in the metric's units: 0.03 = 3 points of
    accuracy).

    With `internalize` (trainer/internalize.py) the gate also finds the served
    skills the candidate no longer needs, and judges it as it would be served:
    without them. Such a candidate is promoted when it is no worse on held-out
    than the active version by more than `internalize_margin` (it need not beat
    it: the same answers with fewer skill tokens in context are the gain) and
    keeps retention as above. A skill counts when, on at least
    `internalize_min_steps` steps served it, the candidate without it is as good
    as with it (less `internalize_margin`) and at least `internalize_floor`, and
    (`internalize_needed`) the active version is worse without it.
    """

    metric: str = "accuracy"
    min_improvement: float = 0.02
    max_retention_drop: float = 0.03
    # Fewer held-out steps scored for both models than this: no decision, not promoted.
    min_heldout: int = 8
    # Retention steps scored for both below this: the retention check cannot pass.
    # 0 lets a candidate through when the split has no retention set at all.
    min_retention: int = 0
    # Evaluation requests in flight at once (per model).
    concurrency: int = 4
    # Promote on a pass (False: record the decision only, a person promotes).
    promote: bool = True
    # Find the skills the candidate internalized, and judge it served without them.
    internalize: bool = True
    internalize_margin: float = 0.0
    internalize_min_steps: int = 3
    internalize_floor: float = 0.5
    internalize_needed: bool = True

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {self.metric!r}")
        if self.max_retention_drop < 0:
            raise ValueError("max_retention_drop must be >= 0")
        if self.min_heldout < 1 or self.min_retention < 0 or self.concurrency < 1:
            raise ValueError("min_heldout and concurrency must be >= 1, min_retention >= 0")
        if self.internalize_margin < 0 or self.internalize_min_steps < 1:
            raise ValueError("internalize_margin must be >= 0, internalize_min_steps >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """When a promoted version is rolled back on its live record.

    A served turn succeeded when its evidence (the mean of its feedback scores,
    turn feedback first, else its session's) is > 0, and failed when it is < 0
    or the turn itself failed (status not `ok`). The new version is rolled back
    when both it and the version it replaced have at least `min_samples` turns
    with evidence and its success rate is lower by more than `max_drop`.
    """

    min_samples: int = 20
    max_drop: float = 0.05
    # How far back before the promotion the replaced version's turns are read.
    baseline_window_s: float = 7 * 24 * 3600.0
    # Count turns that failed in serving (status not ok) as failures.
    count_errors: bool = True

    def __post_init__(self) -> None:
        if self.min_samples < 1 or self.max_drop < 0 or self.baseline_window_s <= 0:
            raise ValueError("min_samples must be >= 1, max_drop >= 0, baseline_window_s > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
