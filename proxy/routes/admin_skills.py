"""`/admin/skills`: the skill library over REST (admin key).

Every route takes `?tenant=` (default: the caller's tenant); a tenant admin
may name only its own tenant, a global admin any. Errors come
back in the OpenAI envelope; the store's errors are translated here, once.

GET    /admin/skills                          list (status filter)
POST   /admin/skills                          add (JSON fields, or `content`: SKILL.md text)
GET    /admin/skills/generation               the tenant's generation
GET    /admin/skills/settings                 per-tenant settings; PUT to change them
POST   /admin/skills/import                   import a folder or file on the server's disk
POST   /admin/skills/export                   the library as a .tar.gz archive, or (`path`)
                                              written under `skills.export_dir` on the server
GET    /admin/skills/{name}                   show (content, revision, hash)
PUT    /admin/skills/{name}                   update (fields merged, or `content`)
DELETE /admin/skills/{name}                   retire (`?purge=true` removes the folder)
GET    /admin/skills/{name}/history           revisions, oldest first
GET    /admin/skills/{name}/diff?rev=ID       one revision's diff (default: the newest)
POST   /admin/skills/{name}/revert            {"revision": ID}
POST   /admin/skills/{name}/approve           quarantined -> active
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from proxy.auth import Principal
from proxy.deps import Admin
from proxy.errors import InvalidRequest, NotFoundError, PermissionDenied, ProxyError
from store.errors import Conflict, InvalidInput, NotFound, StoreError
from store.skills.library import LibrarySkill, SkillLibrary
from store.skills.revisions import Revision
from store.skills.skillfile import Skill, parse_skill, render_skill_file
from store.skills.tenant_settings import write_tenant_settings


class SkillFields(BaseModel):
    name: str | None = None
    description: str | None = None
    body: str | None = None
    category: str | None = None
    tools: list[str] | None = None
    status: str | None = None
    origin: str | None = None
    provenance: list[str] | None = None
    content: str | None = Field(default=None, description="a whole SKILL.md instead of fields")
    author: str | None = None
    reason: str | None = None


class RevertBody(BaseModel):
    revision: str
    reason: str | None = None


class PathBody(BaseModel):
    path: str
    replace: bool = False
    include_retired: bool = False
    reason: str | None = None


class ExportBody(BaseModel):
    # None: the archive comes back in the response; else a folder under `skills.export_dir`
    path: str | None = None
    include_retired: bool = False


def export_dest(root: Path | None, path: str) -> Path:
    """The folder an export may write: `path` under the configured export root, else 403.

    A relative path is taken from the root; `..` and links that lead out of it are refused.
    """
    if root is None:
        raise PermissionDenied("exporting to the server's disk is off: set skills.export_dir, or "
                               "leave out 'path' to get the archive in the response",
                               param="path", code="export_path_forbidden")
    base = root.resolve()
    dest = (base / path).resolve()
    if not dest.is_relative_to(base):
        raise PermissionDenied(f"export path {path!r} is outside the export folder {root}",
                               param="path", code="export_path_forbidden")
    return dest


def export_archive(texts: dict[str, str]) -> bytes:
    """A .tar.gz of `<name>/SKILL.md` files (the layout `import` reads)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in texts.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{name}/SKILL.md")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Provider(Protocol):
    """What the routes need from the running skills service (`SkillsService`)."""

    @property
    def library(self) -> SkillLibrary: ...

    async def changed(self, tenant: str) -> None: ...


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    except NotFound as exc:
        raise NotFoundError(str(exc)) from exc
    except Conflict as exc:
        raise InvalidRequest(str(exc), code="skill_exists", status=409) from exc
    except InvalidInput as exc:
        raise InvalidRequest(str(exc), code="invalid_skill") from exc
    except StoreError as exc:
        raise ProxyError(str(exc), code="skill_store_error") from exc


