"""`molt serve` / `molt proxy` / `molt worker`: one app in three roles (issue 18).

Also the two multi-process findings: a second process on one embedded Chroma
folder is refused naming `skills.chroma_url`, and `molt doctor` checks a Chroma
server when `skills.chroma_url` is set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from molt.wiring import build_app
from store.database import Database
from store.settings import MoltSettings
from store.skills.index_lock import claim
from tests.conftest import make_settings
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.server import ServerThread, free_port
from tests.molt.cluster import chroma_server as run_chroma
from trainer.jobs import JobParts

ROOT = Path(__file__).resolve().parents[2]


def _molt(cwd: Path, *args: str, env_extra: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLT_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "molt", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _config(tmp_path: Path, body: str = "") -> Path:
    cfg = tmp_path / "molt.toml"
    cfg.write_text(f'data_dir = "{tmp_path}/data"\n[store]\n'
                   f'url = "sqlite+aiosqlite:///{tmp_path}/molt.db"\n{body}')
    return cfg


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[str]:
    """A real Chroma server (`chroma run`, from the installed chromadb) on loopback."""
    with run_chroma(tmp_path / "chroma-server") as url:
        yield url


def _never_parts(settings: MoltSettings, db: Database) -> JobParts:
    raise AssertionError("a `molt proxy` must not build training parts")


def test_worker_refuses_to_start_without_a_proxy_to_replay_through(tmp_path: Path) -> None:
    r = _molt(tmp_path, "--config", str(_config(tmp_path)), "worker")
    assert r.returncode == 1
    assert "evolver.replay_url is not set" in r.stderr and "molt serve" in r.stderr


def test_worker_serves_health_and_no_model_routes(tmp_path: Path, fake_llm: FakeLLM) -> None:
    settings = make_settings(tmp_path, fake_llm.url,  # type: ignore[attr-defined]
                             evolver={"enabled": True, "replay_url": "http://127.0.0.1:9/v1"})
    app = build_app(settings, role="worker", tenants=["acme"])
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url) as c:
        health = c.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["models"] == []
        r = c.post("/v1/chat/completions", json={"model": "gpt-fake", "messages": []})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert c.get("/admin/train/status").status_code == 404
    assert fake_llm.requests == []  # type: ignore[attr-defined]


def test_proxy_serves_requests_and_leaves_training_to_the_worker(
        tmp_path: Path, fake_llm: FakeLLM) -> None:
    settings = make_settings(tmp_path, fake_llm.url,  # type: ignore[attr-defined]
                             trainer={"enabled": True})
    app = build_app(settings, role="proxy", trainer_parts=_never_parts)
    with ServerThread(app) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none")
        out = client.chat.completions.create(
            model="gpt-fake", messages=[{"role": "user", "content": "hi"}])
        assert out.choices[0].message.content
        with httpx.Client(base_url=srv.url) as c:
            r = c.post("/admin/train", json={})
            assert r.status_code == 503 and r.json()["error"]["code"] == "trainer_unavailable"
            assert "molt worker" in r.json()["error"]["message"]
            status = c.get("/admin/train/status")  # store-only admin routes still answer
            assert status.status_code == 200 and status.json()["can_train"] is False


def test_a_second_process_on_one_embedded_chroma_folder_is_refused(tmp_path: Path) -> None:
    """Finding 2: two processes on the default embedded index broke it; now the second
    one refuses, naming the fix. This test process holds the folder, as a running
    `molt proxy` would."""
    claim(tmp_path / "data" / "chroma")
    cfg = _config(tmp_path, "[skills]\nenabled = true\n")
    r = _molt(tmp_path, "--config", str(cfg), "proxy", "--port", str(free_port()))
    assert r.returncode == 1, r.stderr
    assert "is in use by another molt process" in r.stderr
    assert f"pid {os.getpid()}" in r.stderr and "skills.chroma_url" in r.stderr
    # a worker opens no index: it runs beside the proxy on the same folder
    # (it stops at the replay check, past the index)
    w = _molt(tmp_path, "--config", str(cfg), "worker")
    assert "in use" not in w.stderr and "replay_url" in w.stderr


def test_the_claim_is_shared_inside_one_process(tmp_path: Path) -> None:
    folder = tmp_path / "chroma"
    claim(folder)
    claim(folder)  # two apps in one process share Chroma's one client per path
    assert (folder / "molt.lock").read_text() == str(os.getpid())


def test_doctor_reports_an_unreachable_chroma_server(tmp_path: Path, fake_llm: FakeLLM) -> None:
    """Finding 3: with skills.chroma_url set, `molt doctor` checks the server."""
    url = f"http://127.0.0.1:{free_port()}"
    cfg = _config(tmp_path, f'[skills]\nchroma_url = "{url}"\n'
                  f'[[models]]\nalias = "gpt-fake"\nbase_url = "{fake_llm.url}/v1"\n')  # type: ignore[attr-defined]
    r = _molt(tmp_path, "--config", str(cfg), "doctor")
    assert r.returncode == 1
    assert f"FAIL chroma: {url}" in r.stdout


def test_doctor_reports_a_live_chroma_server(tmp_path: Path, chroma_server: str,
                                             fake_llm: FakeLLM) -> None:
    cfg = _config(tmp_path, f'[skills]\nchroma_url = "{chroma_server}"\n'
                  f'[[models]]\nalias = "gpt-fake"\nbase_url = "{fake_llm.url}/v1"\n')  # type: ignore[attr-defined]
    r = _molt(tmp_path, "--config", str(cfg), "doctor")
    assert f"ok  chroma: server at {chroma_server}" in r.stdout, r.stdout + r.stderr
