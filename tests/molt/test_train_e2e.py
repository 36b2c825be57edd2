"""End to end: the real driver records toolworld days through molt, then `molt train now`
trains a LoRA version on them and the eval gate judges it through serving."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from bench.agent import AgentDriver
from bench.policy.data import DEFAULT_SYSTEM_PROMPT
from bench.runner import DEFAULT_CHECKPOINT
from bench.toolworld import generate_tasks
from molt.config import load_settings
from molt.embedded import ServerThread, free_port
from molt.wiring import build_app
from store.registry import Registry

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "config.json").exists(),
                       reason="the tiny policy checkpoint is not built"),
]
KEY = "train-e2e-admin-key-0123456789"
ROOT = Path(__file__).resolve().parents[2]


def _training_page(url: str) -> str:
    """/ui/training as an admin sees it, logged in through the dashboard's own form."""
    with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as c:
        form = c.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        r = c.post("/ui/login", data={"csrf": csrf.group(1), "key": KEY},
                   headers={"Origin": url})
        assert r.status_code in (302, 303), r.text[:300]
        return c.get("/ui/training").text


@pytest.mark.parametrize("method", ["lora_rl", "ttt"])
def test_molt_train_now_trains_and_gates_a_version_on_recorded_days(
        tmp_path: Path, method: str) -> None:
    port = free_port()
    data = {
        "data_dir": str(tmp_path / "data"),
        "store": {"url": f"sqlite+aiosqlite:///{tmp_path}/molt.db"},
        "server": {"port": port, "admin_key": KEY},
        "models": [{"alias": "tiny", "local": str(DEFAULT_CHECKPOINT)}],
        "skills": {"enabled": False}, "evolver": {"enabled": False},
        # a small window: a few real RL steps, a gate that decides on a handful of steps
        "trainer": {"tick_s": 0.2, "method": method, "ttt": {"max_steps": 2}, "rl": {"max_steps": 2, "batch_size": 4, "num_generations": 2,
                                          "max_completion_length": 48, "kl_samples": 2},
                    "gate": {"min_heldout": 1}, "data": {"heldout_fraction": 0.34}},
    }
    settings = load_settings(None, data)
    cfg = tmp_path / "molt.toml"
    cfg.write_text(f'data_dir = "{settings.data_dir}"\n[store]\nurl = "{settings.store.url}"\n'
                   f'[server]\nport = {port}\nadmin_key = "{KEY}"\n')
    with ServerThread(build_app(settings), port=port) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
        driver = AgentDriver(client, "tiny", system_prompt=DEFAULT_SYSTEM_PROMPT, max_steps=4)
        for day in (4, 5):  # drift days: the tools refuse yesterday's date form
            for task in generate_tasks(day, 3, seed=11 + day):
                driver.run(task)
        driver.close()
        srv.call(srv.app.state.molt.recorder.flush())
        env = {**os.environ, "MOLT_CONFIG": str(cfg), "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-m", "molt", "train", "now", "--json"], env=env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
        assert out.returncode == 0, out.stderr[-2000:]
        job = json.loads(out.stdout)
        page = _training_page(srv.url)
        hist = subprocess.run([sys.executable, "-m", "molt", "train", "history", "--json"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              check=True)
    assert job["status"] == "succeeded", job
    assert job["version"]
    if method == "lora_rl":  # the steps the job reports are the optimiser steps trained
        assert job["steps"] == 2  # max_steps, under the window's step budget
    assert job["gate"]["status"] in ("promoted", "passed", "rejected")
    assert any(j["id"] == job["id"] for j in json.loads(hist.stdout))
    # the version is in the registry with the gate's figures in its meta.json
    meta = Registry(settings.registry_root()).get("default", "tiny", job["version"])
    assert meta.kind == ("lora" if method == "lora_rl" else "ttt_delta")
    assert meta.eval_gate is not None
    # the dashboard's training page lists the job, with its version
    assert job["id"] in page and job["version"] in page
    assert meta.eval_gate["heldout"]["candidate"]["model"].endswith("@" + job["version"])
