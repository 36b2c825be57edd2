"""The weight-version registry: versioned adapters and deltas on disk.

Layout, under the registry root (settings `registry_root()`)::

    <tenant>/<base>/
        active          the active version ("v0007\\n"), replaced atomically
        history.jsonl   one line per promotion or rollback
        v0007/          meta.json + the artifact files
                        lora:      adapter_config.json, adapter_model.safetensors
                        ttt_delta: delta.safetensors (added to the base weights)
                        full:      model.safetensors

Versions are written to a staging folder and renamed into place, so a reader
never sees half a version. Promotion validates the artifact against the base
it will serve on, then flips `active` (temp file + `os.replace`); serving
processes poll that file and hot-swap, so a trainer in another process
promotes simply by calling `promote`. A version that passed validation but
that serving still cannot load is handed back with `refuse`, which points
`active` at the version it replaced (see `proxy.upstream.versions`). Writers
on one tenant+base are serialised with a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from store.errors import Conflict, InvalidInput, NotFound
from store.registry_check import ARTIFACT_FILES, KINDS, check_artifact
from store.settings import ModelRoute

STATUSES = ("candidate", "active", "retired", "rolled_back")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSION = re.compile(r"^v?(\d{1,6})$")


def version_name(v: str | int) -> str:
    """`7`, `"7"`, `"v7"`, `"v0007"` -> `"v0007"`."""
    m = _VERSION.match(str(v).strip())
    if m is None:
        raise InvalidInput(f"{v!r} is not a version (expected v7 or v0007)")
    return f"v{int(m.group(1)):04d}"


def base_id(name: str) -> str:
    """A base model name as a registry folder name (`Qwen/Qwen3-0.6B` -> `Qwen--Qwen3-0.6B`)."""
    return name.strip().replace("/", "--")


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise InvalidInput(f"{what} {value!r} must be 1-128 letters, digits, '.', '_' or '-'")
    return value


@dataclass(slots=True)
class VersionMeta:
    tenant: str
    base: str
    version: str
    kind: str
    base_model: str
    base_hash: str | None
    created: float
    status: str = "candidate"
    parent: str | None = None
    data_window: dict[str, Any] | None = None
    skill_generation: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    eval_gate: dict[str, Any] | None = None
    # skills this version answers as well without (trainer/internalize.py): serving stops
    # injecting them into requests this version serves
    internalized_skills: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionMeta:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Promotion:
    tenant: str
    base: str
    previous: str | None
    active: str
    action: str


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Registry:
    def __init__(self, root: str | Path, *, keep_candidates: int = 10) -> None:
        self.root = Path(root)
        self.keep_candidates = keep_candidates

    # -- paths -------------------------------------------------------------
    def base_dir(self, tenant: str, base: str) -> Path:
        return self.root / _check_name(tenant, "tenant") / _check_name(base, "base")

    def path(self, tenant: str, base: str, version: str) -> Path:
        return self.base_dir(tenant, base) / version_name(version)

    def pointer_path(self, tenant: str, base: str) -> Path:
        return self.base_dir(tenant, base) / "active"

    @contextlib.contextmanager
    def _locked(self, tenant: str, base: str) -> Iterator[Path]:
        d = self.base_dir(tenant, base)
        d.mkdir(parents=True, exist_ok=True)
        with (d / ".lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield d
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- reading -----------------------------------------------------------
    def tenants(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def bases(self, tenant: str) -> list[str]:
        d = self.root / _check_name(tenant, "tenant")
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and _NAME.match(p.name))

    def get(self, tenant: str, base: str, version: str) -> VersionMeta:
        p = self.path(tenant, base, version) / "meta.json"
        try:
            return VersionMeta.from_dict(json.loads(p.read_text()))
        except FileNotFoundError as exc:
            raise NotFound(f"no version {version_name(version)} of {tenant}/{base}") from exc
        except (json.JSONDecodeError, TypeError) as exc:
            raise InvalidInput(f"{p} is not a valid meta.json") from exc

    def versions(self, tenant: str, base: str) -> list[VersionMeta]:
        d = self.base_dir(tenant, base)
        if not d.is_dir():
            return []
        out = []
        for p in sorted(d.iterdir()):
            if _VERSION.match(p.name) and (p / "meta.json").is_file():
                out.append(self.get(tenant, base, p.name))
        return out

    def active(self, tenant: str, base: str) -> str | None:
        try:
            text = self.pointer_path(tenant, base).read_text().strip()
        except FileNotFoundError:
            return None
        return version_name(text) if text else None

    def history(self, tenant: str, base: str) -> list[dict[str, Any]]:
        p = self.base_dir(tenant, base) / "history.jsonl"
        if not p.is_file():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    # -- writing -----------------------------------------------------------
    def create(
        self,
        tenant: str,
        base: str,
        *,
        kind: str,
        files_from: str | Path,
        base_model: str,
        base_hash: str | None,
        parent: str | None = None,
        data_window: dict[str, Any] | None = None,
        skill_generation: int | None = None,
        config: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        eval_gate: dict[str, Any] | None = None,
    ) -> VersionMeta:
        """Copy an artifact folder in as the next version (a candidate)."""
        if kind not in KINDS:
            raise InvalidInput(f"unknown artifact kind {kind!r}; expected one of {', '.join(KINDS)}")
        src = Path(files_from)
        missing = [n for n in ARTIFACT_FILES[kind] if not (src / n).is_file()]
        if missing:
            raise InvalidInput(f"{kind} artifact {src} is missing {', '.join(missing)}")
        with self._locked(tenant, base) as d:
            stage = d / f".staging-{uuid.uuid4().hex}"
            shutil.copytree(src, stage)
            numbers = [int(p.name[1:]) for p in d.iterdir() if _VERSION.match(p.name)]
            version = version_name((max(numbers) if numbers else 0) + 1)
            meta = VersionMeta(
                tenant=tenant, base=base, version=version, kind=kind, base_model=base_model,
                base_hash=base_hash, created=time.time(),
                parent=version_name(parent) if parent else None, data_window=data_window,
                skill_generation=skill_generation, config=config or {}, metrics=metrics or {},
                eval_gate=eval_gate,
            )
            _write_atomic(stage / "meta.json", json.dumps(meta.to_dict(), indent=2))
            os.rename(stage, d / version)
            self._prune(tenant, base)
        return meta

    def _save(self, meta: VersionMeta) -> None:
        p = self.path(meta.tenant, meta.base, meta.version) / "meta.json"
        _write_atomic(p, json.dumps(meta.to_dict(), indent=2))

    def update_eval_gate(
        self, tenant: str, base: str, version: str, fields: dict[str, Any]
    ) -> VersionMeta:
        """Merge `fields` into a version's `eval_gate` record (the gate's figures and decisions)."""
        with self._locked(tenant, base):
            meta = self.get(tenant, base, version)
            meta.eval_gate = {**(meta.eval_gate or {}), **fields}
            self._save(meta)
        return meta

    def update_internalized(
        self, tenant: str, base: str, version: str, skills: Sequence[str]
    ) -> VersionMeta:
        """Set the skills a version has internalized (sorted, unique); atomic like the gate's record."""
        with self._locked(tenant, base):
            meta = self.get(tenant, base, version)
            meta.internalized_skills = sorted(set(skills))
            self._save(meta)
        return meta

    def internalized_by_active(self, tenant: str) -> dict[str, list[str]]:
        """Skill name -> the active versions (`base@v0003`) that internalized it, for listings."""
        out: dict[str, list[str]] = {}
        for base in self.bases(tenant):
            active = self.active(tenant, base)
            if active is None:
                continue
            try:
                skills = self.get(tenant, base, active).internalized_skills
            except (NotFound, InvalidInput):
                continue
            for name in skills:
                out.setdefault(name, []).append(f"{base}@{active}")
        return out

    def validate(self, tenant: str, base: str, version: str, base_dir: Path | None) -> VersionMeta:
        """Check a version's artifact against the base it will serve on (raises InvalidInput)."""
        meta = self.get(tenant, base, version)
        check_artifact(self.path(tenant, base, version), meta.kind, base_dir, meta.base_hash)
        return meta

    def promote(
        self, tenant: str, base: str, version: str, *, base_dir: str | Path | None,
        action: str = "promote", reason: str | None = None,
    ) -> Promotion:
        """Validate `version` and make it the active one (atomic pointer flip)."""
        target = version_name(version)
        with self._locked(tenant, base) as d:
            meta = self.validate(tenant, base, target, Path(base_dir) if base_dir else None)
            previous = self.active(tenant, base)
            if previous and previous != target:
                old = self.get(tenant, base, previous)
                old.status = "rolled_back" if action == "rollback" else "retired"
                self._save(old)
            meta.status = "active"
            self._save(meta)
            _write_atomic(d / "active", target + "\n")
            entry = {"at": time.time(), "action": action, "from": previous, "to": target,
                     "reason": reason}
            with (d / "history.jsonl").open("a") as f:
                f.write(json.dumps(entry) + "\n")
        return Promotion(tenant, base, previous, target, action)

    def refuse(self, tenant: str, base: str, version: str, *, reason: str,
               fallback: str | None) -> Promotion | None:
        """Serving cannot load `version`: if `active` still names it, point it back.

        The pointer returns to the version the last promotion to `version` replaced
        (from history), else to `fallback` (what serving serves; None: the base
        weights). `version` is marked rolled_back and the history says why. Returns
        None when the pointer has moved on meanwhile (nothing is changed then).
        """
        target = version_name(version)
        with self._locked(tenant, base) as d:
            if self.active(tenant, base) != target:
                return None
            restore = fallback
            for entry in reversed(self.history(tenant, base)):
                if entry.get("to") == target and entry.get("action") != "refused":
                    restore = entry.get("from")
                    break
            if restore is not None and restore != "base":
                try:
                    old = self.get(tenant, base, restore)
                except NotFound:
                    restore = None
                else:
                    old.status = "active"
                    self._save(old)
            with contextlib.suppress(NotFound):
                meta = self.get(tenant, base, target)
                meta.status = "rolled_back"
                self._save(meta)
            if restore is None or restore == "base":
                restore = None
                os.remove(d / "active")
            else:
                _write_atomic(d / "active", restore + "\n")
            entry = {"at": time.time(), "action": "refused", "from": target, "to": restore,
                     "reason": reason}
            with (d / "history.jsonl").open("a") as f:
                f.write(json.dumps(entry) + "\n")
        return Promotion(tenant, base, target, restore or "base", "refused")

    def rollback_target(self, tenant: str, base: str) -> str:
        """The most recently superseded version that was not itself rolled back."""
        current = self.active(tenant, base)
        for entry in reversed(self.history(tenant, base)):
            cand = entry.get("from")
            if not cand or cand == current:
                continue
            try:
                if self.get(tenant, base, cand).status == "retired":
                    return str(cand)
            except NotFound:
                continue
        raise Conflict(f"{tenant}/{base}: no earlier version to roll back to "
                       "(roll back to the base weights with to='base')")

    def rollback(
        self, tenant: str, base: str, to: str | None = None, *, base_dir: str | Path | None,
        reason: str | None = None,
    ) -> Promotion:
        if to == "base":
            return self._clear(tenant, base, reason)
        target = version_name(to) if to else self.rollback_target(tenant, base)
        return self.promote(tenant, base, target, base_dir=base_dir, action="rollback", reason=reason)

    def _clear(self, tenant: str, base: str, reason: str | None) -> Promotion:
        """Serve the base weights again: the active version is rolled back, the pointer removed."""
        with self._locked(tenant, base) as d:
            previous = self.active(tenant, base)
            if previous is None:
                raise Conflict(f"{tenant}/{base} already serves the base weights")
            old = self.get(tenant, base, previous)
            old.status = "rolled_back"
            self._save(old)
            os.remove(d / "active")
            entry = {"at": time.time(), "action": "rollback", "from": previous, "to": None,
                     "reason": reason}
            with (d / "history.jsonl").open("a") as f:
                f.write(json.dumps(entry) + "\n")
        return Promotion(tenant, base, previous, "base", "rollback")

    def remove(self, tenant: str, base: str, version: str) -> None:
        target = version_name(version)
        with self._locked(tenant, base):
            p = self.path(tenant, base, target)
            if not p.is_dir():
                raise NotFound(f"no version {target} of {tenant}/{base}")
            if self.active(tenant, base) == target or self.get(tenant, base, target).status == "active":
                raise Conflict(f"{target} is the active version of {tenant}/{base}; promote another first")
            shutil.rmtree(p)

    def _prune(self, tenant: str, base: str) -> list[str]:
        """Retention: keep the newest `keep_candidates` candidates (caller holds the lock)."""
        candidates = [m for m in self.versions(tenant, base) if m.status == "candidate"]
        doomed = candidates[: max(0, len(candidates) - self.keep_candidates)]
        for m in doomed:
            shutil.rmtree(self.path(tenant, base, m.version))
        return [m.version for m in doomed]


def served_base_dirs(routes: Sequence[ModelRoute]) -> dict[str, Path | None]:
    """Registry base name -> the base weights a route serves it from (None: not local).

    Promotion validates an artifact against these weights; a base served only
    by a remote server (vLLM) is checked for completeness and readability.
    """
    out: dict[str, Path | None] = {}
    for r in routes:
        if r.kind == "litellm":
            continue
        name = base_id(r.upstream_model or r.alias)
        if r.local:
            out[name] = Path(r.local)
        elif r.vllm:
            out.setdefault(name, None)
    return out
