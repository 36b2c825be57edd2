"""An evolver replay, parsed once from its headers.

The evolver (and `molt train`'s generation) replays a recorded request through
the proxy's own HTTP API with an admin key: `X-Molt-Replay` names the skill
library (`current`, or a proposal id whose candidate library is laid over the
current one) and `X-Molt-Context` optionally a context block version (an id,
or `none` for no block). `X-Molt-Skills-Exclude` optionally names skills
(comma-separated) to leave out of what the library would inject: the trainer's
eval gate asks how a version answers *without* a skill (trainer/internalize.py).
Both mean nothing without `X-Molt-Replay`, which needs an admin key.

`Replay.from_headers` is the one validation; the skills and context hooks
read the typed `TurnContext.replay`, and a replay whose library or context
cannot be had fails through `Replay.unavailable`, the one error for both:
a replay that silently ran without what it asked for would make the
evolver's gate compare nothing. A served (non-replay) turn never fails that
way: it goes up without skills or context.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from proxy.errors import InvalidRequest, NotFoundError, ProxyError
from store.errors import InvalidInput, NotFound
from store.skills.errors import SkillFileError
from store.skills.skillfile import check_name

REPLAY_HEADER = "x-molt-replay"
CONTEXT_HEADER = "x-molt-context"
EXCLUDE_HEADER = "x-molt-skills-exclude"
CURRENT = "current"
NO_CONTEXT = "none"
# molt's ids (`prop_0191...`, `ctx_0191...`) and anything of the same alphabet
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")

Part = Literal["skills", "context"]


def _id(value: str, header: str) -> str:
    value = value.strip()
    if not _ID.fullmatch(value):
        raise InvalidRequest(
            f"{header} must be an id (letters, digits, '_', '.', ':', '-'; at most 128)",
            param=header, code="invalid_value")
    return value


def _names(value: str) -> frozenset[str]:
    """`a, b` -> {a, b}: skill names, each a valid slug (400 otherwise)."""
    out = set()
    for part in value.split(","):
        name = part.strip()
        if not name:
            continue
        try:
            out.add(check_name(name, EXCLUDE_HEADER))
        except SkillFileError as exc:
            raise InvalidRequest(f"{EXCLUDE_HEADER} lists skill names separated by commas; "
                                 f"{exc.problem}", param=EXCLUDE_HEADER,
                                 code="invalid_value") from exc
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Replay:
    """What a replay asks for.

    `proposal`: None for the current library, else the proposal whose candidate
    library to inject. `context`: None for the tenant's active context block,
    `NO_CONTEXT` for none, else a context version id. `exclude_skills`: skills
    left out of the injected ones (the library still chooses the rest as it would).
    """

    proposal: str | None = None
    context: str | None = None
    exclude_skills: frozenset[str] = frozenset()

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Replay | None:
        """The replay a request asks for, or None for an ordinary turn; 400 on a bad value."""
        raw = headers.get(REPLAY_HEADER)
        if not raw:
            return None
        which = _id(raw, REPLAY_HEADER)
        ctx = headers.get(CONTEXT_HEADER)
        return cls(None if which == CURRENT else which,
                   _id(ctx, CONTEXT_HEADER) if ctx else None,
                   _names(headers.get(EXCLUDE_HEADER) or ""))

    @property
    def library(self) -> str:
        """The header's value: `current` or the proposal id."""
        return self.proposal or CURRENT

    def unavailable(self, part: Part, exc: Exception) -> ProxyError:
        """The error for a replay that cannot get its skills or its context (`exc` from the store)."""
        header, asked = ((REPLAY_HEADER, self.library) if part == "skills"
                         else (CONTEXT_HEADER, self.context or "active"))
        if isinstance(exc, NotFound):
            return NotFoundError(f"replay {part} {asked!r}: {exc}", param=header)
        if isinstance(exc, InvalidInput):
            return InvalidRequest(f"replay {part} {asked!r}: {exc}", param=header)
        return ProxyError(f"replay {part} unavailable: {exc}", param=header,
                          code="replay_unavailable")
