"""Serving a TTT-enabled version: per-session fast weights in the local backend."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from modeling.loading import load_base
from modeling.ttt import attach
from modeling.ttt_config import TTTConfig
from proxy.local.ttt_sessions import TTTRunner, TTTSessions
from store.registry import Registry
from store.registry_check import base_fingerprint
from tests.proxy.local_helpers import backend, client, start_local

REVEAL = [{"role": "user", "content": " ".join(
    ["Weather in Oslo? the quick brown fox jumps over the lazy dog 0123456789 city name"] * 8)}]
PROBE = [{"role": "user", "content": "Say hello."}]


def ttt_version(base_dir: Path, out: Path, seed: int = 4) -> Path:
    """A ttt_delta folder with strong random TTT layers (so that fast weights show)."""
    model = load_base(base_dir).model
    handle = attach(model, TTTConfig(layers=[0, 1], chunk_size=16, eta=3.0, tau=50.0))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in handle.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() == 3 else 0.3))
    handle.save_version(out)
    return out


@pytest.fixture
def served(molt_factory: Any, tiny_base: Path, tmp_path: Path) -> tuple[Any, str]:
    # built before molt starts: transformers' loading is not safe beside another load
    art = ttt_version(tiny_base, tmp_path / "ttt")
    m = start_local(molt_factory, tiny_base)
    reg = Registry(m.settings.registry_root())
    v = reg.create("default", "tiny", kind="ttt_delta", files_from=art, base_model="tiny",
                   base_hash=base_fingerprint(tiny_base)).version
    return m, f"tiny@{v}"


def ask(m: Any, model: str, session: str, messages: list[dict[str, Any]], *,
        done: bool = False, max_tokens: int = 12) -> str:
    headers = {"X-Session-Id": session}
    if done:
        headers["X-Session-Done"] = "true"
    r = client(m).chat.completions.create(model=model, messages=messages, temperature=0,
                                          max_tokens=max_tokens, extra_headers=headers)
    return r.choices[0].message.content or ""


def test_a_sessions_fast_weights_never_reach_another_concurrent_session(
        served: tuple[Any, str]) -> None:
    m, model = served
    fresh = ask(m, model, "fresh-1", PROBE)
    assert ask(m, model, "fresh-2", PROBE) == fresh  # a new session starts from W_down

    results: dict[str, list[str]] = {"a": [], "b": []}
    revealed = threading.Event()

    def session_a() -> None:
        ask(m, model, "a", REVEAL, max_tokens=24)  # the long revealing prefix
        revealed.set()
        results["a"].append(ask(m, model, "a", PROBE))

    def session_b() -> None:
        assert revealed.wait(60)  # A's fast weights have absorbed the prefix by now
        for _ in range(3):
            results["b"].append(ask(m, model, "b", PROBE))

    threads = [threading.Thread(target=session_a), threading.Thread(target=session_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["a"][0] != fresh  # A adapted to what it was shown
    # B (running beside A) saw only its own probes, never A's prefix: its first answer is
    # a fresh session's
    assert results["b"][0] == fresh
    assert len(backend(m).ttt_sessions) >= 4  # fresh-1, fresh-2, a, b: one state each
    # the same probe, with nothing of A in it, in yet another session
    assert ask(m, model, "c", PROBE) == fresh


def test_session_done_drops_its_fast_weights(served: tuple[Any, str]) -> None:
    m, model = served
    fresh = ask(m, model, "fresh", PROBE)
    ask(m, model, "s", REVEAL, max_tokens=24)
    ttt = backend(m).ttt_sessions
    before = len(ttt)
    assert ttt.nbytes() > 0
    ask(m, model, "s", PROBE, done=True)  # the last request of the session
    assert len(ttt) == before - 1
    # the id starts a new session: from W_down again
    assert ask(m, model, "s", PROBE) == fresh


def test_idle_states_expire_and_the_memory_cap_evicts_the_oldest(tiny_base: Path) -> None:
    base = load_base(tiny_base)
    handle = attach(base.model, TTTConfig(layers=[0, 1], chunk_size=16))
    runner = TTTRunner(base.model, handle)
    now = [0.0]
    sessions = TTTSessions(idle_s=60.0, max_bytes=10**9, clock=lambda: now[0])
    ids = torch.tensor([list(range(5, 45))])

    def use(sid: str) -> None:
        r = sessions.runner(runner, "t", sid, "v1")
        with torch.inference_mode():
            r.forward(ids, None)
        sessions.release(r, session_done=False, tenant="t", session_id=sid)

    use("one")
    one = sessions.nbytes()
    assert one > 0
    use("two")
    assert len(sessions) == 2
    now[0] = 61.0
    use("three")  # "one" and "two" were idle past idle_s
    assert [k[1] for k in sessions.sessions()] == ["three"] and sessions.expired == 2
    sessions.max_bytes = int(one * 2.5)
    use("four")
    use("five")  # three states would pass the cap: the least recently used goes
    assert [k[1] for k in sessions.sessions()] == ["four", "five"] and sessions.evicted == 1


def served_with(molt_factory: Any, tiny_base: Path, tmp_path: Path,
                **limits: float) -> tuple[Any, str]:
    art = ttt_version(tiny_base, tmp_path / "ttt")
    m = start_local(molt_factory, tiny_base, ttt_sessions=limits)
    reg = Registry(m.settings.registry_root())
    v = reg.create("default", "tiny", kind="ttt_delta", files_from=art, base_model="tiny",
                   base_hash=base_fingerprint(tiny_base)).version
    return m, f"tiny@{v}"


def test_the_session_timeout_setting_drops_an_idle_sessions_fast_weights(
        molt_factory: Any, tiny_base: Path, tmp_path: Path) -> None:
    # [ttt_sessions] idle_s = 1.5 in the served process's settings
    m, model = served_with(molt_factory, tiny_base, tmp_path, idle_s=1.5)
    fresh = ask(m, model, "fresh", PROBE)
    ask(m, model, "s", REVEAL, max_tokens=24)
    adapted = ask(m, model, "s", PROBE)
    assert adapted != fresh  # within the timeout the session keeps what it absorbed
    time.sleep(2.0)
    # idle past 1.5 s: the session's next request starts from W_down again
    assert ask(m, model, "s", PROBE) == fresh


def test_the_memory_cap_setting_evicts_the_least_recently_used_session(
        molt_factory: Any, tiny_base: Path, tmp_path: Path) -> None:
    # a cap below one session's state: a session's state survives only while it is in use
    m, model = served_with(molt_factory, tiny_base, tmp_path, max_mb=0.01)
    fresh = ask(m, model, "fresh", PROBE)
    ask(m, model, "a", REVEAL, max_tokens=24)
    ask(m, model, "b", PROBE)  # b's state passes the cap: a's (idle) goes
    assert ask(m, model, "a", PROBE) == fresh
