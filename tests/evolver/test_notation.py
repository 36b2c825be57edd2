"""Forms named from a pattern the real libraries print: the rule says the form, never a regex or a value.

A validator that states a form only as a regular expression (pydantic's
``String should match pattern``, jsonschema's ``does not match``) gave a rule
quoting the regex, which the tiny policy could not follow (the gate rejected
it every time: day 12's contact names were never learned). The refused value,
rewritten in a notation the pattern accepts, names the form in molt's words.
"""

from __future__ import annotations

from typing import Annotated, Any

import jsonschema
import pytest
from pydantic import BaseModel, StringConstraints, ValidationError

from evolver.cases import Case
from evolver.notation import form_for
from evolver.reading import read_error
from evolver.rules import state_constraint

H12 = r"^(1[0-2]|[1-9])(:[0-5]\d)?(am|pm)$"
H24 = r"^([01]\d|2[0-3]):([0-5]\d)$"
LAST_FIRST = r"^[^,\s]+, [^,]+$"
SLASHED = r"^(\d{2})/(\d{2})/(\d{4})$"


class Booking(BaseModel):
    time: Annotated[str, StringConstraints(pattern=H12)] = "7pm"
    name: Annotated[str, StringConstraints(pattern=LAST_FIRST)] = "Berg, Ann"
    city: Annotated[str, StringConstraints(pattern=LAST_FIRST)] = "York, New"
    date: Annotated[str, StringConstraints(pattern=SLASHED)] = "11/27/2026"
    start: Annotated[str, StringConstraints(pattern=H24)] = "19:30"


def _pydantic(args: dict[str, Any]) -> str:
    try:
        Booking(**args)
    except ValidationError as exc:
        return str(exc)
    raise AssertionError("no error")


def _jsonschema(args: dict[str, Any]) -> str:
    schema = Booking.model_json_schema()
    return "\n".join(e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(args))


def _rule(text: str, args: dict[str, Any], accepted: dict[str, Any] | None = None) -> str | None:
    failure = read_error(text, "book_table", args)
    assert failure is not None, text
    (c,) = [c for c in failure.constraints if c.argument in args]
    case = Case("t1", "s1", "tool_error", failure.message, ["book_table"], {}, [("book_table", args)],
                ("book_table", accepted) if accepted else None, -1.0, {"arguments": args}, failure=failure)
    stated = state_constraint(c, [case])
    return stated.words if stated else None


@pytest.mark.parametrize("grammar", [_pydantic, _jsonschema])
@pytest.mark.parametrize(("args", "words"), [
    ({"time": "19:30"}, "write time as h:mm with am or pm (12-hour clock)"),
    ({"time": "19:00"}, "write time as h:mm with am or pm (12-hour clock)"),
    ({"start": "7:30pm"}, "write start as HH:MM on the 24-hour clock"),
    ({"name": "Ann Berg"}, "write name as Last, First"),
])
def test_a_pattern_only_error_becomes_a_named_form(grammar: Any, args: dict[str, Any], words: str) -> None:
    text = grammar(args)
    rule = _rule(text, args)
    assert rule == words, text
    # nothing of the regex and no value: neither the refused one nor one written the new way
    assert "«" not in rule and "\\" not in rule and str(next(iter(args.values()))) not in rule


def test_a_two_word_value_that_is_no_person_keeps_the_pattern() -> None:
    rule = _rule(_pydantic({"city": "New York"}), {"city": "New York"})
    assert rule is not None and "matches the pattern" in rule and "Last, First" not in rule


def test_look_alike_forms_need_the_value_the_tool_later_accepted() -> None:
    # \d{2}/\d{2}/\d{4} fits both MM/DD/YYYY and DD/MM/YYYY: the pattern alone does not say which
    args = {"date": "2026-11-27"}
    assert _rule(_jsonschema(args), args) == f"write date so that it matches the pattern «{SLASHED}»"
    assert _rule(_jsonschema(args), args, {"date": "11/27/2026"}) == "write date as MM/DD/YYYY"
    assert _rule(_pydantic(args), args, {"date": "27/11/2026"}) == "write date as DD/MM/YYYY"


def test_forms_from_examples_and_from_the_error_s_own_words() -> None:
    assert form_for("time", "19:30", examples=["7pm", "7:30pm"]) == "h:mm with am or pm (12-hour clock)"
    assert form_for("name", "Ann Berg", said="expected the name as Last, First") == "Last, First"
    assert form_for("date", "2026-11-27", accepted=["27.11.2026"]) == "DD.MM.YYYY"
    # what no notation explains gives no form
    assert form_for("order_id", "abc", pattern=r"^\d+$") is None
    assert form_for("date", "2026-11-27", pattern=r"^\d{4}-\d{2}-\d{2}$") is None  # already so
    assert form_for("time", 1930, pattern=H12) is None
