"""What a replayed turn must do to count as fixed (or as not broken).

A check names a recorded turn (its request is replayed through serving) and
the call it should produce: a tool and the arguments that matter. Checks come
from evidence in the trajectories, never from the benchmark's verifier:
- a tool error followed, later in the session, by the same tool succeeding:
  the arguments that changed are the fix (hindsight), narrowed to those the
  error names (by parameter or by the refused value) when it names any. When the accepted value
  is written in another form than the refused one (``21.04.2027`` for
  ``2027-04-21``, ``Berg, Ann`` for ``Ann Berg``), the error was about the
  form, so a replay passes when it writes the value in the accepted form:
  a skill can fix how values are written, not which value the request named.
  The arguments the refused call already had right must stay as they were;
- a tool error with no later success in the session (the agent gave up, or
  never found the form): when the error states the accepted form (a pattern
  such as ``MM/DD/YYYY``, or examples after "like"), a replay passes when it
  writes the refused argument in one of those forms, with the same pieces
  rearranged where the forms have as many pieces (``27.11.2026`` ->
  ``11/27/2026``, ``Ann Berg`` -> ``Berg, Ann``), and the call's other
  arguments as they were (``form_check``);
- a complaint whose words name a parameter of a tool the agent called, with a
  value read from the complaint (a number, a boolean, an enum value);
- a turn that went well: the same call again (non-regression), except for
  an argument written in a form the failures show is now refused, or a call
  the user now wants another one before (``supersede``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evolver.cases import Case, constraint_of, refused_value

# Plain-world synonyms for enum values (units are named many ways).
SYNONYMS = {
    "fahrenheit": "imperial", "miles": "imperial", "mph": "imperial", "pounds": "imperial",
    "feet": "imperial", "inches": "imperial", "celsius": "metric", "kilometers": "metric",
    "kilometres": "metric", "meters": "metric", "metres": "metric", "kilograms": "metric",
}
_NEGATION = re.compile(r"\b(don't|do not|did not want|didn't want|no more|stop|without asking)\b")


@dataclass(frozen=True)
class Check:
    turn_id: str
    request: dict[str, Any]
    tool: str
    expect: dict[str, Any]
    kind: str  # fix | keep
    # arguments whose *form* must match ``expect`` (see ``shape``), not their value
    form_only: frozenset[str] = frozenset()
    # arguments the refused call already had right (the tool then accepted them unchanged):
    # a fix must not break them on the way
    hold: tuple[tuple[str, Any], ...] = ()
    # for a form fix: the refused values of the form-fixed arguments
    refused: tuple[tuple[str, Any], ...] = ()
    # arguments that must be written in one of these forms (shapes), read from the error's text
    forms: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # of those, the ones whose pieces must be the refused value's pieces, rearranged
    pieces: frozenset[str] = frozenset()
    # an order fix: ``tool`` must be called before this one (``check_calendar`` before ``book_table``)
    before: str | None = None

    def passes(self, calls: list[tuple[str, dict[str, Any]]]) -> bool:
        return any(name == self.tool and self._args_pass(args) for name, args in calls)

    def _args_pass(self, args: dict[str, Any]) -> bool:
        refused = dict(self.refused)
        return (all((shape(args.get(k)) == shape(v)) if k in self.form_only else _same(args.get(k), v)
                    for k, v in self.expect.items())
                and all(_same(args.get(k), v) for k, v in self.hold)
                and all(shape(args.get(k)) in shapes for k, shapes in self.forms)
                and all(pieces(args.get(k)) == pieces(refused.get(k)) for k in self.pieces))


_DIGITS, _LETTERS = re.compile(r"\d+"), re.compile(r"[^\W\d_]+")


def shape(value: Any) -> str | None:
    """The written form of a string: runs of digits -> ``9``, runs of letters -> ``a``.

    ``21.04.2027`` -> ``9.9.9``; ``2027-04-21`` -> ``9-9-9``; ``Berg, Ann`` -> ``a, a``;
    ``7:30pm`` -> ``9:9a``. None for values that are not strings.
    """
    if not isinstance(value, str):
        return None
    return _LETTERS.sub("a", _DIGITS.sub("9", value))


def pieces(value: Any) -> list[str] | None:
    """The runs of digits (without leading zeros) and of letters of a string, sorted."""
    if not isinstance(value, str):
        return None
    return sorted(p.lstrip("0") or "0" if p.isdigit() else p.lower()
                  for p in re.findall(r"\d+|[^\W\d_]+", value))


# a written pattern: DD.MM.YYYY, MM/DD/YYYY, HH:MM (placeholders joined by punctuation)
_PATTERN = re.compile(r"\b[A-Z]{1,4}(?:[^\w\s][A-Z]{1,4})+\b")
_LIKE = re.compile(r"\blike\s+(.+?)(?:\)|$|;|, got)", re.IGNORECASE)


def accepted_forms(constraint: str) -> tuple[str, ...]:
    """The shapes an error's text says are accepted: ``MM/DD/YYYY`` -> ``9/9/9``; ``like 7pm or 7:30pm``."""
    forms = [_DIGITS.sub("9", re.sub(r"[A-Z]+", "9", p)) for p in _PATTERN.findall(constraint)]
    like = _LIKE.search(constraint)
    if like:
        forms += [s for s in (shape(x.strip(" .")) for x in re.split(r"\s+or\s+", like.group(1))) if s]
    return tuple(dict.fromkeys(forms))


