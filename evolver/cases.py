"""Failure cases: what went wrong in recorded turns, read from the store.

Signals, strongest first: tool errors seen in the next request of a session
(a tool message that starts with "error"), negative feedback on a turn
(verifier, judge, user), and complaints on a session (feedback text with a
negative or partial score). Each case keeps the turn's request for replay,
and where the session later shows the same tool succeeding, that call as a
hindsight target: what the turn should have done.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Call = tuple[str, dict[str, Any]]
_GOT = re.compile(r",?\s*\(?\bgot\b.*$", re.IGNORECASE | re.DOTALL)


@dataclass
class Case:
    turn_id: str
    session_id: str
    kind: str  # tool_error | complaint | low_score
    message: str
    tools: list[str]
    request: dict[str, Any]
    calls: list[Call]
    target: Call | None = None
    score: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return group_key(self.kind, self.message)


def group_key(kind: str, message: str) -> str:
    """What failures count as the same: a tool error's text without the refused value and numbers
    (``got 2027-04-04``); a complaint's text as said (``15-minute`` and ``30-minute`` reminders
    are two wishes)."""
    text = _GOT.sub("", message.strip()).lower()
    if kind != "complaint":
        text = re.sub(r"\d+", "#", text)
    text = re.sub(r"\s+", " ", text).strip()
    return f"{kind}:{text}"


def constraint_of(message: str) -> str:
    """`date must be DD.MM.YYYY, got 2026-11-27` -> `date must be DD.MM.YYYY`."""
    return _GOT.sub("", message.removeprefix("error:").strip()).strip().rstrip(".")


def refused_value(message: str) -> str | None:
    m = re.search(r"\bgot\s+(.+)$", message.strip(), re.IGNORECASE)
    return m.group(1).strip().rstrip(").") if m else None


def _args(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except (json.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def turn_calls(turn: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(call id, name, arguments) of the tool calls a turn answered with."""
    out = []
    for c in turn.get("tool_calls") or []:
        fn = c.get("function") or {}
        out.append((str(c.get("id") or ""), str(fn.get("name") or ""), _args(fn.get("arguments"))))
    return out


def is_error(result: str) -> bool:
    head = result.lstrip()[:80].lower()
    return head.startswith(("error", '{"error"'))


def _results_of(turn: Mapping[str, Any], nxt: Mapping[str, Any] | None) -> dict[int, str]:
    """The tool result of each of `turn`'s calls (by position), read from the next request.

    Results are matched within the tool messages that follow the turn's own
    answer, by call id, else by order: ids are not unique across turns for
    every model.
    """
    if nxt is None:
        return {}
    before = len((turn.get("request") or {}).get("messages") or [])
    later = ((nxt.get("request") or {}).get("messages") or [])[before + 1:]
    segment = []
    for m in later:
        if m.get("role") != "tool":
            break
        segment.append(m)
    calls = turn_calls(turn)
    out: dict[int, str] = {}
    for i, (cid, _, _) in enumerate(calls):
        match = next((m for m in segment if cid and m.get("tool_call_id") == cid), None)
        if match is None and i < len(segment):
            match = segment[i]
        if match is not None:
            c = match.get("content")
            out[i] = c if isinstance(c, str) else json.dumps(c)
    return out


def cases_from_session(turns: Sequence[Mapping[str, Any]], feedback: Iterable[Mapping[str, Any]]) -> list[Case]:
    """Every failure case of one session (turns ordered by index, main turns only)."""
    turns = [t for t in turns if t.get("turn_type", "main") == "main" and t.get("status") == "ok"]
    results = [_results_of(t, turns[i + 1] if i + 1 < len(turns) else None) for i, t in enumerate(turns)]
    cases: list[Case] = []
    for i, t in enumerate(turns):
        calls = turn_calls(t)
        simple = [(n, a) for _, n, a in calls]
        for j, (_, name, args) in enumerate(calls):
            if j not in results[i] or not is_error(results[i][j]):
                continue
            target = None
            for k in range(i + 1, len(turns)):
                for jj, (_, lname, largs) in enumerate(turn_calls(turns[k])):
                    if lname == name and jj in results[k] and not is_error(results[k][jj]):
                        target = (lname, largs)
                        break
                if target:
                    break
            msg = results[i][j].removeprefix("error:").strip()
            cases.append(Case(str(t["id"]), str(t["session_id"]), "tool_error", msg, [name],
                              t["request"], simple, target, -1.0, {"arguments": args}))
    by_turn = {str(t["id"]): t for t in turns}
    for f in feedback:
        score = f.get("score")
        text = (f.get("text") or "").strip()
        explained = {c.turn_id for c in cases if c.kind == "tool_error"}
        if (f.get("turn_id") and f["turn_id"] in by_turn and f["turn_id"] not in explained
                and score is not None and score < 0 and not text):
            scored = by_turn[f["turn_id"]]
            scored_calls = [(n, a) for _, n, a in turn_calls(scored)]
            cases.append(Case(str(scored["id"]), str(scored["session_id"]), "low_score",
                              f"low score from {f.get('source')}", [n for n, _ in scored_calls],
                              scored["request"], scored_calls, None, float(score)))
        elif text and (score is None or score < 1) and not f.get("turn_id"):
            for sentence in split_sentences(text):
                blamed = _blamed_turn(turns, sentence)
                if blamed is None:
                    continue
                blamed_calls = [(n, a) for _, n, a in turn_calls(blamed)]
                cases.append(Case(str(blamed["id"]), str(blamed["session_id"]), "complaint", sentence,
                                  [n for n, _ in blamed_calls], blamed["request"], blamed_calls, None,
                                  score))
    return cases


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4}


def _blamed_turn(turns: Sequence[Mapping[str, Any]], complaint: str) -> Mapping[str, Any] | None:
    """The turn whose tool calls the complaint is most likely about."""
    cw = words(complaint)
    best, best_score = None, -1
    for t in turns:
        calls = turn_calls(t)
        if not calls:
            continue
        vocab: set[str] = set()
        for _, name, args in calls:
            vocab |= set(name.split("_"))
            for k in args:
                vocab |= set(k.split("_"))
        score = sum(1 for w in cw if any(w.startswith(v[:4]) for v in vocab if len(v) >= 4))
        if score >= best_score:
            best, best_score = t, score
    return best
