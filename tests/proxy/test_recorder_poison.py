"""No turn can stop recording: poison input, odd upstreams, a stuck database, two processes.

Everything runs for real: molt under uvicorn on loopback, SQLite and the
PostgreSQL server at MOLT_TEST_PG_URL; the only fakes are the upstreams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.metrics import Metrics
from proxy.recorder import Recorder
from store.database import Database
from store.ids import new_id
from store.records import TurnRecord
from store.settings import RecorderSettings, StoreSettings
from store.trajectories import TrajectoryStore
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.server import ServerThread, free_port
from tests.store.conftest import _pg_reachable, _pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/molt.db"
    url = _pg_url()
    if not url:
        pytest.skip("PostgreSQL skipped: MOLT_TEST_PG_URL is not set (.ci/run starts a server)")
    problem = _pg_reachable(url)  # also resets the schema
    if problem:
        pytest.skip(f"PostgreSQL skipped: cannot reach {url.split('@')[-1]}: {problem}")
    return url


class OddUpstream:
    """An OpenAI-compatible upstream that answers exactly the bytes it is given."""

    def __init__(self) -> None:
        self.script: deque[tuple[str, bytes]] = deque()
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

    def push(self, media_type: str, body: bytes) -> None:
        self.script.append((media_type, body))

    async def _chat(self, _request: Request) -> Response:
        media_type, body = self.script.popleft()
        return Response(body, media_type=media_type)


@pytest.fixture
def odd() -> Iterator[OddUpstream]:
    up = OddUpstream()
    with ServerThread(up.app) as srv:
        up.url = srv.url  # type: ignore[attr-defined]
        yield up


def _models(fake_llm: FakeLLM, odd: OddUpstream | None = None) -> list[dict[str, Any]]:
    models = [{"alias": "gpt-fake", "base_url": f"{fake_llm.url}/v1", "timeout_s": 5}]  # type: ignore[attr-defined]
    if odd is not None:
        models.append({"alias": "odd", "base_url": f"{odd.url}/v1", "timeout_s": 5})  # type: ignore[attr-defined]
    return models


def _metric(m: Any, name: str) -> float:
    for line in httpx.get(m.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def _flushed(m: Any) -> None:
    assert m.run(m.state.recorder.flush(timeout_s=30)), "the recorder did not catch up"


def _turn(m: Any, turn_id: str) -> dict[str, Any]:
    return m.run(m.state.trajectories.get_turn(turn_id))  # type: ignore[no-any-return]


def _chat(c: httpx.Client, body: str | dict[str, Any], **headers: str) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    r = c.post("/v1/chat/completions", content=content,
               headers={"content-type": "application/json", **headers})
    return r


def test_poison_requests_and_odd_upstreams_never_stop_recording(
    molt_factory: Any, fake_llm: FakeLLM, odd: OddUpstream, store_url: str
) -> None:
    m = molt_factory(store={"url": store_url}, models=_models(fake_llm, odd),
                     recorder={"linger_s": 0.2})
    long_sid = "s" * 300
    msgs = [{"role": "user", "content": "hello"}]
    sent: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=m.url, timeout=30) as c:
        # What the store would refuse is refused at the door, in the envelope (the store's own
        # normalisation of such values is tested in tests/store/test_turn_writes.py).
        refused = {
            "nan": _chat(c, '{"model": "gpt-fake", "messages": [{"role": "user", "content": '
                            '"n"}], "metadata": {"a": NaN, "b": 1e999, "c": -1e999}}'),
            "long_session": _chat(c, {"model": "gpt-fake", "messages": msgs},
                                  **{"X-Session-Id": long_sid}),
            "long_model": _chat(c, {"model": "gpt-fake@" + "v" * 300, "messages": msgs}),
            "surrogate": _chat(c, '{"model": "gpt-fake", "messages": [{"role": "user", '
                                  '"content": "a \\ud800 lone"}]}'),
        }
        # NUL in the request, NUL and an over-long model name in the upstream's answer.
        odd.push("application/json", b'{"model": "' + b"m" * 300 + b'", "choices": [{"index": 0,'
                                      b' "message": {"role": "assistant", "content": "x\\u0000y"}}]}')
        sent["nul"] = _chat(c, '{"model": "odd", "messages": [{"role": "user", '
                               '"content": "a\\u0000b"}]}')
        # Odd but well-formed upstream answers.
        odd.push("text/event-stream",
                 b'data: {"choices":[{"index":0,"delta":"oops"}]}\n\ndata: [DONE]\n\n')
        sent["delta_str"] = _chat(c, {"model": "odd", "messages": msgs, "stream": True})
        odd.push("text/event-stream",
                 b'data: {"choices":[{"index":"x","delta":{"tool_calls":[{"index":"a",'
                 b'"function":"f"}],"content":5}},null,7],"usage":{"prompt_tokens":1e30}}\n\n'
                 b'data: {"choices":[{"index":0,"logprobs":{"content":5}}]}\n\ndata: [DONE]\n\n')
        sent["chunk_shapes"] = _chat(c, {"model": "odd", "messages": msgs, "stream": True})
        odd.push("application/json", b'{"choices": 5, "model": 12}')
        sent["choices_int"] = _chat(c, {"model": "odd", "messages": msgs})
        odd.push("application/json", b'{"choices": [{"index": 0, "message": {"content": "ok"},'
                                      b' "finish_reason": 3}], "usage": {"prompt_tokens": "many",'
                                      b' "completion_tokens": 3000000000}}')
        sent["usage_str"] = _chat(c, {"model": "odd", "messages": msgs})
        odd.push("application/json", b'{"choices": [{"message": "nope"}], "usage": 5}')
        sent["message_str"] = _chat(c, {"model": "odd", "messages": msgs})
        # A normal turn after all that.
        sent["normal"] = _chat(c, {"model": "gpt-fake", "messages": msgs})
    for name, r in refused.items():
        assert r.status_code == 400, name
        assert r.json()["error"]["type"] == "invalid_request_error", name
    assert all(r.status_code == 200 for r in sent.values()), {n: r.status_code for n, r in sent.items()}
    turn_ids = {name: r.headers["x-molt-turn-id"] for name, r in sent.items()}
    _flushed(m)
    turns = {name: _turn(m, tid) for name, tid in turn_ids.items()}

    assert turns["nul"]["response_model"] == "m" * 256  # a varchar(256) column
    content = turns["nul"]["request"]["messages"][0]["content"]
    assert content == "ab" and turns["nul"]["content"] == "xy"
    assert turns["delta_str"]["content"] is None and turns["delta_str"]["status"] == "ok"
    assert turns["chunk_shapes"]["input_tokens"] is None
    assert turns["choices_int"]["response"] == {"choices": 5, "model": 12}
    assert turns["choices_int"]["response_model"] is None
    usage_turn = turns["usage_str"]
    assert usage_turn["content"] == "ok" and usage_turn["input_tokens"] is None
    assert usage_turn["output_tokens"] is None and usage_turn["finish_reason"] is None
    assert turns["message_str"]["content"] is None
    assert turns["normal"]["content"] == "echo: hello"

    health = httpx.get(m.url + "/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    rec = health.json()["recorder"]
    assert rec["alive"] and rec["queue_depth"] == 0 and rec["restarts"] == 0
    assert rec["last_write_at"] is not None
    assert _metric(m, "molt_recorder_written_total") == len(turn_ids)
    assert _metric(m, "molt_recorder_dead_letters_total") == 0


def _refuse_content(url: str, text: str) -> None:
    """Make the real database refuse turns whose content is `text` (as a DBA's rule would)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(sa.make_url(url).database or "") as conn:
            conn.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON turns WHEN NEW.content = '{text}' "
                         "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        return

    async def add() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(sa.text(
                f"ALTER TABLE turns ADD CONSTRAINT refuse CHECK (content IS DISTINCT FROM '{text}')"))
        await engine.dispose()

    asyncio.run(add())


def test_a_refused_turn_is_dead_lettered_and_the_batch_written(
    molt_factory: Any, fake_llm: FakeLLM, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    m = molt_factory(store={"url": store_url}, models=_models(fake_llm),
                     recorder={"linger_s": 30, "batch_size": 100})
    _refuse_content(store_url, "echo: poison")
    ids = []
    with httpx.Client(base_url=m.url, timeout=30) as c:
        for text in ("before", "poison", "after"):
            r = _chat(c, {"model": "gpt-fake", "messages": [{"role": "user", "content": text}]})
            assert r.status_code == 200
            ids.append(r.headers["x-molt-turn-id"])
    with caplog.at_level(logging.INFO, logger="molt.recorder"):
        _flushed(m)  # one batch of three: refused whole, then written one by one
    before, poison, after = (_turn(m, i) for i in ids)
    assert before["content"] == "echo: before" and after["content"] == "echo: after"
    assert poison["content"] is None and poison["request"] == {}
    assert poison["error"]["type"] == "recorder_dead_letter"
    from store.dead_letters import DeadLetterStore

    letters = m.run(DeadLetterStore(m.state.db).list())
    assert [d["turn_id"] for d in letters] == [ids[1]]
    kept = json.loads(letters[0]["record"])
    assert kept["content"] == "echo: poison" and kept["request"]["messages"][0]["content"] == "poison"
    assert "poison" not in caplog.text  # ids and error classes only, never the turn's text
    session = m.run(m.state.trajectories.get_session(before["session_id"])).summary
    assert session.turns == 1
    health = httpx.get(m.url + "/healthz").json()
    assert health["status"] == "ok" and health["recorder"]["dead_letters"] == 1
    assert _metric(m, "molt_recorder_dead_letters_total") == 1


class _Explodes:
    """A value whose every rendering fails: what a buggy response hook could leave in a turn."""

    def __str__(self) -> str:
        raise RuntimeError("SECRET-PROMPT-TEXT")

    __repr__ = __str__


def _record(i: int, **kw: Any) -> TurnRecord:
    return TurnRecord(id=new_id("turn"), tenant_id="t", session_id=f"ses_{i}", idx=0,
                      turn_type="main", created_at=time.time(), request_model="m", stream=False,
                      request={"messages": [{"role": "user", "content": f"q{i}"}]}, **kw)


async def test_a_writer_that_dies_is_logged_counted_and_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{tmp_path}/r.db"))
    metrics = Metrics()
    rec = Recorder(TrajectoryStore(db), RecorderSettings(linger_s=0), metrics, data_dir=tmp_path)
    good = [_record(0), _record(2)]
    evil = _record(1)
    evil.request = {"messages": [_Explodes()]}
    with caplog.at_level(logging.INFO, logger="molt.recorder"):
        for r in (good[0], evil, good[1]):
            rec.submit(r)  # no await: one batch of three
        rec.start()
        assert await rec.flush(timeout_s=30)
        after = _record(3)
        rec.submit(after)
        assert await rec.flush(timeout_s=30)
    assert metrics.recorder_restarts._value.get() == 3
    assert "recorder writer died (RuntimeError at " in caplog.text
    assert "SECRET-PROMPT-TEXT" not in caplog.text
    ts = TrajectoryStore(db)
    for r in (*good, after):
        assert (await ts.get_turn(r.id))["request"] == r.request
    from store.dead_letters import DeadLetterStore

    letters = await DeadLetterStore(db).list()
    assert [d["turn_id"] for d in letters] == [evil.id]
    health = rec.health()
    assert health.alive and health.healthy and health.restarts == 3 and health.queue_depth == 0
    await rec.stop()
    await db.close()


class _WriteLock:
    """Another client holding the write lock on turns and sessions (reads still work)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite: sqlite3.Connection | None = None
        self._release = threading.Event()
        self._held = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self.url.startswith("sqlite"):
            self._sqlite = sqlite3.connect(sa.make_url(self.url).database or "",
                                           isolation_level=None, check_same_thread=False)
            self._sqlite.execute("BEGIN IMMEDIATE")
            return self
        self._thread = threading.Thread(target=lambda: asyncio.run(self._pg()), daemon=True)
        self._thread.start()
        assert self._held.wait(30)
        return self

    async def _pg(self) -> None:
        engine = create_async_engine(self.url)
        async with engine.connect() as conn:
            await conn.execute(sa.text("LOCK TABLE turns, sessions IN EXCLUSIVE MODE"))
            self._held.set()
            await asyncio.get_running_loop().run_in_executor(None, self._release.wait)
            await conn.rollback()
        await engine.dispose()

    def __exit__(self, *exc: object) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
            self._sqlite = None
        self._release.set()
        if self._thread is not None:
            self._thread.join(30)


def test_stuck_store_degrades_healthz_feedback_returns_stop_spills_and_restart_replays(
    molt_factory: Any, fake_llm: FakeLLM, store_url: str, tmp_path: Path
) -> None:
    rec_settings = {"linger_s": 0, "stuck_after_s": 0.2, "flush_timeout_s": 0.5,
                    "stop_timeout_s": 0.5}
    m = molt_factory(store={"url": store_url}, models=_models(fake_llm), recorder=rec_settings)
    files = Path(m.settings.data_dir) / "recorder"
    with _WriteLock(store_url) as lock, httpx.Client(base_url=m.url, timeout=30) as c:
        ids = []
        for i in range(3):
            r = _chat(c, {"model": "gpt-fake", "messages": [{"role": "user", "content": f"q{i}"}]})
            assert r.status_code == 200  # recording never blocks a request
            ids.append(r.headers["x-molt-turn-id"])
        deadline = time.monotonic() + 30
        while (h := c.get("/healthz")).status_code == 200:
            assert time.monotonic() < deadline, "healthz never reported the stuck recorder"
            time.sleep(0.05)
        body = h.json()
        assert h.status_code == 503 and body["status"] == "degraded"
        assert body["recorder"]["alive"] is True and body["recorder"]["queue_depth"] == 3
        assert body["recorder"]["oldest_queued_age_s"] > 0.2
        # Feedback on a turn still queued: answered after the flush deadline, not never.
        fb = c.post("/v1/feedback", json={"turn_id": ids[0], "score": 1})
        assert fb.status_code == 404
        # Stop while the store is still stuck: the queue is spilled to a local file.
        stopper = threading.Thread(target=m.srv.__exit__, args=(None, None, None))
        stopper.start()
        deadline = time.monotonic() + 60
        while not list(files.glob("*/spill-*.jsonl")):
            assert time.monotonic() < deadline, "stop() did not spill the queue"
            time.sleep(0.05)
        spilled = [json.loads(line)["id"] for p in files.glob("*/spill-*.jsonl")
                   for line in p.read_text().splitlines()]
        assert spilled == ids
        lock.__exit__()
        stopper.join(60)
        assert not stopper.is_alive()
    m2 = molt_factory(store={"url": store_url}, models=_models(fake_llm), recorder=rec_settings)
    assert m2.run(m2.state.recorder.wait_replayed(30))
    for tid in ids:
        assert _turn(m2, tid)["id"] == tid
    sessions = m2.run(m2.state.trajectories.list_sessions())
    assert sum(s.turns for s in sessions) == 3  # each turn once, whatever got written before
    assert not list(files.glob("*/spill-*.jsonl"))
    assert _metric(m2, "molt_recorder_replayed_total") == 3
    assert httpx.get(m2.url + "/healthz").status_code == 200


def test_two_processes_same_session_id_share_one_session(
    molt_factory: Any, fake_llm: FakeLLM, store_url: str
) -> None:
    # Long linger: neither app writes before both have opened "their" session.
    cfg = {"store": {"url": store_url}, "models": _models(fake_llm),
           "recorder": {"linger_s": 30}}
    a, b = molt_factory(**cfg), molt_factory(**cfg)
    h = {"X-Session-Id": "shared-run"}
    msgs = [{"role": "user", "content": "go"}]
    ids = []
    with httpx.Client(timeout=30) as c:
        for app in (a, b):
            r = c.post(app.base_url + "/chat/completions", headers=h,
                       json={"model": "gpt-fake", "messages": msgs})
            assert r.status_code == 200
            ids.append(r.headers["x-molt-turn-id"])
        _flushed(a)
        _flushed(b)  # b's session loses the race: its turns join a's session
        for app in (b, a):
            r = c.post(app.base_url + "/chat/completions", headers=h,
                       json={"model": "gpt-fake", "messages": msgs})
            ids.append(r.headers["x-molt-turn-id"])
        _flushed(a)
        _flushed(b)
    sessions = [s for s in a.run(a.state.trajectories.list_sessions()) if s.external_id]
    assert len(sessions) == 1 and sessions[0].external_id == "shared-run"
    assert sessions[0].turns == 4
    assert {_turn(a, tid)["session_id"] for tid in ids} == {sessions[0].id}
    for app in (a, b):
        assert _metric(app, "molt_recorder_write_errors_total") == 0
        assert _metric(app, "molt_recorder_written_total") == 2
        assert httpx.get(app.url + "/healthz").json()["recorder"]["queue_depth"] == 0



def _serve(cfg: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MOLT_CONFIG": str(cfg)}
    return subprocess.Popen([sys.executable, "-m", "molt", "serve"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _health(base: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    try:
        r = httpx.get(base + "/healthz")
    except httpx.TransportError:
        assert proc.poll() is None, (proc.stdout.read() if proc.stdout else b"").decode()
        return {}
    return r.json()  # type: ignore[no-any-return]


def _wait_health(base: str, proc: subprocess.Popen[bytes], ready: str) -> None:
    deadline = time.monotonic() + 90
    while not (h := _health(base, proc)) or not h["recorder"][ready]:
        assert time.monotonic() < deadline, f"molt serve never reported {ready}"
        time.sleep(0.1)


def test_spool_kill_9_loses_no_completed_turn(
    tmp_path: Path, fake_llm: FakeLLM, store_url: str
) -> None:
    port = free_port()
    cfg = tmp_path / "molt.toml"

    def config(linger_s: float) -> None:
        cfg.write_text(
            f'data_dir = "{tmp_path}/data"\n[server]\nport = {port}\n'
            f'[store]\nurl = "{store_url}"\n'
            f"[recorder]\nspool = true\nlinger_s = {linger_s}\nbatch_size = 1000\n"
            "[skills]\nenabled = false\n[evolver]\nenabled = false\n"
            f'[[models]]\nalias = "gpt-fake"\nbase_url = "{fake_llm.url}/v1"\n'  # type: ignore[attr-defined]
        )

    base = f"http://127.0.0.1:{port}"
    config(linger_s=60)  # nothing reaches the store before the kill: only the spool has them
    proc = _serve(cfg, tmp_path)
    received: list[str] = []
    try:
        _wait_health(base, proc, "alive")
        with httpx.Client(base_url=base, timeout=30) as c:
            for i in range(20):
                body = {"model": "gpt-fake", "stream": i % 2 == 1,
                        "messages": [{"role": "user", "content": f"turn {i}"}]}
                r = c.post("/v1/chat/completions", json=body,
                           headers={"X-Session-Id": "killed-run"})
                assert r.status_code == 200 and r.text
                received.append(r.headers["x-molt-turn-id"])
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    config(linger_s=0.05)
    proc = _serve(cfg, tmp_path)
    try:
        _wait_health(base, proc, "replay_done")
        env = {**os.environ, "MOLT_CONFIG": str(cfg)}
        shown = subprocess.run(
            [sys.executable, "-m", "molt", "sessions", "show", "killed-run", "--json"],
            env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
        stored = [t["id"] for t in json.loads(shown.stdout)["turns"]]
        assert sorted(stored) == sorted(received) and len(received) == 20  # each once
        assert not list((tmp_path / "data" / "recorder").glob("*/spool-*.jsonl"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


async def test_store_down_retries_then_spills_and_a_later_start_replays(
    tmp_path: Path, store_url: str
) -> None:
    # A PostgreSQL URL where nothing listens: every write is refused as "unavailable".
    down = StoreSettings(url=f"postgresql+asyncpg://molt:molt@127.0.0.1:{free_port()}/molt")
    dead_db = await Database.open(down, run_migrations=False)
    metrics = Metrics()
    settings = RecorderSettings(linger_s=0, stop_timeout_s=0.5, max_retry_delay_s=0.1)
    rec = Recorder(TrajectoryStore(dead_db), settings, metrics, data_dir=tmp_path)
    rec.start()
    batch = [_record(i) for i in range(3)]
    for r in batch:
        rec.submit(r)
    assert not await rec.flush(timeout_s=0.5)
    assert metrics.recorder_write_errors._value.get() >= 2  # retried, with backoff
    assert rec.health().state == "retrying" and rec.health().queue_depth == 3
    await rec.stop()
    await dead_db.close()
    assert metrics.recorder_spilled._value.get() == 3

    db = await Database.open(StoreSettings(url=store_url))
    again = Recorder(TrajectoryStore(db), settings, Metrics(), data_dir=tmp_path)
    again.start()
    assert await again.wait_replayed(30)
    for r in batch:
        assert (await TrajectoryStore(db).get_turn(r.id))["request"] == r.request
    await again.stop()
    assert not list((tmp_path / "recorder").iterdir())
    await db.close()
