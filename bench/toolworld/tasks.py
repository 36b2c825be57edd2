"""Tasks: user requests from templates with slots, each with a ground-truth plan.

A plan is the sequence of calls that does the task under the conventions in
force, with ids filled in from the world (later calls use ids that earlier
calls return). Each planned call also says whether it is *affected* by the
conventions: whether it differs from the call the base conventions would
want (or exists only because of a convention, like the calendar check of the
``order`` rule). Evaluations of drift count affected calls only, because a
call that is the same under every convention says nothing about drift.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from bench.toolworld.conventions import (
    BASE,
    DATA_DIR,
    Conventions,
    conventions_for_day,
    format_date,
    format_name,
    format_time,
    validate_conventions,
)
from bench.toolworld.tools import call_tool
from bench.toolworld.world import CITIES, CONVERSIONS, CUISINES, World

TITLES = ("Dentist", "Team sync", "Yoga", "Call with bank", "Haircut", "Project review",
          "Lunch", "Car service", "Piano lesson", "Budget talk")
TEXTS = ("running late", "see you there", "call me back", "the meeting moved",
         "happy birthday", "thanks for today", "bring the keys", "I will be there at noon")


@dataclass(frozen=True, slots=True)
class PlannedCall:
    name: str
    arguments: dict[str, Any]
    affected: bool = False  # differs from what the base conventions would want
    # the drifted conventions ("family=value") that each, alone, change this call from the base
    # one; empty on a base call. It says which drift a step measures (one before an idle window
    # or one after it).
    drifts: tuple[str, ...] = ()

    def arguments_json(self) -> str:
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class Task:
    """One user request with its ground truth under ``conventions``."""

    id: str
    day: int
    template: str
    user_message: str
    conventions: Conventions
    world_seed: str
    plan: tuple[PlannedCall, ...]
    results: tuple[str, ...]  # the tool result text of each planned call
    final_answer: str  # a reference final answer
    answer_must_contain: str | None = None  # information tasks: the fact to report
    slots: dict[str, Any] = field(default_factory=dict)

    def world(self) -> World:
        """A fresh world in this task's start state, enforcing its conventions."""
        return World.generate(self.world_seed, self.conventions)


# --- slot rendering ----------------------------------------------------------


def human_date(day: dt.date) -> str:
    """Users write dates year first (2026-11-27); the tool's convention decides the call's."""
    return day.isoformat()


def human_time(hour: int, minute: int, rng: random.Random) -> str:
    """Users write times on the 24-hour clock; the tool's convention decides the call's."""
    return format_time(hour, minute, "h24")


@dataclass
class _Slots:
    rng: random.Random
    world: World

    def date(self) -> dt.date:
        return dt.date(self.rng.choice((2026, 2027)), self.rng.randint(1, 12),
                       self.rng.randint(1, 28))

    def time(self) -> tuple[int, int]:
        return self.rng.randint(8, 21), self.rng.choice((0, 0, 30))

    def contact(self) -> str:
        return self.rng.choice(self.world.contacts).name

    def place(self) -> tuple[str, str]:
        return self.rng.choice(CITIES), self.rng.choice(CUISINES)


# A template returns (user message, abstract steps, final answer builder, slots).
# An abstract step is (key, tool, builder of arguments from conventions).
Step = tuple[str, str, Callable[[Conventions], dict[str, Any]]]


def _message(s: _Slots) -> tuple[str, list[Step], dict[str, Any]]:
    name, text = s.contact(), s.rng.choice(TEXTS)
    cid = s.world.contact_by_name(name).id  # type: ignore[union-attr]
    user = s.rng.choice((f"Tell {name}: {text}", f"Send {name} a message: {text}",
                         f"Message {name} saying: {text}"))
    return user, [*_contact_steps(name), _send_step(cid, text)], {"name": name}


def _contact_steps(name: str) -> list[Step]:
    return [("contact", "find_contact", lambda c: {"name": format_name(name, c["name_order"])})]


def _send_step(cid: str, text: str) -> Step:
    def args(c: Conventions) -> dict[str, Any]:
        out: dict[str, Any] = {"to_id": cid, "text": text}
        if c["notify"] == "true":
            out["notify"] = True
        return out

    return ("send", "send_message", args)


