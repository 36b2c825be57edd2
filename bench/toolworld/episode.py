"""An episode: one task played against a fresh world, scored step by step.

This is the surface an agent driver uses::

    episode = Episode(task)
    tools = episode.tools                     # OpenAI tool schemas
    text = episode.call(name, arguments)      # tool result or "error: ..."
    outcome = episode.finish(final_text)      # success, step accuracy, complaints

``call`` scores every call with the verifier *before* running it, so the
step scores are exactly the process rewards of the calls the agent made.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from bench.toolworld.tasks import Task
from bench.toolworld.tools import Args, call_tool, tool_schemas
from bench.toolworld.verifier import Call, Outcome, StepScore, Verifier, calls_from_messages
from bench.toolworld.verifier import score_episode as _score_episode


def refused(result: str) -> bool:
    """Whether a tool result is a refusal (any grammar): the tools answer values as JSON."""
    try:
        value = json.loads(result)
    except json.JSONDecodeError:
        return True
    return isinstance(value, dict) and bool({"error", "status", "isError"} & set(value))


class Episode:
    """Play ``task``: execute calls in its world, score them, and score the end."""

    def __init__(self, task: Task, *, errors: str = "toolworld", complaint_rate: float = 1.0,
                 varied_complaints: bool = False) -> None:
        """``errors``: the tools' error grammar (`bench.toolworld.grammars`); the user voices a
        broken preference with probability ``complaint_rate``, in a phrasing drawn per episode
        when ``varied_complaints``."""
        self.task = task
        self.errors = errors
        self.complaint_rate = complaint_rate
        self.varied_complaints = varied_complaints
        self.tool_errors = 0  # calls the tools refused, in any grammar
        self.world = task.world()
        self.verifier = Verifier(task)
        self.history: list[Call] = []
        self.step_scores: list[StepScore] = []
        self.outcome: Outcome | None = None

    @property
    def tools(self) -> list[dict[str, Any]]:
        return tool_schemas()

    @property
    def user_message(self) -> str:
        return self.task.user_message

    def score_step(self, name: str, arguments: str | Args,
                   messages: Iterable[Mapping[str, Any]] | None = None) -> StepScore:
        """Score a call without running it, after ``messages`` (default: this episode's calls)."""
        history = calls_from_messages(messages) if messages is not None else self.history
        return self.verifier.score_step(history, name, arguments)

    def call(self, name: str, arguments: str | Args) -> str:
        """Score and run one tool call; returns the text to send back as the tool message."""
        if self.outcome is not None:
            raise RuntimeError("the episode is finished")
        self.step_scores.append(self.verifier.score_step(self.history, name, arguments))
        self.history.append((name, arguments))
        result = call_tool(self.world, name, arguments, self.errors)
        self.tool_errors += refused(result)
        return result

    def finish(self, final_text: str) -> Outcome:
        """End the episode with the agent's final answer and score it."""
        if self.outcome is None:
            self.outcome = _score_episode(self.task, self.world.effects, final_text,
                                          self.step_scores, complaint_rate=self.complaint_rate,
                                          varied=self.varied_complaints)
        return self.outcome
