"""The complaint reader on varied phrasings: the wish, its direction, values with units, order."""

from __future__ import annotations

from typing import Any

import pytest

from evolver.complaints import amounts, read_complaint

WEATHER = {"name": "get_weather", "description": "Weather forecast for a city and date.", "parameters": {
    "type": "object", "properties": {
        "city": {"type": "string", "description": "City name."},
        "units": {"type": "string", "enum": ["metric", "imperial"],
                  "description": "Unit system: metric (Celsius, km/h) or imperial (Fahrenheit, mph)."}}}}
EVENT = {"name": "create_event", "description": "Add an event to the calendar.", "parameters": {
    "type": "object", "properties": {
        "title": {"type": "string", "description": "Event title."},
        "duration_min": {"type": "integer", "description": "Length in minutes."},
        "reminder_min": {"type": "integer", "description": "Reminder minutes before start."}}}}
MESSAGE = {"name": "send_message", "description": "Send a text message to a contact id.", "parameters": {
    "type": "object", "properties": {
        "to_id": {"type": "string", "description": "Contact id from find_contact."},
        "text": {"type": "string", "description": "The message text."},
        "notify": {"type": "boolean", "description": "Ping the recipient's phone."}}}}
CALENDAR = {"name": "check_calendar", "description": "List the calendar entries on a date.",
            "parameters": {"type": "object", "properties": {"date": {"type": "string"}}}}
BOOK = {"name": "book_table", "description": "Book a restaurant table.",
        "parameters": {"type": "object", "properties": {"date": {"type": "string"}}}}
REQUEST = {"tools": [{"type": "function", "function": f} for f in (WEATHER, EVENT, MESSAGE, CALENDAR, BOOK)]}

METRIC = ("get_weather", {"city": "Oslo", "units": "metric"})
IMPERIAL = ("get_weather", {"city": "Oslo", "units": "imperial"})
EVENT_NONE = ("create_event", {"title": "Dentist", "duration_min": 30})
EVENT_15 = ("create_event", {"title": "Dentist", "duration_min": 30, "reminder_min": 15})
QUIET = ("send_message", {"to_id": "c1", "text": "hi"})
LOUD = ("send_message", {"to_id": "c1", "text": "hi", "notify": True})
BOOKED = ("book_table", {"date": "2026-11-27"})

# (complaint, the call it is about, the wish's key)
TABLE: list[tuple[str, tuple[str, dict[str, Any]], str]] = [
    ("I wanted the temperature in Fahrenheit, not Celsius.", METRIC, "set:get_weather.units=\"imperial\""),
    ("Not Celsius, please: I wanted Fahrenheit.", METRIC, "set:get_weather.units=\"imperial\""),
    ("Why Fahrenheit? I read temperatures in Celsius.", IMPERIAL, "set:get_weather.units=\"metric\""),
    ("Give me the forecast in Celsius instead of Fahrenheit.", IMPERIAL, "set:get_weather.units=\"metric\""),
    ("Metric units, please, not imperial.", IMPERIAL, "set:get_weather.units=\"metric\""),
    ("You forgot my 15-minute reminder on the event.", EVENT_NONE, "set:create_event.reminder_min=15"),
    ("Alert me 15 minutes before.", EVENT_NONE, "set:create_event.reminder_min=15"),
    ("I need a reminder half an hour ahead.", EVENT_NONE, "set:create_event.reminder_min=30"),
    ("Remind me thirty minutes before, not 15.", EVENT_15, "set:create_event.reminder_min=30"),
    ("I'd like a reminder an hour before the start.", EVENT_NONE, "set:create_event.reminder_min=60"),
    ("I did not want a reminder on that event.", EVENT_15, "set:create_event.reminder_min=null"),
    ("You sent the message without notifying them.", QUIET, "set:send_message.notify=true"),
    ("Make their phone buzz when you message them.", QUIET, "set:send_message.notify=true"),
    ("Please don't ping people's phones with notify.", LOUD, "set:send_message.notify=false"),
    ("You booked a table without checking my calendar first.", BOOKED, "order:check_calendar<book_table"),
    ("Check my calendar before booking anything.", BOOKED, "order:check_calendar<book_table"),
    ("Look at my calendar first, then book.", BOOKED, "order:check_calendar<book_table"),
]


@pytest.mark.parametrize(("text", "call", "key"), TABLE)
def test_the_wish_and_its_direction(text: str, call: tuple[str, dict[str, Any]], key: str) -> None:
    wish = read_complaint(text, [call], REQUEST)
    assert wish is not None, text
    assert wish.key == key


def test_the_same_wish_in_other_words_groups_together() -> None:
    keys = {read_complaint(t, [c], REQUEST).key for t, c, k in TABLE  # type: ignore[union-attr]
            if k == "set:create_event.reminder_min=15"}
    assert len(keys) == 1


@pytest.mark.parametrize("text", ["Thanks, that was great.", "The weather in Oslo looks grim.",
                                  "Hmm."])
def test_what_asks_for_nothing_is_not_a_wish(text: str) -> None:
    assert read_complaint(text, [METRIC, EVENT_NONE], REQUEST) is None


def test_values_with_units() -> None:
    assert amounts("a 15-minute reminder") == [900]
    assert amounts("two hours or 90 min") == [7200, 5400]
    assert amounts("half an hour") == [1800]


SEARCH = {"name": "search_restaurants", "description": "Find restaurants; returns ids, best rated first.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
WITH_SEARCH = {"tools": [*REQUEST["tools"], {"type": "function", "function": SEARCH}]}
SEARCHED = ("search_restaurants", {"city": "Oslo"})
CHECKED = ("check_calendar", {"date": "2026-11-27"})


@pytest.mark.parametrize("text", ["Look at my calendar first, then book.",
                                  "You booked a table without checking my calendar first.",
                                  "Check my calendar before booking anything."])
def test_an_order_wish_names_both_tools_and_blames_the_call_that_came_too_early(text: str) -> None:
    # a turn that only searched is not what the complaint is about: no "book_table before
    # search_restaurants" (the order word "first" is no tool's word)
    assert read_complaint(text, [SEARCHED], WITH_SEARCH) is None
    # the calendar was checked, but after booking: the order is still the wish
    wish = read_complaint(text, [BOOKED, CHECKED], WITH_SEARCH)
    assert wish is not None and wish.key == "order:check_calendar<book_table"
    # checked ahead of the booking: nothing to ask for in that order
    done = read_complaint(text, [CHECKED, BOOKED], WITH_SEARCH)
    assert done is None or done.key != "order:check_calendar<book_table"
