"""Conversations from toolworld for pretraining and evaluating the tiny policy.

The pretraining mixture (one draw per example):

* ``base`` (35%): the base conventions, not stated; sometimes irrelevant
  skills, sometimes some base conventions stated.
* ``stated`` (53%): random convention values, every non-base one stated in
  plain words (phrasings 0-2, or the phrasebook's many wordings) in the skills block, a separate system
  message after the agent prompt rendered with ``render_skills_block`` (15%
  of the time in the context block instead), plus random base statements and
  distractor skills, shuffled.
* ``recover`` (12%): one API convention drifted and *not* stated; the first
  call it affects is made the base way (not trained on), the tool's error
  follows, then the corrected call and the rest of the plan.

Warm-up examples (``short_example``) are base-day tasks with nothing but the
request; pretraining starts with them and keeps mixing some in.

With ``think_share`` > 0 (``pretrain --think-share``), that share of the
mixture's examples is rendered the way molt's TAFC serves it (proxy/tafc.py):
the tools think-augmented (function mode, or parameter mode at ``THINK_TAU``),
and every call writes its ``think`` first, then the arguments, wrapped ones as
``{think, value}``. The think text says which form each convention-governed
argument takes under the conversation's conventions (``date dmy; start
h24``), so a policy that thinks states the form before it writes the value.
The default (0) draws nothing more from the generator: the shipped mixture is
unchanged.

No drifted (family, value) pair ever appears as an unstated default, so the
policy cannot know a drift unless its context says so.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from bench.policy.phrasebook import phrase
from bench.toolworld.conventions import BASE, FAMILIES, Conventions
from bench.toolworld.phrasings import DISTRACTORS, TRAIN_PHRASINGS, statement
from bench.toolworld.tasks import TEMPLATES, PlannedCall, Task, make_task
from bench.toolworld.tools import call_tool
from modeling.blocks import SkillText, render_context_block, render_skills_block

AGENT_PROMPTS = (
    "You are a helpful assistant. Use the tools to do what the user asks.",
    "You are an assistant with tools. Call tools, then answer briefly.",
    "Help the user with their request using the available tools.",
    "You are a concise agent. Use tools when needed.",
)
#: The system prompt the agent driver should send (seen in pretraining).
DEFAULT_SYSTEM_PROMPT = AGENT_PROMPTS[0]
API_FAMILIES = tuple(f for f, spec in FAMILIES.items() if spec.kind == "api")


@dataclass
class Conversation:
    messages: list[dict[str, Any]]
    no_loss: set[int] = field(default_factory=set)  # indices of assistant messages not trained on
    # the tools to render (None: the plain toolworld list); think-augmented for TAFC examples
    tools: list[dict[str, Any]] | None = None


#: The tau of the parameter-mode TAFC examples (and of the bench's `tafc-parameter` arm):
#: toolworld's schemas are plain, so at the default 0.6 no parameter is wrapped; at 0.1
#: the ones with enums or unit words are (cuisine, reminder_min, units, from_unit, to_unit).
THINK_TAU = 0.1


@dataclass(frozen=True)
class Thinking:
    """How a TAFC example's calls are written: the plan molt would strip, and the conventions."""

    plan: Any  # proxy.tafc.Plan
    conventions: Conventions


#: Which convention governs an argument (as toolworld's tools check them).
def _family(tool: str, param: str) -> str | None:
    if param == "date":
        return "date"
    if param in ("time", "start"):
        return "time"
    if tool == "find_contact" and param == "name":
        return "name_order"
    if param in ("units",):
        return "units"
    return None


def think_text(tool: str, param: str, conventions: Conventions) -> str:
    fam = _family(tool, param)
    return f"{param} {conventions[fam]}" if fam else f"{param} from the request"


def thought_arguments(name: str, arguments: dict[str, Any], thinking: Thinking) -> dict[str, Any]:
    """A call's arguments as a TAFC-served model writes them: think first, wrapped values."""
    tool = thinking.plan.for_tool(name)
    if tool is None:
        return dict(arguments)
    forms = [think_text(name, k, thinking.conventions) for k in arguments
             if _family(name, k) is not None]
    out: dict[str, Any] = {tool.think_key: "; ".join(forms) if forms else "values from the request"}
    for k, v in arguments.items():
        out[k] = ({"think": think_text(name, k, thinking.conventions), "value": v}
                  if k in tool.wrapped else v)
    return out


