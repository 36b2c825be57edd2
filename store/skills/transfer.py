"""Reading skills to import: one SKILL.md, one skill folder, a tree of them, or a JSON skill bank.

A MetaClaw library (`skills/<name>/SKILL.md`), an Agent-Skills folder
(`<name>/SKILL.md` plus `scripts/`, `references/`...; `allowed-tools` reads
as `tools`) and MetaClaw's JSON skill bank (`conversation_skills.json`: a
list of skills, ``{"skills": [...]}``, or skills keyed by name, each with
`name`, `description`, `content` or `body`, `category`) are read as they
are. Everything is parsed and checked before anything is imported: one bad
file or two files claiming the same name refuse the whole import, naming the
files and the problems. So does a SKILL.md that is a symbolic link leading
out of the tree being imported, and one whose front-matter name is not its
folder's name (Agent-Skills requires them equal: which one would be meant?).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from store.skills.errors import SkillFileError
from store.skills.files import SKILL_FILE_NAMES, escape_reason, skill_file_in
from store.skills.skillfile import Skill, parse_skill, render_skill_file

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
    if path.is_file() and path.suffix.lower() == ".json":
        return read_skill_bank(path, max_body_bytes=max_body_bytes)
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
        if f.name in SKILL_FILE_NAMES and f.parent != root and f.parent.name != skill.name:
            problems.append(SkillFileError(str(f), f"the front-matter name {skill.name!r} differs from its "
                                                   f"folder {f.parent.name!r}; rename one to match the other"))
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


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64].strip("-")


def _bank_items(data: object) -> list[tuple[str | None, object]]:
    if isinstance(data, dict) and isinstance(data.get("skills"), list | dict):
        data = data["skills"]
    if isinstance(data, list):
        return [(None, item) for item in data]
    if isinstance(data, dict):
        return [(str(k), v) for k, v in data.items()]
    return []


def read_skill_bank(path: Path, *, max_body_bytes: int) -> list[SkillSource]:
    """MetaClaw's JSON skill bank, each skill checked as if it were a SKILL.md."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SkillFileError(str(path), f"not a JSON skill bank: {exc}") from exc
    items = _bank_items(data)
    if not items:
        raise SkillFileError(str(path), "no skills (expected a list, {\"skills\": [...]}, or skills by name)")
    sources: list[SkillSource] = []
    problems: list[SkillFileError] = []
    seen: set[str] = set()
    for i, (key, item) in enumerate(items):
        where = f"{path}[{key if key is not None else i}]"
        if not isinstance(item, dict):
            item = {"content": item} if isinstance(item, str) else {}
        name = _slug(str(item.get("name") or key or ""))
        body = str(item.get("content") or item.get("body") or item.get("instructions") or "").strip()
        description = str(item.get("description") or item.get("trigger") or "").strip()
        if not name or not body:
            problems.append(SkillFileError(where, "a skill needs a name and a content (or body)"))
            continue
        if name in seen:
            problems.append(SkillFileError(where, f"duplicate name {name!r}"))
            continue
        draft = Skill(name, description or f"Imported skill {name}.", body,
                      str(item["category"]) if item.get("category") else None,
                      tuple(str(t) for t in item.get("tools") or ()))
        text = render_skill_file(draft)
        try:
            skill = parse_skill(text, where, max_body_bytes=max_body_bytes)
        except SkillFileError as exc:
            problems.append(exc)
            continue
        seen.add(name)
        sources.append(SkillSource(path, text, skill))
    if len(problems) == 1:
        raise problems[0]
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise SkillFileError(str(path), f"{len(problems)} skills refused:\n{lines}")
    return sources
