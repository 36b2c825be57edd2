"""Driving a vLLM server with runtime LoRA: versioned adapter names, drain, unload."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from store.registry import Registry
from tests.fakes.fake_vllm import FakeVLLM
from tests.fakes.server import ServerThread

BASE_MODEL = "org/base-model"
BASE = "org--base-model"


@pytest.fixture
def vllm() -> Iterator[FakeVLLM]:
    fake = FakeVLLM(BASE_MODEL)
    with ServerThread(fake.app) as srv:
        fake.url = srv.url  # type: ignore[attr-defined]
        yield fake


def _ask(m: Any, model: str = "big", stream: bool = False) -> tuple[str, str]:
    c = openai.OpenAI(base_url=m.base_url, api_key="x", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=stream)
    parsed = raw.parse()
    if stream:
        text = "".join(ch.choices[0].delta.content or "" for ch in parsed if ch.choices)
    else:
        text = parsed.choices[0].message.content or ""
        assert parsed.model == model
    return raw.headers["x-molt-weight-version"], text


def _molt_on_vllm(molt_factory: Any, vllm: FakeVLLM) -> tuple[Any, Registry]:
    """molt with one vLLM alias `big` (skills off), and its weight registry."""
    m = molt_factory(models=[{"alias": "big", "base_url": vllm.url + "/v1",  # type: ignore[attr-defined]
                              "vllm": True, "upstream_model": BASE_MODEL}],
                     skills={"enabled": False})
    return m, Registry(m.settings.registry_root())


def _name(v: str) -> str:
    return f"default-{BASE}-{v}"


def test_promotion_loads_versioned_adapters_and_unloads_drained_ones(
    molt_factory: Any, vllm: FakeVLLM, tiny_artifacts: dict[str, Path]
) -> None:
    m, reg = _molt_on_vllm(molt_factory, vllm)
    v1, v2 = (reg.create("default", BASE, kind="lora", files_from=tiny_artifacts[f"lora{i}"],
                         base_model=BASE_MODEL, base_hash=None).version for i in (1, 2))
    admin = httpx.Client(base_url=m.url, timeout=30)

    assert _ask(m) == ("base", f"served by {BASE_MODEL}")
    r = admin.post(f"/admin/versions/default/{BASE}/{v1}/promote")
    assert r.status_code == 200 and r.json()["served"] == {"big": v1}
    assert vllm.calls == [("load", _name(v1))]
    assert _ask(m) == (v1, f"served by {_name(v1)}")
    assert _ask(m, stream=True) == (v1, f"served by {_name(v1)}")

    # a slow stream on v1 is in flight while v2 is promoted: v1 stays loaded until it ends
    vllm.chunk_delay_s = 0.3
    slow: dict[str, Any] = {}
    t = threading.Thread(target=lambda: slow.update(r=_ask(m, stream=True)))
    t.start()
    time.sleep(0.3)
    r = admin.post(f"/admin/versions/default/{BASE}/{v2}/promote")
    assert r.json()["served"] == {"big": v2}
    assert vllm.calls == [("load", _name(v1)), ("load", _name(v2))]
    vllm.chunk_delay_s = 0.0
    assert _ask(m) == (v2, f"served by {_name(v2)}")
    t.join()
    assert slow["r"] == (v1, f"served by {_name(v1)}")
    deadline = time.monotonic() + 5
    while ("unload", _name(v1)) not in vllm.calls:
        assert time.monotonic() < deadline, vllm.calls
        time.sleep(0.05)
    assert set(vllm.loaded) == {_name(v2)}

    # a pinned version is loaded for its request and unloaded after it
    assert _ask(m, f"big@{v1}") == (v1, f"served by {_name(v1)}")
    # rollback through the registry (another process): the backend follows the pointer
    reg.rollback("default", BASE, base_dir=None)
    deadline = time.monotonic() + 5
    while _ask(m)[0] != v1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    while set(vllm.loaded) != {_name(v1)}:
        assert time.monotonic() < deadline, vllm.loaded
        time.sleep(0.05)
    assert vllm.calls[-1] == ("unload", _name(v2))


def test_a_version_vllm_cannot_load_is_refused(
    molt_factory: Any, vllm: FakeVLLM, tiny_artifacts: dict[str, Path]
) -> None:
    m, reg = _molt_on_vllm(molt_factory, vllm)
    delta = reg.create("default", BASE, kind="ttt_delta", files_from=tiny_artifacts["delta"],
                       base_model=BASE_MODEL, base_hash=None).version
    r = httpx.post(f"{m.url}/admin/versions/default/{BASE}/{delta}/promote", timeout=30)
    # the registry accepts it (nothing to check it against here), serving refuses it
    assert r.status_code == 200 and r.json()["served"] == {"big": "base"}
    assert reg.active("default", BASE) is None  # serving refused it: the pointer went back
    assert _ask(m) == ("base", f"served by {BASE_MODEL}")
    assert vllm.calls == []
