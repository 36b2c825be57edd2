"""Evaluate the tiny policy: ``python -m bench.policy.evaluate``.

Teacher-forced step accuracy: for a planned call k of a held-out task, the
prompt is the conversation with the planned calls 0..k-1 and their results;
the policy generates greedily, its first ``<tool_call>`` is parsed, and the
verifier says whether it is the right next call. Conditions:

* ``base``: base conventions, nothing stated; every planned call counts.
* ``stated``: 1-3 drifted families (values never seen as defaults), every
  family's value stated in the skills block (phrasings 0-2, as the oracle arm
  does); only the calls the drift changes count.
* ``unstated``: the same drifts, nothing stated; affected calls only.
* ``stated_heldout``: as ``stated`` but in phrasing 3, never seen in training.
* ``stated_other``: as ``stated``, but only the calls the drift does *not*
  change count: a skills block must not move the conventions it does not name.

Tasks come from worlds and seeds disjoint from pretraining (``eval:`` worlds,
the ``eval`` seed in ``toolworld/data/seeds.json``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from bench.policy.chat import parse_reply
from bench.policy.data import (
    DEFAULT_SYSTEM_PROMPT,
    play,
    random_drift,
    sample_task,
    system_messages,
)
from bench.policy.model import CHECKPOINT_DIR
from bench.toolworld.conventions import BASE, DATA_DIR
from bench.toolworld.phrasings import HELDOUT_PHRASING, TRAIN_PHRASINGS, state_conventions
from bench.toolworld.tasks import Task
from bench.toolworld.tools import tool_schemas
from bench.toolworld.verifier import Verifier

CONDITIONS = ("base", "stated", "unstated", "stated_heldout", "stated_other")


@dataclass(frozen=True)
class EvalItem:
    condition: str
    task: Task
    step: int
    messages: list[dict[str, Any]]


def default_seed() -> int:
    return int(json.loads((DATA_DIR / "seeds.json").read_text())["eval"])


def eval_items(condition: str, n_steps: int, seed: int) -> list[EvalItem]:
    """``n_steps`` teacher-forced steps for ``condition``, the same for the same seed."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}")
    rng = random.Random(f"eval:{seed}:{condition}")
    items: list[EvalItem] = []
    while len(items) < n_steps:
        drift = condition != "base"
        conv = random_drift(rng, p=0.3) if drift else dict(BASE)
        task = sample_task(rng, conv, need_affected=drift, world_prefix=f"eval{seed}")
        skills = []
        if condition in ("stated", "stated_other"):
            skills = state_conventions(conv, phrasing=rng.choice(TRAIN_PHRASINGS))
        elif condition == "stated_heldout":
            skills = state_conventions(conv, phrasing=HELDOUT_PHRASING)
        head = system_messages(skills, DEFAULT_SYSTEM_PROMPT)
        for k, call in enumerate(task.plan):
            counts = not call.affected if condition == "stated_other" else (
                not drift or call.affected)
            if counts and len(items) < n_steps:
                items.append(EvalItem(condition, task, k, play(task, head, upto=k).messages))
    return items


