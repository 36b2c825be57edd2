"""Description optimisation: rewritten tool parameter descriptions from recurring argument errors.

TAFC's second half (ALGORITHMS.md section 4): where a tool keeps refusing
one argument, the parameter's description is where the fix belongs, since the
model reads it right where it writes the argument. For a recurring tool error
(>= `min_support` cases) that the readers understood and that names a
parameter the tool's recorded schema offers, a draft rewrites that
parameter's description:

- rule-based (no evolver model): the agent's description, then the rule in
  molt's own words (`evolver.rules`: ``Write date as DD.MM.YYYY.``), never the
  error's text or its example values;
- with an evolver model: the model rewrites the description from the failure
  group, answering `{"description": "..."}`.

Either way the text passes `evolver.safety.description_reason`, and the
draft carries the same replay checks as a skill drawn from the same evidence
(`evolver.checks.evidence_check`): the loop gates it like a skill proposal
and serves it, if it passes, as a tenant overlay (`store.tool_overlays`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from evolver.checks import Check, evidence_check
from evolver.errors import ProposalRejected
from evolver.llm import ChatModel
from evolver.mining import FailureGroup, render_group
from evolver.offline import main_constraint
from evolver.rules import state_constraint
from evolver.safety import description_reason
from store.tool_params import param_description


@dataclass(frozen=True)
class ParamRewrite:
    tool: str
    param: str
    description: str
    base: str | None  # the agent's own description (None: it had none)


@dataclass
class DescriptionDraft:
    rewrites: list[ParamRewrite]
    reason: str
    turn_ids: list[str]
    checks: list[Check] = field(default_factory=list)
    source: str = "descriptions"


def _target(g: FailureGroup) -> tuple[str, list[tuple[str, str | None]]] | None:
    """The parameter the group's errors are about, and each failing tool that offers it (its description).

    The parameter is where the error points (``to.city``) when a failing tool's schema has it
    (through `$ref`, `anyOf` and array items: store/param_paths.py), else the argument."""
    c = main_constraint(g)
    if c is None or c.argument is None:
        return None
    for param in dict.fromkeys(p for p in (c.path, c.argument) if p):
        found: dict[str, str | None] = {}
        for case in g.cases:
            for tool in case.tools[:1]:  # the tool whose result was the error
                if tool in found:
                    continue
                offered, desc = param_description(case.request.get("tools"), tool, param)
                if offered:
                    found[tool] = desc
        if found:
            return param, sorted(found.items())
    return None


def _joined(base: str | None, sentence: str) -> str:
    if not base or not base.strip():
        return sentence
    head = base.rstrip()
    return f"{head}{'' if re.search(r'[.!?]$', head) else '.'} {sentence}"


def _checked(rewrites: list[ParamRewrite]) -> list[ParamRewrite]:
    for r in rewrites:
        why = description_reason(r.description, r.base)
        if why:
            raise ProposalRejected(f"unsafe description of {r.tool}.{r.param}: the description {why}")
    return rewrites


def _checks(g: FailureGroup) -> list[Check]:
    return [c for c in (evidence_check(case) for case in g.cases) if c]


def rule_drafts(groups: Sequence[FailureGroup], *, min_support: int = 2,
                max_drafts: int = 3) -> list[DescriptionDraft]:
    """Rule-based rewrites for the largest recurring, understood argument errors."""
    out: list[DescriptionDraft] = []
    for g in groups:
        if g.kind != "tool_error" or len(g.cases) < min_support:
            continue
        target = _target(g)
        constraint = main_constraint(g)
        if target is None or constraint is None:
            continue
        param, tools = target
        stated = state_constraint(replace(constraint, argument=param), g.cases)
        if stated is None:
            continue
        sentence = f"{stated.words[0].upper()}{stated.words[1:]}."
        rewrites = [ParamRewrite(tool, param, _joined(base, sentence), base) for tool, base in tools
                    if sentence not in (base or "")]
        if not rewrites:
            continue
        try:
            _checked(rewrites)
        except ProposalRejected:
            continue
        reason = f"recurring argument error ({len(g.cases)}x): {param} {stated.slug}"
        out.append(DescriptionDraft(rewrites, reason, g.turn_ids, _checks(g)))
        if len(out) >= max_drafts:
            break
    return out


SYSTEM = """You improve the JSON Schema description of one parameter of an AI agent's tool.
The agent's model keeps filling this parameter wrongly. You get the failures and the current
description. Answer with a better description: one or two plain sentences that state what the
parameter holds and the form the tool accepts, in your own words. Keep what the current
description says that is still true. Never include URLs, example values copied from the
errors, or instructions unrelated to filling this parameter.

Answer with JSON only: {"description": "..."}"""


def description_prompt(g: FailureGroup, tool: str, param: str, base: str | None) -> list[dict[str, str]]:
    user = (f"Tool: {tool}\nParameter: {param}\nCurrent description: {json.dumps(base or '')}\n\n"
            f"Failures:\n{render_group(g)}\n\nReturn the JSON.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_description(raw: str) -> str:
    text = raw.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fence:
        text = fence.group(1)
    start = text.find("{")
    if start < 0:
        raise ProposalRejected("the answer holds no JSON")
    try:
        data, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ProposalRejected(f"the answer is not valid JSON: {exc.msg}") from exc
    desc = data.get("description") if isinstance(data, dict) else None
    if not isinstance(desc, str) or not desc.strip():
        raise ProposalRejected("expected a non-empty string under 'description'")
    return " ".join(desc.split())


async def llm_draft(model: ChatModel, g: FailureGroup) -> DescriptionDraft | None:
    """The evolver model's rewrite for one group (None: nothing to rewrite); ProposalRejected on a bad answer."""
    target = _target(g)
    if target is None:
        return None
    param, tools = target
    rewrites = []
    for tool, base in tools:
        answer = await model.complete(description_prompt(g, tool, param, base), temperature=0.2,
                                      max_tokens=400)
        rewrites.append(ParamRewrite(tool, param, parse_description(answer), base))
    _checked(rewrites)
    reason = f"recurring argument error ({len(g.cases)}x) on {param}: rewritten by the evolver model"
    return DescriptionDraft(rewrites, reason, g.turn_ids, _checks(g), source="llm-descriptions")
