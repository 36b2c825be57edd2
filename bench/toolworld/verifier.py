"""The verifier: a step score for every call and an outcome for every episode.

Step score (the ground-truth process reward): given the calls made so far,
is this call the right next call? Progress through the plan is the number of
planned calls matched in order by earlier calls; calls that did not match
(wrong, or refused with an error) do not advance it. The proposed call is
right iff it names the next planned tool, the tool would accept its
arguments under the conventions in force, and its normalized arguments
(defaults filled in, dates and times parsed) equal the planned ones,
preference arguments included. Extra read-only calls are scored 0 too: the
plan is the reference.

Episode outcome: the task succeeded iff the world's end state matches the
plan's (the same bookings, events and messages, and the planned look-ups were
made; for information tasks the answer states the fact), ignoring user
preferences; each violated preference adds the user's complaint.
``score = 0`` on failure, else ``max(0, 1 - 0.5 * len(complaints))``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.toolworld.complaints import PHRASINGS, say
from bench.toolworld.tasks import PlannedCall, Task
from bench.toolworld.tools import TOOLS, Args, ToolError, parse_arguments

PREFERENCE_ARGS = {"notify": "notify", "reminder_min": "reminder", "units": "units"}
Call = tuple[str, "str | Args"]


@dataclass(frozen=True, slots=True)
class StepScore:
    ok: bool
    reason: str
    expected: PlannedCall | None  # None when the plan was already complete
    affected: bool = False  # the expected call depends on non-base conventions
    drifts: tuple[str, ...] = ()  # which drifted conventions it depends on (PlannedCall.drifts)


@dataclass(frozen=True)
class Outcome:
    success: bool
    step_accuracy: float
    complaints: list[str]
    score: float
    reason: str
    steps: list[StepScore] = field(default_factory=list)
    # every preference broken, said or not (``units=imperial``)
    violations: list[str] = field(default_factory=list)


def calls_from_messages(messages: Iterable[Mapping[str, Any]]) -> list[Call]:
    """The (name, arguments) of every tool call in OpenAI-format ``messages``, in order."""
    calls: list[Call] = []
    for m in messages:
        if m.get("role") != "assistant":
            continue
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function", tc)
            calls.append((str(fn.get("name", "")), fn.get("arguments", "{}")))
    return calls


class Verifier:
    """Scores calls against one task's plan under the task's conventions."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self._world = task.world()  # validation reads the world, never changes it
        self._expected = [TOOLS[c.name].validate(self._world, dict(c.arguments))
                          for c in task.plan]

    def mismatch(self, index: int, name: str, arguments: str | Args) -> str | None:
        """Why ``name(arguments)`` is not planned call ``index``; None if it is."""
        planned = self.task.plan[index]
        if name != planned.name:
            return f"expected a call to {planned.name}, got {name or 'no call'}"
        try:
            got = TOOLS[name].validate(self._world, parse_arguments(arguments))
        except ToolError as exc:
            return f"error: {exc}"
        want = self._expected[index]
        for key in want:
            if got[key] != want[key]:
                kind = "user preference " if key in PREFERENCE_ARGS else ""
                shown = planned.arguments.get(key, TOOLS[name].params[key].default)
                given = parse_arguments(arguments).get(key)
                return f"{kind}{key}: expected {json.dumps(shown)}, got {json.dumps(given)}"
        return None

    def progress(self, history: Sequence[Call]) -> int:
        """How many planned calls ``history`` has matched, in order."""
        done = 0
        for name, arguments in history:
            if done < len(self.task.plan) and self.mismatch(done, name, arguments) is None:
                done += 1
        return done

    def score_step(self, history: Sequence[Call], name: str, arguments: str | Args) -> StepScore:
        """Is ``name(arguments)`` the right call after ``history``? 1/0 with the reason."""
        done = self.progress(history)
        if done == len(self.task.plan):
            return StepScore(False, "the task is already done; expected a final answer", None)
        planned = self.task.plan[done]
        why = self.mismatch(done, name, arguments)
        return StepScore(why is None, why or "right call", planned, planned.affected, planned.drifts)


