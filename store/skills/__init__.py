"""The skill library: SKILL.md files per tenant, revisions, the generation, the index.

Writers (CLI, REST, the evolver) use `SkillLibrary`; serving keeps the index
(`SkillIndex`) in step with it. See DESIGN.md, "Skills".
"""

from store.skills.errors import SkillExists, SkillFileError, SkillIndexError, SkillNotFound
from store.skills.library import LibrarySkill, SkillLibrary, SyncReport
from store.skills.revisions import Revision
from store.skills.skillfile import Skill, parse_skill, render_skill_file

__all__ = [
    "LibrarySkill", "Revision", "Skill", "SkillExists", "SkillFileError", "SkillIndexError",
    "SkillLibrary", "SkillNotFound", "SyncReport", "parse_skill", "render_skill_file",
]
