"""The offline evolver: rule-based skills from recurring tool errors and complaints.

With no evolver model configured, molt still learns from what tools and users
say. A tool error that recurs (the same reading, >= `min_support` times)
becomes a skill stating the constraint in molt's own words (`evolver.rules`:
``write date as DD.MM.YYYY``), never the error's text or its example values;
a complaint read as a wish (`evolver.complaints`) becomes a skill asking for
that value, or for an order of calls: one is enough (`wish_min_support`), the
user said what they want, and the gate still replays it. Every such skill says in its
description that it was written by the rule-based miner, from how many cases.

What the tools said is untrusted data. Where no reader understood an error,
the miner quotes it only as data (`evolver.safety.quote`: "the tool said:
«...»"), never as an instruction of its own, and every draft passes the one
safety check before it is gated (`evolver.loop`), so a tool error that reads
like an order to the model is refused with the reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from evolver.cases import Case
from evolver.checks import Check, fix_check, form_check, wish_check
from evolver.edits import AddOp, EditOp, RetireOp, UpdateOp
from evolver.mining import FailureGroup
from evolver.reading import Constraint
from evolver.rules import Statement, line_for, state_constraint, state_wish
from evolver.safety import data_reason, quote
from store.skills import Skill

MARK = "Written by molt's rule-based miner"

# Compact: the skills block of a small policy holds every standing rule at once (7 rules in
# about 300 tokens), so the rule is the body's first line and the tools are named once, in it.
LAYOUT: dict[str, str] = {
    "error_desc": "{mark} from {n} tool errors.",
    "error_body": "{rule}\n{example}{anti}",
    "example": "Accepted example: {args}.\n",
    "anti": "\nAnti-patterns:\n- {refused}",
    "refused": "Sending {value} (the tool refused it).",
    "pref_desc": "{mark} from {n} user complaints.",
    "pref_body": "{rule}",
    "order_desc": "{mark} from {n} user complaints.",
    "order_body": "{rule}",
}


@dataclass
class Draft:
    """A proposal before the gate: edit ops, the turns they rest on, the checks to replay."""

    ops: list[EditOp]
    reason: str
    turn_ids: list[str]
    checks: list[Check] = field(default_factory=list)
    source: str = "offline"
    # what the rules are about (``date``, ``notify_user urgent``): context lines about the
    # same thing give way to the skill (``evolver.context.subject``)
    subjects: list[str] = field(default_factory=list)


def slugify(text: str, limit: int = 48) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].strip("-") or "skill"


def _fmt_args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in args.items())


_GOT = re.compile(r"[,;(]?\s*\b(?:got|received|but was)\b.*$", re.IGNORECASE | re.DOTALL)


def unread_constraint(message: str) -> str:
    """An error no reader understood, without the refused value: ``order_id must be digits only``."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return _GOT.sub("", first.removeprefix("error:").strip()).strip().rstrip(".")


def main_constraint(g: FailureGroup) -> Constraint | None:
    failure = g.cases[0].reading()
    if failure is None:
        return None
    ranked = sorted((c for c in failure.constraints if c.argument),
                    key=lambda c: (not c.states_form, c.kind not in ("choice", "range")))
    return ranked[0] if ranked else None


def _checks(cases: list[Case]) -> list[Check]:
    # hindsight fixes first (the stronger evidence), then the form the error states
    hindsight = [fix_check(case) for case in cases]
    checks = [c for c in hindsight if c]
    checks += [c for c in (form_check(case) for case, h in zip(cases, hindsight) if h is None) if c]
    return checks


def _error_draft(g: FailureGroup) -> Draft | None:
    first = g.cases[0]
    checks = _checks(g.cases)
    tools = ", ".join(g.tools)
    constraint = main_constraint(g)
    stated: Statement | None = state_constraint(constraint, g.cases) if constraint else None
    example = anti = ""
    if stated is not None:  # understood: molt's own words, no value from the error or another task
        rule = line_for(g.tools, stated.words)
        form = stated.slug not in _KINDS
        name = slugify(f"rule {stated.argument} {'as ' if form else ''}{stated.slug}", limit=64)
        why = f"{stated.argument} {stated.slug}"
        subjects = [stated.argument]
    else:  # not understood: what the tool said, quoted as data, with the values the session shows
        said = (constraint.said if constraint is not None and constraint.said
                else unread_constraint(first.message))
        if not said:
            return None
        rule = line_for(g.tools, f"the tool said: {quote(said)}")
        fixed = next((c for c in g.cases if c.target is not None), None)
        changed = {k: v for k, v in fixed.target[1].items()
                   if (fixed.extras.get("arguments") or {}).get(k) != v} if fixed and fixed.target else {}
        accepted = _fmt_args(changed) if changed else None
        failure = first.reading()
        refused = next((c.refused for c in (failure.constraints if failure else ())
                        if c.refused is not None), None)
        refused_text = str(refused) if refused is not None else None
        # an example is optional: one the safety check would refuse as data is left out
        if accepted is not None and data_reason(accepted) is None:
            example = LAYOUT["example"].format(args=quote(accepted))
        if refused_text is not None and data_reason(refused_text) is None:
            anti = LAYOUT["anti"].format(refused=LAYOUT["refused"].format(value=quote(refused_text)))
        name = slugify("rule " + " ".join(said.split()[:4]))
        why = quote(said)
        subjects = []
    op = AddOp(op="add", name=name, description=LAYOUT["error_desc"].format(mark=MARK, n=len(g.cases), tools=tools),
               body=LAYOUT["error_body"].format(mark=MARK, n=len(g.cases), rule=rule, example=example,
                                                anti=anti).rstrip(),
               tools=g.tools, category="tool-rules", scope="tools",
               reason=f"recurring tool error ({len(g.cases)}x): {why}", turn_ids=g.turn_ids)
    return Draft([op], op.reason, g.turn_ids, checks, subjects=subjects)


