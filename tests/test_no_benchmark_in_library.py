"""The library never knows the benchmark: no toolworld tool, argument or phrase below bench/.

The names and phrases are read from `bench.toolworld` itself, so a tool or a
complaint added there is checked too. Generic words that are also argument
names (``date``, ``name``, ``text``) are not names of toolworld; the checked
names are the tools, the arguments with a compound name, the enum values of
unit systems, and every sentence the world or its user says.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.toolworld import TOOLS
from bench.toolworld.complaints import PHRASINGS
from bench.toolworld.phrasings import STATEMENTS

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("evolver", "store", "proxy")


def _names() -> set[str]:
    names = set(TOOLS)
    names |= {p for t in TOOLS.values() for p in t.params if "_" in p}
    names |= {e for t in TOOLS.values() for p in t.params.values() for e in (p.enum or ()) if len(e) > 5}
    return names | {"Fahrenheit", "Celsius", "calendar_first", "last_first", "first_last"}


def _phrases() -> set[str]:
    said = [s for variants in PHRASINGS.values() for s in variants]
    said += [s for values in STATEMENTS.values() for forms in values.values() for s in forms]
    said += [t.description for t in TOOLS.values()]
    said += ["must be written Last, First", "must be 12-hour like", "not a real"]
    return {" ".join(s.lower().split()) for s in said}


def _sources() -> list[Path]:
    return sorted(p for d in LIBRARY for p in (ROOT / d).rglob("*.py"))


def test_the_library_names_no_toolworld_tool_or_argument() -> None:
    found = []
    for path in _sources():
        text = path.read_text()
        for name in sorted(_names()):
            if re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text, re.IGNORECASE):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    assert found == []


def test_the_library_says_no_toolworld_phrase() -> None:
    found = []
    for path in _sources():
        text = " ".join(path.read_text().lower().split())
        found += [f"{path.relative_to(ROOT)}: {p!r}" for p in sorted(_phrases()) if p in text]
    assert found == []


def test_the_check_sees_what_it_is_meant_to_see() -> None:
    assert "book_table" in _names() and "reminder_min" in _names() and "imperial" in _names()
    assert "date" not in _names()
    assert any("fahrenheit" in p for p in _phrases())
