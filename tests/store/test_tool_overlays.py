"""Tool description overlays: versions, activation, revert; and laying them over a tools list."""

from __future__ import annotations

import copy

import pytest

from store.database import Database
from store.errors import InvalidInput, NotFound
from store.ids import new_id
from store.tool_overlays import ToolOverlayStore
from store.tool_params import Rewrite, apply_rewrites, param_description


async def test_versions_activate_and_revert_to_the_one_replaced(db: Database) -> None:
    store, tenant = ToolOverlayStore(db), new_id("ten")
    v1 = await store.add_candidate(tenant, "book", "date", "The date. Write date as DD.MM.YYYY.",
                                   base="The date.", proposal_id="p1", reason="r1")
    assert (v1.version, v1.status) == (1, "candidate")
    assert await store.active(tenant) == []  # a candidate is not served
    await store.activate(v1.id)
    v2 = await store.add_candidate(tenant, "book", "date", "The date, as DD.MM.YYYY.", base="The date.",
                                   proposal_id="p2", reason="r2")
    assert v2.version == 2
    assert [o.id for o in await store.for_proposal("p2")] == [v2.id]
    await store.activate(v2.id)
    assert [(o.id, o.status) for o in await store.active(tenant)] == [(v2.id, "active")]
    assert (await store.get(v1.id)).status == "superseded"

    reverted, restored = await store.revert(tenant, v2.id)
    assert reverted.status == "reverted" and restored is not None and restored.id == v1.id
    assert [o.id for o in await store.active(tenant)] == [v1.id]
    reverted, restored = await store.revert(tenant, v1.id)
    assert restored is None and await store.active(tenant) == []
    assert [o.status for o in await store.overlays(tenant)] == ["reverted", "reverted"]

    with pytest.raises(InvalidInput):
        await store.revert(tenant, v1.id)  # only an active one reverts
    with pytest.raises(NotFound):
        await store.revert(new_id("ten"), v1.id)  # another tenant's
    v3 = await store.add_candidate(tenant, "book", "date", "x", base=None, proposal_id="p3", reason=None)
    await store.reject([v3.id])
    with pytest.raises(InvalidInput):
        await store.activate(v3.id)


TOOLS = [
    {"type": "function", "function": {"name": "book", "parameters": {
        "type": "object",
        "properties": {"date": {"type": "string", "description": "The date."},
                       "where": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }}},
    {"type": "function", "function": {"name": "other", "parameters": {
        "type": "object", "properties": {"date": {"type": "string", "description": "The date."}}}}},
]


def test_rewrites_apply_only_over_the_base_they_were_written_for() -> None:
    original = copy.deepcopy(TOOLS)
    rewrites = [Rewrite("book", "date", "The date, as DD.MM.YYYY.", "The date."),
                Rewrite("book", "where.city", "A city name.", None),
                Rewrite("book", "missing", "x", None),
                Rewrite("other", "date", "y", "An older description.")]
    out, applied = apply_rewrites(TOOLS, rewrites)
    assert TOOLS == original  # the agent's list is not mutated
    assert [(r.tool, r.param) for r in applied] == [("book", "date"), ("book", "where.city")]
    assert param_description(out, "book", "date") == (True, "The date, as DD.MM.YYYY.")
    assert param_description(out, "book", "where.city") == (True, "A city name.")
    assert out[1] is TOOLS[1]  # an agent that changed its description keeps its own words
    assert param_description(out, "book", "missing") == (False, None)