def skill_json(s: LibrarySkill, *, full: bool = False) -> dict[str, Any]:
    k = s.skill
    out: dict[str, Any] = {
        "name": k.name, "description": k.description, "category": k.category,
        "tools": list(k.tools), "status": k.status, "origin": k.origin,
        "provenance": list(k.provenance), "revision": s.revision,
        "content_hash": s.content_hash,
    }
    if full:
        out["body"] = k.body
    return out


def _from_fields(f: SkillFields, base: Skill | None, max_body: int) -> tuple[Skill, str | None]:
    if f.content is not None:
        return parse_skill(f.content, f.name or "request body", max_body_bytes=max_body), f.content
    values: dict[str, Any] = {}
    for key in ("name", "description", "body", "category", "status", "origin"):
        v = getattr(f, key)
        if v is not None:
            values[key] = v
    for key in ("tools", "provenance"):
        v = getattr(f, key)
        if v is not None:
            values[key] = tuple(v)
    merged = base.with_(**values) if base is not None else None
    if merged is None:
        missing = [k for k in ("name", "description") if k not in values]
        if missing:
            raise InvalidInput(f"missing {', '.join(missing)}")
        values.setdefault("body", "")
        merged = Skill(**values)
    # Validate exactly as a file would be validated.
    text = render_skill_file(merged)
    return parse_skill(text, merged.name, max_body_bytes=max_body), None


def _rev(rev: Revision | None) -> dict[str, Any] | None:
    return rev.as_dict() if rev is not None else None


