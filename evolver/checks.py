"""What a replayed turn must do to count as fixed (or as not broken): checks that hold values.

A check names a recorded turn (its request is replayed through serving) and
the call it should produce. Checks come from evidence in the trajectories,
never from a benchmark's verifier, and they hold every value the evidence
supports, so a rule that fixes a form by corrupting a value fails them:

- a tool error followed, later in the session, by the same tool succeeding
  (hindsight): the arguments that changed are the fix, narrowed to those the
  error's reading names. An argument whose written form changed
  (``27.11.2026`` for ``2026-11-27``) must be written in the accepted form
  *and* carry the accepted value's pieces (the same day, month and year). The
  arguments the refused call already had right must stay as they were, and
  the call may carry no argument the accepted call did not have;
- a tool error with no later success, whose reading states the accepted
  form (a placeholder pattern, a regular expression, example values): the
  refused argument must match one of those forms, with the refused value's
  pieces where the form has as many (a rearrangement: ``27.11.2026`` for
  ``2026-11-27``); the other arguments as they were, none added;
- a complaint read as a wish (`evolver.complaints`): the wished value, the
  call's other arguments as they were, none added; or an order of calls;
- a turn that went well: the same call again, no argument added or changed
  (non-regression), except where newer failures show a form is now refused
  or a wish has changed (``supersede``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evolver.cases import Case
from evolver.complaints import Wish
from evolver.notation import fullmatch_pattern, rewritings
from evolver.reading import Constraint, placeholder_regex
from store.chat_shapes import tool_calls

Calls = list[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class Written:
    """An argument written in one of the accepted forms (regular expressions), with these pieces."""

    patterns: tuple[str, ...]
    pieces: tuple[str, ...] | None = None  # None: any value in the form
    refused: Any = None  # the value the tool refused (its form is the one now refused)

    def passes(self, value: Any) -> bool:
        if not isinstance(value, str) or not any(fullmatch_pattern(p, value) for p in self.patterns):
            return False
        return self.pieces is None or tuple(pieces(value) or ()) == self.pieces


@dataclass(frozen=True)
class Check:
    turn_id: str
    request: dict[str, Any]
    tool: str
    expect: dict[str, Any]
    kind: str  # fix | keep
    # arguments that must be written in an accepted form (see `Written`)
    written: tuple[tuple[str, Written], ...] = ()
    # arguments the evidence shows right: they must stay as they were
    hold: tuple[tuple[str, Any], ...] = ()
    # the arguments the call may carry (None: any); an added argument breaks the check
    allowed: frozenset[str] | None = None
    # an order fix: ``tool`` must be called before this one
    before: str | None = None
    # where the check comes from: hindsight | form | wish | order | keep
    source: str = ""

    def passes(self, calls: Calls) -> bool:
        return any(name == self.tool and self._args_pass(args) for name, args in calls)

    def _args_pass(self, args: dict[str, Any]) -> bool:
        if self.allowed is not None and any(v is not None and k not in self.allowed for k, v in args.items()):
            return False
        return (all(_same(args.get(k), v) for k, v in self.expect.items())
                and all(_same(args.get(k), v) for k, v in self.hold)
                and all(w.passes(args.get(k)) for k, w in self.written))

    @property
    def key(self) -> str:
        return repr((self.turn_id, self.tool, sorted(self.expect.items()), self.written, self.hold,
                     sorted(self.allowed) if self.allowed is not None else None, self.before))




_DIGITS, _LETTERS = re.compile(r"\d+"), re.compile(r"[^\W\d_]+")


def shape(value: Any) -> str | None:
    """The written form of a string: runs of digits -> ``9``, runs of letters -> ``a``."""
    if not isinstance(value, str):
        return None
    return _LETTERS.sub("a", _DIGITS.sub("9", value))


def shape_regex(value: str) -> str:
    """A regular expression for strings written like `value` (digit and letter counts free)."""
    out = []
    for run in re.findall(r"\d+|[^\W\d_]+|.", value):
        out.append(r"\d+" if run.isdigit() else r"[^\W\d_]+" if run.isalpha() else re.escape(run))
    return "".join(out)


def pieces(value: Any) -> list[str] | None:
    """The runs of digits (without leading zeros) and of letters of a string, sorted."""
    if not isinstance(value, str):
        return None
    return sorted(p.lstrip("0") or "0" if p.isdigit() else p.lower()
                  for p in re.findall(r"\d+|[^\W\d_]+", value))


def _same(a: Any, b: Any) -> bool:
    if a == b:
        return True
    return json.dumps(a, sort_keys=True).strip('"').lower() == json.dumps(b, sort_keys=True).strip('"').lower()


def stated_patterns(c: Constraint) -> tuple[str, ...]:
    """The accepted forms a reading states, as regular expressions."""
    out = [r for f in c.forms if (r := placeholder_regex(f))]
    if c.pattern:
        out.append(c.pattern)
    out += [shape_regex(e) for e in c.examples]
    return tuple(dict.fromkeys(out))


def _constraints(case: Case) -> dict[str, Constraint]:
    failure = case.reading()
    if failure is None:
        return {}
    return {c.argument: c for c in failure.constraints if c.argument}


def fix_check(case: Case) -> Check | None:
    """From a tool error with a hindsight target: the arguments that changed (see the module doc)."""
    if case.kind != "tool_error" or case.target is None:
        return None
    tool, target = case.target
    failed = case.extras.get("arguments") or {}
    stated = _constraints(case)
    changed = {k: v for k, v in target.items() if not _same(failed.get(k), v)}
    # the retry may change more than the error asked for: when the error names some of the
    # changed arguments, only those count
    named = {k: v for k, v in changed.items() if k in stated}
    changed = named or changed
    written: list[tuple[str, Written]] = []
    expect: dict[str, Any] = {}
    for k, v in changed.items():
        old = failed.get(k)
        if isinstance(v, str) and isinstance(old, str) and shape(v) != shape(old):
            patterns = stated_patterns(stated[k]) if k in stated else ()
            patterns = tuple(p for p in patterns if fullmatch_pattern(p, v)) or (shape_regex(v),)
            written.append((k, Written(patterns, tuple(pieces(v) or ()), old)))
        else:
            expect[k] = v
    hold = tuple((k, v) for k, v in target.items() if k in failed and _same(failed[k], v))
    return Check(case.turn_id, case.request, tool, expect or ({} if written else dict(target)), "fix",
                 tuple(written), hold, frozenset(target), source="hindsight")


def form_check(case: Case) -> Check | None:
    """From a tool error whose reading states the accepted form, with no retry needed."""
    if case.kind != "tool_error" or not case.tools:
        return None
    failed = case.extras.get("arguments") or {}
    for arg, c in _constraints(case).items():
        value = failed.get(arg)
        patterns = stated_patterns(c)
        if not patterns or not isinstance(value, str) or any(fullmatch_pattern(p, value) for p in patterns):
            continue
        # the same pieces rearranged, where every accepted form has as many pieces as the refused value
        counts = {_count_pieces(p) for p in patterns}
        same = counts == {len(pieces(value) or [])}
        hold = tuple((k, v) for k, v in failed.items() if k != arg)
        return Check(case.turn_id, case.request, case.tools[0], {}, "fix",
                     ((arg, Written(patterns, tuple(pieces(value) or ()) if same else None, value)),),
                     hold, frozenset(failed), source="form")
    return None


def _count_pieces(pattern: str) -> int | None:
    """How many runs of digits or letters a simple pattern has (``\\d{2}\\.\\d{2}\\.\\d{4}``: 3)."""
    body = re.sub(r"\((\\d(?:\{\d+(?:,\d+)?\}|\+)?)\)", r"\1", pattern.removeprefix("^").removesuffix("$"))
    if re.search(r"[|()?*]", body.replace(r"\d+", "").replace(r"[^\W\d_]+", "")):
        return None
    return len(re.findall(r"\\d(?:\{\d+(?:,\d+)?\}|\+)?|\[\^\\W\\d_\]\+|[A-Za-z]+", body))


def wish_check(case: Case, wish: Wish | None = None) -> Check | None:
    """From a complaint read as a wish: the wished value (or call order), the rest as it was."""
    wish = wish or case.wish
    if case.kind != "complaint" or wish is None:
        return None
    if wish.before is not None:
        if not any(n == wish.before for n, _ in case.calls):
            return None
        return Check(case.turn_id, case.request, wish.tool, {}, "fix", before=wish.before, source="order")
    args = next((a for n, a in case.calls if n == wish.tool), None)
    if args is None or wish.param is None:
        return None
    hold = tuple((k, v) for k, v in args.items() if k != wish.param)
    return Check(case.turn_id, case.request, wish.tool, {wish.param: wish.value}, "fix", hold=hold,
                 allowed=frozenset([*args, wish.param]), source="wish")


def preference_check(case: Case) -> Check | None:
    return wish_check(case)


def evidence_check(case: Case) -> Check | None:
    """What a replay of a failing turn must do: its hindsight fix, else the form its error states,
    else the wish its complaint states."""
    return fix_check(case) or form_check(case) or wish_check(case)


def keep_check(case: Case) -> Check | None:
    """A turn that went well: the same call, nothing added or changed."""
    if not case.calls:
        return None
    tool, args = case.calls[0]
    return Check(case.turn_id, case.request, tool, dict(args), "keep", allowed=frozenset(args), source="keep")


def supersede(keep: Check, fixes: Sequence[Check]) -> Check:
    """A turn that went well, re-read in the light of newer failures.

    When the failures being fixed show that the tools now refuse a written form
    (dates as ``9-9-9``) and the turn that went well wrote an argument in that
    very form, that argument now has to be written in the accepted form, with
    its own value's pieces where the fix is a rearrangement. When a wish names
    an argument of the same tool, the wished value replaces the one sent. When
    the user now wants another call first, the turn must make that call.
    """
    for fix in fixes:
        if fix.before and keep.tool == fix.before and not _called(keep.request, fix.tool):
            return Check(keep.turn_id, keep.request, fix.tool, {}, "keep", source="keep")
    expect, allowed = dict(keep.expect), set(keep.allowed or ())
    written = dict(keep.written)
    for fix in fixes:
        for k, w in fix.written:
            old = expect.get(k)
            if k not in expect or not isinstance(old, str) or shape(old) != shape(w.refused):
                continue
            rearranged = w.pieces is not None and w.pieces == tuple(pieces(w.refused) or ())
            expect.pop(k)
            written[k] = Written(w.patterns, tuple(pieces(old) or ()) if rearranged else None, old)
        if fix.source == "wish" and fix.tool == keep.tool:
            for k, v in fix.expect.items():
                expect[k] = v
                allowed.add(k)
    if expect == keep.expect and written == dict(keep.written):
        return keep
    return dataclasses.replace(keep, expect=expect, written=tuple(written.items()),
                               allowed=frozenset(allowed) if keep.allowed is not None else None)


def _called(request: Mapping[str, Any], tool: str) -> bool:
    """Whether the conversation so far already has a call to ``tool``."""
    return any(c.name == tool
               for m in request.get("messages") or [] if isinstance(m, dict) and m.get("role") == "assistant"
               for c in tool_calls(m))


def refusal_checks(cases: Sequence[Case]) -> list[tuple[float, Check]]:
    """What each tool error says the tool now refuses: (when it was seen, its written-form check)."""
    out = []
    for case in cases:
        check = fix_check(case) or form_check(case)
        if check is not None and check.written:
            out.append((case.at, check))
    return out


def restate(keep: Check, at: float, refusals: Sequence[tuple[float, Check]]) -> Check:
    """A turn that went well, judged against every refusal given since (not only the proposal's
    evidence).

    - Its own tool's refusals: a call the tool now refuses is no turn that goes well today, and
      a replay that writes it the accepted way does not break it (`supersede`).
    - Other tools' refusals of a value written in a known notation (a date, a clock time, a
      person's name; `evolver.notation`): when the turn wrote a value of that kind in the very
      notation now refused, its success predates the change and no longer shows that the form
      is still accepted. The replay may keep the value as it was or write the same content in
      the accepted notation (``19:30`` or ``7:30pm``); any other value still breaks it. A turn
      that went well after the refusal is held as it was.
    """
    newer = [check for seen, check in refusals if seen > at]
    own = [c for c in newer if c.tool == keep.tool]
    keep = supersede(keep, own) if own else keep
    others = [c for c in newer if c.tool != keep.tool]
    if not others:
        return keep
    expect, written = dict(keep.expect), dict(keep.written)
    for k, v in keep.expect.items():
        alternatives: list[str] = []
        for refusal in others:
            for _, w in refusal.written:
                alternatives += rewritings(v, k, w.refused, w.patterns)
        if alternatives and isinstance(v, str):
            expect.pop(k)
            written[k] = Written(tuple(re.escape(a) for a in dict.fromkeys([v, *alternatives])), None, v)
    if expect == keep.expect:
        return keep
    return dataclasses.replace(keep, expect=expect, written=tuple(written.items()))
