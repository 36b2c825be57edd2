"""Errors of the skill library.

StoreError (store.errors)
├── InvalidInput
│   └── SkillFileError   a SKILL.md that is refused: names the file and the problem
├── NotFound
│   └── SkillNotFound    no such skill or revision in this tenant's library
├── Conflict
│   └── SkillExists      a name already in the library (add, import)
└── SkillIndexError      the Chroma index or the embedding model failed
    └── IndexInUse       the embedded index folder belongs to another live process
"""

from __future__ import annotations

from store.errors import Conflict, InvalidInput, NotFound, StoreError


class SkillFileError(InvalidInput):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


class SkillNotFound(NotFound):
    pass


class SkillExists(Conflict):
    pass


class SkillIndexError(StoreError):
    pass


class IndexInUse(SkillIndexError):
    """The embedded index folder belongs to another live process (store/skills/index_lock.py)."""
