"""Reading skills to import: one SKILL.md, one skill folder, or a tree of them.

A MetaClaw library (`skills/<name>/SKILL.md`) and an Agent-Skills folder
(`<name>/SKILL.md` plus `scripts/`, `references/`...) are read as they are.
Everything is parsed and checked before anything is imported: one bad file
or two files claiming the same name refuse the whole import, naming the
files and the problems. So does a SKILL.md that is a symbolic link leading
out of the tree being imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from store.skills.errors import SkillFileError
from store.skills.files import SKILL_FILE_NAMES, escape_reason, skill_file_in
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


def _find_files(root: Path) -> tuple[list[Path], list[Path]]:
    """The SKILL.md files under `root`, and the linked folders found on the way (not entered)."""
    found: list[Path] = []
    links: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_DEPTH else []
        here = [f for f in SKILL_FILE_NAMES if f in filenames]
        if here:
            found.append(Path(dirpath) / here[0])
            dirnames[:] = []  # a skill folder's own subfolders are its assets
        links += [Path(dirpath) / d for d in dirnames if (Path(dirpath) / d).is_symlink()]
    return sorted(found), sorted(links)


def read_sources(path: Path, *, max_body_bytes: int) -> list[SkillSource]:
    """Every skill under `path`, validated; SkillFileError if any is bad."""
    if not path.exists():
        raise SkillFileError(str(path), "no such file or folder")
    links: list[Path] = []
    if path.is_file():
        files = [path]
    else:
        direct = skill_file_in(path)
        files, links = ([direct], []) if direct is not None else _find_files(path)
    root = path if path.is_dir() else path.parent
    problems = [SkillFileError(str(link), why) for link in links
                if (why := escape_reason(link, root)) is not None and skill_file_in(link) is not None]
    if not files and not problems:
        raise SkillFileError(str(path), "no SKILL.md found (expected <name>/SKILL.md folders)")
    sources: list[SkillSource] = []
    by_name: dict[str, Path] = {}
    for f in files:
        escape = escape_reason(f, root)
        if escape is not None:  # a link out of the tree: its text could be any file on the machine
            problems.append(SkillFileError(str(f), escape))
            continue
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
