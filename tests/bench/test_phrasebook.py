"""The pretraining phrasebook never writes what the evolver or the held-out evaluation writes.

The issue asks that the miner not borrow the sentences the tiny policy was
pretrained on; with many wordings in pretraining, this checks it sentence by
sentence, for every drift the tools can report in every error grammar. And
the pretraining mixture itself never holds the miner's output layout or the
error texts of the library grammars (pydantic, jsonschema, problem+json):
what the policy makes of them is learned in the benchmark, not rehearsed.
"""

from __future__ import annotations

import json
import re

import pytest

from bench.policy.data import pretraining_example
from bench.policy.phrasebook import CORES, normalize, sentences
from bench.toolworld.conventions import FormatError, check_name, parse_date, parse_time
from bench.toolworld.grammars import GRAMMARS
from bench.toolworld.molt_words import state_in_molt_words
from bench.toolworld.phrasings import HELDOUT_PHRASING, STATEMENTS, TRAIN_PHRASINGS
from evolver.offline import LAYOUT, MARK


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


ALL_DRIFTS = {"date": "dmy", "time": "h12", "name_order": "last_first", "units": "imperial",
              "reminder": "15", "notify": "true", "order": "calendar_first"}
OTHER_DRIFTS = {"date": "mdy", "time": "h24", "name_order": "first_last", "units": "metric",
                "reminder": "30", "notify": "false"}


def _miner_texts() -> list[str]:
    """What the miner writes for every drift, in every error grammar (its own words and layout)."""
    texts = []
    for grammar in GRAMMARS:
        for drifts in (ALL_DRIFTS, OTHER_DRIFTS, {"reminder": "none", "date": "iso"}):
            for skill in state_in_molt_words({k: v for k, v in drifts.items()}, grammar):
                texts += [skill.description, skill.body]
    texts += [LAYOUT["anti"].format(refused=LAYOUT["refused"].format(value="2026-11-27"))]
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


# what only the miner and the library grammars write: none of it may be rehearsed in pretraining
MARKERS = (MARK, "When calling ", "Argument rule for", "User preference for", "Order rule:",
           "validation error for", "String should match pattern", "Value error,", "does not match",
           "invalid-params", "Unprocessable Content", "errors.pydantic.dev", "is not one of")


def test_pretraining_holds_neither_the_miner_s_layout_nor_the_library_grammars() -> None:
    import random

    rng = random.Random("phrasebook:pretraining")
    seen = 0
    for _ in range(1500):
        for m in pretraining_example(rng).messages:
            text = m.get("content") if isinstance(m.get("content"), str) else json.dumps(m.get("content"))
            seen += 1
            assert not [k for k in MARKERS if k in (text or "")], text
    assert seen > 5000
