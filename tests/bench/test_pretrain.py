"""``python -m bench.policy.pretrain`` end to end, in a few steps: a checkpoint that
loads, data made in worker processes, and continued pretraining from a checkpoint."""

from __future__ import annotations

import json
import random
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.policy.data import dress
from bench.policy.pretrain import main
from bench.toolworld.phrasings import statement


def test_pretrain_writes_a_checkpoint_and_continues_from_it(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    main(["--max-steps", "3", "--minutes", "5", "--batch-tokens", "2048", "--workers", "1",
          "--out", str(first)])
    meta = json.loads((first / "meta.json").read_text())
    assert meta["step"] == 3 and meta["skipped_batches"] == 0 and meta["tokens"] > 0
    tokenizer = AutoTokenizer.from_pretrained(first)
    model = AutoModelForCausalLM.from_pretrained(first)
    assert model.config.vocab_size == len(tokenizer)

    main(["--init", str(first), "--max-steps", "2", "--minutes", "5", "--batch-tokens", "2048",
          "--warmup-frac", "0", "--out", str(second)])
    meta = json.loads((second / "meta.json").read_text())
    assert meta["step"] == 2 and meta["continued_from"]["step"] == 3
    assert (second / "tokenizer.json").read_text() == (first / "tokenizer.json").read_text()
    assert "<tool_call>" in json.loads((second / "tokenizer_config.json").read_text())["chat_template"]


def test_dressed_skills_keep_their_rule() -> None:
    rule = statement("date", "dmy", 0)
    rng = random.Random(3)
    dressed = [dress(rng, rule) for _ in range(40)]
    assert all(rule.body in d.body and d.name == rule.name for d in dressed)
    assert len({d.body for d in dressed}) > 5  # layouts vary
