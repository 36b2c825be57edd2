"""`molt train ...` in a subprocess against a real running molt (uvicorn on loopback).

The server trains with cheap real job parts (tests/trainer/job_helpers.py) on traffic
recorded through the proxy from the official openai client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from molt.wiring import build_app
from store.database import Database
from store.registry import Registry
from store.settings import MoltSettings
from store.training import TrainingStore
from tests.conftest import make_settings
from tests.fakes.fake_llm import FakeLLM, Reply
from tests.fakes.server import ServerThread, free_port
from tests.trainer.job_helpers import BASE, CountingBody, parts

KEY = "train-cli-admin-key-0123456789"
ROOT = Path(__file__).resolve().parents[2]


class Served:
    def __init__(self, srv: ServerThread, settings: MoltSettings, body: CountingBody,
                 cfg: Path, app: Any) -> None:
        self.srv, self.settings, self.body, self.cfg, self.app = srv, settings, body, cfg, app

    def molt(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MOLT_CONFIG": str(self.cfg), "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "molt", *args], env=env, cwd=self.cfg.parent,
                              capture_output=True, text=True, timeout=120, check=False)

    def job(self, job_id: str) -> Any:
        return self.srv.call(TrainingStore(self.app.state.molt.db).get(job_id))


def _serve(tmp_path: Path, fake_llm: FakeLLM, body: CountingBody) -> Iterator[Served]:
    port = free_port()
    settings = make_settings(tmp_path, fake_llm.url,  # type: ignore[attr-defined]
                             server={"port": port, "admin_key": KEY},
                             trainer={"tick_s": 0.1})

    def factory(s: MoltSettings, db: Database) -> Any:
        return parts(db, body, Registry(s.registry_root()))

    app = build_app(settings, trainer_parts=factory)
    cfg = tmp_path / "molt.toml"
    cfg.write_text(f'data_dir = "{settings.data_dir}"\n[store]\nurl = "{settings.store.url}"\n'
                   f'[server]\nport = {port}\nadmin_key = "{KEY}"\n')
    with ServerThread(app, port=port) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
        for i in range(4):
            fake_llm.push(Reply(content=f"answer {i}"))
            client.chat.completions.create(
                model="gpt-fake", messages=[{"role": "user", "content": f"question {i}"}])
        srv.call(app.state.molt.recorder.flush())
        yield Served(srv, settings, body, cfg, app)


@pytest.fixture
def served(tmp_path: Path, fake_llm: FakeLLM) -> Iterator[Served]:
    yield from _serve(tmp_path, fake_llm, CountingBody(total=3))


@pytest.fixture
def served_slow(tmp_path: Path, fake_llm: FakeLLM) -> Iterator[Served]:
    yield from _serve(tmp_path, fake_llm, CountingBody(total=50, permits=threading.Semaphore(0)))


def test_train_now_through_the_server_then_status_and_history(served: Served) -> None:
    r = served.molt("train", "now", "--minutes", "5", "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert (job["status"], job["trigger"], job["steps"], job["version"]) == (
        "succeeded", "manual", 3, "v0001")
    assert job["gate"]["status"] == "promoted" and job["metrics"]["kl"] == pytest.approx(0.03)
    assert Registry(served.settings.registry_root()).active("default", BASE) == "v0001"

    st = served.molt("train", "status", "--json")
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["job"]["id"] == job["id"] and status["lease"] is None
    assert [e["kind"] for e in status["events"]] == [
        "queued", "started", "trained", "registered", "gated"]

    text = served.molt("train", "now")
    assert text.returncode == 0, text.stderr
    for label in ("steps", "reward", "KL", "gate", "promoted", "v0002"):
        assert label in text.stdout

    hist = served.molt("train", "history", "--json")
    jobs = json.loads(hist.stdout)
    assert [j["version"] for j in jobs] == ["v0002", "v0001"]
    assert jobs[1]["events"][0]["detail"]["budget_minutes"] == 5.0
    listed = served.molt("train", "history")
    assert job["id"] in listed.stdout and "gate=promoted" in listed.stdout


def test_cancel_stops_a_job_running_in_the_server(served_slow: Served) -> None:
    s = served_slow
    r = s.molt("train", "now", "--no-wait", "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["status"] == "running"
    assert s.body.permits is not None
    s.body.permits.release(2)
    assert s.body.wait_step(2)

    again = s.molt("train", "now", "--json")
    assert again.returncode == 1 and "already training" in again.stderr

    c = s.molt("train", "cancel", "--json")
    assert c.returncode == 0, c.stderr
    assert json.loads(c.stdout)["cancel_requested"] is True
    deadline = time.monotonic() + 30
    while (j := s.job(job["id"])).status == "running":
        assert time.monotonic() < deadline, "the cancelled job kept running"
        s.body.wait_step(3, timeout_s=0.1)  # the server's next tick stops it
    assert (j.status, j.steps, j.stop_reason) == ("cancelled", 2, "cancelled")

    none_left = s.molt("train", "cancel")
    assert none_left.returncode == 1 and "no unfinished training job" in none_left.stderr


def test_admin_train_errors_are_openai_envelopes(served: Served, molt_factory: Any) -> None:
    with httpx.Client(base_url=served.srv.url) as c:
        r = c.post("/admin/train", json={"minutes": -1}, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "minutes"
        r = c.post("/admin/train", json={}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = c.get("/admin/train/status", params={"job": "job_nope"},
                  headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 404 and "job_nope" in r.json()["error"]["message"]
    # a molt with no training method wired in says so, and still reports
    bare = molt_factory()
    with httpx.Client(base_url=bare.url) as c:
        r = c.post("/admin/train", json={})
        assert r.status_code == 503 and r.json()["error"]["code"] == "trainer_unavailable"
        r = c.get("/admin/train/status")
        assert r.status_code == 200 and r.json()["can_train"] is False


def test_train_now_without_a_server_trains_in_process_and_says_what_is_missing(
        tmp_path: Path) -> None:
    cfg = tmp_path / "molt.toml"
    cfg.write_text(f'data_dir = "{tmp_path}/data"\n[store]\nurl = "sqlite+aiosqlite:///'
                   f'{tmp_path}/molt.db"\n[server]\nport = {free_port()}\n')
    env = {**os.environ, "MOLT_CONFIG": str(cfg), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "molt", "train", "now"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, check=False)
    # no server: the CLI trains in this process, and an empty store has nothing to train
    assert r.returncode == 1 and "no tenant 'default'" in r.stderr
