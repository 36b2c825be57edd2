"""toolworld: a small, deterministic tool-use world with drifting conventions.

Public API (what the agent driver and the runner use)::

    from bench.toolworld import (Episode, World, generate_tasks, conventions_for_day,
                                 state_conventions, drift_days)

    conventions_for_day(day) -> dict[str, str]        # conventions in force (data/schedule.json)
    generate_tasks(day, n, seed, conventions=None) -> list[Task]   # same args -> same tasks
    task.user_message, task.plan, task.conventions
    episode = Episode(task)
    episode.tools                                     # OpenAI tool schemas
    episode.call(name, arguments_json_or_dict) -> str # tool result text or "error: ..."
    episode.score_step(name, arguments, messages=None) -> StepScore(ok, reason, expected, affected)
    episode.finish(final_text) -> Outcome(success, step_accuracy, complaints, score, reason, steps)
    state_conventions(conventions, phrasing=0, families=None) -> list[SkillText]
    World.for_day(day, seed)                          # the world state under a day's conventions
"""

from bench.toolworld.conventions import (
    BASE,
    DRIFTS,
    FAMILIES,
    Conventions,
    conventions_for_day,
    drift_days,
)
from bench.toolworld.episode import Episode
from bench.toolworld.phrasings import (
    DISTRACTORS,
    HELDOUT_PHRASING,
    TRAIN_PHRASINGS,
    state_conventions,
    statement,
)
from bench.toolworld.tasks import PlannedCall, Task, generate_tasks, make_task
from bench.toolworld.tools import TOOLS, call_tool, tool_schemas
from bench.toolworld.verifier import Outcome, StepScore, Verifier, calls_from_messages
from bench.toolworld.world import World

__all__ = [
    "BASE", "DISTRACTORS", "DRIFTS", "FAMILIES", "HELDOUT_PHRASING", "TOOLS", "TRAIN_PHRASINGS",
    "Conventions", "Episode", "Outcome", "PlannedCall", "StepScore", "Task", "Verifier", "World",
    "call_tool", "calls_from_messages", "conventions_for_day", "drift_days", "generate_tasks",
    "make_task", "state_conventions", "statement", "tool_schemas",
]
