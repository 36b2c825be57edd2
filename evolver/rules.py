"""Rules in molt's own words, from what the readers understood of tool errors and complaints.

A rule states the constraint, never the error's text and never its example
values (a small model copies an example date into unrelated calls): ``write
date as DD.MM.YYYY``, ``pass priority="high"``, ``call check_stock
before place_order``. Where the error states its form only as a regular
expression, the rule names the expression, quoted as the tool's data
(`evolver.safety.quote`). A placeholder form is molt's own notation; it is
read from the error (``DD.MM.YYYY``) or, when the tool showed only a pattern or
examples, named from the notations `evolver.notation` knows (the refused value
rewritten in the form the pattern, the examples or a later accepted value fit).

`subject` reads back what one of molt's own rule lines is about, so that the
context optimizer can leave a subject to the skill that states it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from evolver.cases import Case
from evolver.complaints import Wish
from evolver.notation import form_for
from evolver.reading import Constraint
from evolver.safety import data_reason, quote


@dataclass(frozen=True)
class Statement:
    """One rule: what it is about (an argument, or a tool and argument), and the words."""

    argument: str
    slug: str  # the form or kind, for the skill's name (``dd-mm-yyyy``, ``one-of``)
    words: str  # after "When calling <tools>, "


def _choices(values: Sequence[object]) -> str:
    return " or ".join(json.dumps(v) for v in values)


def value_at(args: object, path: str) -> object:
    """The value at an argument path in a call's arguments (``to.city``; in a list, the first item's)."""
    if isinstance(args, dict) and path in args:
        return args[path]
    node = args
    for name in path.split("."):
        while isinstance(node, list):
            node = next((x for x in node if isinstance(x, dict) and name in x), None)
        if not isinstance(node, dict):
            return None
        node = node.get(name)
    return node


def state_constraint(c: Constraint, cases: Sequence[Case]) -> Statement | None:
    """A tool error's constraint in molt's words, or None when there is nothing to state.

    `c.argument` may be a path into the arguments (``to.city``): the values are looked up there."""
    arg = c.argument
    if arg is None:
        return None
    form = c.forms[0] if c.forms else None
    if form is None:  # a known notation the pattern, the examples or what the tool later accepted fit
        refused = c.refused if c.refused is not None else next(
            (v for case in cases if (v := value_at(case.extras.get("arguments") or {}, arg)) is not None), None)
        accepted = [value_at(case.target[1], arg) for case in cases if case.target is not None]
        form = form_for(arg, refused, pattern=c.pattern, accepted=accepted, examples=c.examples,
                        said=c.said)
    if form is not None:
        return Statement(arg, form, f"write {arg} as {form}")
    if c.pattern and data_reason(c.pattern) is None:
        return Statement(arg, "pattern", f"write {arg} so that it matches the pattern {quote(c.pattern)}")
    if c.kind == "choice" and c.choices:
        return Statement(arg, "one-of", f"{arg} takes one of {_choices(c.choices)}")
    if c.kind == "range" and (c.minimum is not None or c.maximum is not None):
        lo = f"at least {c.minimum:g}" if c.minimum is not None else ""
        hi = f"at most {c.maximum:g}" if c.maximum is not None else ""
        return Statement(arg, "range", f"keep {arg} {' and '.join(x for x in (lo, hi) if x)}")
    if c.kind == "missing":
        return Statement(arg, "required", f"always pass {arg}")
    if c.kind == "unexpected":
        return Statement(arg, "unexpected", f"do not pass {arg}")
    if c.kind == "type" and c.type:
        return Statement(arg, "type", f"pass {arg} as a JSON {c.type}")
    return None


def state_wish(w: Wish) -> str:
    if w.before is not None:
        return f"call {w.tool} before you call {w.before}"
    if w.value is None:
        return f"leave {w.param} out"
    return f"pass {w.param}={json.dumps(w.value)}"


def line_for(tools: Sequence[str], words: str) -> str:
    """A rule as one line: ``When calling reserve, schedule, write date as DD.MM.YYYY.``"""
    return f"When calling {', '.join(tools)}, {words}." if tools else f"{words[0].upper()}{words[1:]}."


_SUBJECT = re.compile(r"^When calling ([^,]+(?:, [a-z_][\w.-]*)*), (?:write|pass|keep|always pass|do not pass|"
                      r"leave) ([\w.-]+)|^When calling [^,]+(?:, [a-z_][\w.-]*)*, ([\w.-]+) takes one of")


def subject(line: str) -> str | None:
    """What one of molt's rule lines is about: ``date``; a wish: ``notify_user urgent``."""
    m = _SUBJECT.match(line.strip())
    if m is None:
        return None
    arg = m.group(2) or m.group(3)
    if re.search(r", (?:pass|leave) [\w.-]+(?:=| out)", line) and m.group(1) and "," not in m.group(1):
        return f"{m.group(1)} {arg}"
    return arg