def _booking_steps(s: _Slots, party: int, city: str, cuisine: str, day: dt.date,
                   at: tuple[int, int]) -> list[Step]:
    rid = s.world.search(city, cuisine)[0].id
    return [
        ("search", "search_restaurants", lambda c: {"city": city, "cuisine": cuisine}),
        ("check", "check_calendar", lambda c: {"date": format_date(day, c["date"])}),
        ("book", "book_table", lambda c: {"restaurant_id": rid, "date": format_date(day, c["date"]),
                                          "time": format_time(*at, c["time"]),
                                          "party_size": party}),
    ]


def _booking(s: _Slots) -> tuple[str, list[Step], dict[str, Any]]:
    (city, cuisine), day, at, party = s.place(), s.date(), s.time(), s.rng.randint(1, 8)
    user = (f"Book a table for {party} at the best {cuisine} place in {city} "
            f"on {human_date(day)} at {human_time(*at, s.rng)}.")
    return user, _booking_steps(s, party, city, cuisine, day, at), {}


def _dinner(s: _Slots) -> tuple[str, list[Step], dict[str, Any]]:
    (city, cuisine), day, at, party = s.place(), s.date(), s.time(), s.rng.randint(2, 6)
    name, text = s.contact(), s.rng.choice(TEXTS)
    cid = s.world.contact_by_name(name).id  # type: ignore[union-attr]
    user = (f"Book a table for {party} at the best {cuisine} place in {city} on "
            f"{human_date(day)} at {human_time(*at, s.rng)}, then tell {name}: {text}")
    steps = _booking_steps(s, party, city, cuisine, day, at)
    return user, [*steps, *_contact_steps(name), _send_step(cid, text)], {"name": name}


def _event_step(title: str, day: dt.date, at: tuple[int, int], dur: int,
                cid: str | None) -> Step:
    def args(c: Conventions) -> dict[str, Any]:
        out: dict[str, Any] = {"title": title, "date": format_date(day, c["date"]),
                               "start": format_time(*at, c["time"]), "duration_min": dur}
        if cid is not None:
            out["attendee_id"] = cid
        if c["reminder"] != "none":
            out["reminder_min"] = int(c["reminder"])
        return out

    return ("event", "create_event", args)


def _event(s: _Slots) -> tuple[str, list[Step], dict[str, Any]]:
    title, day, at = s.rng.choice(TITLES), s.date(), s.time()
    dur = s.rng.choice((15, 30, 45, 60, 90))
    user = (f"Put {title} in my calendar on {human_date(day)} at "
            f"{human_time(*at, s.rng)} for {dur} min.")
    return user, [_event_step(title, day, at, dur, None)], {}


def _meeting(s: _Slots) -> tuple[str, list[Step], dict[str, Any]]:
    title, day, at, name = s.rng.choice(TITLES), s.date(), s.time(), s.contact()
    dur = s.rng.choice((15, 30, 45, 60, 90))
    cid = s.world.contact_by_name(name).id  # type: ignore[union-attr]
    user = (f"Set up {title} with {name} on {human_date(day)} at "
            f"{human_time(*at, s.rng)} for {dur} min.")
    return user, [*_contact_steps(name), _event_step(title, day, at, dur, cid)], {"name": name}


def _weather(s: _Slots) -> tuple[str, list[Step], dict[str, Any]]:
    city, day = s.rng.choice(CITIES), s.date()

    def args(c: Conventions) -> dict[str, Any]:
        out: dict[str, Any] = {"city": city, "date": format_date(day, c["date"])}
        if c["units"] == "imperial":
            out["units"] = "imperial"
        return out

    user = s.rng.choice((f"What is the weather in {city} on {human_date(day)}?",
                         f"Weather forecast for {city} on {human_date(day)}, please."))
    return user, [("weather", "get_weather", args)], {}


def _convert(s: _Slots) -> tuple[str, list[Step], dict[str, Any]]:
    src, dst = s.rng.choice(sorted(CONVERSIONS))
    value: int | float = s.rng.choice((s.rng.randint(1, 200), s.rng.randint(1, 99) + 0.5))
    user = f"Convert {value} {src} to {dst}."
    return user, [("convert", "convert", lambda c: {"value": value, "from_unit": src,
                                                    "to_unit": dst})], {}


