"""The tools: OpenAI schemas, argument validation, and executable implementations.

Each tool validates its arguments into a normalized, convention-free form
(dates become ``datetime.date``, times ``(hour, minute)``, optional arguments
take their defaults) and then acts on the :class:`World`. Validation is shared
by execution and by the step verifier, so "the tool would reject this call"
and "the verifier scores this call 0 with the tool's error as reason" can not
disagree. The schemas deliberately do not state the conventions: that is the
knowledge an agent has to learn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.toolworld.conventions import (
    FormatError,
    canonical_name,
    check_name,
    parse_date,
    parse_time,
)
from bench.toolworld.grammars import library_error
from bench.toolworld.world import CITIES, CONVERSIONS, CUISINES, UNITS, Event, World

Args = dict[str, Any]


class ToolError(Exception):
    """A call the tool refuses; the message is what the agent sees after ``error: ``."""


@dataclass(frozen=True, slots=True)
class Param:
    type: str  # JSON schema type: string, integer, number, boolean
    description: str
    required: bool = True
    enum: tuple[str, ...] | None = None
    default: Any = None


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    params: dict[str, Param]
    check: Callable[[World, Args], Args]
    run: Callable[[World, Args], Any]

    def schema(self) -> dict[str, Any]:
        """The OpenAI tool schema (``{"type": "function", "function": {...}}``)."""
        props: dict[str, Any] = {}
        for name, p in self.params.items():
            prop: dict[str, Any] = {"type": p.type, "description": p.description}
            if p.enum:
                prop["enum"] = list(p.enum)
            props[name] = prop
        required = [n for n, p in self.params.items() if p.required]
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {"type": "object", "properties": props, "required": required},
            },
        }

    def validate(self, world: World, args: Args) -> Args:
        """Check types and conventions; return normalized arguments or raise ToolError."""
        if not isinstance(args, dict):
            raise ToolError(f"arguments for {self.name} must be a JSON object")
        for key in args:
            if key not in self.params:
                raise ToolError(f"unknown argument {key} for {self.name}")
        out: Args = {}
        for key, p in self.params.items():
            if key not in args or args[key] is None:
                if p.required:
                    raise ToolError(f"missing argument {key} for {self.name}")
                out[key] = p.default
                continue
            out[key] = _check_type(key, p, args[key])
        try:
            return self.check(world, out)
        except FormatError as exc:
            raise ToolError(str(exc)) from exc

    def execute(self, world: World, args: Args) -> str:
        """Validate and run; the result is the text an agent sees (JSON or ``error: ...``)."""
        try:
            normalized = self.validate(world, args)
            return json.dumps(self.run(world, normalized))
        except ToolError as exc:
            return f"error: {exc}"


def _check_type(key: str, p: Param, value: Any) -> Any:
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }[p.type]
    if not ok:
        article = "an" if p.type[0] in "aeiou" else "a"
        raise ToolError(f"{key} must be {article} {p.type}, got {json.dumps(value)}")
    if p.enum and value not in p.enum:
        raise ToolError(f"{key} must be one of {', '.join(p.enum)}, got {value}")
    return value


# --- implementations --------------------------------------------------------


def _check_find_contact(world: World, a: Args) -> Args:
    check_name(a["name"], world.conventions["name_order"])
    if world.contact_by_name(canonical_name(a["name"])) is None:
        raise ToolError(f"no contact named {a['name']}")
    a["name"] = canonical_name(a["name"])
    return a


def _run_find_contact(world: World, a: Args) -> Any:
    contact = world.contact_by_name(a["name"])
    assert contact is not None
    return {"id": contact.id}


def _check_send_message(world: World, a: Args) -> Args:
    if world.contact_by_id(a["to_id"]) is None:
        raise ToolError(f"no contact with id {a['to_id']}")
    if not a["text"].strip():
        raise ToolError("text must not be empty")
    return a


def _run_send_message(world: World, a: Args) -> Any:
    world.record("message", to_id=a["to_id"], text=a["text"], notify=a["notify"])
    return {"message_id": world.next_id("m")}


def _check_search(world: World, a: Args) -> Args:
    if a["city"] not in CITIES:
        raise ToolError(f"unknown city {a['city']}")
    return a


def _run_search(world: World, a: Args) -> Any:
    return [r.id for r in world.search(a["city"], a["cuisine"])]


def _check_calendar(world: World, a: Args) -> Args:
    a["date"] = parse_date(a["date"], world.conventions["date"])
    return a


def _run_calendar(world: World, a: Args) -> Any:
    world.record("calendar_check", date=a["date"])
    return [f"{e.start[0]:02d}:{e.start[1]:02d} {e.title}" for e in world.events_on(a["date"])]


def _check_book(world: World, a: Args) -> Args:
    a["date"] = parse_date(a["date"], world.conventions["date"])
    a["time"] = parse_time(a["time"], world.conventions["time"])
    if world.restaurant_by_id(a["restaurant_id"]) is None:
        raise ToolError(f"no restaurant with id {a['restaurant_id']}")
    if not 1 <= a["party_size"] <= 12:
        raise ToolError(f"party_size must be between 1 and 12, got {a['party_size']}")
    return a


def _run_book(world: World, a: Args) -> Any:
    world.record("booking", restaurant_id=a["restaurant_id"], date=a["date"], time=a["time"],
                 party_size=a["party_size"])
    return {"booking_id": world.next_id("b")}


def _check_event(world: World, a: Args) -> Args:
    a["date"] = parse_date(a["date"], world.conventions["date"])
    a["start"] = parse_time(a["start"], world.conventions["time"])
    if not 5 <= a["duration_min"] <= 600:
        raise ToolError(f"duration_min must be between 5 and 600, got {a['duration_min']}")
    if a["attendee_id"] is not None and world.contact_by_id(a["attendee_id"]) is None:
        raise ToolError(f"no contact with id {a['attendee_id']}")
    if a["reminder_min"] is not None and not 0 <= a["reminder_min"] <= 1440:
        raise ToolError(f"reminder_min must be between 0 and 1440, got {a['reminder_min']}")
    return a


def _run_event(world: World, a: Args) -> Any:
    event = Event(world.next_id("e"), a["title"], a["date"], a["start"], a["duration_min"],
                  a["attendee_id"], a["reminder_min"])
    world.events.append(event)
    world.record("event", title=a["title"], date=a["date"], start=a["start"],
                 duration_min=a["duration_min"], attendee_id=a["attendee_id"],
                 reminder_min=a["reminder_min"])
    return {"event_id": event.id}


def _check_weather(world: World, a: Args) -> Args:
    if a["city"] not in CITIES:
        raise ToolError(f"unknown city {a['city']}")
    a["date"] = parse_date(a["date"], world.conventions["date"])
    return a


def _run_weather(world: World, a: Args) -> Any:
    celsius, sky = world.weather(a["city"], a["date"])
    world.record("weather", city=a["city"], date=a["date"], units=a["units"])
    if a["units"] == "imperial":
        return {"temp": round(celsius * 9 / 5 + 32), "unit": "F", "sky": sky}
    return {"temp": celsius, "unit": "C", "sky": sky}


def _check_convert(world: World, a: Args) -> Args:
    if (a["from_unit"], a["to_unit"]) not in CONVERSIONS:
        raise ToolError(f"cannot convert {a['from_unit']} to {a['to_unit']}")
    return a


def _run_convert(world: World, a: Args) -> Any:
    value = round(a["value"] * CONVERSIONS[(a["from_unit"], a["to_unit"])], 2)
    world.record("convert", value=a["value"], from_unit=a["from_unit"], to_unit=a["to_unit"])
    return {"value": value}


_DATE = Param("string", "The date.")
TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool("find_contact", "Look up a contact by full name; returns its id.",
             {"name": Param("string", "Full name of the contact.")},
             _check_find_contact, _run_find_contact),
        Tool("send_message", "Send a text message to a contact id.",
             {"to_id": Param("string", "Contact id from find_contact."),
              "text": Param("string", "The message text."),
              "notify": Param("boolean", "Ping the recipient's phone.", False, default=False)},
             _check_send_message, _run_send_message),
        Tool("search_restaurants", "Find restaurants; returns ids, best rated first.",
             {"city": Param("string", "City name."),
              "cuisine": Param("string", "Kind of food.", enum=CUISINES)},
             _check_search, _run_search),
        Tool("check_calendar", "List the calendar entries on a date.", {"date": _DATE},
             _check_calendar, _run_calendar),
        Tool("book_table", "Book a restaurant table.",
             {"restaurant_id": Param("string", "Restaurant id from search_restaurants."),
              "date": _DATE, "time": Param("string", "Arrival time."),
              "party_size": Param("integer", "Number of guests.")},
             _check_book, _run_book),
        Tool("create_event", "Add an event to the calendar.",
             {"title": Param("string", "Event title."), "date": _DATE,
              "start": Param("string", "Start time."),
              "duration_min": Param("integer", "Length in minutes."),
              "attendee_id": Param("string", "Contact id to invite.", False),
              "reminder_min": Param("integer", "Reminder minutes before start.", False)},
             _check_event, _run_event),
        Tool("get_weather", "Weather forecast for a city and date.",
             {"city": Param("string", "City name."), "date": _DATE,
              "units": Param("string", "Unit system: metric (Celsius, km/h) or imperial (Fahrenheit, mph).",
                              False, ("metric", "imperial"), "metric")},
             _check_weather, _run_weather),
        Tool("convert", "Convert a value between units.",
             {"value": Param("number", "The value."),
              "from_unit": Param("string", "Unit of the value.", enum=UNITS),
              "to_unit": Param("string", "Wanted unit.", enum=UNITS)},
             _check_convert, _run_convert),
    )
}


def tool_schemas() -> list[dict[str, Any]]:
    """All tools as OpenAI tool schemas, in a fixed order."""
    return [t.schema() for t in TOOLS.values()]


def parse_arguments(arguments: str | Args) -> Args:
    """Arguments as the agent sent them (a JSON string or a dict) -> dict, or ToolError."""
    if isinstance(arguments, dict):
        return dict(arguments)
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as exc:
        raise ToolError(f"arguments are not valid JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise ToolError("arguments must be a JSON object")
    return value


def call_tool(world: World, name: str, arguments: str | Args, errors: str = "toolworld") -> str:
    """Run one call against ``world``; always returns the text the agent sees.

    ``errors`` picks how the tool says no to a call its schema refuses
    (`bench.toolworld.grammars`: toolworld, pydantic, jsonschema, problem-json).
    """
    tool = TOOLS.get(name)
    if tool is None:
        return f"error: unknown tool {name}"
    try:
        args = parse_arguments(arguments)
    except ToolError as exc:
        return f"error: {exc}"
    refused = library_error(errors, name, args, world.conventions)
    if refused is not None:
        return refused
    return tool.execute(world, args)