def thinking_tools(rng: random.Random) -> tuple[list[dict[str, Any]], Any]:
    """Toolworld's tools augmented by molt's TAFC, function or parameter mode (half each)."""
    from bench.toolworld.tools import tool_schemas
    from proxy.tafc import augment_tools

    mode = "function" if rng.random() < 0.5 else "parameter"
    return augment_tools(tool_schemas(), mode, THINK_TAU)


def random_drift(rng: random.Random, p: float = 0.45) -> Conventions:
    """Conventions with at least one family off its base value."""
    while True:
        conv = {f: (rng.choice(spec.values[1:]) if rng.random() < p else spec.base)
                for f, spec in FAMILIES.items()}
        if conv != BASE:
            return conv


def system_messages(skills: list[SkillText], prompt: str | None,
                    as_context: bool = False) -> list[dict[str, Any]]:
    """The agent's system prompt, then molt's block (skills or context) as its own message."""
    out: list[dict[str, Any]] = []
    if prompt is not None:
        out.append({"role": "system", "content": prompt})
    if skills:
        block = (render_context_block("\n".join(s.body for s in skills)) if as_context
                 else render_skills_block(skills))
        out.append({"role": "system", "content": block})
    return out


def _call_message(call: PlannedCall, index: int, thinking: Thinking | None = None) -> dict[str, Any]:
    args = call.arguments if thinking is None else thought_arguments(call.name, call.arguments, thinking)
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": f"call_{index}", "type": "function",
         "function": {"name": call.name, "arguments": args}}]}


def play(task: Task, head: list[dict[str, Any]], upto: int | None = None,
         wrong_first: Conventions | None = None, thinking: Thinking | None = None) -> Conversation:
    """The conversation that follows ``task``'s plan (to step ``upto``, or to the answer).

    With ``wrong_first``, the first planned call that these (wrong) conventions
    would write differently is first made their way, gets the tool's error, and
    is then made right; the wrong call is marked as not trained on.
    """
    conv = Conversation([*head, {"role": "user", "content": task.user_message}])
    steps = task.plan if upto is None else task.plan[:upto]
    wrong_plan: tuple[PlannedCall, ...] = ()
    if wrong_first is not None:
        wrong_plan = make_task_like(task, wrong_first).plan
    world = task.world()
    pending_error = wrong_first is not None
    for i, call in enumerate(steps):
        if pending_error and i < len(wrong_plan) and wrong_plan[i] != call:
            bad = wrong_plan[i]
            conv.no_loss.add(len(conv.messages))
            wrong = Thinking(thinking.plan, wrong_first) if thinking is not None else None
            conv.messages.append(_call_message(bad, 100 + i, wrong))
            error = call_tool(world, bad.name, bad.arguments)
            conv.messages.append({"role": "tool", "tool_call_id": f"call_{100 + i}",
                                  "content": error})
            pending_error = False
        conv.messages.append(_call_message(call, i, thinking))
        result = call_tool(world, call.name, call.arguments)
        conv.messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": result})
    if upto is None:
        conv.messages.append({"role": "assistant", "content": task.final_answer})
    return conv


def make_task_like(task: Task, conventions: Conventions) -> Task:
    """The same task (same slots, same world) under other conventions."""
    rng = random.Random(task.id)  # tasks made here are seeded by their id
    return make_task(task.template, rng, task.world_seed, conventions, task.day, task.id)


def sample_task(rng: random.Random, conventions: Conventions, need_affected: bool,
                world_prefix: str = "pre") -> Task:
    """A random task; with ``need_affected``, one the conventions change (if one is found)."""
    for _ in range(6):
        task_id = f"t{rng.randrange(10**9)}"
        task = make_task(rng.choice(sorted(TEMPLATES)), random.Random(task_id),
                         f"{world_prefix}:{rng.randrange(10**6)}", conventions, 0, task_id)
        if not need_affected or any(c.affected for c in task.plan):
            return task
    return task


def short_example(rng: random.Random) -> Conversation:
    """A warm-up conversation: a base-day task with no system prompt, skills or tool list.

    Short contexts make the attention that copies a value from the request (a
    city, a name, an id from a tool result) easy to find early in training.
    """
    return play(sample_task(rng, dict(BASE), False), [])


