"""The text blocks molt puts into a system prompt: skills and the context block.

Serving (the proxy's injection), training (RL datasets) and the tiny policy's
pretraining all render these blocks with the functions here, so that a model
sees exactly the same text at training time as at serving time.

The skills block is one delimited system message placed right after the
agent's own system prompt; the agent's prefix never changes, so upstream
prompt caching keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SKILLS_OPEN = "<molt-skills>"
SKILLS_CLOSE = "</molt-skills>"
CONTEXT_OPEN = "<molt-context>"
CONTEXT_CLOSE = "</molt-context>"


@dataclass(frozen=True, slots=True)
class SkillText:
    """The part of a skill that is shown to a model."""

    name: str
    description: str
    body: str


def render_skill(skill: SkillText) -> str:
    body = skill.body.strip()
    head = f"## {skill.name}\n{skill.description.strip()}"
    return f"{head}\n{body}" if body else head


def render_skills_block(skills: Sequence[SkillText]) -> str:
    """Render skills, in the order given, as one delimited block."""
    inner = "\n\n".join(render_skill(s) for s in skills)
    return f"{SKILLS_OPEN}\n{inner}\n{SKILLS_CLOSE}"


def render_context_block(text: str) -> str:
    return f"{CONTEXT_OPEN}\n{text.strip()}\n{CONTEXT_CLOSE}"


def is_molt_block(content: object) -> bool:
    """True for a system message content that molt injected itself."""
    return isinstance(content, str) and (
        content.startswith((SKILLS_OPEN, CONTEXT_OPEN))
    )
