"""The registry on shared storage through fsspec: what a path does not show.

Several writers on one URL (processes on different machines share it; here two
`Registry` objects, as two processes would hold), the lock object a dead holder
left, the local cache of version folders, and the settings that name a URL.
"""

from __future__ import annotations

import json
import struct
import threading
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from molt.config import load_settings
from store.errors import Conflict, InvalidInput
from store.registry import Registry
from store.registry_check import base_fingerprint
from store.registry_files import FsspecFiles


def _lora(tmp_path: Path) -> Path:
    """An artifact folder the registry accepts (its content is not read by these tests)."""
    d = tmp_path / f"art-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (d / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")  # no tensors
    return d


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_two_writers_on_one_url_number_versions_without_a_gap_or_a_clash(
        tmp_path: Path, scheme: str) -> None:
    url = (f"file://{tmp_path}/shared-registry" if scheme == "file"
           else f"memory://shared-{uuid.uuid4().hex}")
    a, b = (Registry(url, cache_dir=tmp_path / f"cache-{n}") for n in "ab")
    art = _lora(tmp_path)
    made: list[str] = []

    def writer(reg: Registry) -> None:
        for _ in range(6):
            made.append(reg.create("acme", "tiny", kind="lora", files_from=art, base_model="t",
                                   base_hash=None).version)

    threads = [threading.Thread(target=writer, args=(r,)) for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(made) == [f"v{i:04d}" for i in range(1, 13)]
    assert [m.version for m in b.versions("acme", "tiny")] == sorted(made)[-10:]  # retention
    fs, root = fsspec.core.url_to_fs(url)
    assert not fs.exists(f"{root}/acme/tiny/.lock")


def test_promotion_through_one_writer_is_seen_by_another(tmp_path: Path) -> None:
    url = f"memory://reg-{uuid.uuid4().hex}"
    trainer, proxy = (Registry(url, cache_dir=tmp_path / f"cache-{n}") for n in "tp")
    v = trainer.create("acme", "tiny", kind="lora", files_from=_lora(tmp_path), base_model="t",
                       base_hash=None).version
    before = proxy.pointer_signature("acme", "tiny")
    trainer.promote("acme", "tiny", v, base_dir=None)
    assert proxy.pointer_signature("acme", "tiny") != before
    assert proxy.active("acme", "tiny") == v
    assert proxy.get("acme", "tiny", v).status == "active"
    assert [h["to"] for h in proxy.history("acme", "tiny")] == [v]
    local = proxy.path("acme", "tiny", v)  # a local copy, for the loader
    assert local.is_relative_to(tmp_path / "cache-p")
    assert sorted(p.name for p in local.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "meta.json"]


def test_a_version_number_reused_after_rm_is_not_served_from_the_old_cache(tmp_path: Path) -> None:
    reg = Registry(f"memory://reg-{uuid.uuid4().hex}", cache_dir=tmp_path / "cache")
    first = _lora(tmp_path)
    v = reg.create("acme", "tiny", kind="lora", files_from=first, base_model="t",
                   base_hash=None).version
    assert (reg.path("acme", "tiny", v) / "adapter_config.json").read_text() == '{"r": 4}'
    reg.remove("acme", "tiny", v)
    second = _lora(tmp_path)
    (second / "adapter_config.json").write_text('{"r": 8}')
    again = reg.create("acme", "tiny", kind="lora", files_from=second, base_model="t",
                       base_hash=None).version
    assert again == v
    assert (reg.path("acme", "tiny", v) / "adapter_config.json").read_text() == '{"r": 8}'


def test_a_lock_left_by_a_dead_writer_is_taken_over_and_a_live_one_waited_on(tmp_path: Path) -> None:
    url = f"memory://reg-{uuid.uuid4().hex}"
    reg = Registry(url, cache_dir=tmp_path / "cache")
    files = reg.files
    assert isinstance(files, FsspecFiles)
    fs, root = fsspec.core.url_to_fs(url)
    lock = f"{root}/acme/tiny/.lock"
    fs.pipe_file(lock, json.dumps({"owner": "gone:1", "at": time.time() - 3600}).encode())
    v = reg.create("acme", "tiny", kind="lora", files_from=_lora(tmp_path), base_model="t",
                   base_hash=None).version
    assert v == "v0001" and not fs.exists(lock)

    files.lock_wait_s = 0.3
    fs.pipe_file(lock, json.dumps({"owner": "alive:2", "at": time.time()}).encode())
    with pytest.raises(Conflict, match="registry lock .* is held"):
        reg.promote("acme", "tiny", v, base_dir=None)
    fs.pipe_file(lock, b"")  # a writer between create and write: fresh, not stale
    with pytest.raises(Conflict, match="registry lock .* is held"):
        reg.promote("acme", "tiny", v, base_dir=None)
    assert reg.active("acme", "tiny") is None


def test_settings_name_a_url_registry_and_cache_its_versions_in_the_data_folder(
        tmp_path: Path, tiny_base: Path, tiny_artifacts: dict[str, Path]) -> None:
    url = f"file://{tmp_path}/remote"
    settings = load_settings(None, {"data_dir": str(tmp_path / "data"), "registry_dir": url})
    assert settings.registry_root() == url
    reg = Registry.from_settings(settings)
    v = reg.create("acme", "tiny", kind="lora", files_from=tiny_artifacts["lora1"],
                   base_model="tiny", base_hash=base_fingerprint(tiny_base)).version
    reg.promote("acme", "tiny", v, base_dir=tiny_base)  # validated on the cached copy
    assert reg.path("acme", "tiny", v).is_relative_to(tmp_path / "data" / "registry-cache")
    assert (tmp_path / "remote" / "acme" / "tiny" / "active").read_text() == "v0001\n"


def test_an_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="registry_dir 'bogus://x'.*bogus"):
        Registry("bogus://x")
