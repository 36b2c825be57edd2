"""The skill library: the API every writer uses (CLI, REST, the evolver, the disk watcher).

Files on disk are what a person reads and edits; the database holds every
revision and is what serving reads (the newest revision of each skill), so a
broken edit on disk never takes a skill away: the last good revision keeps
being served and the error names the file and the problem.

A change is: validate, write the revision (and bump the generation when the
change reaches serving), then write the file, all under the tenant's
library lock (`flock` on `<library>/.lock`), which the disk scan also takes:
a scan never mistakes a writer's half-done change for an edit on disk, in
this process or another one (the CLI beside a running proxy).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from store.database import Database
from store.errors import InvalidInput
from store.keys import KeyStore
from store.settings import SkillsSettings
from store.skills.errors import SkillExists, SkillFileError, SkillNotFound
from store.skills.files import LibraryFiles, tenant_dirname
from store.skills.lock import LibraryLock
from store.skills.revisions import Revision, RevisionStore
from store.skills.skillfile import (
    Skill,
    check_limits,
    check_name,
    content_hash,
    parse_skill,
    render_skill_file,
)
from store.skills.tenant_settings import TenantSkillSettings, read_tenant_settings
from store.skills.transfer import SkillSource, read_sources

log = logging.getLogger("molt.skills")


@dataclass(frozen=True, slots=True)
class LibrarySkill:
    """A skill as the library holds it now: parsed, with the revision it comes from."""

    skill: Skill
    revision: str
    content_hash: str
    generation: int

    @property
    def name(self) -> str:
        return self.skill.name


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did with one skill: imported, replaced or skipped (with why)."""

    name: str
    action: str
    revision: Revision | None
    reason: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "action": self.action,
                "revision": self.revision.id if self.revision else None, "reason": self.reason}