# --- episode outcome ----------------------------------------------------------

COMPLAINTS: dict[tuple[str, str], str] = {key: variants[0] for key, variants in PHRASINGS.items()}
_STATE = ("message", "booking", "event")
_QUERIES = ("weather", "convert")


def _core(effect: Mapping[str, Any]) -> tuple[Any, ...]:
    drop = {"notify", "reminder_min", "units"}
    return tuple(sorted((k, repr(v)) for k, v in effect.items() if k not in drop))


def complaints_for(effects: Sequence[Mapping[str, Any]],
                   conventions: Mapping[str, str]) -> list[str]:
    """The user's complaints about ``effects`` under the preferences in ``conventions`` (phrasing 0)."""
    return [COMPLAINTS[key] for key in violations_for(effects, conventions)]


def violations_for(effects: Sequence[Mapping[str, Any]],
                   conventions: Mapping[str, str]) -> list[tuple[str, str]]:
    """The preferences ``effects`` break: (family, wanted value), in the order first broken."""
    found: list[tuple[str, str]] = []
    checked: set[Any] = set()
    for effect in effects:
        kind = effect["kind"]
        if kind == "calendar_check":
            checked.add(effect["date"])
        violated: str | None = None
        if kind == "weather" and effect["units"] != conventions["units"]:
            violated = "units"
        elif kind == "event":
            wanted = None if conventions["reminder"] == "none" else int(conventions["reminder"])
            violated = "reminder" if effect["reminder_min"] != wanted else None
        elif kind == "message" and effect["notify"] != (conventions["notify"] == "true"):
            violated = "notify"
        elif (kind == "booking" and conventions["order"] == "calendar_first"
              and effect["date"] not in checked):
            violated = "order"
        if violated is not None and (violated, conventions[violated]) not in found:
            found.append((violated, conventions[violated]))
    return found


def score_episode(task: Task, effects: Sequence[Mapping[str, Any]], final_text: str,
                  steps: Sequence[StepScore], *, complaint_rate: float = 1.0,
                  varied: bool = False) -> Outcome:
    """Compare the world's end state with the plan's and collect complaints.

    The score counts every broken preference; the user voices each one with
    probability ``complaint_rate``, in phrasing 0, or (``varied``) in a
    phrasing drawn per episode (`bench.toolworld.complaints`).
    """
    reference = task.world()
    for call in task.plan:
        TOOLS[call.name].execute(reference, dict(call.arguments))
    want_state = Counter(_core(e) for e in reference.effects if e["kind"] in _STATE)
    got_state = Counter(_core(e) for e in effects if e["kind"] in _STATE)
    want_queries = {_core(e) for e in reference.effects if e["kind"] in _QUERIES}
    got_queries = {_core(e) for e in effects if e["kind"] in _QUERIES}
    if got_state != want_state:
        missing = sum((want_state - got_state).values())
        extra = sum((got_state - want_state).values())
        success, reason = False, f"end state differs: {missing} missing, {extra} unwanted changes"
    elif not want_queries <= got_queries:
        success, reason = False, "the needed look-up was not made"
    elif task.answer_must_contain and task.answer_must_contain not in final_text:
        success, reason = False, f"the answer does not state {task.answer_must_contain}"
    else:
        success, reason = True, "task done"
    broken = violations_for(effects, task.conventions)
    rng = random.Random(f"complaints:{task.id}")
    said = [say(key, rng if varied else None) for key in broken if rng.random() < complaint_rate]
    right = sum(s.ok for s in steps)
    accuracy = right / max(len(steps), len(task.plan)) if (steps or task.plan) else 1.0
    score = max(0.0, 1.0 - 0.5 * len(broken)) if success else 0.0
    return Outcome(success, accuracy, said, score, reason, list(steps),
                   [f"{family}={value}" for family, value in broken])
