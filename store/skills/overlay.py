"""A candidate library: the current skills with a proposal's edits laid over them.

Shared by the evolver (which builds proposals) and serving (which injects a
candidate library when the evolver replays a turn through the proxy).
Edits are the JSON form of the evolver's operations: `add`, `update`,
`merge`, `retire`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from store.errors import InvalidInput
from store.skills.skillfile import Skill


def overlay(ops: Sequence[Mapping[str, Any]], current: Mapping[str, Skill]) -> tuple[dict[str, Skill], set[str]]:
    """(skills added or changed, names no longer served) after `ops`."""
    changed: dict[str, Skill] = {}
    removed: set[str] = set()
    for op in ops:
        kind, name = op.get("op"), str(op.get("name", ""))
        prov = tuple(op.get("turn_ids") or ())
        if kind == "add":
            added_tools = tuple(op.get("tools") or ())
            changed[name] = Skill(name, str(op["description"]), str(op["body"]), op.get("category"),
                                  added_tools, origin="evolver", provenance=prov,
                                  scope=op.get("scope") if added_tools else None)
        elif kind == "update":
            base = changed.get(name) or current.get(name)
            if base is None:
                raise InvalidInput(f"update of unknown skill {name!r}")
            tools = op.get("tools")
            changed[name] = base.with_(description=op.get("description") or base.description,
                                       body=op.get("body") or base.body, status="active",
                                       tools=tuple(tools) if tools is not None else base.tools)
        elif kind == "merge":
            sources = [str(s) for s in op.get("sources") or ()]
            missing = [s for s in sources if s not in current and s not in changed]
            if missing:
                raise InvalidInput(f"merge of unknown skill(s) {missing}")
            changed[name] = Skill(name, str(op["description"]), str(op["body"]), origin="evolver",
                                  provenance=prov)
            removed |= {s for s in sources if s != name}
        elif kind == "retire":
            if name not in current and name not in changed:
                raise InvalidInput(f"retire of unknown skill {name!r}")
            changed.pop(name, None)
            removed.add(name)
        else:
            raise InvalidInput(f"unknown edit {kind!r}")
    return changed, removed
