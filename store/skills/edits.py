"""Skill edits: one typed model and one pure function that applies them.

`add`, `update`, `merge` and `retire`, as the evolver proposes them. Both
places that need to know what an edit does use `apply_edits`: the gate's
candidate library (`store.skills.overlay`, served during a replay) and the
library writes (`evolver.edits.apply_ops`), so what the gate replayed is what
gets written. The semantics, once:

- add: a new skill by the evolver, its provenance the edit's turn ids, scoped
  to its tools when it names any;
- update: the fields the edit gives replace the skill's; the skill is active
  again (a rule restated is in force; the library may still quarantine an
  evolver edit per tenant setting), and the provenance is the old one and
  the edit's, the newest kept;
- merge: one skill replaces its sources;
- retire: the skill is no longer served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from store.errors import InvalidInput
from store.skills.skillfile import MAX_PROVENANCE, Skill

SLUG = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
MAX_BODY, MAX_DESCRIPTION, MAX_CATEGORY, MAX_TOOLS = 4000, 400, 64, 32


class _Op(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)
    turn_ids: list[str] = Field(default_factory=list, max_length=200)


class AddOp(_Op):
    op: Literal["add"]
    name: str = Field(pattern=SLUG)
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION)
    body: str = Field(min_length=1, max_length=MAX_BODY)
    category: str | None = Field(default=None, max_length=MAX_CATEGORY)
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
EDITS: TypeAdapter[list[EditOp]] = TypeAdapter(list[EditOp])


def edit_schema() -> dict[str, object]:
    """The JSON schema of ``{"edits": [...]}`` (for structured output)."""
    return {"type": "object", "properties": {"edits": EDITS.json_schema()}, "required": ["edits"],
            "additionalProperties": False}


def apply_edits(ops: Sequence[EditOp], current: Mapping[str, Skill]) -> tuple[dict[str, Skill], set[str]]:
    """(skills added or changed, names no longer served) after `ops`, in order; InvalidInput if one
    names a skill that does not exist."""
    changed: dict[str, Skill] = {}
    removed: set[str] = set()
    for op in ops:
        prov = tuple(op.turn_ids)
        if isinstance(op, AddOp):
            changed[op.name] = Skill(op.name, op.description, op.body, op.category, tuple(op.tools),
                                     origin="evolver", provenance=prov, scope=op.scope if op.tools else None)
            removed.discard(op.name)
        elif isinstance(op, UpdateOp):
            base = changed.get(op.name) or current.get(op.name)
            if base is None:
                raise InvalidInput(f"update of unknown skill {op.name!r}")
            changed[op.name] = base.with_(
                description=op.description or base.description, body=op.body or base.body, status="active",
                tools=tuple(op.tools) if op.tools is not None else base.tools,
                provenance=tuple(dict.fromkeys(base.provenance + prov))[-MAX_PROVENANCE:])
            removed.discard(op.name)
        elif isinstance(op, MergeOp):
            missing = [s for s in op.sources if s not in current and s not in changed]
            if missing:
                raise InvalidInput(f"merge of unknown skill(s) {missing}")
            changed[op.name] = Skill(op.name, op.description, op.body, origin="evolver", provenance=prov)
            for source in op.sources:
                if source != op.name:
                    changed.pop(source, None)
                    removed.add(source)
        else:
            if op.name not in current and op.name not in changed:
                raise InvalidInput(f"retire of unknown skill {op.name!r}")
            changed.pop(op.name, None)
            removed.add(op.name)
    return changed, removed
