"""Tool parameter schemas: finding a parameter, and laying description rewrites over a tools list.

Pure functions on the Chat Completions `tools` shape, shared by the proxy's
overlay hook (proxy/tool_overlay_injection.py) and the evolver's drafts.

An overlay names a tool, a parameter (a path, ``address.city``, that reads
through `$ref`, `anyOf`/`oneOf`/`allOf` and array items: store/param_paths.py,
which also says where a rewrite is written) and the description to serve for
it, with the agent's own description it was written for (`base`). It is laid
only where the agent's schema still says `base` (or, for a base of None, says nothing): an
agent that rewrote its own description gets its own words, never a rewrite of
something it no longer sends. Nothing else in the schema changes, and the
agent's list is never mutated (a copy carries the change).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from store.chat_shapes import tool_schemas
from store.param_paths import describe, set_description


@dataclass(frozen=True, slots=True)
class Rewrite:
    tool: str
    param: str
    description: str
    base: str | None
    # the overlay version this rewrite serves (store/tool_overlays.py), when it is one
    overlay_id: str | None = None
    version: int | None = None

    def served(self) -> dict[str, Any]:
        """How a turn records that this rewrite served it."""
        return {"id": self.overlay_id, "version": self.version, "tool": self.tool, "param": self.param}


def function_of(tool: Any) -> dict[str, Any] | None:
    """A Chat Completions function tool's `function` object, or None for any other tool."""
    if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
        return None
    fn = tool.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        return None
    return fn


def param_description(tools: Any, tool: str, param: str) -> tuple[bool, str | None]:
    """(whether `tool` offers `param`, its description) in a request's tools."""
    fn = tool_schemas({"tools": tools}).get(tool)
    return describe(fn.get("parameters"), param) if fn is not None else (False, None)


def apply_rewrites(tools: list[Any], rewrites: Sequence[Rewrite]) -> tuple[list[Any], list[Rewrite]]:
    """The tools with the rewrites laid over them, and the rewrites that applied."""
    by_tool: dict[str, list[Rewrite]] = {}
    for r in rewrites:
        by_tool.setdefault(r.tool, []).append(r)
    out: list[Any] = []
    applied: list[Rewrite] = []
    for tool in tools:
        fn = function_of(tool)
        todo = by_tool.get(fn["name"], []) if fn is not None else []
        if not todo:
            out.append(tool)
            continue
        new = copy.deepcopy(tool)
        params = new["function"].get("parameters")
        for r in todo:
            if set_description(params, r.param, r.description, base=r.base):
                applied.append(r)
        out.append(new if any(a.tool == fn["name"] for a in applied) else tool)  # type: ignore[index]
    return out, applied
