"""A tenant's library on disk: `<root>/<tenant>/<name>/SKILL.md`.

Paths are only ever built from validated slugs and checked to stay inside
the tenant's folder, so a name such as `../../etc` never reaches the disk.
Writes are atomic (a temporary file, then `os.replace`), so a reader (the
proxy's watcher, an editor) never sees half a file.

A SKILL.md or a skill folder that is a symbolic link leading outside the
library is refused, on load and on import (`escape_reason`): its text would
otherwise be read from anywhere on the machine and served. The scan reports
it as a refused file, so its last good revision keeps serving, and so do
the other skills. Assets are copied without the links among them.
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


def escape_reason(path: Path, root: Path) -> str | None:
    """Why `path` is refused: it is, or sits in, a symbolic link that leads outside `root`."""
    try:
        target = path.resolve()
        base = root.resolve()
    except (OSError, RuntimeError) as exc:  # a link loop
        return f"cannot be resolved: {exc}"
    if target == base or target.is_relative_to(base):
        return None
    return f"is a symbolic link to {target}, outside the library {root}; refused"


def check_inside(path: Path, root: Path) -> None:
    """SkillFileError when `path` leads outside `root` (see `escape_reason`)."""
    why = escape_reason(path, root)
    if why is not None:
        raise SkillFileError(str(path), why)


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
    # why the file is not read (a link leading outside the library); None: read it
    refused: str | None = None


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
        if found is None:
            return None
        check_inside(found, self.root)
        return found.read_text(encoding="utf-8")

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
                shutil.copytree(item, dest, dirs_exist_ok=True, ignore=_links)
            elif item.is_file():
                shutil.copy2(item, dest)

    def scan(self) -> dict[str, FileStat]:
        """Every `<folder>/SKILL.md` now on disk, by folder name, with its mtime.

        A folder or SKILL.md that is a link leading outside the library comes
        back `refused`; a folder linked within the library is skipped.
        """
        out: dict[str, FileStat] = {}
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return out
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                why = escape_reason(path, self.root)
                if why is not None:
                    out[entry.name] = FileStat(entry.name, path, path.lstat().st_mtime_ns, why)
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            for fname in SKILL_FILE_NAMES:
                p = path / fname
                try:
                    st = p.lstat()
                except FileNotFoundError:
                    continue
                why = escape_reason(p, self.root) if p.is_symlink() else None
                if why is None:
                    try:
                        st = p.stat()
                    except FileNotFoundError:  # a dangling link
                        continue
                out[entry.name] = FileStat(entry.name, p, st.st_mtime_ns, why)
                break
        return out


def _links(folder: str, names: list[str]) -> set[str]:
    """`shutil.copytree`'s ignore: the symbolic links in `folder` (never copied, never followed)."""
    return {n for n in names if os.path.islink(os.path.join(folder, n))}
