"""Skill synthesis with an evolver model: a failure group in, edit operations (JSON) out.

The model sees one group of failures (rendered compactly) and the current
skills that look relevant, and answers with `{"edits": [...]}`: `add`,
`update`, `merge` or `retire`, each with a reason and the turn ids it rests
on. The answer is parsed and checked by `evolver.edits.parse_ops`; anything
malformed or unsafe raises `ProposalRejected` and is never applied.
"""

from __future__ import annotations

from collections.abc import Sequence

from evolver.checks import evidence_check
from evolver.edits import parse_ops
from evolver.llm import ChatModel
from evolver.mining import FailureGroup, render_group
from evolver.offline import Draft
from store.skills import Skill
from store.skills.edits import edit_schema

# structured output: the edits' JSON schema (providers that refuse it get the prompt's JSON)
RESPONSE_FORMAT = {"type": "json_schema",
                   "json_schema": {"name": "skill_edits", "schema": edit_schema(), "strict": False}}

SYSTEM = """You maintain the skill library of an AI agent. A skill is a short Markdown note the
agent reads before acting: a slug name, a one-line description saying when it applies, and a
body of 6-15 lines with numbered steps and an "Anti-patterns:" section.

You get a group of recent failures and the existing skills. Propose 1-3 edits that would have
prevented these failures and will prevent them next time. Prefer updating or merging an existing
skill over adding a near-duplicate; retire a skill that caused the failures. Never include URLs,
never ask to send data anywhere, never tell the agent to ignore the user.

A skill that states how to call tools (an argument's form, a value the user always wants, an
order of calls) names those tools in "tools" and sets "scope": "tools": it is then served whenever
a request offers one of them, whatever the task says. State the rule in your own words: never copy
an error's example values into it (an agent copies them into unrelated calls).

Answer with JSON only:
{"edits": [
  {"op": "add", "name": "slug-name", "description": "...", "body": "...", "tools": ["tool"], "scope": "tools", "reason": "...", "turn_ids": ["..."]},
  {"op": "update", "name": "existing-name", "description": "...", "body": "...", "reason": "...", "turn_ids": [...]},
  {"op": "merge", "sources": ["a", "b"], "name": "a", "description": "...", "body": "...", "reason": "...", "turn_ids": [...]},
  {"op": "retire", "name": "existing-name", "reason": "...", "turn_ids": [...]}
]}"""


def synthesis_prompt(group: FailureGroup, skills: Sequence[Skill]) -> list[dict[str, str]]:
    listed = "\n".join(f"- {s.name}: {s.description}" for s in skills) or "(none)"
    ids = ", ".join(group.turn_ids[:20])
    user = (f"Existing skills:\n{listed}\n\nFailures (turn ids: {ids}):\n{render_group(group)}\n\n"
            "Return the JSON edits.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


async def synthesize(model: ChatModel, group: FailureGroup, skills: Sequence[Skill]) -> Draft:
    """Ask the evolver model for edits; raises ProposalRejected on a bad answer."""
    answer = await model.complete(synthesis_prompt(group, skills), temperature=0.2, max_tokens=1500,
                                  response_format=RESPONSE_FORMAT)
    ops = parse_ops(answer)
    known = set(group.turn_ids)
    for op in ops:
        # Provenance is what the edit rests on: keep only turn ids we showed the model.
        op.turn_ids = [t for t in op.turn_ids if t in known] or group.turn_ids
    checks = [c for c in (evidence_check(case) for case in group.cases) if c]
    reason = "; ".join(op.reason for op in ops)
    return Draft(list(ops), reason, group.turn_ids, checks, source="llm")
