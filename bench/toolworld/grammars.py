"""How toolworld's tools say no: the error grammars of real APIs, produced by the real libraries.

``toolworld`` is the world's own plain text (``error: date must be
DD.MM.YYYY, got 2026-11-27``). The others validate the call with a real
library against the tool's schema plus the conventions in force, and answer
in that library's words:

- ``pydantic``: a pydantic v2 model per tool (extra arguments forbidden,
  strict types, ``Literal`` enums, bounds, a pattern for times and names, and
  a custom validator for dates whose message gives a pattern description and
  an example value, as many APIs do); the text is ``str(ValidationError)``;
- ``jsonschema``: the tool's JSON schema with ``pattern``, bounds and
  ``additionalProperties: false``, checked by ``Draft202012Validator``; one
  line per error, ``<json path>: <message>``;
- ``problem-json``: an RFC 9457 problem details body with ``invalid-params``.

The validation the library does agrees with the tools' own (the same
patterns and bounds), so the verifier's scores do not depend on the
grammar. What the world refuses for other reasons (no such contact) stays in
the world's plain text.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from functools import cache
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
)

from bench.toolworld.conventions import DATE_PATTERNS, TIME_PATTERNS, Conventions, format_date

GRAMMARS = ("toolworld", "pydantic", "jsonschema", "problem-json")

TIME_REGEX = {"h24": r"^([01]\d|2[0-3]):([0-5]\d)$", "h12": r"^(1[0-2]|[1-9])(:[0-5]\d)?(am|pm)$"}
NAME_REGEX = {"last_first": r"^[^,\s]+, [^,]+$", "first_last": r"^[^,]+$"}
NAME_FORM = {"last_first": "Last, First", "first_last": "First Last"}
BOUNDS: dict[tuple[str, str], tuple[int, int]] = {
    ("book_table", "party_size"): (1, 12), ("create_event", "duration_min"): (5, 600),
    ("create_event", "reminder_min"): (0, 1440),
}
_EXAMPLE_DAY = dt.date(2026, 3, 5)  # deliberately ambiguous: 05.03 or 03.05


def _kind(tool: str, param: str) -> str | None:
    """Which convention governs an argument: date, time, name, or none."""
    if param == "date":
        return "date"
    if param in ("time", "start"):
        return "time"
    if tool == "find_contact" and param == "name":
        return "name"
    return None


def _pattern(kind: str, conventions: Conventions) -> str:
    if kind == "date":
        return "^" + DATE_PATTERNS[conventions["date"]][0] + "$"
    if kind == "time":
        return TIME_REGEX[conventions["time"]]
    return NAME_REGEX[conventions["name_order"]]


_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}


def _date_check(style: str) -> AfterValidator:
    human = DATE_PATTERNS[style][1]
    regex = DATE_PATTERNS[style][0]

    def check(value: str) -> str:
        if not re.fullmatch(regex, value):
            raise ValueError(f"date should be in {human} format, e.g. {format_date(_EXAMPLE_DAY, style)}")
        return value

    return AfterValidator(check)


@cache
def _model(tool: str, conv_items: tuple[tuple[str, str], ...]) -> type[BaseModel]:
    from bench.toolworld.tools import TOOLS

    conventions = dict(conv_items)
    fields: dict[str, Any] = {}
    for name, p in TOOLS[tool].params.items():
        kind = _kind(tool, name)
        base: Any = Literal[tuple(p.enum)] if p.enum else _TYPES[p.type]  # type: ignore[valid-type]
        if kind == "date":
            base = Annotated[str, _date_check(conventions["date"])]
        elif kind is not None:
            base = Annotated[str, StringConstraints(pattern=_pattern(kind, conventions))]
        bounds = BOUNDS.get((tool, name))
        if bounds is not None:
            base = Annotated[int, Field(ge=bounds[0], le=bounds[1])]
        fields[name] = (base, ...) if p.required else (base | None, None)
    return create_model(tool, __config__=ConfigDict(extra="forbid", strict=True), **fields)


def _schema(tool: str, conventions: Conventions) -> dict[str, Any]:
    from bench.toolworld.tools import TOOLS

    params = TOOLS[tool].schema()["function"]["parameters"]
    props = {k: dict(v) for k, v in params["properties"].items()}
    for name, prop in props.items():
        prop.pop("description", None)
        kind = _kind(tool, name)
        if kind is not None:
            prop["pattern"] = _pattern(kind, conventions)
        bounds = BOUNDS.get((tool, name))
        if bounds is not None:
            prop["minimum"], prop["maximum"] = bounds
    return {"type": "object", "properties": props, "required": params["required"], "additionalProperties": False}


def _present(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if v is not None}  # toolworld reads null as absent


def pydantic_error(tool: str, args: dict[str, Any], conventions: Conventions) -> str | None:
    try:
        _model(tool, tuple(sorted(conventions.items())))(**_present(args))
    except ValidationError as exc:
        return str(exc)
    return None


def jsonschema_error(tool: str, args: dict[str, Any], conventions: Conventions) -> str | None:
    validator = jsonschema.Draft202012Validator(_schema(tool, conventions))
    errors = sorted(validator.iter_errors(_present(args)), key=lambda e: list(map(str, e.path)))
    return "\n".join(f"{e.json_path}: {e.message}" for e in errors) or None


def _reason(kind: str | None, conventions: Conventions, error: jsonschema.ValidationError) -> str:
    if kind == "date" and error.validator == "pattern":
        return f"expected format {DATE_PATTERNS[conventions['date']][1]}"
    if kind == "time" and error.validator == "pattern":
        return f"expected {TIME_PATTERNS[conventions['time']]}"
    if kind == "name" and error.validator == "pattern":
        return f"expected the name as {NAME_FORM[conventions['name_order']]}"
    if error.validator == "enum":
        return "expected one of " + ", ".join(map(str, error.validator_value))
    if error.validator in ("minimum", "maximum"):
        return f"expected a value {'at least' if error.validator == 'minimum' else 'at most'} {error.validator_value}"
    if error.validator == "type":
        return f"expected {'an' if str(error.validator_value)[0] in 'aeiou' else 'a'} {error.validator_value}"
    return "not accepted"


def problem_json_error(tool: str, args: dict[str, Any], conventions: Conventions) -> str | None:
    validator = jsonschema.Draft202012Validator(_schema(tool, conventions))
    errors = list(validator.iter_errors(_present(args)))
    if not errors:
        return None
    invalid = []
    for e in errors:
        if e.validator == "required":
            name = re.match(r"'(\w+)'", e.message)
            invalid.append({"name": name.group(1) if name else "", "reason": "is required"})
        elif e.validator == "additionalProperties":
            for extra in sorted(set(_present(args)) - set(e.schema.get("properties", {}))):
                invalid.append({"name": extra, "reason": "is not a known parameter"})
        else:
            name = str(e.path[0]) if e.path else ""
            invalid.append({"name": name, "reason": _reason(_kind(tool, name), conventions, e)})
    return json.dumps({"type": "about:blank", "title": "Unprocessable Content", "status": 422,
                       "detail": f"{len(invalid)} invalid parameter{'s' if len(invalid) != 1 else ''}",
                       "invalid-params": invalid})


_BY_GRAMMAR = {"pydantic": pydantic_error, "jsonschema": jsonschema_error, "problem-json": problem_json_error}


def library_error(grammar: str, tool: str, args: dict[str, Any], conventions: Conventions) -> str | None:
    """The refusal of ``tool(args)`` in ``grammar`` (None: the library accepts the call)."""
    if grammar == "toolworld":
        return None
    if grammar not in _BY_GRAMMAR:
        raise ValueError(f"unknown error grammar {grammar!r}; known: {', '.join(GRAMMARS)}")
    return _BY_GRAMMAR[grammar](tool, args, conventions)
