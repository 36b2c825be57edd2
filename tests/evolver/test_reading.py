"""The error readers on texts the real libraries produce (pydantic, jsonschema, FastAPI).

Each row: a schema, arguments the schema refuses, and what a reader must find
in the library's own error text: the argument, the refused value, and the
accepted form (pattern, choices, bounds). Errors about something else yield
no constraint on the argument, and successful results are not errors.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import fastapi
import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from evolver.reading import Constraint, placeholder_regex, read_error

DMY = r"^\d{2}\.\d{2}\.\d{4}$"


class Booking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    date: Annotated[str, StringConstraints(pattern=DMY)]
    units: Literal["metric", "imperial"] = "metric"
    party_size: int = Field(ge=1, le=12)


class Event(BaseModel):
    start: str

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        if not re.fullmatch(r"\d{2}:\d{2}", v):
            raise ValueError("start should be written HH:MM, e.g. 07:45")
        return v


GOOD = {"date": "27.11.2026", "units": "metric", "party_size": 2}
# (arguments, argument, refused, what the constraint must state)
TABLE: list[tuple[dict[str, Any], str, Any, dict[str, Any]]] = [
    ({**GOOD, "date": "2026-11-27"}, "date", "2026-11-27", {"kind": "form", "pattern": DMY}),
    ({**GOOD, "units": "kelvin"}, "units", "kelvin", {"kind": "choice", "choices": ("metric", "imperial")}),
    ({**GOOD, "party_size": 40}, "party_size", 40, {"kind": "range", "maximum": 12.0}),
    ({**GOOD, "party_size": 0}, "party_size", 0, {"kind": "range", "minimum": 1.0}),
]


def _pydantic_text(args: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as exc:
        Booking(**args)
    return str(exc.value)


def _only(text: str, args: dict[str, Any], tool: str = "book") -> Constraint:
    failure = read_error(text, tool, args)
    assert failure is not None, text
    assert len(failure.constraints) == 1, failure
    return failure.constraints[0]


def _assert(c: Constraint, arg: str, refused: Any, want: dict[str, Any]) -> None:
    assert c.argument == arg
    assert c.refused == refused
    for key, value in want.items():
        assert getattr(c, key) == value, (key, c)


@pytest.mark.parametrize(("args", "arg", "refused", "want"), TABLE)
def test_pydantic_validation_error_text(args: dict[str, Any], arg: str, refused: Any, want: dict[str, Any]) -> None:
    text = _pydantic_text(args)
    assert read_error(text, "book", args).grammar == "pydantic"  # type: ignore[union-attr]
    _assert(_only(text, args), arg, refused, want)


def test_pydantic_custom_validator_states_a_placeholder_form_and_an_example() -> None:
    with pytest.raises(ValidationError) as exc:
        Event(start="7pm")
    c = _only(str(exc.value), {"start": "7pm"})
    _assert(c, "start", "7pm", {"kind": "form", "forms": ("HH:MM",), "examples": ("07:45",)})
    assert placeholder_regex("HH:MM") == r"\d{2}:\d{2}"


def test_pydantic_missing_and_extra_arguments() -> None:
    args = {"units": "metric", "party_size": 2, "colour": "red"}
    failure = read_error(_pydantic_text(args), "book", args)
    assert failure is not None
    assert {(c.argument, c.kind) for c in failure.constraints} == {("date", "missing"), ("colour", "unexpected")}


SCHEMA = {"type": "object", "additionalProperties": False, "required": ["date", "party_size"],
          "properties": {"date": {"type": "string", "pattern": DMY},
                         "units": {"enum": ["metric", "imperial"]},
                         "party_size": {"type": "integer", "minimum": 1, "maximum": 12}}}


@pytest.mark.parametrize(("args", "arg", "refused", "want"), TABLE)
@pytest.mark.parametrize("with_path", [True, False])
def test_jsonschema_messages(args: dict[str, Any], arg: str, refused: Any, want: dict[str, Any],
                             with_path: bool) -> None:
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(args))
    assert len(errors) == 1
    e = errors[0]
    text = f"{e.json_path}: {e.message}" if with_path else e.message
    assert read_error(text, "book", args).grammar == "jsonschema"  # type: ignore[union-attr]
    _assert(_only(text, args), arg, refused, want)


def _fastapi_body(args: dict[str, Any]) -> str:
    app = fastapi.FastAPI()

    @app.post("/book")
    def book(b: Booking) -> dict[str, str]:
        return {"ok": "yes"}

    with TestClient(app) as client:
        r = client.post("/book", json=args)
    assert r.status_code == 422
    return r.text


@pytest.mark.parametrize(("args", "arg", "refused", "want"), TABLE)
def test_fastapi_422_detail_lists(args: dict[str, Any], arg: str, refused: Any, want: dict[str, Any]) -> None:
    text = _fastapi_body(args)
    assert read_error(text, "book", args).grammar == "fastapi"  # type: ignore[union-attr]
    _assert(_only(text, args), arg, refused, want)


@pytest.mark.parametrize(("args", "arg", "refused", "want"), TABLE)
def test_envelopes_around_library_messages(args: dict[str, Any], arg: str, refused: Any,
                                           want: dict[str, Any]) -> None:
    e = next(iter(jsonschema.Draft202012Validator(SCHEMA).iter_errors(args)))
    openai_style = json.dumps({"error": {"message": e.message, "type": "invalid_request_error",
                                         "param": arg, "code": None}})
    mcp = json.dumps({"isError": True, "content": [{"type": "text", "text": _pydantic_text(args)}]})
    http = json.dumps({"statusCode": 400, "error": "Bad Request", "message": e.message})
    for text, grammar in ((openai_style, "openai+jsonschema"), (mcp, "mcp+pydantic"),
                          (http, "http-json+jsonschema")):
        failure = read_error(text, "book", args)
        assert failure is not None and failure.grammar == grammar
        _assert(_only(text, args), arg, refused, want)


def test_problem_json_invalid_params() -> None:
    args = {**GOOD, "date": "2026-11-27"}
    text = json.dumps({"type": "about:blank", "title": "Unprocessable Content", "status": 422,
                       "detail": "1 parameter is invalid",
                       "invalid-params": [{"name": "date", "reason": "expected format DD.MM.YYYY"}]})
    c = _only(text, args)
    _assert(c, "date", "2026-11-27", {"kind": "form", "forms": ("DD.MM.YYYY",)})


def test_plain_text_must_be_got() -> None:
    args = {**GOOD, "date": "2026-11-27"}
    c = _only("error: date must be DD.MM.YYYY, got 2026-11-27", args)
    _assert(c, "date", "2026-11-27", {"kind": "form", "forms": ("DD.MM.YYYY",)})


@pytest.mark.parametrize("result", [
    '{"booking_id": "b1"}', '["19:00 Dinner"]', "Booked for 2 people.", '{"status": 200, "message": "ok"}',
    '{"isError": false, "content": [{"type": "text", "text": "done"}]}',
])
def test_results_that_went_through_are_not_errors(result: str) -> None:
    assert read_error(result, "book", GOOD) is None


@pytest.mark.parametrize("result", [
    "error: no restaurant with id r9", '{"error": {"message": "Rate limit reached", "type": "rate_limit"}}',
    json.dumps({"type": "about:blank", "title": "Service Unavailable", "status": 503}),
    '{"isError": true, "content": [{"type": "text", "text": "upstream timed out"}]}',
])
def test_unrelated_errors_produce_no_rule(result: str) -> None:
    failure = read_error(result, "book", GOOD)
    assert failure is not None  # it is an error ...
    assert not any(c.states_form or c.choices or c.kind == "range" for c in failure.constraints)
