"""Skill edit operations: the schema a proposal must follow, and applying them.

Skills written from user traffic are untrusted input. An operation is refused
(never applied, kept as an `invalid` proposal with the reason) when it does
not match the schema (a name that is not a slug, an oversized field), or
when it fails the one safety check (`evolver.safety.check_ops`), which
`parse_ops` runs on a model's answer and `apply_ops` runs again on every
edit, whatever wrote it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from evolver.errors import ProposalRejected
from evolver.safety import MAX_FIELD, check_ops
from store.errors import InvalidInput
from store.skills import Skill, SkillLibrary
from store.skills.edits import EDITS, AddOp, EditOp, MergeOp, RetireOp, UpdateOp, apply_edits
from store.skills.revisions import Revision

__all__ = ["AddOp", "EditOp", "MergeOp", "RetireOp", "UpdateOp", "apply_ops", "candidate_skills", "parse_ops"]

MAX_BODY = MAX_FIELD["body"]
MAX_DESCRIPTION = MAX_FIELD["description"]
_OPS = EDITS


def parse_ops(raw: str | dict[str, Any] | list[Any]) -> list[EditOp]:
    """Parse and check a model's answer: `{"edits": [...]}` or a bare list, maybe in a code fence."""
    data: Any = raw
    if isinstance(raw, str):
        text = raw.strip()
        fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
        if fence:
            text = fence.group(1)
        start = min([i for i in (text.find("{"), text.find("[")) if i >= 0], default=-1)
        if start < 0:
            raise ProposalRejected("the answer holds no JSON")
        try:
            data, _ = json.JSONDecoder().raw_decode(text[start:])
        except json.JSONDecodeError as exc:
            raise ProposalRejected(f"the answer is not valid JSON: {exc.msg}") from exc
    if isinstance(data, dict):
        data = data.get("edits", data.get("operations"))
    if not isinstance(data, list) or not data:
        raise ProposalRejected("expected a non-empty list of edits under 'edits'")
    try:
        ops = _OPS.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ProposalRejected(f"edit does not match the schema at {where}: {first.get('msg')}") from exc
    check_ops(ops)
    return ops


def ops_to_json(ops: Sequence[EditOp]) -> list[dict[str, Any]]:
    return [op.model_dump(exclude_none=True) for op in ops]


def ops_from_json(data: list[dict[str, Any]]) -> list[EditOp]:
    return _OPS.validate_python(data)


def candidate_skills(ops: Sequence[EditOp], current: dict[str, Skill]) -> tuple[dict[str, Skill], set[str]]:
    """What the library would serve after `ops`: (skills added or changed, names removed)."""
    try:
        return apply_edits(ops, current)
    except InvalidInput as exc:
        raise ProposalRejected(str(exc)) from exc


async def apply_ops(library: SkillLibrary, tenant: str, ops: Sequence[EditOp]) -> list[Revision]:
    """Write the edits as revisions by author `evolver`, each as `apply_edits` says it reads.

    The safety check runs here again, so no edit reaches the library without it.
    """
    check_ops(ops)
    revs: list[Revision] = []
    for op in ops:
        current = {n: ls.skill for n, ls in (await library.current(tenant)).items()}
        if isinstance(op, RetireOp):
            r = await library.retire(tenant, op.name, author="evolver", reason=op.reason)
            revs += [r] if r is not None else []
            continue
        changed, _ = candidate_skills([op], current)
        skill = changed[op.name]
        if isinstance(op, MergeOp):
            revs += await library.merge(tenant, skill, op.sources, author="evolver", reason=op.reason)
            continue
        if isinstance(op, UpdateOp):
            r = await library.update(tenant, skill, author="evolver", reason=op.reason)
        else:
            r = await library.put(tenant, skill, author="evolver", reason=op.reason)
        if r is not None:
            revs.append(r)
    return revs
