"""A candidate library: the current skills with a proposal's edits laid over them.

Shared by the evolver (which builds proposals) and serving (which injects a
candidate library when the evolver replays a turn through the proxy). Edits
are the JSON form of `store.skills.edits`; what they do is `apply_edits`,
the same function the library writes use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from store.errors import InvalidInput
from store.skills.edits import EDITS, apply_edits
from store.skills.skillfile import Skill


def overlay(ops: Sequence[Mapping[str, Any]], current: Mapping[str, Skill]) -> tuple[dict[str, Skill], set[str]]:
    """(skills added or changed, names no longer served) after `ops`."""
    try:
        edits = EDITS.validate_python([dict(op) for op in ops])
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"edit does not match the schema: {first.get('msg')}") from exc
    return apply_edits(edits, current)