TEMPLATES: dict[str, Callable[[_Slots], tuple[str, list[Step], dict[str, Any]]]] = {
    "message": _message, "booking": _booking, "dinner": _dinner, "event": _event,
    "meeting": _meeting, "weather": _weather, "convert": _convert,
}


def _render(steps: list[Step], conventions: Conventions) -> list[tuple[str, str, dict[str, Any]]]:
    """Steps under ``conventions``; the calendar check exists only under the order rule."""
    keep = [st for st in steps if st[0] != "check" or conventions["order"] == "calendar_first"]
    return [(key, tool, build(conventions)) for key, tool, build in keep]


def _final(template: str, user_slots: dict[str, Any], results: list[str]) -> tuple[str, str | None]:
    last = json.loads(results[-1])
    if template == "weather":
        fact = f"{last['temp']}{last['unit']}"
        return f"It will be {fact} with {last['sky']}.", fact
    if template == "convert":
        return f"That is {last['value']}.", str(last["value"])
    if template in ("booking",):
        return f"Booked, reference {last['booking_id']}.", None
    if template in ("event", "meeting"):
        return f"Added to your calendar as {last['event_id']}.", None
    return f"Done, {user_slots.get('name', 'they')} has the message.", None


def _drifts(steps: list[Step], conventions: Conventions, key: str,
            base: dict[str, tuple[str, dict[str, Any]]]) -> tuple[str, ...]:
    """The drifted conventions that, each alone on top of the base ones, change step `key`
    (all the drifted ones if only their combination does)."""
    drifted = [(f, v) for f, v in sorted(conventions.items()) if BASE[f] != v]
    alone = []
    for family, value in drifted:
        one = {k: (tool, args) for k, tool, args in _render(steps, {**BASE, family: value})}
        if one.get(key) != base.get(key):
            alone.append(f"{family}={value}")
    return tuple(alone) or tuple(f"{f}={v}" for f, v in drifted)


def make_task(template: str, rng: random.Random, world_seed: str, conventions: Conventions,
              day: int = 0, task_id: str = "t0") -> Task:
    """Build one task from ``template`` with slots drawn from ``rng``."""
    conventions = validate_conventions(conventions)
    world = World.generate(world_seed, conventions)
    user, steps, slots = TEMPLATES[template](_Slots(rng, world))
    base = {key: (tool, args) for key, tool, args in _render(steps, BASE)}
    plan = tuple(
        PlannedCall(tool, args, affected=base.get(key) != (tool, args),
                    drifts=_drifts(steps, conventions, key, base) if base.get(key) != (tool, args) else ())
        for key, tool, args in _render(steps, conventions)
    )
    results = [call_tool(world, call.name, call.arguments) for call in plan]
    if any(r.startswith("error:") for r in results):
        raise RuntimeError(f"plan for {template} fails: {results}")
    final, must = _final(template, slots, results)
    return Task(task_id, day, template, user, dict(conventions), world_seed, plan,
                tuple(results), final, must, slots)


@cache
def _mix() -> dict[str, Any]:
    return json.loads((DATA_DIR / "task_mix.json").read_text())  # type: ignore[no-any-return]


def task_mix(day: int) -> dict[str, float]:
    """Template weights in force on ``day`` (from ``data/task_mix.json``)."""
    raw = _mix()
    mix = dict(raw["default"])
    for entry in sorted(raw["days"], key=lambda e: e["day"]):
        if entry["day"] <= day:
            mix = dict(entry["mix"])
    return mix


def generate_tasks(day: int, n: int, seed: int | str,
                   conventions: Conventions | None = None) -> list[Task]:
    """``n`` tasks for simulated ``day``: same (day, n, seed) -> same tasks.

    Conventions default to those the drift schedule sets for ``day``; pass
    ``conventions`` to pose the same kind of tasks under other conventions.
    """
    conv = conventions_for_day(day) if conventions is None else validate_conventions(conventions)
    rng = random.Random(f"toolworld-tasks:{seed}:{day}")
    mix = task_mix(day)
    names = sorted(mix)
    weights = [mix[name] for name in names]
    world_seed = f"{seed}:{day}"
    return [
        make_task(rng.choices(names, weights)[0], rng, world_seed, conv, day, f"d{day}-t{i}")
        for i in range(n)
    ]