def build_router(get: Callable[[], Provider]) -> APIRouter:
    router = APIRouter(prefix="/admin/skills", tags=["skills"])

    def tenant_of(admin: Principal, tenant: str | None) -> str:
        return admin.scope(tenant)  # a tenant admin acts on its own tenant only (403)

    @router.get("")
    async def list_skills(admin: Admin, tenant: str | None = None, status: str | None = None) -> dict[str, Any]:
        t = tenant_of(admin, tenant)
        async with _translated():
            await get().library.ensure_seeded(t)
            skills = await get().library.current(t)
            gen = await get().library.generation(t)
        data = [skill_json(s) for s in skills.values() if status is None or s.skill.status == status]
        return {"object": "list", "tenant": t, "generation": gen, "data": data}

    @router.post("", status_code=201)
    async def add_skill(admin: Admin, fields: SkillFields, tenant: str | None = None) -> dict[str, Any]:
        t = tenant_of(admin, tenant)
        lib = get().library
        async with _translated():
            skill, _text = _from_fields(fields, None, lib.settings.max_body_bytes)
            rev = await lib.add(t, skill, author=fields.author or "admin-api", reason=fields.reason)
            await get().changed(t)
        return {"revision": _rev(rev)}

    @router.get("/generation")
    async def generation(admin: Admin, tenant: str | None = None) -> dict[str, Any]:
        t = tenant_of(admin, tenant)
        async with _translated():
            return {"tenant": t, "generation": await get().library.generation(t)}

    @router.get("/settings")
    async def get_settings(admin: Admin, tenant: str | None = None) -> dict[str, Any]:
        t = tenant_of(admin, tenant)
        async with _translated():
            return (await get().library.tenant_settings(t)).as_dict()

    @router.put("/settings")
    async def put_settings(admin: Admin, values: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        t = tenant_of(admin, tenant)
        lib = get().library
        async with _translated():
            ten = await lib.tenant(t)
            out = await write_tenant_settings(lib.db, ten.id, values, lib.settings)
            await get().changed(t)
        return out.as_dict()

    @router.post("/import")
    async def import_skills(admin: Admin, body: PathBody, tenant: str | None = None) -> dict[str, Any]:
        t = tenant_of(admin, tenant)
        async with _translated():
            revs = await get().library.import_path(
                t, Path(body.path), author="admin-api", reason=body.reason, replace=body.replace
            )
            await get().changed(t)
        return {"imported": [r.as_dict() for r in revs]}

    @router.post("/export", response_model=None)
    async def export_skills(admin: Admin, body: ExportBody | None = None,
                            tenant: str | None = None) -> dict[str, Any] | Response:
        t = tenant_of(admin, tenant)
        body = body or ExportBody()
        lib = get().library
        async with _translated():
            if body.path is None:
                texts = await lib.export_texts(t, include_retired=body.include_retired)
                return Response(export_archive(texts), media_type="application/gzip",
                                headers={"Content-Disposition": 'attachment; filename="skills.tar.gz"'})
            dest = export_dest(lib.settings.export_dir, body.path)
            paths = await lib.export(t, dest, include_retired=body.include_retired)
        return {"written": [str(p) for p in paths]}

    @router.get("/{name}")
    async def show(admin: Admin, name: str, tenant: str | None = None) -> dict[str, Any]:
        t = tenant_of(admin, tenant)
        async with _translated():
            s = await get().library.get(t, name)
            rev = await get().library.revision(t, s.revision)
        out = skill_json(s, full=True)
        out["content"] = rev.content
        return out

    @router.put("/{name}")
    async def update(admin: Admin, name: str, fields: SkillFields, tenant: str | None = None) -> dict[str, Any]:
        t = tenant_of(admin, tenant)
        lib = get().library
        async with _translated():
            if fields.name is not None and fields.name != name:
                raise InvalidInput(f"name {fields.name!r} differs from {name!r}; renaming is add + retire")
            author = fields.author or "admin-api"
            if fields.content is not None:
                rev = await lib.update_text(t, name, fields.content, author=author, reason=fields.reason)
            else:
                cur = await lib.get(t, name)
                skill, _ = _from_fields(fields, cur.skill, lib.settings.max_body_bytes)
                rev = await lib.update(t, skill, author=author, reason=fields.reason)
            await get().changed(t)
        return {"revision": _rev(rev)}

    @router.delete("/{name}")
    async def remove(admin: Admin, name: str, tenant: str | None = None, purge: bool = False,
                     reason: str | None = None) -> dict[str, Any]:
        t = tenant_of(admin, tenant)
        lib = get().library
        async with _translated():
            if purge:
                rev = await lib.delete(t, name, author="admin-api", reason=reason)
            else:
                rev = await lib.retire(t, name, author="admin-api", reason=reason)
            await get().changed(t)
        return {"revision": _rev(rev)}

    @router.get("/{name}/history")
    async def history(admin: Admin, name: str, tenant: str | None = None) -> dict[str, Any]:
        t = tenant_of(admin, tenant)
        async with _translated():
            revs = await get().library.history(t, name)
        return {"object": "list", "data": [r.as_dict() for r in revs]}

    @router.get("/{name}/diff")
    async def diff(admin: Admin, name: str, tenant: str | None = None, rev: str | None = None) -> dict[str, Any]:
        t = tenant_of(admin, tenant)
        async with _translated():
            if rev is None:
                revs = await get().library.history(t, name)
                target = revs[-1]
            else:
                target = await get().library.revision(t, rev)
                if target.name != name:
                    raise NotFound(f"revision {rev} is not a revision of {name!r}")
        return {"revision": target.id, "diff": target.diff}

    @router.post("/{name}/revert")
    async def revert(admin: Admin, name: str, body: RevertBody, tenant: str | None = None) -> dict[str, Any]:
        t = tenant_of(admin, tenant)
        async with _translated():
            rev = await get().library.revert(t, name, body.revision, author="admin-api",
                                             reason=body.reason)
            await get().changed(t)
        return {"revision": _rev(rev)}

    @router.post("/{name}/approve")
    async def approve(admin: Admin, name: str, tenant: str | None = None) -> dict[str, Any]:
        t = tenant_of(admin, tenant)
        async with _translated():
            rev = await get().library.approve(t, name, author="admin-api")
            await get().changed(t)
        return {"revision": _rev(rev)}

    return router
