"""Common notations of values, to name the form a tool wants when its error shows only a pattern.

Many validators state a form only as a regular expression
(``String should match pattern '^(1[0-2]|[1-9])(:[0-5]\\d)?(am|pm)$'``) or by
example values; a small policy cannot read either, and a rule must never copy
an example value (the policy writes it into unrelated calls). This module
knows a few notations real APIs use for dates, clock times and person names.
It reads the refused value in each notation that parses it, writes the same
content in every other notation of its kind, and names the form whose
writing the evidence accepts: the tool's pattern matches it, the value the
tool later accepted equals it, the error's example values are written in it,
or the error names the form. The answer is molt's own label
(``DD.MM.YYYY``, ``h:mm with am or pm``, ``Last, First``), never a value.

When more than one form fits (``^\\d{2}/\\d{2}/\\d{4}$`` fits both
``MM/DD/YYYY`` and ``DD/MM/YYYY``) and nothing else tells them apart, the
answer is None: the caller falls back to stating the pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Content = tuple[int, ...] | tuple[str, ...]


@dataclass(frozen=True)
class Notation:
    kind: str  # date | time | name
    form: str  # molt's label for the form
    read: Callable[[str], Content | None]
    # every way this notation writes one content (``7pm`` and ``7:00pm``)
    write: Callable[[Content], tuple[str, ...]]


def _date(order: str, sep: str) -> Notation:
    widths = {"Y": 4, "M": 2, "D": 2}
    labels = {"Y": "YYYY", "M": "MM", "D": "DD"}
    rx = re.compile(re.escape(sep).join(rf"(\d{{{widths[p]}}})" for p in order))

    def read(text: str) -> Content | None:
        m = rx.fullmatch(text.strip())
        if m is None:
            return None
        parts = dict(zip(order, (int(g) for g in m.groups())))
        y, mo, d = parts["Y"], parts["M"], parts["D"]
        return (y, mo, d) if 1 <= mo <= 12 and 1 <= d <= 31 else None

    def write(c: Content) -> tuple[str, ...]:
        y, mo, d = (int(x) for x in c)
        vals = {"Y": f"{y:04d}", "M": f"{mo:02d}", "D": f"{d:02d}"}
        return (sep.join(vals[p] for p in order),)

    return Notation("date", sep.join(labels[p] for p in order), read, write)


_H24 = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
_H12 = re.compile(r"(1[0-2]|0?[1-9])(?::([0-5]\d))?\s*([ap])\.?m\.?", re.IGNORECASE)


def _read_h24(text: str) -> Content | None:
    m = _H24.fullmatch(text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def _read_h12(text: str) -> Content | None:
    m = _H12.fullmatch(text.strip())
    if m is None:
        return None
    hour = int(m.group(1)) % 12 + (12 if m.group(3).lower() == "p" else 0)
    return hour, int(m.group(2) or 0)


def _write_h24(c: Content) -> tuple[str, ...]:
    h, m = (int(x) for x in c)
    return (f"{h:02d}:{m:02d}",)


def _write_h12(c: Content) -> tuple[str, ...]:
    h, m = (int(x) for x in c)
    suffix, h12 = ("am" if h < 12 else "pm"), (h % 12 or 12)
    out = [f"{h12}:{m:02d}{suffix}", f"{h12}:{m:02d} {suffix}", f"{h12}:{m:02d} {suffix.upper()}"]
    if m == 0:
        out = [f"{h12}{suffix}", f"{h12} {suffix}", *out]
    return tuple(out)


_GIVEN_FAMILY = re.compile(r"([^\s,]+)\s+([^\s,]+)")
_FAMILY_GIVEN = re.compile(r"([^\s,]+),\s*([^\s,]+)")


def _read_first_last(text: str) -> Content | None:
    m = _GIVEN_FAMILY.fullmatch(text.strip())
    return (m.group(1), m.group(2)) if m else None


def _read_last_first(text: str) -> Content | None:
    m = _FAMILY_GIVEN.fullmatch(text.strip())
    return (m.group(2), m.group(1)) if m else None


NOTATIONS: tuple[Notation, ...] = (
    *(_date(order, sep) for order, sep in (("YMD", "-"), ("DMY", "."), ("MDY", "/"), ("DMY", "/"),
                                           ("YMD", "/"), ("DMY", "-"), ("MDY", "-"), ("YMD", "."))),
    Notation("time", "HH:MM on the 24-hour clock", _read_h24, _write_h24),
    Notation("time", "h:mm with am or pm (12-hour clock)", _read_h12, _write_h12),
    Notation("name", "First Last", _read_first_last, lambda c: (f"{c[0]} {c[1]}",)),
    Notation("name", "Last, First", _read_last_first, lambda c: (f"{c[1]}, {c[0]}",)),
)

# person names only for an argument whose name says it holds one (a city is two words too)
_PERSON = re.compile(r"name|person|contact|customer|recipient|attendee|guest|author", re.IGNORECASE)


def _kinds_for(argument: str) -> set[str]:
    return {"date", "time"} | ({"name"} if _PERSON.search(argument) else set())


def _names_form(form: str, said: str) -> bool:
    """The error's own words name the form (``expected the name as Last, First``)."""
    return bool(said) and re.search(rf"(?<![\w,]){re.escape(form)}(?![\w,])", said) is not None


