"""The recorder never blocks a request, counts drops, and loses nothing on orderly shutdown."""

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

from proxy.metrics import Metrics
from proxy.recorder import Recorder
from store.database import Database
from store.ids import new_id
from store.records import TurnRecord
from store.settings import RecorderSettings, StoreSettings
from store.trajectories import TrajectoryStore
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.server import free_port


def _rec(i: int) -> TurnRecord:
    return TurnRecord(id=new_id("turn"), tenant_id="t", session_id=f"ses_{i % 7}", idx=i,
                      turn_type="main", created_at=time.time(), request_model="m", stream=True,
                      request={"messages": []},
                      stream_chunks=[b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n',
                                     b"data: [DONE]\n\n"])


async def test_full_queue_drops_are_counted_and_stop_drains(tmp_path: Path) -> None:
    db = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{tmp_path}/r.db"))
    metrics = Metrics()
    rec = Recorder(TrajectoryStore(db), RecorderSettings(queue_size=500, batch_size=64), metrics)
    rec.start()
    accepted = sum(rec.submit(_rec(i)) for i in range(600))  # no await: the writer cannot run
    assert accepted == 500 and rec.depth == 500
    assert metrics.recorder_dropped._value.get() == 100
    await rec.stop()
    assert await TrajectoryStore(db).count_turns() == 500
    detail = await TrajectoryStore(db).get_session("ses_0")
    assert detail.turns[0]["content"] == "x"
    await db.close()


def test_sigterm_writes_everything_queued(tmp_path: Path, fake_llm: FakeLLM) -> None:
    port = free_port()
    cfg = tmp_path / "molt.toml"
    cfg.write_text(
        f'[server]\nport = {port}\n[store]\nurl = "sqlite+aiosqlite:///{tmp_path}/m.db"\n'
        f'[recorder]\nbatch_size = 1\n'
        f'[[models]]\nalias = "gpt-fake"\nbase_url = "{fake_llm.url}/v1"\n'  # type: ignore[attr-defined]
    )
    env = {**os.environ, "MOLT_CONFIG": str(cfg)}
    proc = subprocess.Popen([sys.executable, "-m", "molt", "serve"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "molt serve did not start"
            time.sleep(0.1)
        with httpx.Client(base_url=base) as c:
            for i in range(150):
                r = c.post("/v1/chat/completions", json={
                    "model": "gpt-fake", "messages": [{"role": "user", "content": f"n{i}"}]})
                assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        # uvicorn shuts down cleanly, then re-raises the signal it caught
        assert proc.returncode in (0, -signal.SIGTERM), out.decode()
        assert b"Application shutdown complete" in out
    finally:
        if proc.poll() is None:
            proc.kill()
    listed = subprocess.run([sys.executable, "-m", "molt", "sessions", "list", "--limit", "1000", "--json"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    sessions: list[dict[str, Any]] = json.loads(listed.stdout)
    assert sum(s["turns"] for s in sessions) == 150
