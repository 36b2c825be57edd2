"""Reading what a user's complaint asks for, against the tools the agent was offered.

A complaint is read as a `Wish`: an argument value for a tool call
(``schedule`` with ``alarm_min=15``), or an order of calls
(``check_stock`` before ``place_order``). Reading is parsing, not a list
of sentences: the words are matched against the tools' own schemas (names,
parameter names, descriptions, enum values and what the description says
each value means), so any tool that documents itself can be complained
about.

- Direction: what the user rejects is read apart from what they want.
  "not X", "instead of X", "rather than X", "why X?" reject X; the value is
  one the user wants, never one they reject. A boolean the user complains
  about is the opposite of what the agent sent.
- Values with units: "15 minutes", "a 15-minute", "half an hour", "an
  hour", converted to the parameter's unit when its name or description
  says minutes, hours or seconds. A complaint about a number with no number
  in it ("I did not want a reminder") asks to leave the argument out.
- Order: "before", "first", "then" with a tool the agent did not call ahead of
  one it did call; the complaint must speak of both.

Complaints that mean the same group together by their wish (`Wish.key`),
whatever their words. A complaint no reading understands yields None: it is
still a case (grouped by its text) for the evolver model, if one is set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from store.chat_shapes import tool_schemas

Call = tuple[str, dict[str, Any]]

_STOP = {"the", "and", "for", "you", "your", "that", "this", "with", "from", "when", "what", "want",
         "wanted", "please", "them", "they", "their", "have", "into", "onto", "also", "just", "should",
         "would", "could", "every", "each", "always", "again", "never", "about", "instead", "rather",
         "than", "like", "only", "need", "mine", "ours", "time", "times", "kind", "then", "there"}
_NEG_SPAN = re.compile(r"\b(?:not|no|instead of|rather than|never)\s+(?:in\s+|the\s+|a\s+|an\s+|my\s+)?"
                       r"([\w-]+(?:\s*-?\s*(?:minutes?|mins?|hours?|hrs?|seconds?))?)"
                       r"|\bwhy\s+([\w-]+)\s*\?", re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:not|no|don't|do not|didn't|did not|never|stop|without|none)\b", re.IGNORECASE)
_ORDER = re.compile(r"\b(?:before|first|then|beforehand|prior to|ahead of|until)\b", re.IGNORECASE)
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                 "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
                 "thirty": 30, "forty": 40, "forty-five": 45, "fifty": 50, "sixty": 60, "ninety": 90}
_UNIT = r"(?P<unit>seconds?|secs?|minutes?|mins?|hours?|hrs?|h|m|s)\b"
_AMOUNT = re.compile(r"(?P<n>\d+(?:\.\d+)?|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True))
                     + r")\s*-?\s*" + _UNIT, re.IGNORECASE)
_PHRASES = {r"\bhalf an hour\b": 30 * 60, r"\ba quarter of an hour\b|\bquarter-hour\b": 15 * 60,
            r"\ban hour\b": 60 * 60}
_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hr": 3600,
            "hour": 3600}
_BARE = re.compile(r"\b(\d+)\b")


@dataclass(frozen=True)
class Wish:
    """What a complaint asks for: ``tool`` called with ``param=value``, or ``tool`` before ``before``."""

    tool: str
    param: str | None = None
    value: Any = None
    before: str | None = None
    confidence: float = 0.0

    @property
    def key(self) -> str:
        if self.before is not None:
            return f"order:{self.tool}<{self.before}"
        return f"set:{self.tool}.{self.param}={json.dumps(self.value, sort_keys=True)}"


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 3 and w not in _STOP]


def _match(word: str, vocab: str) -> bool:
    """Same word up to its ending (``notifying`` ~ ``notify``, ``phones`` ~ ``phone``)."""
    n = min(len(word), len(vocab), 5)
    return n >= 3 and word[:n] == vocab[:n] and (n == 5 or len(word) == len(vocab) or
                                                 abs(len(word) - len(vocab)) <= 3)


def _hits(words: Sequence[str], vocab: Sequence[str]) -> int:
    return sum(1 for v in set(vocab) if any(_match(w, v) for w in words))


def _split_direction(text: str) -> tuple[str, list[str]]:
    """(the text without what it rejects, the rejected phrases)."""
    rejected = [m.group(1) or m.group(2) for m in _NEG_SPAN.finditer(text)]
    return _NEG_SPAN.sub(" ", text), [r for r in rejected if r]


def value_meanings(spec: Mapping[str, Any]) -> dict[str, list[str]]:
    """What the description says each enum value means: ``fast (express, overnight)`` -> {fast: [express, overnight]}."""
    enum = [str(e) for e in spec.get("enum") or []]
    desc = str(spec.get("description") or "")
    out: dict[str, list[str]] = {e: [] for e in enum}
    spots = sorted((m.start(), e) for e in enum for m in re.finditer(rf"\b{re.escape(e)}\b", desc))
    for i, (start, e) in enumerate(spots):
        end = spots[i + 1][0] if i + 1 < len(spots) else len(desc)
        out[e] += [w for w in _words(desc[start + len(e):end]) if w not in ("or", "and")]
    return out


def _enum_value(spec: Mapping[str, Any], wanted: Sequence[str], rejected: Sequence[str], sent: Any) -> Any:
    meanings = value_meanings(spec)

    def says(ws: Sequence[str], value: str) -> bool:
        return any(_match(w, value.lower()) for w in ws) or _hits(ws, meanings.get(value, [])) > 0

    enum = [str(e) for e in spec.get("enum") or []]
    rejected_words = [w for r in rejected for w in _words(r)]
    yes = [e for e in enum if says(wanted, e) and not says(rejected_words, e)]
    no = {e for e in enum if says(rejected_words, e)}
    if sent is not None:
        no.add(str(sent))
    yes = [e for e in yes if e not in no] or ([e for e in enum if e not in no] if len(enum) == 2 and no
                                              and (rejected_words or yes) else [])
    return yes[0] if len(yes) == 1 else None


def _unit_seconds(param: str, spec: Mapping[str, Any]) -> int | None:
    text = f"{param.replace('_', ' ')} {spec.get('description') or ''}".lower()
    for word, secs in (("minute", 60), ("min", 60), ("hour", 3600), ("second", 1), ("sec", 1)):
        if re.search(rf"\b{word}", text):
            return secs
    return None


def amounts(text: str) -> list[int]:
    """Durations said in `text`, in seconds: ``15-minute`` -> 900, ``half an hour`` -> 1800."""
    found: list[tuple[int, int]] = []
    rest = text
    for phrase, secs in _PHRASES.items():
        for m in re.finditer(phrase, rest, re.IGNORECASE):
            found.append((m.start(), secs))
        rest = re.sub(phrase, lambda m: " " * len(m.group(0)), rest, flags=re.IGNORECASE)
    for m in _AMOUNT.finditer(rest):
        raw = m.group("n").lower()
        n = float(raw) if raw[0].isdigit() else float(_NUMBER_WORDS[raw])
        unit = m.group("unit").lower().rstrip("s") or "s"
        found.append((m.start(), int(n * _SECONDS.get(unit, _SECONDS.get(unit[:3], 60)))))
    return [secs for _, secs in sorted(found)]


def _number_value(param: str, spec: Mapping[str, Any], wanted_text: str, text: str) -> Any:
    unit = _unit_seconds(param, spec)
    said = amounts(wanted_text)
    if said and unit:
        return said[0] // unit
    bare = _BARE.findall(wanted_text)
    if bare:
        return int(bare[0])
    if _NEGATION.search(text):
        return None  # "I did not want a reminder": leave it out
    return _NOTHING


_NOTHING = object()


def _set_wish(text: str, call: Call, fn: Mapping[str, Any]) -> Wish | None:
    tool, args = call
    wanted_text, rejected = _split_direction(text)
    words, wanted = _words(text), _words(wanted_text)
    props = ((fn.get("parameters") or {}).get("properties") or {})
    best: Wish | None = None
    for param, spec in props.items():
        if not isinstance(spec, dict):
            continue
        vocab = [p for p in param.lower().split("_") if len(p) >= 3] + _words(str(spec.get("description") or ""))
        vocab += [w for ws in value_meanings(spec).values() for w in ws] + [str(e).lower() for e in
                                                                            spec.get("enum") or []]
        hits = _hits(words, vocab)
        if not hits:
            continue
        kind, sent = spec.get("type"), args.get(param)
        value: Any = _NOTHING
        if spec.get("enum"):
            value = _enum_value(spec, wanted, rejected, sent)
            value = _NOTHING if value is None else value
        elif kind == "boolean":
            value = not bool(sent)
        elif kind in ("integer", "number"):
            value = _number_value(param, spec, wanted_text, text)
        if value is _NOTHING or value == sent:
            continue
        wish = Wish(tool, param, value, confidence=float(hits))
        if best is None or wish.confidence > best.confidence:
            best = wish
    return best


def _order_wish(text: str, calls: Sequence[Call], schemas: Mapping[str, Mapping[str, Any]]) -> Wish | None:
    """``first`` before ``then``: ``then`` is a call the turn made, ``first`` a tool it did not call
    ahead of it; the complaint must speak of both (the order words themselves name no tool)."""
    if not _ORDER.search(text):
        return None
    words = [w for w in _words(text) if not _ORDER.fullmatch(w)]
    called = [n for n, _ in calls]

    def score(name: str) -> int:
        fn = schemas.get(name) or {}
        named = _hits(words, [p for p in name.split("_") if len(p) >= 3])
        return 2 * named + _hits(words, _words(str(fn.get("description") or "")))

    scores = {n: score(n) for n in schemas}
    pairs = [(scores[first] + scores[then], first, then) for then in dict.fromkeys(called) if scores.get(then)
             for first in schemas if first != then and scores[first]
             and first not in called[:called.index(then)]]
    if not pairs:
        return None
    total, first, then = max(pairs, key=lambda p: p[0])
    return Wish(first, before=then, confidence=float(total))


def read_complaint(text: str, calls: Sequence[Call], request: Mapping[str, Any]) -> Wish | None:
    """The wish a complaint states about `calls` (made with `request`'s tools), or None."""
    schemas = tool_schemas(request)
    found = [w for call in calls if call[0] in schemas
             if (w := _set_wish(text, call, schemas[call[0]])) is not None]
    order = _order_wish(text, calls, schemas)
    if order is not None:
        found.append(order)
    return max(found, key=lambda w: w.confidence, default=None)
