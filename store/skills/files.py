"""A tenant's library on disk: `<root>/<tenant>/<name>/SKILL.md`.

Paths are only ever built from validated slugs and checked to stay inside
the tenant's folder, so a name such as `../../etc` never reaches the disk.
Writes are atomic (a temporary file, then `os.replace`), so a reader (the
proxy's watcher, an editor) never sees half a file.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from store.skills.errors import SkillFileError
from store.skills.skillfile import FILE_NAME, check_name

_TENANT_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SKILL_FILE_NAMES = (FILE_NAME, "skill.md")


def tenant_dirname(tenant: str, tenant_id: str) -> str:
    """The tenant's folder name: its name when that is a safe file name, else its id."""
    return tenant if _TENANT_DIR.match(tenant) and ".." not in tenant else tenant_id


def skill_file_in(folder: Path) -> Path | None:
    for fname in SKILL_FILE_NAMES:
        candidate = folder / fname
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class FileStat:
    folder: str
    path: Path
    mtime_ns: int


class LibraryFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, name: str) -> Path:
        check_name(name)
        folder = self.root / name
        if folder.resolve().parent != self.root.resolve():
            raise SkillFileError(name, "path escapes the library folder")
        return folder

    def path(self, name: str) -> Path:
        return self.folder(name) / FILE_NAME

    def read(self, name: str) -> str | None:
        folder = self.folder(name)
        found = skill_file_in(folder)
        return found.read_text(encoding="utf-8") if found is not None else None

    def write(self, name: str, text: str) -> Path:
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / FILE_NAME
        fd, tmp = tempfile.mkstemp(prefix=".SKILL.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        lower = folder / "skill.md"
        if lower.exists() and not lower.samefile(target):
            lower.unlink()
        return target

    def remove(self, name: str) -> None:
        """Remove the skill's folder (SKILL.md and anything shipped beside it)."""
        folder = self.folder(name)
        if folder.is_dir():
            shutil.rmtree(folder)

    def copy_assets(self, name: str, source_folder: Path) -> None:
        """Copy the files a skill folder ships beside its SKILL.md (scripts, references)."""
        folder = self.folder(name)
        for item in source_folder.iterdir():
            if item.name in SKILL_FILE_NAMES or item.is_symlink():
                continue
            dest = folder / item.name
            if item.is_dir():
                shutil.copytree(item, dest, dirs_exist_ok=True, symlinks=False)
            elif item.is_file():
                shutil.copy2(item, dest)

    def scan(self) -> dict[str, FileStat]:
        """Every `<folder>/SKILL.md` now on disk, by folder name, with its mtime."""
        out: dict[str, FileStat] = {}
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return out
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            for fname in SKILL_FILE_NAMES:
                p = Path(entry.path) / fname
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                out[entry.name] = FileStat(entry.name, p, st.st_mtime_ns)
                break
        return out
