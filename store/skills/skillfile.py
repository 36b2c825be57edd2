"""One skill as a SKILL.md file: YAML front matter and a Markdown body.

The front matter holds `name` (a slug), `description` (the trigger: when to
use the skill) and optionally `category`, `tools`, `scope`, `status`
(active|quarantined|retired), `origin` (seed|user|evolver) and `provenance`
(turn ids). `scope: tools` makes the skill a standing rule for its tools: it
is served whenever a request offers one of them, whatever the task's words
(argument formats, a user's standing preferences). Any other key (Agent-Skills `license`, `allowed-tools`, OpenClaw
`metadata`...) is kept as it is and written back unchanged, so a MetaClaw or
Agent-Skills file round-trips. A missing `category` is read from
`metadata.category` when a file keeps it there.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from store.skills.errors import SkillFileError

STATUSES = ("active", "quarantined", "retired")
ORIGINS = ("seed", "user", "evolver")
SCOPES = ("tools",)
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$")
FILE_NAME = "SKILL.md"
_KNOWN = ("name", "description", "category", "tools", "scope", "status", "origin", "provenance")
_FENCE = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def check_name(name: object, where: str = "skill") -> str:
    """A valid skill name (lowercase slug, 1-64 characters), or SkillFileError."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SkillFileError(
            where,
            f"name {name!r} is not a slug (lowercase letters, digits, '-' or '_', "
            "1-64 characters, starting and ending with a letter or digit)",
        )
    return name


@dataclass(frozen=True, slots=True)
class Skill:
    name: str
    description: str
    body: str
    category: str | None = None
    tools: tuple[str, ...] = ()
    status: str = "active"
    origin: str = "user"
    provenance: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # "tools": served whenever a request offers one of `tools` (see the module doc)
    scope: str | None = None

    @property
    def serving(self) -> bool:
        return self.status == "active"

    def with_(self, **changes: Any) -> Skill:
        return replace(self, **changes)

    def embedding_text(self) -> str:
        """What the index embeds: the trigger (name, description), category and tools.

        The body is left out: its steps and anti-patterns say how, not when,
        and they pull every skill's vector toward the same generic text
        (measured: 0.27 -> 0.33 cosine for a matching task without them).
        """
        parts = [self.name.replace("-", " ").replace("_", " "), self.description]
        if self.category:
            parts.append(f"category: {self.category}")
        if self.tools:
            parts.append("tools: " + ", ".join(self.tools))
        return "\n".join(p for p in parts if p)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _str_list(value: Any, key: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.replace(",", " ").split()]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise SkillFileError(where, f"'{key}' must be a list of strings")
    return tuple(str(v) for v in value if str(v))


def parse_skill(text: str, where: str, *, max_body_bytes: int) -> Skill:
    """Parse and validate SKILL.md text; `where` names the file in every error."""
    match = _FENCE.match(text.lstrip("\ufeff"))
    if match is None:
        raise SkillFileError(where, "no YAML front matter (the file must start with '---')")
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        raise SkillFileError(where, f"broken YAML front matter: {exc}") from exc
    if not isinstance(meta, dict):
        raise SkillFileError(where, "the front matter is not a mapping of keys to values")
    body = text[match.end():].strip("\n")
    if "name" not in meta or meta["name"] in (None, ""):
        raise SkillFileError(where, "missing 'name' in the front matter")
    name = check_name(meta["name"], where)
    description = meta.get("description")
    if not isinstance(description, str) or not description.strip():
        raise SkillFileError(where, "missing 'description' (the trigger) in the front matter")
    size = len(body.encode("utf-8"))
    if size > max_body_bytes:
        raise SkillFileError(where, f"body is {size} bytes, over the limit of {max_body_bytes}")
    status = meta.get("status") or "active"
    if status not in STATUSES:
        raise SkillFileError(where, f"status {status!r} is not one of {', '.join(STATUSES)}")
    origin = meta.get("origin") or "user"
    if origin not in ORIGINS:
        raise SkillFileError(where, f"origin {origin!r} is not one of {', '.join(ORIGINS)}")
    scope = meta.get("scope")
    if scope is not None and scope not in SCOPES:
        raise SkillFileError(where, f"scope {scope!r} is not one of {', '.join(SCOPES)}")
    if scope == "tools" and not meta.get("tools"):
        raise SkillFileError(where, "scope 'tools' needs the 'tools' the skill is about")
    category = meta.get("category")
    extra = {k: v for k, v in meta.items() if k not in _KNOWN}
    if category is None and isinstance(extra.get("metadata"), dict):
        category = extra["metadata"].get("category")
    if category is not None and not isinstance(category, str):
        raise SkillFileError(where, "'category' must be a string")
    return Skill(
        name=name,
        description=" ".join(description.split()),
        body=body,
        category=category or None,
        tools=_str_list(meta.get("tools"), "tools", where),
        status=status,
        origin=origin,
        provenance=_str_list(meta.get("provenance"), "provenance", where),
        extra=extra,
        scope=scope,
    )


def render_skill_file(skill: Skill) -> str:
    """The SKILL.md text of a skill (front matter keys in a fixed order)."""
    meta: dict[str, Any] = {"name": skill.name, "description": skill.description}
    if skill.category:
        meta["category"] = skill.category
    if skill.tools:
        meta["tools"] = list(skill.tools)
    if skill.scope:
        meta["scope"] = skill.scope
    meta["status"] = skill.status
    meta["origin"] = skill.origin
    if skill.provenance:
        meta["provenance"] = list(skill.provenance)
    meta.update(skill.extra)
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100).strip()
    return f"---\n{head}\n---\n\n{skill.body.strip()}\n"