def generate(model: Any, tokenizer: Any, prompts: Sequence[list[dict[str, Any]]],
             batch_size: int = 16, max_new_tokens: int = 96) -> list[str]:
    """Greedy completions for chat ``prompts`` (left-padded batches)."""
    tools = tool_schemas()
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens,
                              eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    tokenizer.padding_side = "left"
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        texts = [tokenizer.apply_chat_template(p, tools=tools, add_generation_prompt=True,
                                               tokenize=False)
                 for p in prompts[start:start + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
        with torch.no_grad():
            gen = model.generate(**enc, generation_config=config)
        new = gen[:, enc["input_ids"].shape[1]:]
        out.extend(tokenizer.batch_decode(new, skip_special_tokens=False))
    return out


def score(items: Sequence[EvalItem], completions: Sequence[str]) -> list[tuple[bool, str]]:
    """Verifier verdict for each completion as the next call after its prompt."""
    verdicts: list[tuple[bool, str]] = []
    for item, text in zip(items, completions, strict=True):
        reply = parse_reply(text)
        if not reply.calls:
            verdicts.append((False, "no tool call: " + (reply.errors or [reply.content])[0]))
            continue
        history = [(c.name, c.arguments) for c in item.task.plan[:item.step]]
        verdict = Verifier(item.task).score_step(history, reply.calls[0].name,
                                                 reply.calls[0].arguments)
        verdicts.append((verdict.ok, verdict.reason))
    return verdicts


#: Failure reasons that mean the call broke a convention (rather than, say, a wrong value).
CONVENTION_FAILURES = ("error: date must be", "error: time must be", "error: contact names must",
                       "user preference", "expected a call to", "no tool call")


def follows_conventions(ok: bool, reason: str) -> bool:
    """True when a call is right or wrong only in a value the conventions do not govern.

    A secondary figure: it separates "follows the stated convention" from "copies
    every value right" (a call with the right date format but a wrong day counts).
    """
    return ok or not reason.startswith(CONVENTION_FAILURES)


def evaluate(path: Path = CHECKPOINT_DIR, n_steps: int = 200, seed: int | None = None,
             conditions: Sequence[str] = CONDITIONS, threads: int = 2,
             verbose: bool = False, device: str = "cpu",
             batch_size: int = 16) -> dict[str, float]:
    """Step accuracy per condition for the checkpoint at ``path``."""
    torch.set_num_threads(threads)
    seed = default_seed() if seed is None else seed
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).to(device)
    model.eval()
    figures: dict[str, float] = {}
    for condition in conditions:
        items = eval_items(condition, n_steps, seed)
        verdicts = score(items, generate(model, tokenizer, [i.messages for i in items],
                                               batch_size))
        figures[condition] = sum(ok for ok, _ in verdicts) / len(verdicts)
        figures[f"{condition}_conventions"] = (
            sum(follows_conventions(ok, why) for ok, why in verdicts) / len(verdicts))
        if verbose:
            for item, (ok, reason) in zip(items, verdicts, strict=True):
                if not ok:
                    print(f"  [{condition}] {item.task.template} step {item.step}: {reason}")
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", type=Path, default=CHECKPOINT_DIR)
    parser.add_argument("--steps", type=int, default=200, help="steps per condition")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--verbose", action="store_true", help="print every wrong step")
    parser.add_argument("--write-meta", action="store_true",
                        help="store the figures, and those of the small test set, in meta.json")
    parser.add_argument("--test-steps", type=int, default=24,
                        help="steps per condition of the small set tests/bench/test_policy.py runs")
    args = parser.parse_args(argv)
    started = time.monotonic()
    figures = evaluate(args.path, args.steps, args.seed, threads=args.threads,
                       verbose=args.verbose, device=args.device,
                       batch_size=args.batch_size)
    targets = {"base": ">= 0.95", "stated": ">= 0.85", "unstated": "<= 0.25",
               "stated_heldout": "(no target)", "stated_other": "(no target)"}
    for condition in CONDITIONS:
        print(f"{condition:15s} step accuracy {figures[condition]:6.1%}   target "
              f"{targets[condition]:12s} follows conventions "
              f"{figures[condition + '_conventions']:6.1%}")
    print(f"({args.steps} steps per condition, {time.monotonic() - started:.0f}s)")
    if args.write_meta:
        meta_path = args.path / "meta.json"
        meta = json.loads(meta_path.read_text())
        test_set = evaluate(args.path, args.test_steps, args.seed,
                            conditions=("base", "stated", "unstated"), threads=args.threads,
                            device=args.device, batch_size=args.batch_size)
        print("test set:", {k: round(v, 3) for k, v in test_set.items()})
        meta["figures"] = {**figures, "steps_per_condition": args.steps,
                           "seed": args.seed if args.seed is not None else default_seed(),
                           "test_set": {**test_set, "steps_per_condition": args.test_steps}}
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
