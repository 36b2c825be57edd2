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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from evolver.errors import ProposalRejected
from evolver.safety import MAX_FIELD, MAX_TOOLS, check_ops
from store.errors import InvalidInput
from store.skills import Skill, SkillLibrary
from store.skills.overlay import overlay
from store.skills.revisions import Revision
from store.skills.skillfile import MAX_PROVENANCE

SLUG = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
MAX_BODY = MAX_FIELD["body"]
MAX_DESCRIPTION = MAX_FIELD["description"]


class _Op(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)
    turn_ids: list[str] = Field(default_factory=list, max_length=200)


class AddOp(_Op):
    op: Literal["add"]
    name: str = Field(pattern=SLUG)
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION)
    body: str = Field(min_length=1, max_length=MAX_BODY)
    category: str | None = Field(default=None, max_length=MAX_FIELD["category"])
    tools: list[str] = Field(default_factory=list, max_length=MAX_TOOLS)
    # "tools": a standing rule, served whenever a request offers one of `tools`
    scope: Literal["tools"] | None = None


class UpdateOp(_Op):
    op: Literal["update"]
    name: str = Field(pattern=SLUG)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    body: str | None = Field(default=None, max_length=MAX_BODY)
    tools: list[str] | None = Field(default=None, max_length=MAX_TOOLS)


class MergeOp(_Op):
    op: Literal["merge"]
    sources: list[str] = Field(min_length=2, max_length=8)
    name: str = Field(pattern=SLUG)
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION)
    body: str = Field(min_length=1, max_length=MAX_BODY)


class RetireOp(_Op):
    op: Literal["retire"]
    name: str = Field(pattern=SLUG)


EditOp = Annotated[AddOp | UpdateOp | MergeOp | RetireOp, Field(discriminator="op")]
_OPS = TypeAdapter(list[EditOp])


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
        return overlay(ops_to_json(ops), current)
    except InvalidInput as exc:
        raise ProposalRejected(str(exc)) from exc


async def apply_ops(library: SkillLibrary, tenant: str, ops: Sequence[EditOp]) -> list[Revision]:
    """Write the edits as revisions by author `evolver`, provenance = the turn ids.

    The safety check runs here again, so no edit reaches the library without it.
    """
    check_ops(ops)
    revs: list[Revision] = []
    for op in ops:
        prov = tuple(op.turn_ids)
        if isinstance(op, AddOp):
            skill = Skill(op.name, op.description, op.body, op.category, tuple(op.tools),
                          origin="evolver", provenance=prov, scope=op.scope if op.tools else None)
            r = await library.put(tenant, skill, author="evolver", reason=op.reason)
        elif isinstance(op, UpdateOp):
            cur = (await library.get(tenant, op.name)).skill
            skill = cur.with_(description=op.description or cur.description, body=op.body or cur.body,
                              tools=tuple(op.tools) if op.tools is not None else cur.tools,
                              provenance=tuple(dict.fromkeys(cur.provenance + prov))[-MAX_PROVENANCE:])
            r = await library.update(tenant, skill, author="evolver", reason=op.reason)
        elif isinstance(op, MergeOp):
            merged = Skill(op.name, op.description, op.body, origin="evolver", provenance=prov)
            revs += await library.merge(tenant, merged, op.sources, author="evolver", reason=op.reason)
            continue
        else:
            r = await library.retire(tenant, op.name, author="evolver", reason=op.reason)
        if r is not None:
            revs.append(r)
    return revs
