"""A refused argument deep inside a nested tool schema: the readers find where the error points,
and the description draft rewrites that parameter, served where the model reads it.

The tool's schema is pydantic v2's `model_json_schema()` and the errors are the real libraries'
texts (pydantic, FastAPI's 422 body, jsonschema), as a tool built on them answers.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import fastapi
import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field, StringConstraints, ValidationError

from evolver.cases import cases_from_session
from evolver.descriptions import rule_drafts
from evolver.mining import FailureGroup
from evolver.reading import read_error
from store.tool_params import Rewrite, apply_rewrites, param_description

DMY = r"^\d{2}\.\d{2}\.\d{4}$"


class Leg(BaseModel):
    date: Annotated[str, StringConstraints(pattern=DMY)] = Field(description="The day of travel.")
    city: str = Field(description="Where to.")


class Trip(BaseModel):
    outbound: Leg
    back: Leg | None = None  # the same definition: shared
    party: list[str] = Field(description="Who travels.")


TOOLS = [{"type": "function", "function": {"name": "book_trip", "description": "Book a trip.",
                                           "parameters": Trip.model_json_schema()}}]
GOOD = {"outbound": {"date": "27.11.2026", "city": "Oslo"}, "party": ["Ann"]}
BAD = {"outbound": {"date": "2026-11-27", "city": "Oslo"}, "party": ["Ann"]}


def _pydantic_error(args: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as exc:
        Trip(**args)
    return str(exc.value)


def _fastapi_error(args: dict[str, Any]) -> str:
    app = fastapi.FastAPI()

    @app.post("/trips")
    def book(trip: Trip) -> dict[str, str]:
        return {"ok": "yes"}

    r = TestClient(app).post("/trips", json=args)
    assert r.status_code == 422
    return r.text


def _jsonschema_error(args: dict[str, Any]) -> str:
    err = next(jsonschema.Draft202012Validator(Trip.model_json_schema()).iter_errors(args))
    return f"$.{'.'.join(map(str, err.absolute_path))}: {err.message}"


@pytest.mark.parametrize("error", [_pydantic_error, _fastapi_error, _jsonschema_error],
                         ids=["pydantic", "fastapi", "jsonschema"])
def test_readers_say_where_inside_the_argument_the_error_points(error: Any) -> None:
    failure = read_error(error(BAD), "book_trip", BAD)
    assert failure is not None
    [c] = failure.constraints
    assert (c.argument, c.path, c.refused) == ("outbound", "outbound.date", "2026-11-27")


def _call(cid: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": "book_trip", "arguments": json.dumps(args)}}


def _session(n: int, result: str) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "Book Oslo on 27 November for Ann"}]
    bad, good = _call(f"c{n}a", BAD), _call(f"c{n}b", GOOD)

    def turn(idx: int, calls: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": f"turn_{n}_{idx}", "session_id": f"ses_{n}", "tenant_id": "t", "idx": idx,
                "turn_type": "main", "status": "ok", "tool_calls": calls or None, "content": None,
                "request": {"model": "m", "messages": list(msgs), "tools": TOOLS}}

    t0 = turn(0, [bad])
    msgs += [{"role": "assistant", "content": None, "tool_calls": [bad]},
             {"role": "tool", "tool_call_id": bad["id"], "content": result}]
    t1 = turn(1, [good])
    msgs += [{"role": "assistant", "content": None, "tool_calls": [good]},
             {"role": "tool", "tool_call_id": good["id"], "content": '{"trip_id": "t1"}'}]
    return [t0, t1, turn(2, [])]


@pytest.mark.parametrize("error", [_pydantic_error, _fastapi_error], ids=["pydantic", "fastapi"])
def test_a_recurring_nested_error_rewrites_that_parameter_only(error: Any) -> None:
    cases = [c for n in range(3) for c in cases_from_session(_session(n, error(BAD)), [])]
    [draft] = rule_drafts([FailureGroup(cases[0].key, "tool_error", cases[0].message, cases)])
    [rw] = draft.rewrites
    assert (rw.tool, rw.param, rw.base) == ("book_trip", "outbound.date", "The day of travel.")
    assert rw.description == "The day of travel. Write outbound.date as DD.MM.YYYY."

    served, applied = apply_rewrites(TOOLS, [Rewrite(rw.tool, rw.param, rw.description, rw.base)])
    assert len(applied) == 1
    schema = served[0]["function"]["parameters"]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["outbound"]["properties"]["date"]["description"] == rw.description
    # `back` shares the definition: it keeps the agent's words
    assert param_description(served, "book_trip", "back.date") == (True, "The day of travel.")
    assert schema["$defs"] == TOOLS[0]["function"]["parameters"]["$defs"]
    assert jsonschema.Draft202012Validator(schema).is_valid(GOOD)
    assert not jsonschema.Draft202012Validator(schema).is_valid(BAD)
