"""Conventions: what makes a call right that the tool schema does not say.

A convention set is a plain ``dict[str, str]`` mapping each family to one of
its values, e.g. ``{"date": "dmy", "time": "h24", ...}``. Families come in two
kinds, and the difference is the point of the benchmark:

* API conventions (``date``, ``time``, ``name_order``) are enforced by the
  tools: a call that breaks one gets an error naming what was expected.
* User preferences (``units``, ``reminder``, ``notify``, ``order``) are
  accepted by the tools; the user complains at the end of the episode.

The values in force on a simulated day come from the drift schedule in
``data/schedule.json``: day 1 uses :data:`BASE`, and each entry switches some
families from its day on.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"

Conventions = dict[str, str]


@dataclass(frozen=True, slots=True)
class Family:
    """One convention family and the values it can take (the first is the base)."""

    name: str
    values: tuple[str, ...]
    kind: str  # "api" or "preference"

    @property
    def base(self) -> str:
        return self.values[0]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("date", ("iso", "dmy", "mdy"), "api"),
        Family("time", ("h24", "h12"), "api"),
        Family("name_order", ("first_last", "last_first"), "api"),
        Family("units", ("metric", "imperial"), "preference"),
        Family("reminder", ("none", "15", "30"), "preference"),
        Family("notify", ("false", "true"), "preference"),
        Family("order", ("free", "calendar_first"), "preference"),
    )
}

BASE: Conventions = {name: f.base for name, f in FAMILIES.items()}

#: Every (family, value) pair that is not a base value. The tiny policy never
#: sees these without a statement in its context during pretraining: they are
#: the drifts that skills, RL and TTT have to learn.
DRIFTS: tuple[tuple[str, str], ...] = tuple(
    (name, value) for name, f in FAMILIES.items() for value in f.values[1:]
)


def validate_conventions(conventions: Conventions) -> Conventions:
    """Return a complete convention set (missing families take the base value)."""
    out = dict(BASE)
    for family, value in conventions.items():
        if family not in FAMILIES:
            raise ValueError(f"unknown convention family {family!r}")
        if value not in FAMILIES[family].values:
            raise ValueError(f"unknown value {value!r} for convention family {family!r}")
        out[family] = value
    return out


@cache
def _schedule() -> tuple[tuple[int, tuple[tuple[str, str], ...]], ...]:
    raw = json.loads((DATA_DIR / "schedule.json").read_text())
    entries = sorted((int(e["day"]), tuple(sorted(e["set"].items()))) for e in raw["changes"])
    for _, changes in entries:
        validate_conventions(dict(changes))
    return tuple(entries)


def conventions_for_day(day: int) -> Conventions:
    """The conventions in force on simulated ``day`` (1-based) under the drift schedule."""
    if day < 1:
        raise ValueError(f"days start at 1, got {day}")
    out = dict(BASE)
    for start, changes in _schedule():
        if start <= day:
            out.update(changes)
    return out


def drift_days() -> list[int]:
    """The days on which the schedule changes a convention (for marking plots)."""
    return [day for day, _ in _schedule() if day > 1]


# --- formats --------------------------------------------------------------

DATE_PATTERNS: dict[str, tuple[str, str, str]] = {
    # value: (regex, human-readable pattern, strftime)
    "iso": (r"(\d{4})-(\d{2})-(\d{2})", "YYYY-MM-DD", "%Y-%m-%d"),
    "dmy": (r"(\d{2})\.(\d{2})\.(\d{4})", "DD.MM.YYYY", "%d.%m.%Y"),
    "mdy": (r"(\d{2})/(\d{2})/(\d{4})", "MM/DD/YYYY", "%m/%d/%Y"),
}
TIME_PATTERNS: dict[str, str] = {"h24": "HH:MM (24-hour)", "h12": "like 7pm or 7:30pm"}


class FormatError(ValueError):
    """A value is not written the way the convention in force wants."""


def format_date(day: dt.date, style: str) -> str:
    return day.strftime(DATE_PATTERNS[style][2])


def parse_date(text: str, style: str) -> dt.date:
    """Parse ``text`` written in ``style``; the error message names the expected pattern."""
    pattern, human, fmt = DATE_PATTERNS[style]
    if not re.fullmatch(pattern, text):
        raise FormatError(f"date must be {human}, got {text}")
    try:
        return dt.datetime.strptime(text, fmt).date()
    except ValueError as exc:
        raise FormatError(f"date {text} is not a real {human} date") from exc


def format_time(hour: int, minute: int, style: str) -> str:
    if style == "h24":
        return f"{hour:02d}:{minute:02d}"
    suffix = "am" if hour < 12 else "pm"
    h12 = hour % 12 or 12
    return f"{h12}{suffix}" if minute == 0 else f"{h12}:{minute:02d}{suffix}"


def parse_time(text: str, style: str) -> tuple[int, int]:
    if style == "h24":
        m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", text)
        if not m:
            raise FormatError(f"time must be HH:MM (24-hour), got {text}")
        return int(m.group(1)), int(m.group(2))
    m = re.fullmatch(r"(1[0-2]|[1-9])(?::([0-5]\d))?(am|pm)", text)
    if not m:
        raise FormatError(f"time must be 12-hour like 7pm or 7:30pm, got {text}")
    hour = int(m.group(1)) % 12 + (12 if m.group(3) == "pm" else 0)
    return hour, int(m.group(2) or 0)


def format_name(name: str, style: str) -> str:
    """Names are stored ``First Last``; the ``last_first`` convention writes ``Last, First``."""
    if style == "last_first":
        first, last = name.split(" ", 1)
        return f"{last}, {first}"
    return name


def canonical_name(text: str) -> str:
    """``Last, First`` or ``First Last`` -> ``First Last`` (for look-up after validation)."""
    if "," in text:
        last, first = (part.strip() for part in text.split(",", 1))
        return f"{first} {last}"
    return text.strip()


def check_name(text: str, style: str) -> None:
    if style == "last_first" and not re.fullmatch(r"[^,\s]+, [^,]+", text):
        raise FormatError(f"contact names must be written Last, First (like Berg, Ann), got {text}")
    if style == "first_last" and "," in text:
        raise FormatError(f"contact names must be written First Last (like Ann Berg), got {text}")
