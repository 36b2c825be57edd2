"""The offline evolver: rule-based skills from recurring tool errors and complaints.

With no evolver model configured, molt still learns from what tools and users
say. A tool error that recurs (same pattern, >= `min_support` times) becomes
a skill stating the constraint the tool named, with the value that the tool
later accepted in the same session as the example; a recurring complaint
whose words name a tool parameter becomes a skill asking for that value; a
complaint naming another tool becomes an ordering rule. Every such skill says
it was written by the rule-based miner.

What the tools said is untrusted data: the miner copies it only quoted
(`evolver.safety.quote`: "the tool said: «...»"), never as an instruction of
its own, and every draft passes the one safety check before it is gated
(`evolver.loop`), so a tool error that reads like an order to the model is
refused with the reason.

The wording comes from `TEMPLATES`; variant 0 is the miner's own, the other
variants are hand-written paraphrases used by the benchmark to show that a gain
does not depend on one phrasing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from evolver.cases import constraint_of, refused_value, words
from evolver.checks import Check, fix_check, form_check, infer_preference, preference_check
from evolver.edits import AddOp, EditOp, RetireOp, UpdateOp
from evolver.mining import FailureGroup
from evolver.safety import data_reason, quote
from store.skills import Skill

MARK = "Written by molt's rule-based miner"

TEMPLATES: list[dict[str, str]] = [
    {
        "error_desc": "Argument rule for {tools}.",
        "error_body": "{mark} from {n} tool errors.\n1. When calling {tools}, the tool said: {constraint}.\n"
                      "{example}{anti}",
        "example": "   Accepted example: {args}.\n",
        "anti": "\nAnti-patterns:\n- {refused}",
        "refused": "Sending {value} (the tool refused it).",
        "pref_desc": "User preference for {tool}.",
        "pref_body": ("{mark} from {n} user complaints.\n"
                      "1. When calling {tool}, pass {param}={value}, even when the request does not mention it."),
        "order_desc": "Order rule: {first} before {then}.",
        "order_body": "{mark} from {n} user complaints.\n1. Call {first} before you call {then}.",
    },
    {
        "error_desc": "How {tools} expects its arguments.",
        "error_body": "What {tools} said: {constraint}.\n{example}{anti}",
        "example": "Like this: {args}.\n",
        "anti": "Anti-patterns:\n- {refused}",
        "refused": "Do not pass {value}.",
        "pref_desc": "What the user wants from {tool}",
        "pref_body": "Give {tool} the argument {param} = {value} every time.",
        "order_desc": "Use {first} first, then {then}",
        "order_body": "First {first}, afterwards {then}.",
    },
    {
        "error_desc": "What {tools} rejects.",
        "error_body": "The tools complained: {constraint}.\n{example}{anti}",
        "example": "Correct form: {args}.\n",
        "anti": "Anti-patterns:\n- {refused}",
        "refused": "{value} was rejected.",
        "pref_desc": "Standing request about {tool}",
        "pref_body": "The user asked that {tool} calls include {param} {value}.",
        "order_desc": "Before {then}, always {first}",
        "order_body": "Run {first}, and only then {then}.",
    },
]


@dataclass
class Draft:
    """A proposal before the gate: edit ops, the turns they rest on, the checks to replay."""

    ops: list[EditOp]
    reason: str
    turn_ids: list[str]
    checks: list[Check] = field(default_factory=list)
    source: str = "offline"
    # what the rules are about (``date``, ``send_message notify``): context lines about the
    # same thing give way to the skill (``evolver.context.subject``)
    subjects: list[str] = field(default_factory=list)


def slugify(text: str, limit: int = 48) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].strip("-") or "skill"


# a constraint that shows the form: a pattern such as DD.MM.YYYY or HH:MM, or "like ..."
_STATES_FORM = re.compile(r"\b[A-Z]{2,}\W*[A-Z]{2,}|\blike\b")


def _fmt_args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in args.items())


def _error_draft(g: FailureGroup, t: dict[str, str]) -> Draft:
    first = g.cases[0]
    constraint = constraint_of(first.message)
    # hindsight fixes first (the stronger evidence), then the form the error states
    hindsight = [fix_check(case) for case in g.cases]
    checks = [c for c in hindsight if c]
    checks += [c for c in (form_check(case) for case, h in zip(g.cases, hindsight) if h is None) if c]
    # a concrete value from another task (an accepted example, the refused value) only where
    # the rule does not show the form itself: small models copy such values into unrelated
    # calls (the refused date in the anti-pattern cost the tiny policy 40 points, dev/LOG.md)
    states_form = bool(_STATES_FORM.search(constraint))
    accepted = _fmt_args(checks[0].expect) if checks and checks[0].expect and not states_form else None
    refused = None if states_form else refused_value(first.message)
    # an example is optional: one the safety check would refuse as data is left out; the
    # constraint is the rule itself, so it stays and the check judges the whole draft
    accepted = accepted if accepted is not None and data_reason(accepted) is None else None
    refused = refused if refused is not None and data_reason(refused) is None else None
    example = t["example"].format(args=quote(accepted)) if accepted is not None else ""
    tools = ", ".join(g.tools)
    name = slugify("rule " + " ".join(constraint.split()[:4]))
    anti = t["anti"].format(refused=t["refused"].format(value=quote(refused))) if refused else ""
    op = AddOp(op="add", name=name,
               description=t["error_desc"].format(tools=tools),
               body=t["error_body"].format(mark=MARK, n=len(g.cases), tools=tools, constraint=quote(constraint),
                                           example=example, anti=anti).rstrip(),
               tools=g.tools, category="tool-rules", scope="tools",
               reason=f"recurring tool error ({len(g.cases)}x): {quote(constraint)}", turn_ids=g.turn_ids)
    about = re.match(r"(.+?) must\b", constraint)
    return Draft([op], op.reason, g.turn_ids, checks, subjects=[about.group(1)] if about else [])


def _complaint_draft(g: FailureGroup, t: dict[str, str]) -> Draft | None:
    pref = next((p for p in (infer_preference(c) for c in g.cases) if p), None)
    if pref is not None:
        tool, param, value = pref
        checks = [c for c in (preference_check(case) for case in g.cases) if c]
        op = AddOp(op="add", name=slugify(f"pref {tool} {param}"),
                   description=t["pref_desc"].format(tool=tool, complaint=g.message),
                   body=t["pref_body"].format(mark=MARK, n=len(g.cases), tool=tool, param=param,
                                              value=json.dumps(value)),
                   tools=[tool], category="preferences", scope="tools",
                   reason=f"recurring complaint ({len(g.cases)}x): {quote(g.message)}", turn_ids=g.turn_ids)
        return Draft([op], op.reason, g.turn_ids, checks, subjects=[f"{tool} {param}"])
    order = _order(g)
    if order is None:
        return None
    first, then = order
    checks = [Check(c.turn_id, c.request, first, {}, "fix", before=then) for c in g.cases
              if any(n == then for n, _ in c.calls)]
    op = AddOp(op="add", name=slugify(f"order {first} before {then}"),
               description=t["order_desc"].format(first=first, then=then, complaint=g.message),
               body=t["order_body"].format(mark=MARK, n=len(g.cases), first=first, then=then),
               tools=[first, then], category="preferences", scope="tools",
               reason=f"recurring complaint ({len(g.cases)}x): {quote(g.message)}", turn_ids=g.turn_ids)
    return Draft([op], op.reason, g.turn_ids, checks)


def _order(g: FailureGroup) -> tuple[str, str] | None:
    """A complaint that names another tool than the one called: call that one first."""
    case = g.cases[0]
    cw = words(case.message)
    names = [(t.get("function") or {}).get("name", "") for t in case.request.get("tools") or []]
    called = {n for n, _ in case.calls}
    for name in names:
        parts = [p for p in name.split("_") if len(p) >= 4]
        if name not in called and parts and all(any(w.startswith(p[:5]) for w in cw) for p in parts):
            then = next(iter(sorted(called)), None)
            if then:
                return name, then
    return None


def _same_rule(a: str, b: str) -> bool:
    """Two bodies of the miner that state the same rule (they may count their evidence differently)."""
    def norm(text: str) -> str:
        return re.sub(r"\bfrom \d+ ", "from # ", text)
    return norm(a) == norm(b)


def _broaden(draft: Draft, skill: Skill) -> Draft | None:
    """An existing skill of the same name: widen it to more tools, or restate a rule that changed.

    The same rule failing on more tools widens the skill instead of adding one.
    With the same tools, a body that states something else (a reminder of 30
    minutes where the skill says 15; names now ``Last, First``) means the
    user's preference or the tool changed: the skill is rewritten.
    """
    op = draft.ops[0]
    assert isinstance(op, AddOp)
    if skill.origin != "evolver":
        return None
    tools = sorted(set(skill.tools) | set(op.tools))
    if tools == sorted(skill.tools):
        if _same_rule(op.body, skill.body.replace(", ".join(skill.tools), ", ".join(op.tools))):
            return None
        changed = UpdateOp(op="update", name=op.name, description=op.description, body=op.body,
                           reason=f"the rule changed: {op.reason}", turn_ids=op.turn_ids)
        return Draft([changed], changed.reason, draft.turn_ids, draft.checks, subjects=draft.subjects)
    wider = UpdateOp(op="update", name=op.name, tools=tools,
                     description=op.description.replace(", ".join(op.tools), ", ".join(tools)),
                     body=op.body.replace(", ".join(op.tools), ", ".join(tools)),
                     reason=f"{op.reason}; now seen with {', '.join(tools)}", turn_ids=op.turn_ids)
    return Draft([wider], wider.reason, draft.turn_ids, draft.checks, subjects=draft.subjects)


def _contradicted(draft: Draft, existing: dict[str, Skill]) -> list[str]:
    """Evolver rules about the same argument that the draft's rule now contradicts.

    ``rule-date-must-be-dd-mm-yyyy`` and ``rule-date-must-be-mm-dd-yyyy`` state
    two forms for one argument: the newer tool errors say the older rule no
    longer holds. Any template variant's wording counts; a person's skill never.
    """
    op = draft.ops[0]
    head = re.match(r"(rule-.+?-must)-", op.name)
    if not isinstance(op, AddOp) or head is None:
        return []
    return [name for name, skill in existing.items()
            if name != op.name and name.startswith(head.group(1) + "-")
            and skill.origin == "evolver"]


def subject_of(skill_name: str) -> str | None:
    """What one of the miner's skills is about, from its name: ``rule-date-must-be-...`` -> ``date``.

    In the slug form of ``evolver.context.subject`` (``pref-send-message-notify`` ->
    ``send-message-notify``), so the context optimizer can leave covered things to the skill.
    """
    m = re.match(r"^rule-(.+?)-must(?:-|$)", skill_name) or re.match(r"^pref-(.+)$", skill_name)
    return m.group(1) if m else None


def propose(groups: list[FailureGroup], existing: dict[str, Skill] | set[str], *, min_support: int = 2,
            variant: int = 0, max_drafts: int = 3) -> list[Draft]:
    """Rule-based drafts for the largest recurring failure groups not yet covered."""
    t = TEMPLATES[variant % len(TEMPLATES)]
    drafts: list[Draft] = []
    for g in groups:
        if len(g.cases) < min_support:
            continue
        draft = _error_draft(g, t) if g.kind == "tool_error" else (
            _complaint_draft(g, t) if g.kind == "complaint" else None)
        if draft is None:
            continue
        name = draft.ops[0].name
        if name in existing:
            if not isinstance(existing, dict):
                continue
            draft = _broaden(draft, existing[name])
            if draft is None:
                continue
        if any(d.ops[0].name == draft.ops[0].name for d in drafts):
            continue
        if isinstance(existing, dict):
            stale = _contradicted(draft, existing)
            if stale:
                retire: list[EditOp] = [RetireOp(op="retire", name=n, reason=(
                    f"contradicted by newer tool errors: {draft.reason}"), turn_ids=draft.turn_ids)
                    for n in stale]
                draft = Draft([*draft.ops, *retire], draft.reason, draft.turn_ids, draft.checks,
                              subjects=draft.subjects)
        drafts.append(draft)
        if len(drafts) >= max_drafts:
            break
    return drafts
