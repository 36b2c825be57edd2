"""Failure cases and the checks the gate replays, from hand-written sessions.

The tools are toolworld's schemas (a real set of tools); the library reads
them as it would any others.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bench.toolworld import tool_schemas
from evolver.cases import cases_from_session, group_key
from evolver.checks import Check, fix_check, form_check, keep_check, stated_patterns, supersede
from evolver.context import ContextOptimizer, subject
from evolver.mining import FailureGroup
from evolver.offline import MARK, propose, slugify, subject_of
from evolver.reading import read_error
from store.skills import Skill

TOOLS = tool_schemas()


def _call(cid: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def _turn(idx: int, messages: list[dict[str, Any]], calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": f"turn_{idx}", "session_id": "ses_1", "tenant_id": "t", "idx": idx, "turn_type": "main",
            "status": "ok", "request": {"model": "tiny", "messages": list(messages), "tools": TOOLS},
            "tool_calls": calls or None, "content": None}


def _session() -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "Book a table for 2 in Oslo on 27 November"}]
    bad = _call("c1", "book_table", {"restaurant_id": "r1", "date": "2026-11-27", "time": "19:00", "party_size": 2})
    t0 = _turn(0, msgs, [bad])
    msgs += [{"role": "assistant", "content": None, "tool_calls": [bad]},
             {"role": "tool", "tool_call_id": "c1", "content": "error: date must be DD.MM.YYYY, got 2026-11-27"}]
    good = _call("c2", "book_table", {"restaurant_id": "r1", "date": "27.11.2026", "time": "19:00", "party_size": 2})
    t1 = _turn(1, msgs, [good])
    msgs += [{"role": "assistant", "content": None, "tool_calls": [good]},
             {"role": "tool", "tool_call_id": "c2", "content": '{"booking_id": "b1"}'}]
    t2 = _turn(2, msgs, [])
    return [t0, t1, t2]


def test_tool_error_with_hindsight_fix() -> None:
    cases = cases_from_session(_session(), [])
    assert len(cases) == 1
    c = cases[0]
    assert (c.kind, c.turn_id, c.tools) == ("tool_error", "turn_0", ["book_table"])
    assert c.failure is not None and c.failure.constraints[0].forms == ("DD.MM.YYYY",)
    check = fix_check(c)
    assert check is not None and dict(check.written)["date"].pieces == ("11", "2026", "27")
    # what the refused call had right must stay right
    assert dict(check.hold) == {"restaurant_id": "r1", "time": "19:00", "party_size": 2}
    rest = {"restaurant_id": "r1", "time": "19:00", "party_size": 2}
    assert check.passes([("book_table", {**rest, "date": "27.11.2026"})])
    assert not check.passes([("book_table", {**rest, "date": "2026-11-27"})])
    assert not check.passes([("book_table", {**rest, "date": "27.11.2026", "time": "7pm"})])
    assert not check.passes([("book_table", {"date": "27.11.2026", "party_size": 2})])
    other = cases_from_session(_session(), [])[0]
    other.failure = read_error("error: date must be DD.MM.YYYY, got 2026-11-28", "book_table",
                               {"date": "2026-11-28"})
    assert other.key == c.key
    # the error was about the form, and the value is what the session shows: the same day in the
    # accepted form is fixed; another day in that form is a corrupted value, and fails
    assert not check.passes([("book_table", {**rest, "date": "03.12.2026"})])
    assert not check.passes([("book_table", {**rest, "date": "2026-12-03"})])
    # an argument the accepted call did not have is not asked for by the evidence
    assert not check.passes([("book_table", {**rest, "date": "27.11.2026", "note": "window"})])
    assert not check.passes([("book_table", {**rest, "date": None})])
    assert not check.passes([("find_contact", {**rest, "date": "27.11.2026"})])


def test_a_newer_form_fix_supersedes_what_went_well_before() -> None:
    fix = fix_check(cases_from_session(_session(), [])[0])
    assert fix is not None and dict(fix.written)["date"].refused == "2026-11-27"
    # a booking that went well before dates changed form, and one without a date
    before = Check("turn_9", {}, "book_table", {"restaurant_id": "r2", "date": "2026-10-02",
                                                "party_size": 4}, "keep")
    keep = supersede(before, [fix])
    assert "date" in dict(keep.written)
    assert keep.passes([("book_table", {"restaurant_id": "r2", "date": "02.10.2026", "party_size": 4})])
    assert not keep.passes([("book_table", {"restaurant_id": "r2", "date": "2026-10-02",
                                            "party_size": 4})])
    assert not keep.passes([("book_table", {"restaurant_id": "r3", "date": "02.10.2026",
                                            "party_size": 4})])
    assert not keep.passes([("book_table", {"restaurant_id": "r2", "date": "03.10.2026",
                                            "party_size": 4})])  # its own day, not another
    other = Check("turn_8", {}, "find_contact", {"name": "Ann Berg"}, "keep")
    assert supersede(other, [fix]) is other


def test_fix_is_what_the_error_names() -> None:
    session = _session()
    # the retry also added an argument the error did not ask for: the fix is the date alone
    good = json.loads(session[1]["tool_calls"][0]["function"]["arguments"])
    session[1]["tool_calls"][0]["function"]["arguments"] = json.dumps({**good, "note": "window"})
    check = fix_check(cases_from_session(session, [])[0])
    assert check is not None and check.expect == {} and [k for k, _ in check.written] == ["date"]


def test_value_fixes_need_the_value() -> None:
    session = _session()
    # the refused call had the right form but another value: the fix is the value itself
    bad = _call("c1", "book_table", {"restaurant_id": "r9", "date": "27.11.2026", "time": "19:00",
                                     "party_size": 2})
    session[0]["tool_calls"] = [bad]
    session[1]["request"]["messages"][1:] = [
        {"role": "assistant", "content": None, "tool_calls": [bad]},
        {"role": "tool", "tool_call_id": "c1", "content": "error: no restaurant with id r9"}]
    check = fix_check(cases_from_session(session, [])[0])
    assert check is not None and check.expect == {"restaurant_id": "r1"}
    assert check.written == ()
    rest = {"date": "27.11.2026", "time": "19:00", "party_size": 2}
    assert not check.passes([("book_table", {**rest, "restaurant_id": "r7"})])
    assert check.passes([("book_table", {**rest, "restaurant_id": "r1"})])


def test_complaint_becomes_a_preference_check() -> None:
    msgs = [{"role": "user", "content": "Add a team sync on Friday at 10"}]
    call = _call("c1", "create_event", {"title": "team sync", "date": "2026-11-27", "start": "10:00",
                                        "duration_min": 30})
    turns = [_turn(0, msgs, [call])]
    fb = [{"session_id": "ses_1", "turn_id": None, "score": 0.5, "source": "verifier",
           "text": "You forgot my 15-minute reminder on the event."}]
    cases = cases_from_session(turns, fb)
    assert [c.kind for c in cases] == ["complaint"]
    assert cases[0].wish is not None and cases[0].wish.key == "set:create_event.reminder_min=15"
    weather = [_turn(0, msgs, [_call("c1", "get_weather", {"city": "Oslo", "date": "2026-11-27"})])]
    fb2 = [{"session_id": "ses_1", "score": 0.5, "source": "verifier",
            "text": "Not Celsius, please: I wanted Fahrenheit."}]
    wish = cases_from_session(weather, fb2)[0].wish
    assert wish is not None and (wish.tool, wish.param, wish.value) == ("get_weather", "units", "imperial")


def test_offline_miner_needs_recurrence_and_marks_its_skills() -> None:
    cases = cases_from_session(_session(), [])
    g = FailureGroup(cases[0].key, "tool_error", cases[0].message, cases)
    assert propose([g], set(), min_support=2) == []
    g.cases = cases * 2
    (draft,) = propose([g], set(), min_support=2)
    op = draft.ops[0]
    assert MARK in op.description and "write date as DD.MM.YYYY." in op.body  # type: ignore[union-attr]
    # in molt's words: no value from the error or another task, nothing quoted from the tool
    assert "27.11.2026" not in op.body and "2026-11-27" not in op.body  # type: ignore[union-attr]
    assert "«" not in op.body and "must be" not in op.body  # type: ignore[union-attr]
    assert draft.checks and keep_check(cases[0]) is not None


def test_a_rule_the_tools_now_contradict_is_retired_with_the_new_one() -> None:
    cases = cases_from_session(_session(), [])  # the tools refuse ISO dates: DD.MM.YYYY
    g = FailureGroup(cases[0].key, "tool_error", cases[0].message, cases * 2)
    old = Skill("rule-date-as-mm-dd-yyyy", "Argument rule for book_table.",
                "1. When calling book_table, write date as MM/DD/YYYY.",
                "tool-rules", ("book_table",), origin="evolver")
    by_hand = Skill("rule-date-as-written", "A person's rule.", "Dates: ask first.",
                    origin="user")
    (draft,) = propose([g], {old.name: old, by_hand.name: by_hand}, min_support=2)
    assert [(op.op, op.name) for op in draft.ops] == [("add", "rule-date-as-dd-mm-yyyy"),
                                                      ("retire", "rule-date-as-mm-dd-yyyy")]
    assert "contradicted" in draft.ops[1].reason


def _gave_up(error: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    """A session whose refused call was never retried: no hindsight fix."""
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "Book a table for 2 in Oslo on 27 November"}]
    bad = _call("c1", "book_table", args)
    t0 = _turn(0, msgs, [bad])
    msgs += [{"role": "assistant", "content": None, "tool_calls": [bad]},
             {"role": "tool", "tool_call_id": "c1", "content": f"error: {error}"}]
    return [t0, _turn(1, msgs, [])]


def test_the_form_an_error_states_is_a_check_without_a_retry() -> None:
    def patterns(error: str) -> tuple[str, ...]:
        failure = read_error(f"error: {error}", "t", {"date": "x", "time": "x", "name": "x"})
        assert failure is not None
        return stated_patterns(failure.constraints[0])
    assert patterns("date must be MM/DD/YYYY") == (r"\d{2}/\d{2}/\d{4}",)
    assert patterns("time must be HH:MM (24-hour)") == (r"\d{2}:\d{2}",)
    assert len(patterns("time must be 12-hour like 7pm or 7:30pm")) == 2
    args = {"restaurant_id": "r1", "date": "27.11.2026", "time": "7pm", "party_size": 2}
    (case,) = cases_from_session(_gave_up("date must be MM/DD/YYYY, got 27.11.2026", args), [])
    assert case.target is None and fix_check(case) is None
    check = form_check(case)
    assert check is not None and [k for k, _ in check.written] == ["date"]
    rest = {k: v for k, v in args.items() if k != "date"}
    assert check.passes([("book_table", {**rest, "date": "11/27/2026"})])
    assert not check.passes([("book_table", {**rest, "date": "27.11.2026"})])  # the refused form
    assert not check.passes([("book_table", {**rest, "date": "11/28/2026"})])  # another day
    assert not check.passes([("book_table", {**rest, "date": "11/27/2026", "party_size": 3})])
    # 12-hour times have other pieces than 24-hour ones: the form is what is checked
    args24 = {**args, "date": "27.11.2026", "time": "19:30"}
    (tcase,) = cases_from_session(_gave_up("time must be 12-hour like 7pm or 7:30pm, got 19:30", args24), [])
    tcheck = form_check(tcase)
    assert tcheck is not None and dict(tcheck.written)["time"].pieces is None
    assert tcheck.passes([("book_table", {**args24, "time": "7:30pm"})])
    assert not tcheck.passes([("book_table", {**args24, "time": "19:30"})])
    # an error that states no form gives no check
    (other,) = cases_from_session(_gave_up("no restaurant with id r1", args), [])
    assert form_check(other) is None
    # a turn that went well in the older form must now write its own date in the new one
    before = Check("turn_9", {}, "book_table", {"restaurant_id": "r2", "date": "02.10.2026", "party_size": 4},
                   "keep")
    keep = supersede(before, [check])
    assert keep.passes([("book_table", {"restaurant_id": "r2", "date": "10/02/2026", "party_size": 4})])
    assert not keep.passes([("book_table", {"restaurant_id": "r2", "date": "02.10.2026", "party_size": 4})])
    assert not keep.passes([("book_table", {"restaurant_id": "r2", "date": "10/03/2026", "party_size": 4})])


def test_a_drift_the_policy_cannot_recover_from_is_still_learned_and_retires_the_old_rule() -> None:
    args = {"restaurant_id": "r1", "date": "27.11.2026", "time": "7pm", "party_size": 2}
    cases = [c for _ in range(3)
             for c in cases_from_session(_gave_up("date must be MM/DD/YYYY, got 27.11.2026", args), [])]
    g = FailureGroup(cases[0].key, "tool_error", cases[0].message, cases)
    old = Skill("rule-date-as-dd-mm-yyyy", "Argument rule for book_table.",
                "1. When calling book_table, write date as DD.MM.YYYY.", "tool-rules", ("book_table",),
                origin="evolver")
    (draft,) = propose([g], {old.name: old}, min_support=2)
    assert [(op.op, op.name) for op in draft.ops] == [("add", "rule-date-as-mm-dd-yyyy"),
                                                      ("retire", "rule-date-as-dd-mm-yyyy")]
    assert len(draft.checks) == 3 and all(c.written for c in draft.checks)


def test_a_newer_context_line_replaces_the_one_it_contradicts() -> None:
    assert subject("When calling get_weather, write date as DD.MM.YYYY.") == "date"
    assert subject("When calling create_event, book_table, write date as MM/DD/YYYY.") == "date"
    assert subject("When calling send_message, pass notify=true.") == "send_message notify"
    assert subject("When calling create_event, leave reminder_min out.") == "create_event reminder_min"
    assert subject("Keep answers short.") is None
    args = {"restaurant_id": "r1", "date": "27.11.2026", "time": "7pm", "party_size": 2}
    cases = cases_from_session(_gave_up("date must be MM/DD/YYYY, got 27.11.2026", args), [])
    g = FailureGroup(cases[0].key, "tool_error", cases[0].message, cases)
    optimizer = ContextOptimizer(None, None)  # type: ignore[arg-type]  # mutation alone, no replay
    parent = "When calling book_table, write date as DD.MM.YYYY.\nKeep answers short."
    (child,) = asyncio.run(optimizer._mutate(parent, [g]))
    assert child.splitlines() == ["Keep answers short.", "When calling book_table, write date as MM/DD/YYYY."]
    # what a serving skill of the miner already states is left to it
    assert subject_of("rule-date-as-mm-dd-yyyy") == "date"
    assert subject_of("rule-party-size-range") == "party-size"
    assert subject_of("pref-send-message-notify") == slugify("send_message notify")
    assert subject_of("order-check-calendar-before-book-table") is None
    assert asyncio.run(optimizer._mutate(parent, [g], frozenset({"date"}))) == []


def test_a_preference_that_changed_rewrites_the_skill() -> None:
    msgs = [{"role": "user", "content": "Add a team sync on Friday at 10"}]
    call = _call("c1", "create_event", {"title": "team sync", "date": "2026-11-27", "start": "10:00",
                                        "duration_min": 30})
    fb = [{"session_id": "ses_1", "turn_id": None, "score": 0.5, "source": "verifier",
           "text": "You forgot my 30-minute reminder on the event."}]
    cases = cases_from_session([_turn(0, msgs, [call])], fb) * 2
    g = FailureGroup(cases[0].key, "complaint", cases[0].message, cases)
    (fresh,) = propose([g], {}, min_support=2)
    add = fresh.ops[0]
    assert add.op == "add" and add.scope == "tools" and "reminder_min=30" in add.body  # type: ignore[union-attr]
    old = Skill(add.name, "User preference for create_event: 15 minutes.",  # type: ignore[union-attr]
                add.body.replace("=30", "=15").replace("from 2 ", "from 5 "),  # type: ignore[union-attr]
                "preferences", ("create_event",), origin="evolver")
    (draft,) = propose([g], {old.name: old}, min_support=2)
    assert [(op.op, op.name) for op in draft.ops] == [("update", add.name)]
    assert "reminder_min=30" in (draft.ops[0].body or "")  # type: ignore[union-attr]
    # the same rule with more evidence is not rewritten
    same = old.with_(body=add.body.replace("from 2 ", "from 5 "))  # type: ignore[union-attr]
    assert propose([g], {same.name: same}, min_support=2) == []


def test_complaints_with_other_numbers_are_other_wishes_and_order_fixes_supersede() -> None:
    assert group_key("complaint", "You forgot my 15-minute reminder.") != group_key(
        "complaint", "You forgot my 30-minute reminder.")
    assert group_key("tool_error", "no flight 'LH 123' on 2026-11-27") == group_key(
        "tool_error", "no flight 'SK 9' on 2027-01-02")
    fix = Check("turn_1", {}, "check_calendar", {}, "fix", before="book_table")
    searched = {"messages": [{"role": "user", "content": "Book a table"},
                             {"role": "assistant", "tool_calls": [_call("c1", "search_restaurants", {})]},
                             {"role": "tool", "tool_call_id": "c1", "content": '["r1"]'}]}
    booked = Check("turn_2", searched, "book_table", {"restaurant_id": "r1"}, "keep")
    keep = supersede(booked, [fix])
    assert keep.tool == "check_calendar" and keep.passes([("check_calendar", {"date": "27.11.2026"})])
    checked = {"messages": [*searched["messages"],
                            {"role": "assistant", "tool_calls": [_call("c2", "check_calendar", {})]},
                            {"role": "tool", "tool_call_id": "c2", "content": "[]"}]}
    after_check = Check("turn_3", checked, "book_table", {"restaurant_id": "r1"}, "keep")
    assert supersede(after_check, [fix]) is after_check


def test_a_case_is_dated_by_when_its_evidence_arrived() -> None:
    """The loop counts new failures by this: the request that showed the error, or the feedback,
    not the failing turn (a session can begin before the last evolution and fail after it)."""
    turns = _session()
    for i, t in enumerate(turns):
        t["created_at"] = 100.0 + 10 * i
    error = cases_from_session(turns, [])[0]
    assert error.at == 110.0  # turn 1's request carried turn 0's tool error
    complaint = cases_from_session(turns, [{"session_id": "ses_1", "turn_id": None, "score": -1.0,
                                            "text": "Book it for 4 people, not 2.", "created_at": 500.0}])
    assert [(c.kind, c.at) for c in complaint if c.kind != "tool_error"] == [("complaint", 500.0)]
    scored = cases_from_session(turns, [{"session_id": "ses_1", "turn_id": "turn_2", "score": -1.0,
                                         "text": None, "created_at": 400.0, "source": "user"}])
    assert [(c.kind, c.at) for c in scored if c.kind == "low_score"] == [("low_score", 400.0)]


def test_seven_standing_rules_fit_the_small_policy_s_skills_budget() -> None:
    """The miner's layout names the tools once and puts the rule first: 7 rules in 300 tokens.

    Before, each rule repeated its tools in a description line and numbered its one rule
    (63 tokens for the date rule): on days 14-16 of the benchmark (7 rules) the budget
    dropped one of them from every request.
    """
    from modeling.blocks import SkillText
    from proxy.skills_serving import estimate_tokens

    cases = cases_from_session(_session(), [])
    g = FailureGroup(cases[0].key, "tool_error", cases[0].message, cases * 8)
    (draft,) = propose([g], set(), min_support=2)
    op = draft.ops[0]
    tools = "book_table, check_calendar, create_event, get_weather"
    skill = SkillText(op.name, op.description.replace("book_table", tools),  # type: ignore[union-attr]
                      op.body.replace("book_table", tools))  # type: ignore[union-attr]
    assert op.body.splitlines()[0] == "When calling book_table, write date as DD.MM.YYYY."  # type: ignore[union-attr]
    assert estimate_tokens(skill) <= 45  # the widest of the 7; the date rule was 63 before


def test_one_complaint_read_as_a_wish_is_enough_a_tool_error_must_recur() -> None:
    """The user saying what they want is proposed at once (the gate still replays it); a tool
    error must recur. On the benchmark, the 15-minute reminder (day 6) waited for its second
    complaint until day 10."""
    msgs = [{"role": "user", "content": "Add a team sync on Friday at 10"}]
    call = _call("c1", "create_event", {"title": "team sync", "date": "2026-11-27", "start": "10:00",
                                        "duration_min": 30})
    fb = [{"session_id": "ses_1", "turn_id": None, "score": 0.5, "source": "verifier",
           "text": "Alert me 15 minutes before, please."}]
    (case,) = cases_from_session([_turn(0, msgs, [call])], fb)
    wish = FailureGroup(case.key, "complaint", case.message, [case])
    (draft,) = propose([wish], {}, min_support=2, wish_support=1)
    assert "pass reminder_min=15" in draft.ops[0].body and draft.checks  # type: ignore[union-attr]
    assert propose([wish], {}, min_support=2) == []  # without wish_support: min_support for all
    # a complaint no reader understood, or a single tool error, is no wish
    unread = cases_from_session([_turn(0, msgs, [call])], [{**fb[0], "text": "Hmm, not like that."}])
    assert all(c.wish is None for c in unread)
    (error,) = cases_from_session(_session(), [])
    one_error = FailureGroup(error.key, "tool_error", error.message, [error])
    assert propose([one_error], {}, min_support=2, wish_support=1) == []
