"""What the trainer's parts hand each other: recorded steps, splits, and the Protocols
that `molt` fills in (generation through serving, evidence checks from the evolver).

The trainer never imports proxy or evolver. Where it needs them at run time,
`molt` passes one of the small Protocols below (DESIGN.md: "they meet in the
store and in molt").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

JSON = dict[str, Any]

# Step-reward sources, in the order `trainer/rewards.py` combines them.
REWARD_SOURCES = ("evidence", "prm", "judge", "distill", "verifier")


@dataclass(slots=True)
class Step:
    """One recorded assistant step (a turn) as training and evaluation read it.

    `messages` and `tools` are the agent's own request (no molt blocks); `served_messages`
    is what the model actually saw (skills / context injected), used as the teacher's
    context for skill-conditioned distillation. `completion` is the assistant message
    the served version produced (`content`, `tool_calls`).
    """

    turn_id: str
    session_id: str
    tenant_id: str
    idx: int
    created_at: float
    model: str
    messages: list[JSON]
    tools: list[JSON] | None
    completion: JSON
    served_messages: list[JSON] | None = None
    # the skills the proxy injected into the turn (names, as recorded), and each one's
    # estimated context cost in tokens where the record has it
    injected_skills: list[str] = field(default_factory=list)
    skill_tokens: dict[str, int] = field(default_factory=dict)
    weight_version: str | None = None
    skill_generation: int | None = None
    # source -> score in [-1, 1] (absent source: no evidence from it)
    rewards: dict[str, float] = field(default_factory=dict)
    # the combined step reward, or None when no source says anything
    reward: float | None = None
    # one combined reward per step of `completion` (trainer/advantages.py: every tool call
    # is a step; a reply without calls is one step); None where no source says anything
    step_rewards: list[float | None] = field(default_factory=list)
    # per step of `completion`: source -> score, what `step_rewards` combines
    step_scores: list[dict[str, float]] = field(default_factory=list)
    # the agent's own later fix, in hindsight (trainer/data.py `hindsight_fix`): this
    # message with every refused call replaced by the same tool's later call that ran;
    # None when no call of the step was refused or a refused one was never fixed
    hindsight: JSON | None = None


@dataclass(slots=True)
class Split:
    """Query data for one training window."""

    train: list[Step] = field(default_factory=list)
    heldout: list[Step] = field(default_factory=list)
    retention: list[Step] = field(default_factory=list)


class Generate(Protocol):
    """Produce one assistant message for a recorded context with a named model.

    `model` is a serving name (`tiny@v0003`, `tiny@base`, `tiny`); molt implements it
    through the proxy's own HTTP API, so evaluation runs through the serving stack.
    A call that gets no assistant message raises `trainer.errors.GenerateFailed`.
    `exclude_skills`: skills serving must leave out of what it would inject (molt: the
    admin-only `X-Molt-Skills-Exclude` header), to see how a version answers without them.
    """

    async def __call__(
        self, model: str, messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None, *, exclude_skills: Sequence[str] = (),
    ) -> JSON: ...


class StepCheck(Protocol):
    """Score a candidate assistant message for a recorded step, from recorded evidence.

    Returns a score in [-1, 1], or None when the evidence says nothing about it.
    molt implements it with the evolver's checks (evolver/checks.py), which the
    trainer may not import.
    """

    def __call__(self, step: Step, completion: Mapping[str, Any]) -> float | None: ...
