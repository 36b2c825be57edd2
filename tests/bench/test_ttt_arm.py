"""`molt bench run --arms ttt` as a user runs it: long sessions served with in-place TTT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.runner import DEFAULT_CHECKPOINT
from bench.ttt_arm import CONDITIONS, recovered
from modeling.loading import load_base
from modeling.ttt import attach
from modeling.ttt_config import TTTConfig


def bench_with_zero_ttt(tmp_path: Path, *args: str, timeout: int = 900) -> tuple[str, Path]:
    """`molt bench run ARGS` with zero-initialised TTT layers (a TTT version that serves exactly
    as the base does): its stdout and report folder."""
    art = tmp_path / "zero-ttt"
    attach(load_base(DEFAULT_CHECKPOINT).model, TTTConfig(every=2, chunk_size=32)).save_version(art)
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "molt", "bench", "run", *args, "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "MOLT_BENCH_TTT_VERSION": str(art)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, out


def test_the_ttt_arm_plays_each_way_and_zero_ttt_layers_serve_the_base(tmp_path: Path) -> None:
    # zero-initialised TTT layers: the served version is exactly the base model
    stdout, out = bench_with_zero_ttt(tmp_path, "--days", "3,4", "--tasks-per-day", "5", "--arms", "ttt")
    assert "In-place TTT" in stdout and "target: at least 50%" in stdout
    t = json.loads((out / "report.json").read_text())["arms"]["ttt"]["ttt"]
    assert t["version"].startswith("v") and t["revealing"]["episodes"] == 6
    assert set(t["later"]) == set(CONDITIONS)
    for way in t["later"].values():
        assert way["episodes"] == 4 and way["errors"] == 0  # a day: 3 reveal, 2 later
    # the in-context reference carries the revealing chat; the others never see it
    assert t["history_messages"][0] > 0
    # zero TTT layers, in the revealing session or a fresh one, answer as the base does
    for way in ("ttt", "ttt_fresh_session"):
        assert t["later"][way]["step_accuracy"] == t["later"]["without_ttt"]["step_accuracy"]
    loss = t["heldout_windowed_loss"]
    assert loss["ttt"]["later"] == pytest.approx(loss["without_ttt"]["later"], rel=1e-4)
    assert t["tokens_per_s"]["ttt"] > 0 and t["tokens_per_s"]["without_ttt"] > 0


def test_recovered_is_the_share_of_the_in_context_gain() -> None:
    def ways(lo: float, hi: float, got: float) -> dict[str, dict[str, float]]:
        return {"without_ttt": {"m": lo}, "in_context": {"m": hi}, "ttt": {"m": got}}

    assert recovered(ways(0.2, 0.8, 0.5), "m") == pytest.approx(0.5)
    assert recovered(ways(0.5, 0.5, 0.9), "m") is None  # context adds nothing: no share
