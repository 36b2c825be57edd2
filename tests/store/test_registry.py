"""The weight-version registry: layout, promotion, rollback, retention, validation.

Every test runs on the three ways a registry is reached: a local folder, a `file://`
URL and fsspec's in-memory filesystem (`memory://`, an object store's stand-in):
the last two go through fsspec (store/registry_files.py).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import fsspec
import pytest

from store.errors import Conflict, InvalidInput, NotFound
from store.registry import Registry, base_id, version_name
from store.registry_check import base_fingerprint

ROOTS = ("local", "file", "memory")


def _root(kind: str, tmp_path: Path) -> str | Path:
    if kind == "local":
        return tmp_path / "registry"
    if kind == "file":
        return f"file://{tmp_path}/registry"
    return f"memory://registry-{uuid.uuid4().hex}"  # one process-wide store: a fresh prefix


@pytest.fixture(params=ROOTS)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    return Registry(_root(request.param, tmp_path), keep_candidates=3, cache_dir=tmp_path / "cache")


def _stored(reg: Registry, *parts: str) -> str:
    """A file of the registry as fsspec names it (a plain folder works as well)."""
    return "/".join((str(reg.root), *parts))


def _add(reg: Registry, base_dir: Path, art: Path, kind: str = "lora", **kw: object) -> str:
    meta = reg.create("acme", "tiny", kind=kind, files_from=art, base_model="tiny",
                      base_hash=kw.pop("base_hash", base_fingerprint(base_dir)), **kw)  # type: ignore[arg-type]
    return meta.version


def test_names() -> None:
    assert version_name(7) == version_name("v7") == version_name("v0007") == "v0007"
    assert base_id("Qwen/Qwen3-0.6B") == "Qwen--Qwen3-0.6B"
    with pytest.raises(InvalidInput):
        version_name("latest")


def test_layout_meta_and_pointer(reg: Registry, tiny_base: Path, tiny_artifacts: dict[str, Path]) -> None:
    v1 = _add(reg, tiny_base, tiny_artifacts["lora1"], metrics={"reward": 0.4},
              data_window={"from": 1.0, "to": 2.0}, skill_generation=3,
              eval_gate={"passed": True, "delta": 0.05})
    v2 = _add(reg, tiny_base, tiny_artifacts["delta"], kind="ttt_delta", parent=v1)
    assert (v1, v2) == ("v0001", "v0002")
    d = reg.path("acme", "tiny", v1)
    assert (d / "adapter_model.safetensors").is_file()
    meta = json.loads((d / "meta.json").read_text())
    assert meta["kind"] == "lora" and meta["status"] == "candidate"
    assert meta["base_hash"] == base_fingerprint(tiny_base)
    assert meta["skill_generation"] == 3 and meta["eval_gate"]["passed"] is True
    assert reg.get("acme", "tiny", "2").parent == "v0001"
    assert reg.active("acme", "tiny") is None

    p = reg.promote("acme", "tiny", v1, base_dir=tiny_base)
    assert (p.previous, p.active) == (None, "v0001")
    with fsspec.open(_stored(reg, "acme", "tiny", "active"), "r") as f:
        assert f.read() == "v0001\n"
    reg.promote("acme", "tiny", v2, base_dir=tiny_base)
    assert reg.get("acme", "tiny", v1).status == "retired"
    assert reg.get("acme", "tiny", v2).status == "active"

    back = reg.rollback("acme", "tiny", base_dir=tiny_base)
    assert (back.previous, back.active) == ("v0002", "v0001")
    assert reg.get("acme", "tiny", v2).status == "rolled_back"
    # the rolled-back version is never a rollback target
    with pytest.raises(Conflict, match="no earlier version"):
        reg.rollback("acme", "tiny", base_dir=tiny_base)
    assert [h["action"] for h in reg.history("acme", "tiny")] == ["promote", "promote", "rollback"]
    # back to the base weights: no pointer at all
    assert reg.rollback("acme", "tiny", "base", base_dir=tiny_base).active == "base"
    assert reg.active("acme", "tiny") is None
    assert reg.get("acme", "tiny", v1).status == "rolled_back"
    with pytest.raises(Conflict, match="already serves the base"):
        reg.rollback("acme", "tiny", "base", base_dir=tiny_base)
    assert reg.tenants() == ["acme"] and reg.bases("acme") == ["tiny"]


def test_rm_and_retention(reg: Registry, tiny_base: Path, tiny_artifacts: dict[str, Path]) -> None:
    first = _add(reg, tiny_base, tiny_artifacts["lora1"])
    reg.promote("acme", "tiny", first, base_dir=tiny_base)
    with pytest.raises(Conflict, match="active"):
        reg.remove("acme", "tiny", first)
    made = [_add(reg, tiny_base, tiny_artifacts["lora2"]) for _ in range(5)]
    left = [m.version for m in reg.versions("acme", "tiny")]
    # the active version stays; only the newest 3 candidates are kept
    assert left == [first, *made[-3:]]
    reg.remove("acme", "tiny", made[-1])
    with pytest.raises(NotFound):
        reg.get("acme", "tiny", made[-1])


def _refused(reg: Registry, version: str, base_dir: Path, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        reg.promote("acme", "tiny", version, base_dir=base_dir)


def test_incompatible_artifacts_are_refused(
    reg: Registry, tiny_base: Path, tiny_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    good = _add(reg, tiny_base, tiny_artifacts["lora1"])
    reg.promote("acme", "tiny", good, base_dir=tiny_base)

    wrong_base = _add(reg, tiny_base, tiny_artifacts["lora2"], base_hash="fp-000000000000000000000000")
    _refused(reg, wrong_base, tiny_base, "wrong base model")

    other = tiny_artifacts["other_base"]
    shapes = _add(reg, tiny_base, tiny_artifacts["other_lora"], base_hash=None)
    _refused(reg, shapes, tiny_base, "does not fit base weight")

    missing = _add(reg, tiny_base, tiny_artifacts["lora2"])
    fs, path = fsspec.core.url_to_fs(_stored(reg, "acme", "tiny", missing, "adapter_model.safetensors"))
    fs.rm_file(path)
    _refused(reg, missing, tiny_base, "missing adapter_model.safetensors")

    truncated = _add(reg, tiny_base, tiny_artifacts["lora3"])
    fs, path = fsspec.core.url_to_fs(_stored(reg, "acme", "tiny", truncated, "adapter_model.safetensors"))
    fs.pipe_file(path, fs.cat_file(path)[:200])
    _refused(reg, truncated, tiny_base, "corrupt|truncated")

    delta = tmp_path / "bad-delta"
    shutil.copytree(tiny_artifacts["delta"], delta)
    bad_delta = _add(reg, other, delta, kind="ttt_delta")
    _refused(reg, bad_delta, tiny_base, "wrong base model")

    # nothing of that moved the pointer or the statuses
    assert reg.active("acme", "tiny") == good
    assert [m.status for m in reg.versions("acme", "tiny")].count("active") == 1


def test_creating_refuses_an_incomplete_folder(reg: Registry, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="missing adapter_config.json"):
        reg.create("acme", "tiny", kind="lora", files_from=tmp_path / "empty", base_model="t",
                   base_hash=None)
    with pytest.raises(InvalidInput, match="kind"):
        reg.create("acme", "tiny", kind="bogus", files_from=tmp_path, base_model="t", base_hash=None)
    with pytest.raises(InvalidInput, match="tenant"):
        reg.versions("../etc", "tiny")
