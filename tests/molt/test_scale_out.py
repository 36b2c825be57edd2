"""Two `molt proxy` processes and one `molt worker` on one real PostgreSQL (issue 18).

Real processes (`python -m molt ...`), real uvicorn, the official openai SDK's wire format
via httpx, the scripted fake upstream. Shows: one session across replicas (the same
`X-Session-Id` through both lands in one session, turns in order); the worker runs beside
them with no model routes; kill -9 of a replica with the spool on loses no completed turn
(a proxy restarted on its folder writes them).

Skills learned through a Chroma server: test_scale_out_skills.py; a promotion reaching
both replicas: test_scale_out_versions.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from store.database import Database
from store.errors import NotFound
from store.settings import StoreSettings
from store.trajectories import TrajectoryStore
from tests.fakes.fake_llm import FakeLLM
from tests.molt.cluster import Procs
from tests.store.conftest import _reset_pg

PG = os.environ.get("MOLT_TEST_PG_URL")

pytestmark = [
    pytest.mark.slow, pytest.mark.postgres,
    pytest.mark.skipif(PG is None, reason="needs PostgreSQL: set MOLT_TEST_PG_URL"),
]


def _config(tmp: Path, upstream: str) -> Callable[[str], str]:
    def config(name: str) -> str:
        return (f'data_dir = "{tmp / name}"\n[store]\nurl = "{PG}"\n'
                "[recorder]\nspool = true\n[skills]\nenabled = false\n"
                "[trainer]\nenabled = false\n"
                f'[[models]]\nalias = "gpt-fake"\nbase_url = "{upstream}/v1"\ntimeout_s = 5\n')
    return config


@pytest.fixture
def procs(tmp_path: Path, fake_llm: FakeLLM) -> Iterator[Procs]:
    # a blank database: keys other tests left there would close the proxies (no open mode)
    assert PG is not None
    asyncio.run(_reset_pg(PG))
    p = Procs(tmp_path, _config(tmp_path, fake_llm.url))  # type: ignore[attr-defined]
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
    proxy_a = procs.start("a", "proxy")
    a, b = proxy_a.url, procs.start("b", "proxy").url
    w = procs.start("w", "worker", "--replay-url", f"{a}/v1").url
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
    os.kill(proxy_a.popen.pid, signal.SIGKILL)
    proxy_a.popen.wait(timeout=30)
    procs.start("a", "proxy")  # a new replica on A's folder replays the dead one's spool
    assert _wait(lambda: _turns_present(done), len(done)) == len(done)
