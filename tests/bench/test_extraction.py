"""The report's extraction check: drift events against the accepted rules, after a run."""

from __future__ import annotations

import pytest

from bench.extraction import drift_events, extraction, states
from bench.toolworld.grammars import GRAMMARS
from bench.toolworld.molt_words import state_in_molt_words

WISHES = [("reminder", "15"), ("reminder", "30"), ("notify", "true"), ("units", "imperial"),
          ("order", "calendar_first")]


def test_the_schedules_drift_events_and_how_long_each_holds() -> None:
    events = [(e.day, e.family, e.value, e.until) for e in drift_events(list(range(1, 17)))]
    assert events == [(4, "date", "dmy", 15), (6, "reminder", "15", 15), (8, "time", "h12", 16),
                      (10, "notify", "true", 16), (12, "name_order", "last_first", 16),
                      (14, "units", "imperial", 16), (14, "order", "calendar_first", 16),
                      (16, "date", "mdy", 16), (16, "reminder", "30", 16)]
    assert [(e.day, e.family) for e in drift_events([3, 4, 5, 6])] == [(4, "date"), (6, "reminder")]


@pytest.mark.parametrize("grammar", GRAMMARS)
def test_the_miners_own_statements_count_in_every_grammar(grammar: str) -> None:
    for family, value in [("date", "dmy"), ("date", "mdy"), ("time", "h12"), ("name_order", "last_first"),
                          *WISHES]:
        skills = state_in_molt_words({family: value}, grammar)
        assert [states(family, value, s.body) for s in skills] == ["words"], (grammar, family, value)


def test_a_rule_stating_another_value_does_not_count() -> None:
    assert states("date", "dmy", "1. When calling book_table, write date as MM.DD.YYYY.") is None
    assert states("date", "mdy", "1. When calling book_table, write date as DD.MM.YYYY.") is None
    assert states("date", "dmy", "1. When calling book_table, write time as DD.MM.YYYY.") is None
    assert states("reminder", "30", "1. When calling create_event, pass reminder_min=15.") is None
    assert states("time", "h12", "1. When calling book_table, write time as HH:MM.") is None
    assert states("time", "h12", "1. When calling book_table, write time so that it matches the pattern "
                  "«^(1[0-2]|[1-9])(:[0-5]\\d)?(am|pm)$».") == "words"
    # a notation molt names (evolver.notation) counts when it reads the true values only
    assert states("name_order", "last_first", "When calling find_contact, write name as Last, First.") == "words"
    assert states("name_order", "last_first", "When calling find_contact, write name as First Last.") is None
    assert states("time", "h12", "When calling book_table, write time as h:mm with am or pm (12-hour clock).") \
        == "words"
    assert states("time", "h24", "When calling book_table, write time as h:mm with am or pm (12-hour clock).") \
        is None
    # the tool's own text, quoted as data: counted apart
    assert states("time", "h12", "1. When calling book_table, the tool said: «time must be 12-hour like "
                  "7pm or 7:30pm».") == "quoted"


def test_only_a_rule_accepted_while_the_value_holds_counts() -> None:
    day4 = {"name": "rule-date-as-dd-mm-yyyy", "day": 4, "after_episode": 40,
            "body": "1. When calling book_table, write date as DD.MM.YYYY."}
    early = {**day4, "day": 3}
    out = extraction([early, day4], list(range(1, 17)))
    date = next(e for e in out if e["family"] == "date" and e["day"] == 4)
    assert date["extracted"] and date["rule"]["day"] == 4
    assert not next(e for e in out if e["day"] == 16 and e["family"] == "date")["extracted"]
    assert sum(e["extracted"] for e in out) == 1
