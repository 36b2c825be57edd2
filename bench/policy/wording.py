"""How the tiny policy reads one rule in different words (dev/LOG.md, 2026-11-22).

For each wording of the day-4 date rule, teacher-forced step accuracy on day-4
tasks over every planned call (the calls the rule governs and those it does
not), first without and then after a tool error in context. Run:
``python -m bench.policy.wording [checkpoint]``.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.policy.data import DEFAULT_SYSTEM_PROMPT, play, sample_task, system_messages
from bench.policy.evaluate import EvalItem, generate, score
from bench.policy.model import CHECKPOINT_DIR
from bench.toolworld.conventions import BASE
from evolver.offline import LAYOUT, MARK
from modeling.blocks import SkillText

MINER = ("Written by molt's rule-based miner from 6 tool errors.\n1. When calling create_event: "
         "date must be DD.MM.YYYY.\n2. If a tool still returns an error, read it and retry with "
         "the corrected value.\n\nAnti-patterns:\n- Sending 2026-11-20 (the tool refused it).")
MINER_NO_VALUE = MINER.replace("Sending 2026-11-20", "Sending a value in another form")


def served() -> SkillText:
    """The day-4 date rule as the miner writes it now (in molt's words; the form is stated)."""
    kw = {"mark": MARK, "n": 6, "tools": "create_event",
          "rule": "When calling create_event, write date as DD.MM.YYYY.", "example": "", "anti": ""}
    return SkillText("rule-date-as-dd-mm-yyyy", LAYOUT["error_desc"].format(**kw),
                     LAYOUT["error_body"].format(**kw).rstrip())


# "miner-0" and "miner-1" are the miner's bodies of 2026-11-22 (kept to compare checkpoints);
# "served" is what the miner writes today.
WORDINGS = {
    "none": None,
    "served": served(),
    "miner-0": SkillText("rule-date-must-be-dd", "Argument rule for create_event: date must be DD.MM.YYYY.", MINER),
    "miner-0, no refused value": SkillText(
        "rule-date-must-be-dd", "Argument rule for create_event: date must be DD.MM.YYYY.", MINER_NO_VALUE),
    "miner-1": SkillText("rule-date-must-be-dd", "How create_event expects its arguments: date must be DD.MM.YYYY.",
                         "Rule: date must be DD.MM.YYYY (for create_event).\nAnti-patterns:\n- Do not pass 2026-11-20."),
    "terse": SkillText("rule-date-must-be-dd", "Argument rule for create_event.",
                       "When calling create_event: date must be DD.MM.YYYY."),
    "pretrain-0": SkillText("date-format", "How to write dates in tool calls.",
                            "Dates are written DD.MM.YYYY, for example 27.11.2026."),
    "heldout-3": SkillText("date-style", "Dates for this user.", "Give dates day first with dots, DD.MM.YYYY."),
}


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else CHECKPOINT_DIR
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    rng = random.Random("probe:skill-wording")
    day4 = {**BASE, "date": "dmy"}
    tasks = [sample_task(rng, day4, need_affected=i % 2 == 0, world_prefix="probe")
             for i in range(60)]
    for label, skill in WORDINGS.items():
        head = system_messages([skill] if skill else [], DEFAULT_SYSTEM_PROMPT)
        for after_error in (False, True):
            items = []
            for task in tasks:
                for k, call in enumerate(task.plan):
                    if after_error and not call.affected:
                        continue
                    if not after_error:
                        items.append(EvalItem("probe", task, k, play(task, head, upto=k).messages))
                        continue
                    # the plan to step k with the base-day call k refused: end on the tool's error
                    messages = play(task, head, upto=k + 1, wrong_first=dict(BASE)).messages[:-2]
                    if str(messages[-1].get("content", "")).startswith("error"):
                        items.append(EvalItem("probe", task, k, messages))
            verdicts = score(items, generate(model, tok, [i.messages for i in items]))
            affected = [v for i, v in zip(items, verdicts, strict=True) if i.task.plan[i.step].affected]
            other = [v for i, v in zip(items, verdicts, strict=True) if not i.task.plan[i.step].affected]

            def rate(vs: list[tuple[bool, str]]) -> str:
                return f"{sum(ok for ok, _ in vs) / len(vs):6.1%} of {len(vs):3d}" if vs else "   -   "
            why = Counter(r.split(",")[0][:60] for ok, r in (*affected, *other) if not ok)
            print(f"{label:26s} {'after error' if after_error else 'first try  '}  rule's calls "
                  f"{rate(affected)}   other calls {rate(other)}   {why.most_common(3)}", flush=True)


if __name__ == "__main__":
    main()