def _same(a: Any, b: Any) -> bool:
    if a == b:
        return True
    return json.dumps(a, sort_keys=True).strip('"').lower() == json.dumps(b, sort_keys=True).strip('"').lower()


def fix_check(case: Case) -> Check | None:
    """From a tool error with a hindsight target: the arguments that changed."""
    if case.kind != "tool_error" or case.target is None:
        return None
    tool, target = case.target
    failed = case.extras.get("arguments") or {}
    changed = {k: v for k, v in target.items() if not _same(failed.get(k), v)}
    # the retry may change more than the error asked for (an argument added on the way):
    # when the error names some of the changed arguments, or the refused values, only those count
    named = {k: v for k, v in changed.items() if _named(k, failed.get(k), case.message)}
    changed = named or changed
    form_only = frozenset(k for k, v in changed.items()
                          if shape(v) is not None and shape(failed.get(k)) not in (None, shape(v)))
    hold = tuple((k, v) for k, v in target.items() if k in failed and _same(failed[k], v))
    refused = tuple((k, failed.get(k)) for k in sorted(form_only))
    return Check(case.turn_id, case.request, tool, changed or dict(target), "fix", form_only,
                 hold if changed else (), refused)


def form_check(case: Case) -> Check | None:
    """From a tool error that states the accepted form, with no retry needed (see the module doc)."""
    if case.kind != "tool_error" or not case.tools:
        return None
    forms = accepted_forms(constraint_of(case.message))
    failed = case.extras.get("arguments") or {}
    got = refused_value(case.message)
    arg = next((k for k, v in failed.items() if got is not None and isinstance(v, str) and v == got), None)
    arg = arg or next((k for k, v in failed.items() if isinstance(v, str) and _named(k, None, case.message)
                       and shape(v) not in forms), None)
    if not forms or arg is None or shape(failed[arg]) in forms:
        return None
    # the same pieces rearranged, where every accepted form has as many pieces as the refused value
    same = {len(_LETTERS.findall(f)) + f.count("9") for f in forms} == {len(pieces(failed[arg]) or [])}
    hold = tuple((k, v) for k, v in failed.items() if k != arg)
    return Check(case.turn_id, case.request, case.tools[0], {}, "fix", hold=hold,
                 refused=((arg, failed[arg]),), forms=((arg, forms),),
                 pieces=frozenset({arg}) if same else frozenset())


def evidence_check(case: Case) -> Check | None:
    """What a replay of a failing turn must do: its hindsight fix, else the form its error states."""
    return fix_check(case) or form_check(case) or preference_check(case)


