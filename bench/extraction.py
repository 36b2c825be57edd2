"""Extraction: did the evolver state each drift truly? Checked against toolworld's schedule, after a run.

A drift event is a (day, family, value) the schedule switches on within the
run's days. It counts as extracted when a rule the gate accepted while that
value was in force (the drift day up to the family's next change) states the
convention truly: for the tools' conventions, a form (a placeholder such as
``DD.MM.YYYY`` or a quoted regular expression) that every value written the
true way matches and no value written another way does, next to the argument
it governs; for the user's wishes, the wished argument and value (or the call
order). This is the benchmark's check, by the report only: the library never
sees the schedule.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.toolworld import conventions_for_day
from bench.toolworld.conventions import FAMILIES, format_date, format_name, format_time
from evolver.checks import shape_regex
from evolver.notation import NOTATIONS
from evolver.reading import examples_in, forms_in, placeholder_regex

_DAY = dt.date(2026, 11, 27)
_TIMES = ((19, 30), (7, 0), (12, 15))


def samples(family: str, value: str) -> list[str]:
    """Values written under a convention (the tools' conventions only)."""
    if family == "date":
        return [format_date(_DAY, value)]
    if family == "time":
        return [format_time(h, m, value) for h, m in _TIMES]
    if family == "name_order":
        return [format_name("Ann Berg", value), format_name("Lars Dahl", value)]
    return []


# the argument each of the tools' conventions governs, as a rule names it
ARGUMENTS = {"date": ("date",), "time": ("time", "start"), "name_order": ("name",)}
# a wish stated in molt's words (`evolver.rules.state_wish`) or close to them
_WISHES: dict[tuple[str, str], str] = {
    ("reminder", "15"): r"reminder_min\W{1,3}15\b",
    ("reminder", "30"): r"reminder_min\W{1,3}30\b",
    ("reminder", "none"): r"leave reminder_min out|do not pass reminder_min",
    ("notify", "true"): r"notify\W{1,3}true\b",
    ("notify", "false"): r"notify\W{1,3}false\b|leave notify out",
    ("units", "imperial"): r"units\W{1,3}imperial\b",
    ("units", "metric"): r"units\W{1,3}metric\b",
    ("order", "calendar_first"): r"check_calendar before (?:you call )?book_table",
}


_STRFTIME = {"DD": "%d", "MM": "%m", "YYYY": "%Y", "HH": "%H"}


def _placeholder_regex(form: str) -> str | None:
    """A placeholder as a regular expression that keeps what each letter run means: in
    ``DD.MM.YYYY`` the day comes first (a plain digit pattern would take ``MM.DD.YYYY`` too)."""
    runs = re.findall(r"[A-Z]+|[^A-Z]", form)
    if not all(r in _STRFTIME or r == "MM" or not r.isalpha() for r in runs):
        return placeholder_regex(form)
    if "HH" in runs:  # a clock: HH:MM
        return placeholder_regex(form)
    fmt = "".join(_STRFTIME.get(r, r) for r in runs)
    return re.escape(_DAY.strftime(fmt))


def _patterns(line: str) -> list[str]:
    """The forms a rule line states: placeholders (as regular expressions) and quoted patterns."""
    out = [r for f in forms_in(line) if (r := _placeholder_regex(f))]
    out += re.findall(r"pattern «([^»]+)»", line)
    return out


def _matches(pattern: str, value: str) -> bool:
    try:
        return re.fullmatch(pattern.removeprefix("^").removesuffix("$"), value) is not None
    except re.error:
        return False


def _telling(patterns: Sequence[str], true: Sequence[str], other: Sequence[str]) -> bool:
    return any(all(_matches(p, s) for s in true) and not any(_matches(p, s) for s in other)
               for p in patterns)


def states(family: str, value: str, body: str) -> str | None:
    """How a rule's text states ``family`` = ``value`` truly: ``"words"`` (molt's own: a form or
    the wished value), ``"quoted"`` (only inside what the tool said, quoted as data: its
    examples or placeholders tell the true form apart), or None (see the module doc)."""
    if (family, value) in _WISHES:
        return "words" if re.search(_WISHES[(family, value)], body) else None
    true = samples(family, value)
    other = [s for v in FAMILIES[family].values if v != value for s in samples(family, v)]
    quoted = False
    for line in body.splitlines():
        if not any(re.search(rf"\b{a}\b", line) for a in ARGUMENTS.get(family, ())) and "«" not in line:
            continue
        bare = re.sub(r"«[^»]*»", " ", line)
        # a notation named in molt's words (``write name as Last, First``) that reads the true
        # values and none written another way
        if any(f"as {n.form}" in bare and all(n.read(s) for s in true) and not any(n.read(s) for s in other)
               for n in NOTATIONS):
            return "words"
        said = " ".join(re.findall(r"«([^»]*)»", line))
        if _telling(_patterns(re.sub(r"«[^»]*»", " ", line) + " " + " ".join(
                f"pattern «{p}»" for p in re.findall(r"pattern «([^»]+)»", line))), true, other):
            return "words"
        shapes = [shape_regex(e) for e in examples_in(said)] + _patterns(said)
        # the quote's examples together cover the true form and none of the others
        quoted = quoted or (bool(shapes) and all(any(_matches(p, s) for p in shapes) for s in true)
                            and not any(_matches(p, s) for p in shapes for s in other))
    return "quoted" if quoted else None


@dataclass(frozen=True)
class Event:
    day: int
    family: str
    value: str
    until: int  # the last day of the run this value is in force


def drift_events(days: Sequence[int]) -> list[Event]:
    """The schedule's switches within ``days`` (day 1's base is no drift)."""
    if not days:
        return []
    first, last = min(days), max(days)
    out: list[Event] = []
    for day in range(max(2, first), last + 1):
        now, before = conventions_for_day(day), conventions_for_day(day - 1)
        for family, value in now.items():
            if before[family] != value:
                until = next((d - 1 for d in range(day + 1, last + 1)
                              if conventions_for_day(d)[family] != value), last)
                out.append(Event(day, family, value, until))
    return out


def extraction(rules: Sequence[dict[str, Any]], days: Sequence[int]) -> list[dict[str, Any]]:
    """Per drift event: the first accepted rule that states it truly (day, episode, name), or None.

    ``rules``: accepted edits as the runner lists them (``day``, ``after_episode``, ``name``, ``body``).
    """
    out = []
    for ev in drift_events(days):
        found = [(r, how) for r in rules if r.get("body") and r.get("day") is not None
                 and ev.day <= r["day"] <= ev.until and (how := states(ev.family, ev.value, r["body"]))]
        # molt's own words first; a quote of the tool's text counts apart
        found.sort(key=lambda rh: rh[1] != "words")
        hit, how = found[0] if found else (None, None)
        out.append({"day": ev.day, "family": ev.family, "value": ev.value, "until": ev.until,
                    "extracted": how == "words", "quoted": how == "quoted",
                    "rule": None if hit is None else {**{k: hit.get(k) for k in ("name", "day", "after_episode")},
                                                      "how": how}})
    return out