def form_for(argument: str, refused: object, *, pattern: str | None = None,
             accepted: Sequence[object] = (), examples: Sequence[str] = (), said: str = "") -> str | None:
    """The form the evidence asks for, in molt's words, or None when it can not tell.

    ``refused``: the value the tool refused; ``pattern``: the regular expression
    the error states; ``accepted``: values the tool later accepted for the same
    argument; ``examples``: example values the error gave; ``said``: what the
    error said about the argument.
    """
    if not isinstance(refused, str) or not refused.strip():
        return None
    try:
        rx = re.compile(pattern) if pattern else None
    except re.error:
        rx = None
    accepted_text = [a.strip() for a in accepted if isinstance(a, str)]
    kinds = _kinds_for(argument)
    sources = [n for n in NOTATIONS if n.kind in kinds and n.read(refused) is not None]
    found: dict[str, set[str]] = {}  # form -> how it writes the refused value's content
    for source in sources:
        content = source.read(refused)
        assert content is not None
        for target in NOTATIONS:
            if target.kind != source.kind or target.form == source.form:
                continue
            if target.read(refused) is not None:
                continue  # the refused value is already written this way: not the form wanted
            written = target.write(content)
            if (rx is not None and any(rx.fullmatch(w) for w in written)) \
                    or any(w in accepted_text for w in written) \
                    or (examples and all(target.read(e) is not None for e in examples)) \
                    or _names_form(target.form, said):
                found.setdefault(target.form, set()).update(written)
    if len(found) > 1 and accepted_text:  # the later accepted value decides between look-alikes
        found = {f: w for f, w in found.items() if w.intersection(accepted_text)}
    return next(iter(found)) if len(found) == 1 else None


def rewritings(value: object, argument: str, refused: object, accepted: Sequence[str]) -> tuple[str, ...]:
    """``value`` written in each form that a tool's refusal of ``refused`` accepts, same content.

    ``accepted``: the accepted forms the refusal states, as regular expressions.
    When ``value`` is written in a notation the refused value is written in
    (both ``19:30`` and ``18:00`` on the 24-hour clock), the answer holds
    ``value``'s content written in every notation of the same kind that an
    accepted form matches (``7:30pm``); otherwise it is empty.
    """
    if not isinstance(value, str) or not isinstance(refused, str):
        return ()
    kinds = _kinds_for(argument)
    out: list[str] = []
    for source in NOTATIONS:
        if source.kind not in kinds or source.read(refused) is None:
            continue
        content = source.read(value)
        if content is None:
            continue
        for target in NOTATIONS:
            if target.kind != source.kind or target.form == source.form or target.read(refused) is not None:
                continue
            if not any(fullmatch_pattern(p, w) for p in accepted for w in target.write(source.read(refused) or ())):
                continue
            out += [w for w in target.write(content) if w != value]
    return tuple(dict.fromkeys(out))


def fullmatch_pattern(pattern: str, text: str) -> bool:
    """Whether `text` is written whole in `pattern` (anchors optional; a bad pattern matches nothing)."""
    try:
        return re.fullmatch(pattern.removeprefix("^").removesuffix("$"), text) is not None
    except re.error:
        return False