def supersede(keep: Check, fixes: Sequence[Check]) -> Check:
    """A turn that went well, re-read in the light of newer failures.

    When the failures being fixed show that the tools now refuse a written form
    (dates as ``9-9-9``) and the turn that went well wrote an argument in that
    very form (before the change), that argument now has to be written in the
    accepted form: the newer evidence wins. Other arguments stay as they were.
    """
    for fix in fixes:
        # a complaint asks for another call first: a turn that went well by calling the later
        # tool straight away (before the user's wish changed) must now call the first one
        if fix.before and keep.tool == fix.before and not _called(keep.request, fix.tool):
            return Check(keep.turn_id, keep.request, fix.tool, {}, "keep")
    expect, form_only = dict(keep.expect), set(keep.form_only)
    forms, refused, same = dict(keep.forms), dict(keep.refused), set(keep.pieces)
    for fix in fixes:
        fix_forms = dict(fix.forms)
        for k, old in fix.refused:
            if k not in expect or k in form_only or shape(expect[k]) != shape(old) or shape(old) is None:
                continue
            if k in fix_forms:  # the error's forms, with this turn's own value rearranged
                refused[k] = expect.pop(k)
                forms[k] = fix_forms[k]
                if k in fix.pieces:
                    same.add(k)
            else:  # a hindsight fix: the accepted value's form
                expect[k] = fix.expect[k]
                form_only.add(k)
    if expect == keep.expect:
        return keep
    return dataclasses.replace(keep, expect=expect, form_only=frozenset(form_only),
                               forms=tuple(forms.items()), refused=tuple(refused.items()),
                               pieces=frozenset(same))


def _called(request: dict[str, Any], tool: str) -> bool:
    """Whether the conversation so far already has a call to ``tool``."""
    return any(((c.get("function") or {}).get("name") == tool)
               for m in request.get("messages") or [] if isinstance(m, dict) and m.get("role") == "assistant"
               for c in m.get("tool_calls") or [] if isinstance(c, dict))


def _named(param: str, refused: Any, message: str) -> bool:
    if re.search(rf"\b{re.escape(param)}\b", message):
        return True
    return isinstance(refused, str | int | float) and bool(str(refused)) and str(refused) in message


def keep_check(case: Case) -> Check | None:
    if not case.calls:
        return None
    tool, args = case.calls[0]
    return Check(case.turn_id, case.request, tool, dict(args), "keep")


def _schemas(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for t in request.get("tools") or []:
        fn = t.get("function") or {}
        if fn.get("name"):
            out[fn["name"]] = (fn.get("parameters") or {}).get("properties") or {}
    return out


def infer_preference(case: Case) -> tuple[str, str, Any] | None:
    """(tool, parameter, value) a complaint asks for, read against the tools' schemas."""
    text = case.message.lower()
    words = re.findall(r"[a-z]+", text)
    schemas = _schemas(case.request)
    best: tuple[int, str, str, Any] | None = None
    for tool, args in case.calls:
        for param, spec in (schemas.get(tool) or {}).items():
            parts = [p for p in param.lower().split("_") if len(p) >= 4]
            hits = sum(1 for p in parts if any(w.startswith(p[:5]) for w in words))
            enum = [str(e).lower() for e in spec.get("enum") or []]
            mentioned = [e for e in enum if e in words] + [SYNONYMS[w] for w in words if SYNONYMS.get(w) in enum]
            if not hits and not mentioned:
                continue
            value = _value(spec, text, mentioned, args.get(param))
            if value is _NOTHING:
                continue
            score = hits + len(mentioned)
            if best is None or score > best[0]:
                best = (score, tool, param, value)
    return best[1:] if best else None


_NOTHING = object()


def _value(spec: dict[str, Any], text: str, mentioned: list[str], sent: Any) -> Any:
    kind = spec.get("type")
    if spec.get("enum"):
        others = [m for m in mentioned if not _same(m, sent)]
        return others[0] if others else _NOTHING
    if kind in ("integer", "number"):
        m = re.search(r"\b(\d+)\b|\b(\d+)-", text)
        if not m:
            return _NOTHING
        return int(m.group(1) or m.group(2))
    if kind == "boolean":
        return not bool(_NEGATION.search(text))
    return _NOTHING


def preference_check(case: Case) -> Check | None:
    found = infer_preference(case)
    if found is None:
        return None
    tool, param, value = found
    return Check(case.turn_id, case.request, tool, {param: value}, "fix")
