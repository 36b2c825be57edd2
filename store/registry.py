"""The weight-version registry: versioned adapters and deltas, on disk or an object store.

Layout, under the registry root (settings `registry_root()`: a path, or a URL
read through fsspec, `store.registry_files`)::

    <tenant>/<base>/
        active          the active version ("v0007\\n"), replaced atomically
        history.jsonl   one line per promotion or rollback
        v0007/          meta.json + the artifact files
                        lora:      adapter_config.json, adapter_model.safetensors
                        ttt_delta: delta.safetensors (added to the base weights)
                        full:      model.safetensors

A version's number is claimed under the lock, its files are copied in, and its
`meta.json` is written last: a version exists for readers once that file does,
so a reader never sees half a version. Promotion validates the artifact against
the base it will serve on, then flips `active` (written whole); serving
processes poll that file and hot-swap, so a trainer in another process, or on
another machine sharing the registry, promotes simply by calling `promote`. A
version that passed validation but that serving still cannot load is handed
back with `refuse`, which points `active` at the version it replaced (see
`proxy.upstream.versions`). Writers on one tenant+base are serialised with the
registry files' lock.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from store.errors import Conflict, InvalidInput, NotFound
from store.registry_check import ARTIFACT_FILES, KINDS, check_artifact
from store.registry_files import RegistryFiles, open_files
from store.settings import ModelRoute, MoltSettings

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


class Registry:
    def __init__(self, root: str | Path, *, keep_candidates: int = 10,
                 cache_dir: Path | None = None) -> None:
        self.files: RegistryFiles = open_files(root, cache_dir)
        self.root = self.files.location  # for messages
        self.keep_candidates = keep_candidates

    @classmethod
    def from_settings(cls, settings: MoltSettings) -> Registry:
        """The registry a process's settings name (a URL one caches versions in `data_dir`)."""
        return cls(settings.registry_root(), keep_candidates=settings.registry_keep_candidates,
                   cache_dir=settings.data_dir / "registry-cache")

    # -- paths -------------------------------------------------------------
    def _rel(self, tenant: str, base: str, *parts: str) -> str:
        return "/".join((_check_name(tenant, "tenant"), _check_name(base, "base"), *parts))

    def path(self, tenant: str, base: str, version: str) -> Path:
        """A local folder with the version's files (a URL registry's cached copy)."""
        meta = self.get(tenant, base, version)
        try:
            return self.files.local_dir(self._rel(tenant, base, meta.version), repr(meta.created))
        except FileNotFoundError as exc:
            raise NotFound(f"the files of {meta.version} of {tenant}/{base} are missing") from exc

    def pointer_signature(self, tenant: str, base: str) -> object:
        """Changes whenever the `active` pointer does (what serving polls)."""
        return self.files.signature(self._rel(tenant, base, "active"))

    def _locked(self, tenant: str, base: str) -> contextlib.AbstractContextManager[None]:
        return self.files.lock(self._rel(tenant, base))

    # -- reading -----------------------------------------------------------
    def tenants(self) -> list[str]:
        return [n for n in self.files.dirs("") if _NAME.match(n)]

    def bases(self, tenant: str) -> list[str]:
        return [n for n in self.files.dirs(_check_name(tenant, "tenant")) if _NAME.match(n)]

    def get(self, tenant: str, base: str, version: str) -> VersionMeta:
        rel = self._rel(tenant, base, version_name(version), "meta.json")
        try:
            return VersionMeta.from_dict(json.loads(self.files.read_text(rel)))
        except FileNotFoundError as exc:
            raise NotFound(f"no version {version_name(version)} of {tenant}/{base}") from exc
        except (json.JSONDecodeError, TypeError) as exc:
            raise InvalidInput(f"{self.root}/{rel} is not a valid meta.json") from exc

    def versions(self, tenant: str, base: str) -> list[VersionMeta]:
        out = []
        for name in self.files.dirs(self._rel(tenant, base)):
            if _VERSION.match(name) and self.files.is_file(self._rel(tenant, base, name, "meta.json")):
                out.append(self.get(tenant, base, name))
        return out

    def active(self, tenant: str, base: str) -> str | None:
        try:
            text = self.files.read_text(self._rel(tenant, base, "active")).strip()
        except FileNotFoundError:
            return None
        return version_name(text) if text else None

    def history(self, tenant: str, base: str) -> list[dict[str, Any]]:
        try:
            text = self.files.read_text(self._rel(tenant, base, "history.jsonl"))
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

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
        with self._locked(tenant, base):
            numbers = [int(n[1:]) for n in self.files.dirs(self._rel(tenant, base))
                       if _VERSION.match(n)]
            version = version_name((max(numbers) if numbers else 0) + 1)
            self.files.reserve(self._rel(tenant, base, version))
        # the copy runs outside the lock (an artifact can be large); meta.json comes last
        self.files.put_tree(src, self._rel(tenant, base, version))
        meta = VersionMeta(
            tenant=tenant, base=base, version=version, kind=kind, base_model=base_model,
            base_hash=base_hash, created=time.time(),
            parent=version_name(parent) if parent else None, data_window=data_window,
            skill_generation=skill_generation, config=config or {}, metrics=metrics or {},
            eval_gate=eval_gate,
        )
        self._save(meta)
        with self._locked(tenant, base):
            self._prune(tenant, base)
        return meta

    def _save(self, meta: VersionMeta) -> None:
        rel = self._rel(meta.tenant, meta.base, meta.version, "meta.json")
        self.files.write_text(rel, json.dumps(meta.to_dict(), indent=2))

    def _log(self, tenant: str, base: str, entry: dict[str, Any]) -> None:
        self.files.append_text(self._rel(tenant, base, "history.jsonl"), json.dumps(entry) + "\n")

    def _point(self, tenant: str, base: str, version: str | None) -> None:
        rel = self._rel(tenant, base, "active")
        if version is None:
            self.files.remove(rel)
        else:
            self.files.write_text(rel, version + "\n")

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
        self.path(tenant, base, target)  # a URL registry's copy is fetched outside the lock
        with self._locked(tenant, base):
            meta = self.validate(tenant, base, target, Path(base_dir) if base_dir else None)
            previous = self.active(tenant, base)
            if previous and previous != target:
                old = self.get(tenant, base, previous)
                old.status = "rolled_back" if action == "rollback" else "retired"
                self._save(old)
            meta.status = "active"
            self._save(meta)
            self._point(tenant, base, target)
            self._log(tenant, base, {"at": time.time(), "action": action, "from": previous,
                                     "to": target, "reason": reason})
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
        with self._locked(tenant, base):
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
            if restore == "base":
                restore = None
            self._point(tenant, base, restore)
            self._log(tenant, base, {"at": time.time(), "action": "refused", "from": target,
                                     "to": restore, "reason": reason})
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
        with self._locked(tenant, base):
            previous = self.active(tenant, base)
            if previous is None:
                raise Conflict(f"{tenant}/{base} already serves the base weights")
            old = self.get(tenant, base, previous)
            old.status = "rolled_back"
            self._save(old)
            self._point(tenant, base, None)
            self._log(tenant, base, {"at": time.time(), "action": "rollback", "from": previous,
                                     "to": None, "reason": reason})
        return Promotion(tenant, base, previous, "base", "rollback")

    def remove(self, tenant: str, base: str, version: str) -> None:
        target = version_name(version)
        with self._locked(tenant, base):
            meta = self.get(tenant, base, target)  # NotFound when there is no such version
            if self.active(tenant, base) == target or meta.status == "active":
                raise Conflict(f"{target} is the active version of {tenant}/{base}; promote another first")
            self.files.remove_tree(self._rel(tenant, base, target))

    def _prune(self, tenant: str, base: str) -> list[str]:
        """Retention: keep the newest `keep_candidates` candidates (caller holds the lock)."""
        candidates = [m for m in self.versions(tenant, base) if m.status == "candidate"]
        doomed = candidates[: max(0, len(candidates) - self.keep_candidates)]
        for m in doomed:
            self.files.remove_tree(self._rel(tenant, base, m.version))
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
