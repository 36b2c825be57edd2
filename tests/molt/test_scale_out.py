"""Two `molt proxy` processes and one `molt worker` on one real PostgreSQL (issue 18).

Real processes (`python -m molt ...`), real uvicorn, the official openai SDK's wire format
via httpx, the scripted fake upstream. Shows: one session across replicas (the same
`X-Session-Id` through both lands in one session, turns in order); the worker runs beside
them with no model routes; kill -9 of a replica with the spool on loses no completed turn
(a proxy restarted on its folder writes them).

Not covered here (see the report): skills learned through a Chroma server and a
promotion reaching both replicas (those need the embedding model and a trained version).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from store.database import Database
from store.errors import NotFound
from store.settings import StoreSettings
from store.trajectories import TrajectoryStore
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.server import free_port
from tests.store.conftest import _reset_pg

ROOT = Path(__file__).resolve().parents[2]
PG = os.environ.get("MOLT_TEST_PG_URL")

pytestmark = [
    pytest.mark.slow, pytest.mark.postgres,
    pytest.mark.skipif(PG is None, reason="needs PostgreSQL: set MOLT_TEST_PG_URL"),
]


class Procs:
    def __init__(self, tmp: Path, upstream: str) -> None:
        self.tmp = tmp
        self.upstream = upstream
        self.running: list[subprocess.Popen[bytes]] = []

    def config(self, name: str) -> Path:
        cfg = self.tmp / f"{name}.toml"
        cfg.write_text(
            f'data_dir = "{self.tmp / name}"\n[store]\nurl = "{PG}"\n'
            "[recorder]\nspool = true\n[skills]\nenabled = false\n"
            "[trainer]\nenabled = false\n"
            f'[[models]]\nalias = "gpt-fake"\nbase_url = "{self.upstream}/v1"\ntimeout_s = 5\n')
        return cfg

    def start(self, name: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOLT_")}
        env["PYTHONPATH"] = str(ROOT)
        with open(self.tmp / f"{name}.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                [sys.executable, "-m", "molt", "--config", str(self.config(name)), *args,
                 "--port", str(port), "--log-level", "warning"],
                env=env, stdout=subprocess.DEVNULL, stderr=log)
        self.running.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # wait on the process's own /healthz
            assert proc.poll() is None, (self.tmp / f"{name}.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{name} did not come up"
            time.sleep(0.2)

    def stop_all(self) -> None:
        for p in reversed(self.running):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=60)


@pytest.fixture
def procs(tmp_path: Path, fake_llm: FakeLLM) -> Iterator[Procs]:
    # a blank database: keys other tests left there would close the proxies (no open mode)
    assert PG is not None
    asyncio.run(_reset_pg(PG))
    p = Procs(tmp_path, fake_llm.url)  # type: ignore[attr-defined]
    yield p
    p.stop_all()


def _chat(url: str, session: str, text: str) -> httpx.Response:
    r = httpx.post(f"{url}/v1/chat/completions", timeout=30, headers={"X-Session-Id": session},
                   json={"model": "gpt-fake", "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    return r


async def _turns_present(turn_ids: list[str]) -> int:
    assert PG is not None
    db = await Database.open(StoreSettings(url=PG))
    try:
        store = TrajectoryStore(db)
        n = 0
        for tid in turn_ids:
            with contextlib.suppress(NotFound):  # not written yet
                await store.get_turn(tid)
                n += 1
        return n
    finally:
        await db.close()


async def _session_turns(session_id: str) -> list[int]:
    assert PG is not None
    db = await Database.open(StoreSettings(url=PG))
    try:
        detail = await TrajectoryStore(db).get_session(session_id)
        return [int(t["idx"]) for t in detail.turns]
    finally:
        await db.close()


def _wait(check: object, want: object, timeout_s: float = 30) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        got = asyncio.run(check())  # type: ignore[operator]
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_two_proxies_and_a_worker_share_one_store(procs: Procs) -> None:
    proxy_a, a = procs.start("a", "proxy")
    _, b = procs.start("b", "proxy")
    _, w = procs.start("w", "worker", "--replay-url", f"{a}/v1")
    assert httpx.get(f"{w}/v1/models").status_code == 404  # the worker serves no models

    # one agent episode, its turns spread over both replicas
    external = f"ep-{uuid.uuid4().hex}"
    replies = [_chat(url, external, f"step {i}") for i, url in enumerate((a, b, a, b))]
    turn_ids = [r.headers["x-molt-turn-id"] for r in replies]
    assert _wait(lambda: _turns_present(turn_ids), 4) == 4
    stored = asyncio.run(_session_turns(external))
    assert stored == [0, 1, 2, 3], stored

    # completed turns on A, then kill -9: none of them is lost
    done = [_chat(a, f"k-{uuid.uuid4().hex}", f"kill {i}").headers["x-molt-turn-id"]
            for i in range(20)]
    os.kill(proxy_a.pid, signal.SIGKILL)
    proxy_a.wait(timeout=30)
    procs.start("a", "proxy")  # a new replica on A's folder replays the dead one's spool
    assert _wait(lambda: _turns_present(done), len(done)) == len(done)