def _complaint_draft(g: FailureGroup) -> Draft | None:
    wish = next((c.wish for c in g.cases if c.wish is not None), None)
    if wish is None:
        return None
    checks = [c for c in (wish_check(case, wish) for case in g.cases) if c]
    rule = line_for([wish.tool] if wish.before is None else [], state_wish(wish))
    reason = f"recurring complaint ({len(g.cases)}x): {wish.key}"
    if wish.before is None:
        op = AddOp(op="add", name=slugify(f"pref {wish.tool} {wish.param}"),
                   description=LAYOUT["pref_desc"].format(mark=MARK, n=len(g.cases), tool=wish.tool),
                   body=LAYOUT["pref_body"].format(mark=MARK, n=len(g.cases), rule=rule),
                   tools=[wish.tool], category="preferences", scope="tools", reason=reason, turn_ids=g.turn_ids)
        return Draft([op], op.reason, g.turn_ids, checks, subjects=[f"{wish.tool} {wish.param}"])
    op = AddOp(op="add", name=slugify(f"order {wish.tool} before {wish.before}"),
               description=LAYOUT["order_desc"].format(mark=MARK, n=len(g.cases), first=wish.tool,
                                                             then=wish.before),
               body=LAYOUT["order_body"].format(mark=MARK, n=len(g.cases), rule=rule),
               tools=[wish.tool, wish.before], category="preferences", scope="tools", reason=reason,
               turn_ids=g.turn_ids)
    return Draft([op], op.reason, g.turn_ids, checks)


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

    ``rule-date-dd-mm-yyyy`` and ``rule-date-mm-dd-yyyy`` state two forms for
    one argument: the newer tool errors say the older rule no longer holds.
    A person's skill never counts.
    """
    op = draft.ops[0]
    if not isinstance(op, AddOp) or not draft.subjects or not op.name.startswith("rule-"):
        return []
    head = f"rule-{slugify(draft.subjects[0])}-"
    return [name for name, skill in existing.items()
            if name != op.name and name.startswith(head) and skill.origin == "evolver"
            and subject_of(name) == slugify(draft.subjects[0])]


_KINDS = ("pattern", "one-of", "range", "required", "unexpected", "type")


def subject_of(skill_name: str) -> str | None:
    """What one of the miner's skills is about, from its name: ``rule-date-dd-mm-yyyy`` -> ``date``.

    In the slug form of ``evolver.rules.subject`` (``pref-send-message-notify`` ->
    ``send-message-notify``), so the context optimizer can leave covered things to the skill.
    """
    m = re.match(r"^pref-(.+)$", skill_name)
    if m:
        return m.group(1)
    m = re.match(r"^rule-(.+?)-(?:as-.+|" + "|".join(_KINDS) + r")$", skill_name)
    return m.group(1) if m else None


def support_needed(g: FailureGroup, min_support: int, wish_support: int | None) -> int:
    """How many cases a group needs before a rule is proposed: a complaint read as a wish is the
    user stating what they want (``wish_support``), anything else must recur (``min_support``)."""
    if wish_support is not None and g.kind == "complaint" and any(c.wish is not None for c in g.cases):
        return wish_support
    return min_support


def propose(groups: list[FailureGroup], existing: dict[str, Skill] | set[str], *, min_support: int = 2,
            max_drafts: int = 3, wish_support: int | None = None) -> list[Draft]:
    """Rule-based drafts for the largest recurring failure groups not yet covered."""
    drafts: list[Draft] = []
    for g in groups:
        if len(g.cases) < support_needed(g, min_support, wish_support):
            continue
        draft = _error_draft(g) if g.kind == "tool_error" else (
            _complaint_draft(g) if g.kind == "complaint" else None)
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
