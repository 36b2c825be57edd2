"""Failure cases: what went wrong in recorded turns, read from the store.

Signals, strongest first: tool errors seen in the next request of a session
(a tool message that one of the error readers, `evolver.reading`, reads as an
error), negative feedback on a turn (verifier, judge, user), and complaints
on a session (feedback text with a negative or partial score), read by
`evolver.complaints`. Each case keeps the turn's request for replay,
and where the session later shows the same tool succeeding, that call as a
hindsight target: what the turn should have done.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evolver.complaints import Wish, read_complaint
from evolver.reading import ToolFailure, read_error, read_message
from store.chat_shapes import tool_calls

Call = tuple[str, dict[str, Any]]


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
    # what the error readers understood of a tool error
    failure: ToolFailure | None = None
    # what the complaint reader understood of a complaint
    wish: Wish | None = None
    # when the failure became visible (the next request that showed the tool's error, or
    # the feedback): what the loop's "new failures since the last evolution" counts by
    at: float = 0.0

    def reading(self) -> ToolFailure | None:
        """What the readers understood of a tool error (read from its message when not kept)."""
        if self.kind != "tool_error":
            return None
        if self.failure is None:
            self.failure = read_message(self.message, self.tools[0] if self.tools else "",
                                        self.extras.get("arguments") or {}, grammar="text")
        return self.failure

    @property
    def key(self) -> str:
        failure = self.reading()
        if failure is not None and failure.understood:
            return failure_key(failure)
        if self.kind == "complaint" and self.wish is not None:
            return f"complaint:{self.wish.key}"
        return group_key(self.kind, self.message)


def failure_key(failure: ToolFailure) -> str:
    """Tool errors that mean the same: the same arguments, constraint kinds and stated forms."""
    parts = sorted(f"{c.argument}:{c.kind}:{'|'.join(c.forms) or c.pattern or ''}:"
                   f"{'|'.join(map(str, c.choices))}" for c in failure.constraints if c.argument)
    return "tool_error:" + ";".join(parts)


def group_key(kind: str, message: str) -> str:
    """Failures no reader understood: the text without quoted values and numbers."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'#'", message.strip().lower())
    if kind != "complaint":
        text = re.sub(r"\d+", "#", text)
    text = re.sub(r"\s+", " ", text).strip()
    return f"{kind}:{text}"


def turn_calls(turn: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(call id, name, arguments) of the tool calls a turn answered with."""
    return [(c.id, c.name, c.args()) for c in tool_calls(turn)]


def is_error(result: str, tool: str = "", args: Mapping[str, Any] | None = None) -> bool:
    return read_error(result, tool, args or {}) is not None


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
            failure = read_error(results[i][j], name, args) if j in results[i] else None
            if failure is None:
                continue
            target = None
            for k in range(i + 1, len(turns)):
                for jj, (_, lname, largs) in enumerate(turn_calls(turns[k])):
                    if lname == name and jj in results[k] and not is_error(results[k][jj], lname, largs):
                        target = (lname, largs)
                        break
                if target:
                    break
            # one case per argument the error is about: each is its own recurring problem
            parts = [dataclasses.replace(failure, constraints=(c,)) for c in failure.constraints
                     if c.argument] or [failure]
            seen_at = float(turns[i + 1].get("created_at") or 0.0) if i + 1 < len(turns) else 0.0
            for part in parts:
                cases.append(Case(str(t["id"]), str(t["session_id"]), "tool_error", failure.message, [name],
                                  t["request"], simple, target, -1.0, {"arguments": args}, failure=part,
                                  at=seen_at))
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
                              scored["request"], scored_calls, None, float(score),
                              at=float(f.get("created_at") or 0.0)))
        elif text and (score is None or score < 1) and not f.get("turn_id"):
            for sentence in split_sentences(text):
                blamed, wish = _blamed_turn(turns, sentence)
                if blamed is None:
                    continue
                blamed_calls = [(n, a) for _, n, a in turn_calls(blamed)]
                cases.append(Case(str(blamed["id"]), str(blamed["session_id"]), "complaint", sentence,
                                  [n for n, _ in blamed_calls], blamed["request"], blamed_calls, None,
                                  score, wish=wish, at=float(f.get("created_at") or 0.0)))
    return cases


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4}


def _blamed_turn(turns: Sequence[Mapping[str, Any]], complaint: str
                 ) -> tuple[Mapping[str, Any] | None, Wish | None]:
    """The turn the complaint is about (the last one whose calls it speaks of), and the wish read.

    With no reader's understanding, the last turn with tool calls is blamed (the
    case still reaches the evolver model, if one is configured).
    """
    best: tuple[Mapping[str, Any] | None, Wish | None, float] = (None, None, -1.0)
    for t in turns:
        calls = [(n, a) for _, n, a in turn_calls(t)]
        if not calls:
            continue
        wish = read_complaint(complaint, calls, t.get("request") or {})
        score = wish.confidence if wish is not None else 0.0
        if score >= best[2]:
            best = (t, wish, score)
    return best[0], best[1]
