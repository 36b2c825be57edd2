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

Every field is capped (`check_limits`), whoever writes the skill: a name of
64 characters, a description of `MAX_DESCRIPTION`, a category of
`MAX_CATEGORY`, at most `MAX_TOOLS` tools and `MAX_PROVENANCE` turn ids of
bounded length, the other keys within `MAX_EXTRA` bytes, the whole front
matter within `MAX_FRONT_MATTER` bytes (checked before the YAML is parsed),
and the body within the library's `max_body_bytes`. Stored revisions written
before a cap are still read (`limits=False`), so nothing recorded is lost.
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
MAX_DESCRIPTION = 1024  # the Agent-Skills limit
MAX_CATEGORY = 64
MAX_TOOLS = 64
MAX_TOOL_NAME = 128
MAX_PROVENANCE = 256
MAX_PROVENANCE_ID = 128
MAX_EXTRA = 32 * 1024  # bytes of YAML the unknown keys take
MAX_FRONT_MATTER = 128 * 1024  # bytes of the whole YAML block, refused before it is parsed
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


def _cap_list(items: tuple[str, ...], key: str, most: int, longest: int, where: str) -> None:
    if len(items) > most:
        raise SkillFileError(where, f"'{key}' lists {len(items)} items, over the limit of {most}")
    long = next((v for v in items if len(v) > longest), None)
    if long is not None:
        raise SkillFileError(where, f"an item of '{key}' is {len(long)} characters, over the limit "
                             f"of {longest}")


def check_limits(skill: Skill, where: str, *, max_body_bytes: int) -> None:
    """Every field within its cap (see the module doc), or SkillFileError naming the field."""
    check_name(skill.name, where)
    if len(skill.description) > MAX_DESCRIPTION:
        raise SkillFileError(where, f"'description' is {len(skill.description)} characters, over the "
                             f"limit of {MAX_DESCRIPTION}")
    if skill.category is not None and len(skill.category) > MAX_CATEGORY:
        raise SkillFileError(where, f"'category' is {len(skill.category)} characters, over the limit "
                             f"of {MAX_CATEGORY}")
    _cap_list(skill.tools, "tools", MAX_TOOLS, MAX_TOOL_NAME, where)
    _cap_list(skill.provenance, "provenance", MAX_PROVENANCE, MAX_PROVENANCE_ID, where)
    size = len(skill.body.encode("utf-8"))
    if size > max_body_bytes:
        raise SkillFileError(where, f"body is {size} bytes, over the limit of {max_body_bytes}")
    if skill.extra:
        extra = len(yaml.safe_dump(skill.extra, allow_unicode=True).encode("utf-8"))
        if extra > MAX_EXTRA:
            raise SkillFileError(where, f"the front matter's other keys take {extra} bytes, over the "
                                 f"limit of {MAX_EXTRA}")


_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:", re.MULTILINE)


def _check_head_size(head: str, where: str) -> None:
    """Refuse an oversized front matter before parsing it, naming the key that takes the most."""
    size = len(head.encode("utf-8"))
    if size <= MAX_FRONT_MATTER:
        return
    keys = list(_TOP_KEY.finditer(head))
    sizes = {m.group(1): len(head[m.start():nxt.start() if nxt else len(head)].encode("utf-8"))
             for m, nxt in zip(keys, [*keys[1:], None])}
    biggest = max(sizes, key=lambda k: sizes[k]) if sizes else None
    what = f" ('{biggest}' takes {sizes[biggest]})" if biggest is not None else ""
    raise SkillFileError(where, f"the front matter is {size} bytes, over the limit of "
                         f"{MAX_FRONT_MATTER}{what}")


def _allowed_tools(meta: dict[str, Any]) -> Any:
    """Agent-Skills ``allowed-tools`` (a space-separated string, or a list) read as ``tools``."""
    allowed = meta.get("allowed-tools")
    if isinstance(allowed, str):
        return [t for t in re.split(r"[\s,]+", allowed) if t]
    return allowed


def parse_skill(text: str, where: str, *, max_body_bytes: int, limits: bool = True) -> Skill:
    """Parse and validate SKILL.md text; `where` names the file in every error.

    With `limits=False` (a stored revision, read back) the caps are not applied.
    """
    match = _FENCE.match(text.lstrip("\ufeff"))
    if match is None:
        raise SkillFileError(where, "no YAML front matter (the file must start with '---')")
    if limits:
        _check_head_size(match.group(1), where)
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
    skill = Skill(
        name=name,
        description=" ".join(description.split()),
        body=body,
        category=category or None,
        tools=_str_list(meta.get("tools") if meta.get("tools") is not None else _allowed_tools(meta), "tools",
                        where),
        status=status,
        origin=origin,
        provenance=_str_list(meta.get("provenance"), "provenance", where),
        extra=extra,
        scope=scope,
    )
    if limits:
        check_limits(skill, where, max_body_bytes=max_body_bytes)
    return skill


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
