"""Reading skills to import: one SKILL.md, one skill folder, or a tree of them.

A MetaClaw library (`skills/<name>/SKILL.md`) and an Agent-Skills folder
(`<name>/SKILL.md` plus `scripts/`, `references/`...) are read as they are.
Everything is parsed and checked before anything is imported: one bad file
or two files claiming the same name refuse the whole import, naming the
files and the problems.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from store.skills.errors import SkillFileError
from store.skills.files import SKILL_FILE_NAMES, skill_file_in
from store.skills.skillfile import Skill, parse_skill

MAX_DEPTH = 4


@dataclass(frozen=True, slots=True)
class SkillSource:
    path: Path
    text: str
    skill: Skill

    @property
    def folder(self) -> Path | None:
        """The skill's own folder when it is `<name>/SKILL.md` (assets are copied from it)."""
        parent = self.path.parent
        return parent if parent.name == self.skill.name else None


def _find_files(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_DEPTH else []
        here = [f for f in SKILL_FILE_NAMES if f in filenames]
        if here:
            found.append(Path(dirpath) / here[0])
            dirnames[:] = []  # a skill folder's own subfolders are its assets
    return sorted(found)


def read_sources(path: Path, *, max_body_bytes: int) -> list[SkillSource]:
    """Every skill under `path`, validated; SkillFileError if any is bad."""
    if not path.exists():
        raise SkillFileError(str(path), "no such file or folder")
    if path.is_file():
        files = [path]
    else:
        direct = skill_file_in(path)
        files = [direct] if direct is not None else _find_files(path)
    if not files:
        raise SkillFileError(str(path), "no SKILL.md found (expected <name>/SKILL.md folders)")
    problems: list[SkillFileError] = []
    sources: list[SkillSource] = []
    by_name: dict[str, Path] = {}
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
            skill = parse_skill(text, str(f), max_body_bytes=max_body_bytes)
        except SkillFileError as exc:
            problems.append(exc)
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(SkillFileError(str(f), f"cannot read: {exc}"))
            continue
        if skill.name in by_name:
            problems.append(SkillFileError(
                str(f), f"duplicate name {skill.name!r} (also in {by_name[skill.name]})"
            ))
            continue
        by_name[skill.name] = f
        sources.append(SkillSource(f, text, skill))
    if len(problems) == 1:
        raise problems[0]
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise SkillFileError(str(path), f"{len(problems)} files refused:\n{lines}")
    return sources
