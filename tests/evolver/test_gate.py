"""Value-true gate checks: a rule that fixes the form but corrupts a value is rejected.

The gate is the real one, its checks come from real recorded sessions (read
by the real error readers); only the replay is scripted: a `Replayer` that
answers like an agent following whichever library it is given, so that a
faithful rule, a rule that corrupts the date, and a rule that adds an
argument nobody asked for can be told apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from evolver.cases import Case, cases_from_session
from evolver.checks import Check, Written, evidence_check, keep_check, refusal_checks, restate
from evolver.gate import Gate

TOOLS = [{"type": "function", "function": {"name": "reserve", "description": "Reserve seats.", "parameters": {
    "type": "object", "properties": {"day": {"type": "string"}, "seats": {"type": "integer"},
                                     "note": {"type": "string"}}}}}]
ERROR = ("1 validation error for reserve\nday\n  Value error, day should be in DD.MM.YYYY format, "
         "e.g. 05.03.2026 [type=value_error, input_value='{v}', input_type=str]")


def _call(cid: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": "reserve", "arguments": json.dumps(args)}}


def _session(sid: str, iso: str, dmy: str, seats: int) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": f"reserve {seats} seats ({sid})"}]
    bad = _call("c1", {"day": iso, "seats": seats})
    t0 = {"id": f"{sid}_0", "session_id": sid, "idx": 0, "turn_type": "main", "status": "ok",
          "request": {"messages": list(msgs), "tools": TOOLS}, "tool_calls": [bad]}
    msgs += [{"role": "assistant", "content": None, "tool_calls": [bad]},
             {"role": "tool", "tool_call_id": "c1", "content": ERROR.format(v=iso)}]
    good = _call("c2", {"day": dmy, "seats": seats})
    t1 = {"id": f"{sid}_1", "session_id": sid, "idx": 1, "turn_type": "main", "status": "ok",
          "request": {"messages": list(msgs), "tools": TOOLS}, "tool_calls": [good]}
    msgs += [{"role": "assistant", "content": None, "tool_calls": [good]},
             {"role": "tool", "tool_call_id": "c2", "content": '{"ok": true}'}]
    t2 = {"id": f"{sid}_2", "session_id": sid, "idx": 2, "turn_type": "main", "status": "ok",
          "request": {"messages": list(msgs), "tools": TOOLS}, "tool_calls": None}
    return [t0, t1, t2]


SESSIONS = [("s1", "2026-11-27", "27.11.2026", 2), ("s2", "2026-03-14", "14.03.2026", 4),
            ("s3", "2026-07-02", "02.07.2026", 3)]


class ScriptedAgent:
    """Replays a turn as an agent would with each library: the current one writes ISO dates."""

    def __init__(self) -> None:
        self.truth = {f"reserve {n} seats ({sid})": (iso, dmy, n) for sid, iso, dmy, n in SESSIONS}
        self.truth["reserve 5 seats (kept)"] = ("2026-01-20", "20.01.2026", 5)

    async def replay(self, request: dict[str, Any], *, tenant: str, candidate: str | None,
                     context: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        iso, dmy, seats = self.truth[request["messages"][0]["content"]]
        if candidate is None:
            return [("reserve", {"day": iso, "seats": seats})]
        if candidate == "faithful":
            return [("reserve", {"day": dmy, "seats": seats})]
        if candidate == "corrupts-the-day":  # the form is right, the day is always the first
            return [("reserve", {"day": "01." + dmy[3:], "seats": seats})]
        if candidate == "adds-a-note":  # right day, plus an argument the evidence never asked for
            return [("reserve", {"day": dmy, "seats": seats, "note": "window seat"})]
        raise AssertionError(candidate)


def _checks() -> tuple[list[Any], list[Any]]:
    cases = [c for sid, iso, dmy, n in SESSIONS for c in cases_from_session(_session(sid, iso, dmy, n), [])]
    fix = [c for c in (evidence_check(x) for x in cases) if c]
    kept = Case("kept_0", "s9", "good", "", ["reserve"],
                {"messages": [{"role": "user", "content": "reserve 5 seats (kept)"}], "tools": TOOLS},
                [("reserve", {"day": "2026-01-20", "seats": 5})])
    keep = [c for c in [keep_check(kept)] if c]
    return fix, keep


def _judge(candidate: str) -> Any:
    fix, keep = _checks()
    return asyncio.run(Gate(ScriptedAgent(), "t", minibatch=2).judge(candidate, fix, keep))


def test_the_readers_turn_each_session_into_a_value_true_check() -> None:
    fix, keep = _checks()
    assert len(fix) == 3 and all(c.source == "hindsight" for c in fix)
    assert keep[0].expect == {"day": "2026-01-20", "seats": 5}


def test_a_faithful_rule_passes() -> None:
    result = _judge("faithful")
    assert result.accepted, result.reason
    assert (result.fix_current, result.fix_candidate) == (0.0, 1.0)


def test_a_rule_that_corrupts_a_value_is_rejected() -> None:
    result = _judge("corrupts-the-day")
    assert not result.accepted
    assert result.fix_candidate == 0.0  # every date in the right form, none the right day


def test_a_rule_that_adds_an_argument_the_evidence_does_not_ask_for_is_rejected() -> None:
    result = _judge("adds-a-note")
    assert not result.accepted


class BreaksAnotherTurn(ScriptedAgent):
    """Right on every failing turn, but a turn about something else now gets another seat count."""

    async def replay(self, request: dict[str, Any], *, tenant: str, candidate: str | None,
                     context: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        if request["messages"][0]["content"] == "note for 7":
            return [("reserve", {"seats": 7 if candidate is None else 8, "note": "n"})]
        return await super().replay(request, tenant=tenant, candidate="faithful" if candidate else None)


def test_a_rejection_for_breaking_turns_names_them_and_what_was_called_instead() -> None:
    fix, _ = _checks()
    other = Case("other_0", "s8", "good", "", ["reserve"],
                 {"messages": [{"role": "user", "content": "note for 7"}], "tools": TOOLS},
                 [("reserve", {"seats": 7, "note": "n"})])
    keep = [c for c in [keep_check(other)] if c]
    result = asyncio.run(Gate(BreaksAnotherTurn(), "t", minibatch=2).judge("c", fix, keep))
    assert not result.accepted and "other_0 (reserve)" in result.reason
    assert result.broken == [{"turn_id": "other_0", "tool": "reserve", "expected": {"seats": 7, "note": "n"},
                              "called": [["reserve", {"seats": 8, "note": "n"}]]}]


def test_a_turn_that_went_well_is_judged_against_every_newer_refusal_of_its_tool() -> None:
    cases = [c for sid, iso, dmy, n in SESSIONS for c in cases_from_session(_session(sid, iso, dmy, n), [])]
    for c in cases:
        c.at = 10.0
    refusals = refusal_checks(cases)
    assert len(refusals) == 3 and all(dict(chk.written).get("day") for _, chk in refusals)
    _, keep = _checks()
    # made before the tool refused ISO days: its ISO day is no longer a turn that goes well
    then = restate(keep[0], 5.0, refusals)
    assert dict(then.written)["day"].passes("20.01.2026") and "day" not in then.expect
    assert then.passes([("reserve", {"day": "20.01.2026", "seats": 5})])
    assert not then.passes([("reserve", {"day": "2026-01-20", "seats": 5})])
    assert not then.passes([("reserve", {"day": "21.01.2026", "seats": 5})])  # its own day, rewritten
    # made after the refusals (the tool took ISO again): as it was
    assert restate(keep[0], 20.0, refusals) == keep[0]
    # another tool's turn from before the refusals: it may keep its ISO day or write the same day
    # the accepted way, nothing else; from after them, it is held as it was
    other_tool = dataclasses.replace(keep[0], tool="book")
    before = restate(other_tool, 5.0, refusals)
    assert before.passes([("book", {"day": "2026-01-20", "seats": 5})])
    assert before.passes([("book", {"day": "20.01.2026", "seats": 5})])
    assert not before.passes([("book", {"day": "21.01.2026", "seats": 5})])
    assert not before.passes([("book", {"day": "20.01.2026", "seats": 6})])
    assert restate(other_tool, 20.0, refusals) == other_tool


def test_another_tools_older_success_may_follow_a_new_clock_notation_but_keeps_its_time() -> None:
    """A pydantic pattern refusal of a 24-hour time on one tool: an older booking on another tool
    (its own argument name) may stay as it was or move to the 12-hour clock, same time."""
    pattern = r"^(1[0-2]|[1-9])(:[0-5]\d)?(am|pm)$"
    refusal = Check("t0", {}, "plan", {}, "fix", (("start", Written((pattern,), None, "19:00")),), source="form")
    keep = Check("k0", {}, "book", {"time": "19:30", "party": 2}, "keep", allowed=frozenset({"time", "party"}),
                 source="keep")
    then = restate(keep, 1.0, [(2.0, refusal)])
    assert then.passes([("book", {"time": "19:30", "party": 2})])
    assert then.passes([("book", {"time": "7:30pm", "party": 2})])
    assert not then.passes([("book", {"time": "8:30pm", "party": 2})])
    assert not then.passes([("book", {"time": "7:30pm", "party": 3})])
    assert restate(keep, 3.0, [(2.0, refusal)]) == keep
    # a value of another kind is no evidence either way
    dates = Check("k1", {}, "book", {"note": "table by the window"}, "keep", source="keep")
    assert restate(dates, 1.0, [(2.0, refusal)]) == dates
