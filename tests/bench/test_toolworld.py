"""toolworld: tools, conventions, tasks, the step verifier and episode outcomes."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from bench.toolworld import (
    BASE,
    DRIFTS,
    FAMILIES,
    Episode,
    World,
    call_tool,
    conventions_for_day,
    drift_days,
    generate_tasks,
    state_conventions,
    tool_schemas,
)
from bench.toolworld.conventions import format_date, format_time, parse_date, parse_time
from bench.toolworld.phrasings import HEADS, STATEMENTS
from bench.toolworld.tasks import make_task
from modeling.blocks import SkillText, render_skills_block

SEED = "test"


def world(**conventions: str) -> World:
    return World.generate(SEED, {**BASE, **conventions})


def ok(result: str) -> Any:
    assert not result.startswith("error:"), result
    return json.loads(result)


# --- tools --------------------------------------------------------------------


def test_schemas_are_openai_function_tools() -> None:
    schemas = tool_schemas()
    assert 6 <= len(schemas) <= 10
    for s in schemas:
        assert s["type"] == "function"
        fn = s["function"]
        assert fn["name"] and fn["description"]
        assert fn["parameters"]["type"] == "object"
        assert set(fn["parameters"]["required"]) <= set(fn["parameters"]["properties"])
        # conventions are deliberately not in the schema
        assert "YYYY" not in json.dumps(s)


def test_find_contact_and_send_message() -> None:
    w = world()
    name = w.contacts[0].name
    cid = ok(call_tool(w, "find_contact", {"name": name}))["id"]
    assert cid == w.contacts[0].id
    assert ok(call_tool(w, "send_message", json.dumps({"to_id": cid, "text": "hi"})))
    assert w.effects[-1] == {"kind": "message", "to_id": cid, "text": "hi", "notify": False}
    assert call_tool(w, "find_contact", {"name": "Zed Nobody"}) == (
        "error: no contact named Zed Nobody")
    first, last = name.split(" ")
    assert call_tool(w, "find_contact", {"name": f"{last}, {first}"}) == (
        f"error: contact names must be written First Last (like Ann Berg), got {last}, {first}")
    assert call_tool(w, "send_message", {"to_id": "c0", "text": "hi"}) == (
        "error: no contact with id c0")
    assert call_tool(w, "send_message", {"to_id": cid, "text": "  "}) == (
        "error: text must not be empty")
    assert call_tool(w, "send_message", {"to_id": cid}) == (
        "error: missing argument text for send_message")


def test_name_order_convention() -> None:
    w = world(name_order="last_first")
    name = w.contacts[0].name
    first, last = name.split(" ")
    assert ok(call_tool(w, "find_contact", {"name": f"{last}, {first}"}))["id"] == w.contacts[0].id
    assert call_tool(w, "find_contact", {"name": name}) == (
        f"error: contact names must be written Last, First (like Berg, Ann), got {name}")


def test_search_calendar_and_book() -> None:
    w = world()
    ids = ok(call_tool(w, "search_restaurants", {"city": "Oslo", "cuisine": "thai"}))
    ratings = [w.restaurant_by_id(i).rating for i in ids]  # type: ignore[union-attr]
    assert ids and ratings == sorted(ratings, reverse=True)
    assert call_tool(w, "search_restaurants", {"city": "Atlantis", "cuisine": "thai"}) == (
        "error: unknown city Atlantis")
    assert call_tool(w, "search_restaurants", {"city": "Oslo", "cuisine": "martian"}).startswith(
        "error: cuisine must be one of italian")
    assert isinstance(ok(call_tool(w, "check_calendar", {"date": "2026-11-27"})), list)
    args = {"restaurant_id": ids[0], "date": "2026-11-27", "time": "19:00", "party_size": 4}
    assert ok(call_tool(w, "book_table", args)) == {"booking_id": "b1"}
    assert w.effects[-1]["date"] == dt.date(2026, 11, 27) and w.effects[-1]["time"] == (19, 0)
    assert call_tool(w, "book_table", {**args, "party_size": "4"}) == (
        'error: party_size must be an integer, got "4"')
    assert call_tool(w, "book_table", {**args, "party_size": 40}) == (
        "error: party_size must be between 1 and 12, got 40")
    assert call_tool(w, "book_table", {**args, "restaurant_id": "r0"}) == (
        "error: no restaurant with id r0")
    assert call_tool(w, "book_table", {**args, "date": "27.11.2026"}) == (
        "error: date must be YYYY-MM-DD, got 27.11.2026")
    assert call_tool(w, "book_table", {**args, "time": "7pm"}) == (
        "error: time must be HH:MM (24-hour), got 7pm")
    assert call_tool(w, "book_table", {**args, "seats": 2}) == (
        "error: unknown argument seats for book_table")


def test_date_and_time_conventions_are_enforced() -> None:
    w = world(date="dmy", time="h12")
    rid = w.restaurants[0].id
    args = {"restaurant_id": rid, "date": "27.11.2026", "time": "7:30pm", "party_size": 2}
    assert ok(call_tool(w, "book_table", args))
    assert w.effects[-1]["time"] == (19, 30)
    assert call_tool(w, "book_table", {**args, "date": "2026-11-27"}) == (
        "error: date must be DD.MM.YYYY, got 2026-11-27")
    assert call_tool(w, "book_table", {**args, "time": "19:30"}) == (
        "error: time must be 12-hour like 7pm or 7:30pm, got 19:30")
    assert call_tool(world(date="mdy"), "check_calendar", {"date": "27.11.2026"}) == (
        "error: date must be MM/DD/YYYY, got 27.11.2026")
    assert call_tool(w, "check_calendar", {"date": "31.02.2026"}).startswith(
        "error: date 31.02.2026 is not a real")


def test_create_event() -> None:
    w = world()
    cid = w.contacts[1].id
    args = {"title": "Gym", "date": "2026-12-01", "start": "08:30", "duration_min": 45}
    assert ok(call_tool(w, "create_event", args))["event_id"].startswith("e")
    assert w.effects[-1]["reminder_min"] is None and w.effects[-1]["attendee_id"] is None
    ok(call_tool(w, "create_event", {**args, "attendee_id": cid, "reminder_min": 15}))
    assert w.effects[-1]["reminder_min"] == 15 and w.effects[-1]["attendee_id"] == cid
    assert ok(call_tool(w, "check_calendar", {"date": "2026-12-01"}))[:2] == [
        "08:30 Gym", "08:30 Gym"]
    assert call_tool(w, "create_event", {**args, "duration_min": 1}) == (
        "error: duration_min must be between 5 and 600, got 1")
    assert call_tool(w, "create_event", {**args, "attendee_id": "c0"}) == (
        "error: no contact with id c0")
    assert call_tool(w, "create_event", {**args, "reminder_min": True}) == (
        "error: reminder_min must be an integer, got true")


def test_weather_and_convert() -> None:
    w = world()
    metric = ok(call_tool(w, "get_weather", {"city": "Oslo", "date": "2026-11-27"}))
    imperial = ok(call_tool(w, "get_weather", {"city": "Oslo", "date": "2026-11-27",
                                               "units": "imperial"}))
    assert metric["unit"] == "C" and imperial["unit"] == "F"
    assert imperial["temp"] == round(metric["temp"] * 9 / 5 + 32)
    assert call_tool(w, "get_weather", {"city": "Oslo", "date": "2026-11-27",
                                        "units": "kelvin"}).startswith("error: units must be")
    assert ok(call_tool(w, "convert", {"value": 10, "from_unit": "km", "to_unit": "mi"})) == {
        "value": 6.21}
    assert call_tool(w, "convert", {"value": 10, "from_unit": "km", "to_unit": "lb"}) == (
        "error: cannot convert km to lb")
    assert call_tool(w, "convert", '{"value": 10,') .startswith(
        "error: arguments are not valid JSON")
    assert call_tool(w, "teleport", {}) == "error: unknown tool teleport"


# --- conventions and phrasings -------------------------------------------------


def test_schedule_drifts_over_days() -> None:
    assert conventions_for_day(1) == BASE
    assert conventions_for_day(3) == BASE
    assert conventions_for_day(4) == {**BASE, "date": "dmy"}
    assert conventions_for_day(7)["reminder"] == "15"
    assert drift_days()[0] == 4
    with pytest.raises(ValueError):
        conventions_for_day(0)


def test_formats_round_trip() -> None:
    day = dt.date(2026, 3, 5)
    for style in ("iso", "dmy", "mdy"):
        assert parse_date(format_date(day, style), style) == day
    for hour, minute in ((0, 0), (9, 30), (12, 0), (19, 0), (23, 30)):
        for style in ("h24", "h12"):
            assert parse_time(format_time(hour, minute, style), style) == (hour, minute)
    assert format_time(19, 30, "h12") == "7:30pm" and format_time(7, 0, "h12") == "7am"


def test_every_convention_has_four_distinct_phrasings() -> None:
    for family, spec in FAMILIES.items():
        assert set(STATEMENTS[family]) == set(spec.values)
        assert len({h for h, _ in HEADS[family]}) == 4
        for value in spec.values:
            assert len(set(STATEMENTS[family][value])) == 4
    conv = {**BASE, "date": "dmy"}
    skills = state_conventions(conv, phrasing=3)
    assert len(skills) == len(FAMILIES) and all(isinstance(s, SkillText) for s in skills)
    block = render_skills_block(state_conventions(conv, families=["date"]))
    assert "DD.MM.YYYY" in block and block.startswith("<molt-skills>")
    assert ("date", "dmy") in DRIFTS and ("date", "iso") not in DRIFTS


# --- tasks ---------------------------------------------------------------------


def test_same_seed_same_tasks() -> None:
    a = generate_tasks(5, 12, seed=42)
    b = generate_tasks(5, 12, seed=42)
    c = generate_tasks(5, 12, seed=43)
    assert [(t.user_message, t.plan) for t in a] == [(t.user_message, t.plan) for t in b]
    assert [t.user_message for t in a] != [t.user_message for t in c]
    assert all(t.conventions == conventions_for_day(5) for t in a)


def test_plans_chain_ids_and_follow_conventions() -> None:
    tasks = generate_tasks(1, 60, seed=7, conventions={**BASE, "order": "calendar_first",
                                                       "notify": "true"})
    dinner = next(t for t in tasks if t.template == "dinner")
    names = [c.name for c in dinner.plan]
    assert names == ["search_restaurants", "check_calendar", "book_table", "find_contact",
                     "send_message"]
    assert dinner.plan[2].arguments["restaurant_id"] == json.loads(dinner.results[0])[0]
    assert dinner.plan[4].arguments["to_id"] == json.loads(dinner.results[3])["id"]
    assert dinner.plan[4].arguments["notify"] is True
    assert dinner.plan[1].affected and not dinner.plan[0].affected
    assert max(len(t.plan) for t in tasks) >= 4


def test_each_planned_call_names_the_drifts_that_change_it() -> None:
    conv = {**BASE, "date": "dmy", "reminder": "15", "notify": "true"}
    tasks = generate_tasks(1, 60, seed=7, conventions=conv)
    dinner = next(t for t in tasks if t.template == "dinner")
    search, book, _, send = dinner.plan
    assert search.drifts == () and not search.affected
    assert book.drifts == ("date=dmy",)  # the booking's date; reminder and notify leave it
    assert send.drifts == ("notify=true",)
    event = next(t for t in tasks if t.template == "event")
    assert set(event.plan[-1].drifts) == {"date=dmy", "reminder=15"}
    # on a base day nothing is drifted
    assert all(c.drifts == () for t in generate_tasks(1, 20, seed=7) for c in t.plan)


# --- verifier -----------------------------------------------------------------


def booking_task(**conventions: str) -> Any:
    tasks = generate_tasks(1, 40, seed=3, conventions={**BASE, **conventions})
    return next(t for t in tasks if t.template == "booking")


def assistant_call(name: str, args: dict[str, Any], i: int) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": None, "tool_calls": [
        {"id": f"c{i}", "type": "function",
         "function": {"name": name, "arguments": json.dumps(args)}}]},
        {"role": "tool", "tool_call_id": f"c{i}", "content": "..."}]


def test_step_scores_on_a_hand_written_conversation() -> None:
    task = booking_task(date="dmy")
    search, book = task.plan
    ep = Episode(task)
    messages: list[dict[str, Any]] = [{"role": "user", "content": task.user_message}]
    assert ep.score_step("search_restaurants", search.arguments, messages).ok
    wrong_tool = ep.score_step("book_table", book.arguments, messages)
    assert not wrong_tool.ok and wrong_tool.reason.startswith(
        "expected a call to search_restaurants")
    messages += assistant_call(search.name, search.arguments, 0)
    iso = {**book.arguments, "date": "2026-01-01"}
    bad = ep.score_step("book_table", iso, messages)
    assert not bad.ok and bad.reason == "error: date must be DD.MM.YYYY, got 2026-01-01"
    assert bad.affected
    off = {**book.arguments, "party_size": book.arguments["party_size"] % 8 + 1}
    assert ep.score_step("book_table", off, messages).reason.startswith("party_size: expected")
    # a refused call does not advance the plan
    messages += assistant_call("book_table", iso, 1)
    assert ep.score_step("book_table", json.dumps(book.arguments), messages).ok
    messages += assistant_call(book.name, book.arguments, 2)
    done = ep.score_step("search_restaurants", search.arguments, messages)
    assert not done.ok and "final answer" in done.reason


def test_preference_mistakes_score_zero_with_reason() -> None:
    tasks = generate_tasks(1, 40, seed=3, conventions={**BASE, "reminder": "15"})
    event = next(t for t in tasks if t.template == "event")
    args = {k: v for k, v in event.plan[0].arguments.items() if k != "reminder_min"}
    score = Episode(event).score_step("create_event", args)
    assert not score.ok and score.reason == "user preference reminder_min: expected 15, got null"


def test_episode_success_and_complaints() -> None:
    task = booking_task(order="calendar_first")
    ep = Episode(task)
    for call in task.plan:
        assert not ep.call(call.name, json.dumps(call.arguments)).startswith("error")
    out = ep.finish("Booked.")
    assert out.success and out.complaints == [] and out.score == 1.0 and out.step_accuracy == 1

    ep = Episode(task)  # skip the calendar check: done, but the user complains
    ep.call(task.plan[0].name, task.plan[0].arguments)
    ep.call(task.plan[2].name, task.plan[2].arguments)
    out = ep.finish("Booked.")
    assert out.success and out.score == 0.5
    assert out.complaints == ["You booked a table without checking my calendar first."]
    assert out.step_accuracy == pytest.approx(1 / 3)


def test_episode_failure_and_information_tasks() -> None:
    task = booking_task()
    ep = Episode(task)
    ep.call(task.plan[0].name, task.plan[0].arguments)
    wrong = {**task.plan[1].arguments, "party_size": task.plan[1].arguments["party_size"] % 8 + 1}
    ep.call("book_table", wrong)
    out = ep.finish("Booked.")
    assert not out.success and out.score == 0.0 and "1 missing, 1 unwanted" in out.reason

    tasks = generate_tasks(1, 40, seed=3, conventions={**BASE, "units": "imperial"})
    weather = next(t for t in tasks if t.template == "weather")
    metric = {k: v for k, v in weather.plan[0].arguments.items() if k != "units"}
    ep = Episode(weather)
    result = json.loads(ep.call("get_weather", metric))
    out = ep.finish(f"It will be {result['temp']}C.")
    assert out.complaints == ["I wanted the temperature in Fahrenheit, not Celsius."]
    ep = Episode(weather)
    ep.call("get_weather", weather.plan[0].arguments)
    assert not ep.finish("Nice weather.").success
    assert Episode(weather).finish("I can't.").reason == "the needed look-up was not made"


def test_make_task_is_reproducible_across_conventions() -> None:
    import random

    a = make_task("meeting", random.Random("x"), SEED, BASE)
    b = make_task("meeting", random.Random("x"), SEED, {**BASE, "name_order": "last_first"})
    assert a.user_message == b.user_message
    first, last = a.plan[0].arguments["name"].split(" ")
    assert b.plan[0].arguments["name"] == f"{last}, {first}"
    assert b.plan[0].affected and not b.plan[1].affected


# --- error grammars and the user's complaints (issue 14) ------------------------------------

def test_every_grammar_runs_the_right_plan_and_refuses_a_drifted_date_in_its_library_s_words() -> None:
    from bench.toolworld import World, generate_tasks
    from bench.toolworld.episode import refused
    from bench.toolworld.grammars import GRAMMARS
    from bench.toolworld.tools import call_tool
    from evolver.reading import read_error

    tasks = generate_tasks(16, 12, seed=3)  # every drift in force
    iso = {"restaurant_id": "r1", "date": "2026-11-27", "time": "7pm", "party_size": 2}
    heads = {"toolworld": "error: date must be MM/DD/YYYY", "pydantic": "1 validation error for book_table",
             "jsonschema": "$.date: '2026-11-27' does not match", "problem-json": '{"type": "about:blank"'}
    for grammar in GRAMMARS:
        for task in tasks:
            ep = Episode(task, errors=grammar)
            for call in task.plan:
                assert not refused(ep.call(call.name, call.arguments)), (grammar, call)
            assert ep.tool_errors == 0 and ep.finish(task.final_answer).success
        text = call_tool(World.for_day(16, 3), "book_table", iso, grammar)
        assert text.startswith(heads[grammar]) and refused(text)
        failure = read_error(text, "book_table", iso)
        assert failure is not None
        (date,) = [c for c in failure.constraints if c.argument == "date"]
        assert date.refused == "2026-11-27" and (date.forms or date.pattern)


def test_the_user_complains_sometimes_and_in_varied_words() -> None:
    from bench.toolworld.complaints import PHRASINGS

    task = booking_task(order="calendar_first")

    def skip_the_calendar(**kw: Any) -> Any:
        ep = Episode(task, **kw)
        ep.call(task.plan[0].name, task.plan[0].arguments)
        ep.call(task.plan[2].name, task.plan[2].arguments)
        return ep.finish("Booked.")

    silent = skip_the_calendar(complaint_rate=0.0)
    assert silent.complaints == [] and silent.violations == ["order=calendar_first"] and silent.score == 0.5
    said = skip_the_calendar(complaint_rate=1.0, varied_complaints=True)
    assert said.complaints[0] in PHRASINGS[("order", "calendar_first")]
    assert skip_the_calendar(complaint_rate=1.0, varied_complaints=True).complaints == said.complaints
    assert all(len(set(v)) == len(v) >= 3 for v in PHRASINGS.values())
