"""The day's conventions stated the way molt's evolver states them (the `oracle-molt-words` arm).

Where the tiny policy fails to read a correctly stated rule, this arm shows
it: the drifted conventions are written by the evolver's own miner, from the
error a refused call gets in the chosen grammar and from the wish a
complaint states, so the wording is exactly what the `skills` arm could
learn at best.
"""

from __future__ import annotations

from typing import Any

from bench.toolworld.conventions import BASE, FormatError, check_name, parse_date, parse_time
from bench.toolworld.grammars import library_error
from bench.toolworld.tools import tool_schemas
from evolver.cases import Case
from evolver.complaints import Wish
from evolver.mining import FailureGroup
from evolver.offline import propose
from evolver.reading import read_error
from modeling.blocks import SkillText

# (family) -> the tools that take the argument, the argument, and values in each form
_API: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "date": (("book_table", "check_calendar", "create_event", "get_weather"), "date",
             ("2026-11-27", "27.11.2026", "11/27/2026")),
    "time": (("book_table",), "time", ("19:30", "7:30pm")),
    "name_order": (("find_contact",), "name", ("Ann Berg", "Berg, Ann")),
}
_WISHES: dict[str, tuple[str, str | None, Any]] = {
    "units": ("get_weather", "units", None), "reminder": ("create_event", "reminder_min", None),
    "notify": ("send_message", "notify", None), "order": ("check_calendar", None, "book_table"),
}


def _toolworld_error(family: str, value: str, conventions: dict[str, str]) -> str | None:
    try:
        if family == "date":
            parse_date(value, conventions["date"])
        elif family == "time":
            parse_time(value, conventions["time"])
        else:
            check_name(value, conventions["name_order"])
    except FormatError as exc:
        return f"error: {exc}"
    return None


def _error_case(i: int, tool: str, family: str, conventions: dict[str, str], errors: str) -> Case:
    _, arg, values = _API[family]
    text, args = None, {}
    for wrong in values:  # the first value in a form the tools now refuse
        args = {arg: wrong}
        text = (_toolworld_error(family, wrong, conventions) if errors == "toolworld"
                else library_error(errors, tool, args, conventions))
        if text is not None:
            break
    assert text is not None
    failure = read_error(text, tool, args)
    request = {"messages": [], "tools": tool_schemas()}
    cons = [c for c in (failure.constraints if failure else ()) if c.argument == arg]
    if failure is not None and cons:
        failure = type(failure)(failure.grammar, failure.message, (cons[0],), failure.tool)
    return Case(f"t{i}", f"s{i}", "tool_error", failure.message if failure else text, [tool], request,
                [(tool, args)], None, -1.0, {"arguments": args}, failure=failure)


def _wish(family: str, value: str) -> Wish:
    tool, param, before = _WISHES[family]
    if family == "order":
        return Wish(tool, before=str(before))
    wanted: Any = {"reminder": None if value == "none" else (int(value) if value.isdigit() else value),
                   "notify": value == "true", "units": value}[family]
    return Wish(tool, param, wanted)


def state_in_molt_words(drifted: dict[str, str], errors: str = "toolworld") -> list[SkillText]:
    """Skills stating ``drifted`` (family -> value) in the miner's wording, for ``errors``."""
    conventions = {**BASE, **drifted}
    out: list[SkillText] = []
    for family, value in drifted.items():
        if family in _API:
            cases = [_error_case(i, t, family, conventions, errors) for i, t in enumerate(_API[family][0] * 2)]
        else:
            wish = _wish(family, value)
            request = {"messages": [], "tools": tool_schemas()}
            calls = [(wish.before or wish.tool, {})]
            cases = [Case(f"t{i}", f"s{i}", "complaint", "", [calls[0][0]], request, calls, None, 0.5, wish=wish)
                     for i in range(2)]
        group = FailureGroup(cases[0].key, cases[0].kind, cases[0].message, cases)
        for draft in propose([group], {}, min_support=2):
            op = draft.ops[0]
            body = getattr(op, "body", None)
            if body:
                out.append(SkillText(op.name, str(getattr(op, "description", "")), str(body)))
    return out