#: Skill-file scaffolding around a rule: where it came from, a numbered list, anti-patterns.
_SOURCES = ("Learned from {n} tool errors.", "Added by the user.", "Written by the team from {n} sessions.",
            "From support notes.", "Revised after {n} complaints.")
_TIPS = ("If a tool still returns an error, read it and fix that argument.",
         "Check the arguments before each call.", "Use ids exactly as a tool returned them.")
_ANTI = ("Guessing a value the user did not give.", "Calling the same tool twice for one request.",
         "Ignoring a tool error.")


def dress(rng: random.Random, skill: SkillText) -> SkillText:
    """The skill with the scaffolding real skill files carry (source line, list, anti-patterns).

    The rule itself is unchanged; the policy learns that such lines state no
    convention, so a skill written in another layout does not move the
    conventions it does not name.
    """
    body = skill.body
    if rng.random() < 0.5:
        body = f"1. {body}" + (f"\n2. {rng.choice(_TIPS)}" if rng.random() < 0.6 else "")
    if rng.random() < 0.5:
        body = rng.choice(_SOURCES).format(n=rng.randint(2, 9)) + "\n" + body
    if rng.random() < 0.4:
        body += f"\n\nAnti-patterns:\n- {rng.choice(_ANTI)}"
    return SkillText(skill.name, skill.description, body)


#: Share of pretraining skills dressed in skill-file scaffolding (``dress``).
DRESSED = 0.4
#: Share of pretraining statements composed by the phrasebook (the rest: phrasings 0-2).
PHRASEBOOK = 0.5


def said(rng: random.Random, family: str, value: str) -> SkillText:
    """A pretraining statement of one convention, sometimes dressed.

    Half come from the phrasebook (the rule in many wordings), half are the
    fixed training phrasings (what the ``stated`` figure evaluates).
    """
    skill = (phrase(rng, family, value) if rng.random() < PHRASEBOOK
             else statement(family, value, rng.choice(TRAIN_PHRASINGS)))
    return dress(rng, skill) if rng.random() < DRESSED else skill


def pretraining_example(rng: random.Random, think_share: float = 0.0) -> Conversation:
    """One conversation from the pretraining mixture (see the module docstring)."""
    if think_share > 0 and rng.random() < think_share:
        tools, plan = thinking_tools(rng)
        conv = _mixture_example(rng, plan)
        conv.tools = tools
        return conv
    return _mixture_example(rng, None)


def _mixture_example(rng: random.Random, plan: Any) -> Conversation:
    prompt = rng.choice(AGENT_PROMPTS) if rng.random() < 0.9 else None
    distractors = [dress(rng, d) if rng.random() < DRESSED else d
                   for d in rng.sample(DISTRACTORS, rng.randint(0, 2))]
    kind = rng.random()
    if kind < 0.35:
        conv: Conventions = dict(BASE)
        stated = rng.sample(list(FAMILIES), rng.randint(0, 3)) if rng.random() < 0.3 else []
        skills = [said(rng, f, BASE[f]) for f in stated]
        skills += distractors if rng.random() < 0.5 else []
        rng.shuffle(skills)
        return play(sample_task(rng, conv, False), system_messages(skills, prompt),
                    thinking=Thinking(plan, conv) if plan is not None else None)
    if kind < 0.88:
        conv = random_drift(rng)
        all_families = rng.random() < 0.15
        stated = [f for f in FAMILIES
                  if conv[f] != BASE[f] or all_families or rng.random() < 0.2]
        skills = [said(rng, f, conv[f]) for f in stated]
        skills += distractors
        rng.shuffle(skills)
        head = system_messages(skills, prompt, as_context=rng.random() < 0.15)
        return play(sample_task(rng, conv, True), head,
                    thinking=Thinking(plan, conv) if plan is not None else None)
    family = rng.choice(API_FAMILIES)
    conv = dict(BASE)
    conv[family] = rng.choice(FAMILIES[family].values[1:])
    task = sample_task(rng, conv, True)
    return play(task, system_messages(distractors, prompt), wrong_first=dict(BASE),
                thinking=Thinking(plan, conv) if plan is not None else None)
