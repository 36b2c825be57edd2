"""Serving from a registry reached by URL (fsspec): versions load from the local cache,
and a promotion written by another writer is picked up by polling the pointer."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from store.registry import Registry
from store.registry_check import base_fingerprint
from tests.proxy.local_helpers import client, start_local

PROMPT = [{"role": "user", "content": "Tell me a story about Oslo."}]


def _ask(m: Any, model: str = "tiny") -> tuple[str, str]:
    raw = client(m).chat.completions.with_raw_response.create(
        model=model, messages=PROMPT, temperature=0, max_tokens=12)
    return raw.headers["x-molt-weight-version"], raw.parse().choices[0].message.content or ""


def test_a_memory_registry_serves_promotes_and_rolls_back(
        molt_factory: Any, tiny_base: Path, tiny_artifacts: dict[str, Path]) -> None:
    url = f"memory://molt-registry-{uuid.uuid4().hex}"
    m = start_local(molt_factory, tiny_base, registry_dir=url)
    trainer = Registry(url, cache_dir=m.settings.data_dir / "trainer-cache")  # another writer
    v1, v2 = (trainer.create("default", "tiny", kind="lora", files_from=tiny_artifacts[f"lora{i}"],
                             base_model="tiny", base_hash=base_fingerprint(tiny_base)).version
              for i in (1, 2))
    pinned = {v: _ask(m, f"tiny@{v}")[1] for v in (v1, v2)}
    assert pinned[v1] != pinned[v2]

    r = httpx.post(f"{m.url}/admin/versions/default/tiny/{v1}/promote", timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["served"] == {"tiny": v1}
    assert _ask(m) == (v1, pinned[v1])

    trainer.promote("default", "tiny", v2, base_dir=tiny_base)  # serving polls the pointer
    deadline = time.monotonic() + 10
    while _ask(m)[0] != v2:
        assert time.monotonic() < deadline, "serving never followed the promotion"
        time.sleep(0.1)
    assert _ask(m) == (v2, pinned[v2])
    assert (m.settings.data_dir / "registry-cache").is_dir()  # loaded from the local copy

    r = httpx.post(f"{m.url}/admin/versions/default/tiny/rollback", timeout=30)
    assert r.status_code == 200 and r.json()["active"] == v1
    assert _ask(m) == (v1, pinned[v1])
    assert [h["action"] for h in trainer.history("default", "tiny")] == [
        "promote", "promote", "rollback"]