@dataclass(slots=True)
class SyncReport:
    revisions: list[Revision] = field(default_factory=list)
    errors: list[SkillFileError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TenantRef:
    id: str
    name: str
    dirname: str


class SkillLibrary:
    def __init__(self, db: Database, settings: SkillsSettings, data_dir: Path) -> None:
        self.db = db
        self.settings = settings
        self.root = settings.library_dir(data_dir)
        self.revisions = RevisionStore(db)
        self._keys = KeyStore(db)
        self._tenants: dict[str, TenantRef] = {}
        self._seen: dict[str, dict[str, int]] = {}  # tenant id -> folder -> mtime_ns handled

    # -- tenants -----------------------------------------------------------------
    async def tenant(self, name: str) -> TenantRef:
        ref = self._tenants.get(name)
        if ref is None:
            ten = await self._keys.ensure_tenant(name)
            ref = TenantRef(ten.id, ten.name, tenant_dirname(ten.name, ten.id))
            self._tenants[name] = ref
        return ref

    def files(self, ten: TenantRef) -> LibraryFiles:
        return LibraryFiles(self.root / ten.dirname)

    @asynccontextmanager
    async def _locked(self, ten: TenantRef) -> AsyncIterator[None]:
        lock = LibraryLock(self.root / ten.dirname / ".lock")
        await asyncio.to_thread(lock.acquire)
        try:
            yield
        finally:
            lock.release()

    async def tenant_settings(self, tenant: str) -> TenantSkillSettings:
        ten = await self.tenant(tenant)
        return await read_tenant_settings(self.db, ten.id, self.settings)

    # -- reading -----------------------------------------------------------------
    async def generation(self, tenant: str) -> int:
        return await self.revisions.generation((await self.tenant(tenant)).id)

    async def current(self, tenant: str, *, include_deleted: bool = False) -> dict[str, LibrarySkill]:
        """Every skill of the tenant, newest revision, by name (all statuses)."""
        ten = await self.tenant(tenant)
        out: dict[str, LibrarySkill] = {}
        for name, rev in sorted((await self.revisions.latest(ten.id)).items()):
            if rev.content is None:
                continue
            try:
                skill = parse_skill(rev.content, f"{name} @ {rev.id}", max_body_bytes=1 << 24,
                                    limits=False)
            except SkillFileError as exc:
                log.error("skill revision unreadable: %s", exc)
                continue
            out[name] = LibrarySkill(skill, rev.id, rev.content_hash or "", rev.generation)
        return out

    async def get(self, tenant: str, name: str) -> LibrarySkill:
        check_name(name)
        ten = await self.tenant(tenant)
        rev = await self.revisions.latest_of(ten.id, name)
        if rev is None or rev.content is None:
            raise SkillNotFound(f"no skill {name!r} in tenant {tenant!r}")
        skill = parse_skill(rev.content, f"{name} @ {rev.id}", max_body_bytes=1 << 24, limits=False)
        return LibrarySkill(skill, rev.id, rev.content_hash or "", rev.generation)

    async def history(self, tenant: str, name: str | None = None) -> list[Revision]:
        ten = await self.tenant(tenant)
        if name is not None:
            check_name(name)
        revs = await self.revisions.history(ten.id, name)
        if name is not None and not revs:
            raise SkillNotFound(f"no skill {name!r} in tenant {tenant!r}")
        return revs

    async def revision(self, tenant: str, rev: str) -> Revision:
        return await self.revisions.get((await self.tenant(tenant)).id, rev)

    # -- the one write path ---------------------------------------------------------
    async def _commit(
        self, ten: TenantRef, name: str, text: str | None, *, action: str, author: str,
        reason: str | None, status: str | None, provenance: Sequence[str] = (),
        write_file: bool = True,
    ) -> Revision | None:
        prev = await self.revisions.latest_of(ten.id, name)
        if prev is not None and prev.content == text:
            return None
        was_serving = prev is not None and prev.content is not None and prev.status == "active"
        rev = await self.revisions.record(
            ten.id, name, action=action, status=status, content=text, author=author,
            reason=reason, provenance=list(provenance) or None,
            serving_change=was_serving or status == "active",
        )
        if write_file:
            files = self.files(ten)
            if text is None:
                files.remove(name)
            else:
                files.write(name, text)
        self._seen.get(ten.id, {}).pop(name, None)
        return rev

    def _quarantine(self, settings: TenantSkillSettings, skill: Skill, author: str) -> Skill:
        if author == "evolver" and settings.quarantine_evolver_edits and skill.status == "active":
            return skill.with_(status="quarantined", origin="evolver")
        return skill

    async def _write(
        self, tenant: str, skill: Skill, *, action: str, author: str, reason: str | None,
        must_exist: bool | None, text: str | None = None,
    ) -> Revision | None:
        check_limits(skill, skill.name, max_body_bytes=self.settings.max_body_bytes)
        ten = await self.tenant(tenant)
        skill = self._quarantine(await self.tenant_settings(tenant), skill, author)
        body = text if text is not None and skill.status != "quarantined" else render_skill_file(skill)
        async with self._locked(ten):
            prev = await self.revisions.latest_of(ten.id, skill.name)
            exists = prev is not None and prev.content is not None
            if must_exist is False and exists:
                raise SkillExists(f"{skill.name}: a skill with this name already exists "
                                  f"in tenant {tenant!r}")
            if must_exist is True and not exists:
                raise SkillNotFound(f"no skill {skill.name!r} in tenant {tenant!r}")
            if action == "update" and not exists:
                action = "add"
            return await self._commit(
                ten, skill.name, body, action=action, author=author, reason=reason,
                status=skill.status, provenance=skill.provenance,
            )

    # -- changes -------------------------------------------------------------------
    async def add(self, tenant: str, skill: Skill, *, author: str, reason: str | None = None) -> Revision:
        rev = await self._write(tenant, skill, action="add", author=author, reason=reason,
                                must_exist=False)
        assert rev is not None
        return rev

    async def add_file(self, tenant: str, path: Path, *, author: str, reason: str | None = None) -> Revision:
        """Add the skill in one SKILL.md file, kept as it is written."""
        sources = read_sources(path, max_body_bytes=self.settings.max_body_bytes)
        if len(sources) != 1:
            raise InvalidInput(f"{path}: holds {len(sources)} skills; use import for a folder")
        src = sources[0]
        rev = await self._write(tenant, src.skill, action="add", author=author, reason=reason,
                                must_exist=False, text=src.text)
        assert rev is not None
        return rev

    async def update(self, tenant: str, skill: Skill, *, author: str, reason: str | None = None) -> Revision | None:
        """Replace an existing skill; None when nothing changed."""
        return await self._write(tenant, skill, action="update", author=author, reason=reason,
                                 must_exist=True)

    async def update_text(self, tenant: str, name: str, text: str, *, author: str,
                          reason: str | None = None, where: str | None = None) -> Revision | None:
        """Replace a skill with new SKILL.md text (an editor's result), validated first."""
        skill = parse_skill(text, where or name, max_body_bytes=self.settings.max_body_bytes)
        if skill.name != name:
            raise SkillFileError(where or name, f"name {skill.name!r} differs from {name!r}; "
                                 "renaming is add + retire")
        return await self._write(tenant, skill, action="update", author=author, reason=reason,
                                 must_exist=True, text=text)

    async def put(self, tenant: str, skill: Skill, *, author: str, reason: str | None = None) -> Revision | None:
        """Add or update (what the evolver calls)."""
        return await self._write(tenant, skill, action="update", author=author, reason=reason,
                                 must_exist=None)

    async def merge(self, tenant: str, merged: Skill, sources: Sequence[str], *, author: str,
                    reason: str | None = None) -> list[Revision]:
        """Write `merged` and retire every source skill folded into it."""
        for name in sources:
            await self.get(tenant, name)
        out: list[Revision] = []
        rev = await self._write(tenant, merged, action="merge", author=author, reason=reason,
                                must_exist=None)
        out.extend([rev] if rev else [])
        for name in sources:
            if name != merged.name:
                r = await self._set_status(tenant, name, "retired", action="retire", author=author,
                                           reason=f"merged into {merged.name}"
                                           + (f": {reason}" if reason else ""))
                out.extend([r] if r else [])
        return out

    async def _set_status(self, tenant: str, name: str, status: str, *, action: str, author: str,
                          reason: str | None) -> Revision | None:
        ten = await self.tenant(tenant)
        async with self._locked(ten):
            cur = await self.get(tenant, name)
            if action == "approve" and cur.skill.status != "quarantined":
                raise InvalidInput(f"skill {name!r} is {cur.skill.status}, not quarantined")
            skill = cur.skill.with_(status=status)
            return await self._commit(ten, name, render_skill_file(skill), action=action,
                                      author=author, reason=reason, status=status,
                                      provenance=skill.provenance)

    async def retire(self, tenant: str, name: str, *, author: str, reason: str | None = None) -> Revision | None:
        return await self._set_status(tenant, name, "retired", action="retire", author=author,
                                      reason=reason)

    async def approve(self, tenant: str, name: str, *, author: str, reason: str | None = None) -> Revision | None:
        return await self._set_status(tenant, name, "active", action="approve", author=author,
                                      reason=reason)

    async def delete(self, tenant: str, name: str, *, author: str, reason: str | None = None) -> Revision | None:
        """Remove the skill's folder; its history stays, and revert brings it back."""
        ten = await self.tenant(tenant)
        async with self._locked(ten):
            await self.get(tenant, name)
            return await self._commit(ten, name, None, action="delete", author=author,
                                      reason=reason, status=None)

    async def revert(self, tenant: str, name: str, rev_id: str, *, author: str,
                     reason: str | None = None) -> Revision | None:
        """Make the skill what it was at revision `rev_id` (any earlier revision)."""
        ten = await self.tenant(tenant)
        check_name(name)
        target = await self.revisions.get(ten.id, rev_id)
        if target.name != name:
            raise InvalidInput(f"revision {rev_id} belongs to {target.name!r}, not {name!r}")
        async with self._locked(ten):
            return await self._commit(
                ten, name, target.content, action="revert", author=author,
                reason=reason or f"revert to {target.id}", status=target.status,
                provenance=target.provenance or (),
            )

    # -- import, export, seeds ----------------------------------------------------------
    async def import_path(self, tenant: str, path: Path, *, author: str, reason: str | None = None,
                          replace: bool = False, origin: str | None = None) -> list[Revision]:
        """Import one SKILL.md, one skill folder, a MetaClaw tree of `<name>/SKILL.md`, or a JSON
        skill bank; the revisions written (see `import_report` for what happened to each skill)."""
        return [r.revision for r in await self.import_report(tenant, path, author=author, reason=reason,
                                                             replace=replace, origin=origin)
                if r.revision is not None]

    async def import_report(self, tenant: str, path: Path, *, author: str, reason: str | None = None,
                            replace: bool = False, origin: str | None = None) -> list[ImportResult]:
        """Import, reporting each skill as imported, replaced or skipped (a name already taken,
        without `replace`): a collision no longer aborts the rest."""
        sources = read_sources(path, max_body_bytes=self.settings.max_body_bytes)
        return await self._import(tenant, sources, author=author, reason=reason, replace=replace,
                                  origin=origin, action="import")

    async def _import(self, tenant: str, sources: Sequence[SkillSource], *, author: str,
                      reason: str | None, replace: bool, origin: str | None, action: str) -> list[ImportResult]:
        ten = await self.tenant(tenant)
        settings = await self.tenant_settings(tenant)
        out: list[ImportResult] = []
        async with self._locked(ten):
            latest = await self.revisions.latest(ten.id)
            for src in sources:
                skill = src.skill
                text = src.text
                taken = skill.name in latest and latest[skill.name].content is not None
                if taken and not replace:
                    out.append(ImportResult(skill.name, "skipped", None,
                                            f"already in tenant {tenant!r}; use replace to overwrite"))
                    continue
                if origin is not None and skill.origin != origin:
                    skill = skill.with_(origin=origin)
                    text = render_skill_file(skill)
                quarantined = self._quarantine(settings, skill, author)
                if quarantined is not skill:
                    skill, text = quarantined, render_skill_file(quarantined)
                rev = await self._commit(ten, skill.name, text, action=action, author=author,
                                         reason=reason, status=skill.status,
                                         provenance=skill.provenance)
                if src.folder is not None:
                    self.files(ten).copy_assets(skill.name, src.folder)
                out.append(ImportResult(skill.name, "replaced" if taken else "imported", rev,
                                        None if rev is not None else "unchanged"))
        return out

    async def ensure_seeded(self, tenant: str) -> list[Revision]:
        """Import the shipped seed skills into a tenant's library, once."""
        ten = await self.tenant(tenant)
        if await self.revisions.is_seeded(ten.id):
            return []
        out: list[Revision] = []
        seed = self.settings.seed_dir
        if seed is not None and seed.is_dir():
            sources = read_sources(seed, max_body_bytes=self.settings.max_body_bytes)
            present = await self.revisions.latest(ten.id)
            fresh = [s for s in sources if s.skill.name not in present]
            if fresh:
                done = await self._import(tenant, fresh, author="seed", reason="seed skills",
                                          replace=False, origin="seed", action="seed")
                out = [r.revision for r in done if r.revision is not None]
        await self.revisions.mark_seeded(ten.id)
        return out

    async def export_texts(self, tenant: str, *, include_retired: bool = False) -> dict[str, str]:
        """Each skill's SKILL.md text (newest revision), by name."""
        ten = await self.tenant(tenant)
        return {name: rev.content for name, rev in sorted((await self.revisions.latest(ten.id)).items())
                if rev.content is not None and (include_retired or rev.status != "retired")}

    async def export(self, tenant: str, dest: Path, *, include_retired: bool = False) -> list[Path]:
        """Write the library as `<dest>/<name>/SKILL.md` (a MetaClaw-layout tree), each with the files
        it ships beside its SKILL.md (scripts, references)."""
        ten = await self.tenant(tenant)
        out_files = LibraryFiles(dest)
        texts = await self.export_texts(tenant, include_retired=include_retired)
        written = []
        for name, text in texts.items():
            written.append(out_files.write(name, text))
            folder = self.files(ten).folder(name)
            if folder.is_dir():
                out_files.copy_assets(name, folder)
        return written

    # -- the disk watcher -------------------------------------------------------------------
    async def sync_disk(self, tenant: str, *, wait: bool = True) -> SyncReport:
        """Turn edits made directly on the files into revisions.

        A changed valid file becomes a revision by author `disk`; a broken one
        is reported (file and problem) and the last good revision keeps
        serving; a removed folder becomes a delete. Files whose mtime did not
        change since the last scan are not read again. With `wait=False` a
        scan that would wait for another writer's lock is skipped.
        """
        ten = await self.tenant(tenant)
        report = SyncReport()
        lock = LibraryLock(self.root / ten.dirname / ".lock")
        if wait:
            await asyncio.to_thread(lock.acquire)
        elif not lock.try_acquire():
            return report
        try:
            await self._sync_locked(ten, report)
        finally:
            lock.release()
        return report

    async def _sync_locked(self, ten: TenantRef, report: SyncReport) -> None:
        files = self.files(ten)
        now = files.scan()
        initial = ten.id not in self._seen
        seen = self._seen.setdefault(ten.id, {})
        changed = [f for f, st in now.items() if seen.get(f) != st.mtime_ns]
        gone = [f for f in seen if f not in now]
        if not initial and not changed and not gone:
            return
        latest = await self.revisions.latest(ten.id)
        if initial:
            live = {n: r for n, r in latest.items() if r.content is not None}
            if not now and live:
                # No library folder at all (a new machine, a fresh volume): materialize
                # it from the revisions instead of reading it as "everything deleted".
                for name, rev in live.items():
                    assert rev.content is not None
                    seen[name] = files.write(name, rev.content).stat().st_mtime_ns
                return
            gone = [n for n in live if n not in now]
        for folder in changed:
            st = now[folder]
            seen[folder] = st.mtime_ns
            if st.refused is not None:
                report.errors.append(SkillFileError(str(st.path), st.refused))
                log.warning("skill file refused, still serving the last good revision: %s: %s",
                            st.path, st.refused)
                continue
            try:
                text = st.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                report.errors.append(SkillFileError(str(st.path), f"cannot read: {exc}"))
                continue
            prev = latest.get(folder)
            if prev is not None and prev.content_hash == content_hash(text):
                continue
            try:
                skill = parse_skill(text, str(st.path), max_body_bytes=self.settings.max_body_bytes)
                if skill.name != folder:
                    raise SkillFileError(str(st.path), f"name {skill.name!r} does not match "
                                         f"its folder {folder!r}")
            except SkillFileError as exc:
                report.errors.append(exc)
                log.warning("skill file refused, still serving the last good revision: %s", exc)
                continue
            edit = await self._commit(ten, folder, text, action="disk", author="disk",
                                      reason="edited on disk", status=skill.status,
                                      provenance=skill.provenance, write_file=False)
            seen[folder] = st.mtime_ns
            report.revisions.extend([edit] if edit else [])
        for folder in gone:
            seen.pop(folder, None)
            prev = latest.get(folder)
            if prev is None or prev.content is None:
                continue
            try:
                check_name(folder)
            except SkillFileError:
                continue
            removal = await self._commit(ten, folder, None, action="delete", author="disk",
                                         reason="folder removed on disk", status=None,
                                         write_file=False)
            report.revisions.extend([removal] if removal else [])


def path_list(sources: Sequence[SkillSource], names: Sequence[str]) -> str:
    return ", ".join(str(s.path) for s in sources if s.skill.name in names)
