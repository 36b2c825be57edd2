"""Many wordings of each convention, for pretraining the tiny policy to read rules.

Three fixed phrasings per convention (``bench.toolworld.phrasings``) taught
the policy those three sentences, not the rules in them: a rule in other
words (the held-out phrasing, the evolver's skills) was followed about half
the time. This phrasebook composes a statement from a lead-in, a core that
carries the rule (the form, the value, the order) and a tail, so that the
words around the rule vary and only the rule itself predicts the call.

It is a closed, enumerable set (:func:`sentences`): a test checks that no
sentence the evolver's miner writes, in any template variant, and no
held-out phrasing is in it. The policy must read those, not recall them.
"""

from __future__ import annotations

import itertools
import random
import re
from functools import cache

from modeling.blocks import SkillText

#: The tools a family's rule is about (a lead-in may name one).
TOOLS_OF: dict[str, tuple[str, ...]] = {
    "date": ("book_table", "create_event", "get_weather", "check_calendar"),
    "time": ("book_table", "create_event"),
    "name_order": ("find_contact",),
    "units": ("get_weather",),
    "reminder": ("create_event",),
    "notify": ("send_message",),
    "order": ("book_table",),
}

_DATE_FORMS = {
    "iso": ("YYYY-MM-DD", "2026-11-27", "year-month-day with dashes"),
    "dmy": ("DD.MM.YYYY", "27.11.2026", "day.month.year with dots"),
    "mdy": ("MM/DD/YYYY", "11/27/2026", "month/day/year with slashes"),
}
_TIME_FORMS = {
    "h24": ("HH:MM on the 24-hour clock", "19:30", "24-hour times"),
    "h12": ("the 12-hour clock with am or pm", "7:30pm", "12-hour times with am/pm"),
}
_NAME_FORMS = {
    "first_last": ("First Last", "Ann Berg", "the given name, then the family name"),
    "last_first": ("Last, First", "Berg, Ann", "the family name, a comma, then the given name"),
}


def _form_cores(noun: str, plural: str, form: str, example: str, desc: str) -> tuple[str, ...]:
    return (
        f"write {plural} as {form}",
        f"{plural} go in as {form}",
        f"use {form} for every {noun}",
        f"the {noun} format is {form}",
        f"a {noun} looks like {example}",
        f"{plural} are {desc}",
        f"send each {noun} in the form {form}, e.g. {example}",
        f"format {plural} like {example}",
    )


def _value_cores(param: str, value: str, plain: tuple[str, ...]) -> tuple[str, ...]:
    return (
        f"set {param} to {value}",
        f"{param}={value} on every call",
        f"{param}: {value}",
        f'use {param} "{value}"',
        f"always include {param} {value}",
        *plain,
    )


#: (family, value) -> the cores that state it.
CORES: dict[tuple[str, str], tuple[str, ...]] = {
    **{("date", v): _form_cores("date", "dates", *spec) for v, spec in _DATE_FORMS.items()},
    **{("time", v): _form_cores("time", "times", *spec) for v, spec in _TIME_FORMS.items()},
    **{("name_order", v): _form_cores("contact name", "contact names", *spec)
       for v, spec in _NAME_FORMS.items()},
    ("units", "metric"): _value_cores("units", "metric", (
        "temperatures stay in Celsius, units metric", "keep the weather metric")),
    ("units", "imperial"): _value_cores("units", "imperial", (
        "temperatures in Fahrenheit, so units imperial", "ask for the weather in imperial units")),
    ("reminder", "none"): ("leave reminder_min out", "no reminder on new events",
                           "events get no reminder_min", "skip the reminder when creating events"),
    ("reminder", "15"): _value_cores("reminder_min", "15", (
        "give each new event a 15-minute reminder", "remind the user 15 minutes before every event")),
    ("reminder", "30"): _value_cores("reminder_min", "30", (
        "give each new event a 30-minute reminder", "remind the user 30 minutes before every event")),
    ("notify", "false"): ("leave notify off", "messages go out without notify",
                          "notify stays false", "do not ping the recipient"),
    ("notify", "true"): _value_cores("notify", "true", (
        "ping the recipient's phone on each message", "turn notify on for messages")),
    ("order", "free"): ("book tables without looking at the calendar",
                        "no calendar check is needed before book_table",
                        "go straight to book_table after the search"),
    ("order", "calendar_first"): (
        "look at check_calendar for the date before book_table",
        "first check_calendar, then book_table",
        "book_table only after check_calendar on the same date",
        "check the calendar for that date, and book the table after that",
        "never book_table before check_calendar"),
}

_LEADS = ("", "rule: ", "note: ", "important: ", "remember: ", "policy: ", "for {tool}, ",
          "in {tool} calls, ", "with {tool}, ", "this user: ", "from now on, ")
_TAILS = ("", " every time", " from now on", " without exception", " (the tools require it)",
          " for this user")
_ENDS = (".", "!", "")


def _head(text: str) -> str:
    return text[:1].upper() + text[1:]


@cache
def sentences(family: str, value: str) -> tuple[str, ...]:
    """Every sentence the phrasebook can write for one convention (a closed set)."""
    out = []
    for lead, core, tail, end in itertools.product(_LEADS, CORES[(family, value)], _TAILS, _ENDS):
        tools = TOOLS_OF[family] if "{tool}" in lead else ("",)
        for tool in tools:
            out.append(_head(lead.format(tool=tool) + core + tail) + end)
    return tuple(out)


def normalize(sentence: str) -> str:
    """A sentence compared without list marks, case, spacing or end punctuation."""
    s = re.sub(r"^\s*(\d+\.|-)\s*", "", sentence.strip())
    return re.sub(r"\s+", " ", s).strip().rstrip(".!").lower()


_NAMES = ("rules", "conventions", "house-rules", "notes", "preferences", "tool-notes", "policy")
_DESCS = ("Use for tool calls.", "What this user needs.", "Read before calling tools.",
          "Learned conventions.", "How the tools want things.")


def phrase(rng: random.Random, family: str, value: str) -> SkillText:
    """One convention as a skill: a phrasebook sentence under a generic name."""
    body = rng.choice(sentences(family, value))
    return SkillText(f"{family.replace('_', '-')}-{rng.choice(_NAMES)}", rng.choice(_DESCS), body)
