"""A `molt proxy` whose routes serve no local model stays lean (issue 17, item 6).

Each test starts the real command, `python -m molt proxy`, in a subprocess on a
config whose only route is a `base_url` (the scripted fake upstream), serves a
request through it with the openai SDK, stops it with SIGTERM, and reads the
modules the process had loaded. The list is written at exit by a test-only
wrapper that runs `molt` exactly as `python -m molt` does (runpy); the product
exposes nothing for it.

Torch, transformers and sentence-transformers are never imported: not with
skills off, nor with skills on (Chroma and the numpy embedding model come with
the first request that retrieves, and skills reach the upstream). With
`skills.embedder = "torch"` the same request does load torch, which shows the
method sees it. The last test checks, in-process, when the index opens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from modeling.blocks import SKILLS_OPEN
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.server import free_port

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "sentence_transformers", "chromadb")
# `python -m molt ...`, and at exit the top-level names of the loaded modules, into $LEAN_MODULES.
# uvicorn ends a graceful shutdown by raising the signal again under the handler it found: this
# one makes that an exit (with atexit) instead of a death by SIGTERM.
WRAPPER = (
    "import atexit, json, os, runpy, signal, sys\n"
    "def dump():\n"
    "    with open(os.environ['LEAN_MODULES'], 'w') as f:\n"
    "        json.dump(sorted({m.split('.')[0] for m in sys.modules}), f)\n"
    "atexit.register(dump)\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "sys.argv = ['molt', *sys.argv[1:]]\n"
    "runpy.run_module('molt', run_name='__main__', alter_sys=True)\n"
)
TASK = "Move my dentist appointment to Friday 3pm Berlin time and remind me the day before."


class Proxy:
    """A `molt proxy` subprocess on one config."""

    def __init__(self, tmp_path: Path, upstream: str, skills: str) -> None:
        self.port = free_port()
        self.modules_file = tmp_path / "modules.json"
        cfg = tmp_path / "molt.toml"
        cfg.write_text(
            f'data_dir = "{tmp_path}/data"\n[store]\nurl = "sqlite+aiosqlite:///{tmp_path}/molt.db"\n'
            f"{skills}\n"
            f'[[models]]\nalias = "gpt-fake"\nbase_url = "{upstream}/v1"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOLT_")}
        env.update(PYTHONPATH=str(ROOT), LEAN_MODULES=str(self.modules_file))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, "--config", str(cfg), "proxy", "--port", str(self.port),
             "--log-level", "warning"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "molt proxy did not become healthy"
            time.sleep(0.05)

    def chat(self, **extra: object) -> str:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key="none", timeout=300)
        out = client.chat.completions.create(
            model="gpt-fake", messages=[{"role": "user", "content": TASK}], **extra)  # type: ignore[call-overload]
        return str(out.choices[0].message.content)

    def stop(self) -> list[str]:
        """SIGTERM, a clean exit, and the top-level modules the process had loaded."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        assert self.proc.returncode == 0, self.output()
        return list(json.loads(self.modules_file.read_text()))

    def output(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stdout.read() if self.proc.stdout else ""


def run_proxy(tmp_path: Path, fake_llm: FakeLLM, skills: str, **chat: object) -> tuple[str, list[str]]:
    proxy = Proxy(tmp_path, fake_llm.url, skills)  # type: ignore[attr-defined]
    try:
        proxy.wait_healthy()
        answer = proxy.chat(**chat)
    except BaseException:
        proxy.proc.kill()
        raise
    return answer, proxy.stop()


def test_skills_off_a_proxy_serves_without_torch(tmp_path: Path, fake_llm: FakeLLM) -> None:
    answer, modules = run_proxy(tmp_path, fake_llm, "[skills]\nenabled = false")
    assert answer  # the fake upstream's reply came through
    assert fake_llm.requests[-1]["messages"][-1]["content"] == TASK
    assert not set(HEAVY) & set(modules), modules
    assert "openai" not in modules  # the evolver's client comes with its first call
    assert "uvicorn" in modules and "fastapi" in modules  # the list is the real process's


def test_skills_on_nothing_heavy_before_a_retrieval(tmp_path: Path, fake_llm: FakeLLM) -> None:
    """Skills on with the seed skills; a side turn (no retrieval) is served and recorded."""
    answer, modules = run_proxy(tmp_path, fake_llm, "[skills]\nenabled = true",
                                extra_headers={"X-Turn-Type": "side"})
    assert answer
    sent = fake_llm.requests[-1]["messages"]
    assert not any(SKILLS_OPEN in str(m.get("content")) for m in sent)
    assert not set(HEAVY) & set(modules), modules


def test_skills_on_with_an_empty_library_a_main_turn_needs_no_model(
        tmp_path: Path, fake_llm: FakeLLM) -> None:
    """Nothing to rank, nothing to embed: a main turn goes up as sent."""
    (tmp_path / "no-seeds").mkdir()
    answer, modules = run_proxy(
        tmp_path, fake_llm, f'[skills]\nenabled = true\nseed_dir = "{tmp_path}/no-seeds"')
    assert answer
    assert fake_llm.requests[-1]["messages"] == [{"role": "user", "content": TASK}]
    assert not set(HEAVY) & set(modules), modules


def test_the_first_retrieval_opens_the_index_and_injects_skills_without_torch(
        tmp_path: Path, fake_llm: FakeLLM) -> None:
    """The first main turn opens Chroma and loads the numpy embedding model, in the process
    that started without them, and the seed skill for the task reaches the upstream."""
    answer, modules = run_proxy(tmp_path, fake_llm, "[skills]\nenabled = true")
    assert answer
    sent = fake_llm.requests[-1]["messages"]
    assert sent[0]["role"] == "system" and sent[0]["content"].startswith(SKILLS_OPEN)
    assert "schedule-with-time-zones" in sent[0]["content"]
    assert {"chromadb", "numpy", "tokenizers"} <= set(modules)
    assert not {"torch", "transformers", "sentence_transformers"} & set(modules), modules


def test_the_torch_embedder_is_loaded_by_the_first_retrieval(
        tmp_path: Path, fake_llm: FakeLLM) -> None:
    """The counterpart: with `skills.embedder = "torch"` the same request loads torch and
    sentence-transformers (so the module list above would show them), and serves the same skill."""
    _, modules = run_proxy(tmp_path, fake_llm, '[skills]\nenabled = true\nembedder = "torch"')
    assert "schedule-with-time-zones" in fake_llm.requests[-1]["messages"][0]["content"]
    assert {"torch", "sentence_transformers"} <= set(modules)


def test_the_index_opens_on_first_retrieval_or_at_start_with_preload(
        molt_factory: Any, fake_llm: FakeLLM, tmp_path: Path) -> None:
    """In-process: Chroma's files appear with the first retrieval, or at start with
    `skills.preload`; either way the task's skill is injected."""
    for preload in (False, True):
        folder = tmp_path / f"chroma-{preload}"
        m = molt_factory(skills={"enabled": True, "preload": preload, "chroma_path": str(folder)})
        assert (folder / "chroma.sqlite3").exists() is preload
        client = openai.OpenAI(base_url=m.base_url, api_key="none")
        client.chat.completions.create(model="gpt-fake",
                                       messages=[{"role": "user", "content": TASK}])
        assert (folder / "chroma.sqlite3").exists()
        block = fake_llm.requests[-1]["messages"][0]["content"]
        assert block.startswith(SKILLS_OPEN) and "schedule-with-time-zones" in block
