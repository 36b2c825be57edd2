"""The pretraining phrasebook never writes what the evolver or the held-out evaluation writes.

The issue asks that the miner not borrow the sentences the tiny policy was
pretrained on; with many wordings in pretraining, this checks it sentence by
sentence, for every template variant and every drift the tools can report.
"""

from __future__ import annotations

import json
import re

import pytest

from bench.policy.phrasebook import CORES, normalize, sentences
from bench.toolworld.conventions import FormatError, check_name, parse_date, parse_time
from bench.toolworld.phrasings import HELDOUT_PHRASING, STATEMENTS, TRAIN_PHRASINGS
from evolver.cases import constraint_of
from evolver.offline import MARK, TEMPLATES


def _errors() -> list[str]:
    out = []
    for style, wrong in (("dmy", "2026-11-27"), ("mdy", "27.11.2026"), ("iso", "11/27/2026")):
        with pytest.raises(FormatError) as exc:
            parse_date(wrong, style)
        out.append(str(exc.value))
    for style, wrong in (("h12", "19:30"), ("h24", "7pm")):
        with pytest.raises(FormatError) as exc:
            parse_time(wrong, style)
        out.append(str(exc.value))
    for style, wrong in (("last_first", "Ann Berg"), ("first_last", "Berg, Ann")):
        with pytest.raises(FormatError) as exc:
            check_name(wrong, style)
        out.append(str(exc.value))
    return out


def _miner_texts() -> list[str]:
    prefs = [("create_event", "reminder_min", 15), ("create_event", "reminder_min", 30),
             ("send_message", "notify", True), ("get_weather", "units", "imperial")]
    texts = []
    for t in TEMPLATES:
        for error in _errors():
            for tools in ("book_table", "create_event", "get_weather", "find_contact", "book_table, create_event"):
                kw = {"mark": MARK, "n": 3, "tools": tools, "constraint": constraint_of(error), "example": "",
                      "anti": t["anti"].format(refused=t["refused"].format(value="2026-11-27"))}
                texts += [t["error_desc"].format(**kw), t["error_body"].format(**kw)]
        for tool, param, value in prefs:
            kw = {"mark": MARK, "n": 2, "tool": tool, "param": param, "value": json.dumps(value),
                  "complaint": "You forgot it."}
            texts += [t["pref_desc"].format(**kw), t["pref_body"].format(**kw)]
        kw = {"mark": MARK, "n": 2, "first": "check_calendar", "then": "book_table", "complaint": "You forgot it."}
        texts += [t["order_desc"].format(**kw), t["order_body"].format(**kw)]
    return texts


def _split(text: str) -> list[str]:
    return [s for line in text.splitlines() for s in re.split(r"(?<=[.!?])\s+", line) if normalize(s)]


def test_the_phrasebook_is_closed_and_states_every_convention() -> None:
    for family, value in CORES:
        assert value in STATEMENTS[family]
        written = sentences(family, value)
        assert len(written) >= 100 and len(set(written)) == len(written)
    assert {k for k in CORES} == {(f, v) for f, vs in STATEMENTS.items() for v in vs}


def test_no_miner_sentence_is_a_pretraining_sentence() -> None:
    known = {normalize(s) for key in CORES for s in sentences(*key)}
    known |= {normalize(s) for vs in STATEMENTS.values() for v in vs.values()
              for i in TRAIN_PHRASINGS for s in _split(v[i])}
    miner = [s for text in _miner_texts() for s in _split(text)]
    assert len(miner) > 100
    borrowed = sorted({s for s in miner if normalize(s) in known})
    assert borrowed == []


def test_the_heldout_phrasing_is_not_in_the_phrasebook() -> None:
    for family, values in STATEMENTS.items():
        for value, phrasings in values.items():
            book = {normalize(s) for s in sentences(family, value)}
            assert not {normalize(s) for s in _split(phrasings[HELDOUT_PHRASING])} & book
