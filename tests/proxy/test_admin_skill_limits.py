"""`/admin/skills` against oversized fields and exports that would write anywhere on the server."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import httpx


def _skills(molt_factory: Any, **skills: Any) -> Any:
    return molt_factory(skills={"enabled": True, "seed_dir": None, "poll_interval_s": 0.2, **skills})


def test_a_two_megabyte_description_is_refused_with_a_400(molt_factory: Any) -> None:
    m = _skills(molt_factory)
    with httpx.Client(base_url=m.url, timeout=60) as c:
        r = c.post("/admin/skills", json={"name": "huge", "description": "d" * 2_000_000, "body": "1. x"})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["code"] == "invalid_skill"
        assert "'description'" in err["message"] and "over the limit" in err["message"]
        text = "---\nname: huge\ndescription: " + "d" * 2_000_000 + "\n---\n\n1. x\n"
        r = c.post("/admin/skills", json={"content": text})
        assert r.status_code == 400 and "'description' takes" in r.json()["error"]["message"]
        r = c.post("/admin/skills", json={"name": "wide", "description": "d", "body": "1. x",
                                          "tools": [f"t{i}" for i in range(100)]})
        assert r.status_code == 400 and "'tools' lists 100 items" in r.json()["error"]["message"]
        assert c.get("/admin/skills").json()["data"] == []


def test_export_returns_the_archive_or_writes_only_under_the_export_root(molt_factory: Any,
                                                                        tmp_path: Path) -> None:
    root = tmp_path / "exports"
    m = _skills(molt_factory, export_dir=str(root))
    with httpx.Client(base_url=m.url, timeout=60) as c:
        r = c.post("/admin/skills", json={"name": "bake-bread", "description": "Use when baking bread",
                                          "body": "1. Knead."})
        assert r.status_code == 201, r.text
        # no path: the archive comes back in the response
        r = c.post("/admin/skills/export")
        assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
            assert tar.getnames() == ["bake-bread/SKILL.md"]
            member = tar.extractfile("bake-bread/SKILL.md")
            assert member is not None and b"1. Knead." in member.read()
        # a path under the root is written there
        r = c.post("/admin/skills/export", json={"path": "weekly"})
        assert r.status_code == 200, r.text
        assert r.json()["written"] == [str((root / "weekly" / "bake-bread" / "SKILL.md").resolve())]
        assert (root / "weekly" / "bake-bread" / "SKILL.md").read_text().endswith("1. Knead.\n")
        # anything that leads out of it is refused
        (root / "link").symlink_to(tmp_path, target_is_directory=True)
        for path in (str(tmp_path / "elsewhere"), "../elsewhere", "/etc/molt", "link/x"):
            r = c.post("/admin/skills/export", json={"path": path})
            assert r.status_code == 403, (path, r.text)
            err = r.json()["error"]
            assert err["code"] == "export_path_forbidden" and err["param"] == "path"
            assert "outside the export folder" in err["message"]
        assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "x").exists()


def test_without_an_export_root_no_path_is_written(molt_factory: Any, tmp_path: Path) -> None:
    m = _skills(molt_factory)
    with httpx.Client(base_url=m.url, timeout=60) as c:
        r = c.post("/admin/skills/export", json={"path": str(tmp_path / "out")})
        assert r.status_code == 403
        assert "skills.export_dir" in r.json()["error"]["message"]
        assert not (tmp_path / "out").exists()
        r = c.post("/admin/skills/export", json={})
        assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
