"""Reading recorded turns out for export: a typed row per turn, streamed page by page.

`iter_turns(db, selection)` yields `ExportTurn`s in a stable order, one page
(`page_size` rows) in memory at a time, with keyset paging (no OFFSET), so
exporting a large store costs the same per row from the first to the last and
holds no long transaction. The same query runs on SQLite and PostgreSQL.

What a selection can say:
- `tenant_id`, `since`/`until` (`created_at`, seconds since the epoch; `until`
  excluded) and `weight_version` (`"base"`: turns the base weights served);
- `status`: `"ok"` (the upstream answered) or `"error"` (any other status:
  error, upstream_error, client_disconnected);
- `feedback`: `"good"` (score above 0), `"bad"` (0 or below) or `"unscored"`. A
  turn's score is the mean of the scores given to it, else its session's score;
  a session's score is the mean of the scores given to the session itself, else
  the mean over its turns (the outcome `store.learning` plots);
- `per`: `"turn"` (every selected turn, oldest first) or `"session"` (the last
  selected main turn of each session, which carries the whole conversation
  before it; judged by the session's score), in session order;
- evolver replays (`turn_type == "replay"`) are left out unless asked for (and
  always per session, like side calls: only main turns carry the episode).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from typing import Any, Literal

import sqlalchemy as sa

from store import tables as t
from store.database import Database
from store.errors import InvalidInput
from store.records import TurnRecord

Status = Literal["ok", "error"]
Verdict = Literal["good", "bad", "unscored"]
Per = Literal["turn", "session"]
BASE_VERSION = "base"  # the weight-version name of the base weights (weight_version NULL)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which turns to export (see the module docstring)."""

    tenant_id: str | None = None
    since: float | None = None
    until: float | None = None
    status: Status | None = None
    feedback: Verdict | None = None
    weight_version: str | None = None
    per: Per = "turn"
    include_replays: bool = False

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidInput("since must be before until")


# The stored columns of a turn (the TurnRecord fields the turns table has).
_TURN_FIELDS = tuple(f.name for f in fields(TurnRecord) if f.name in t.turns.c)


@dataclass(slots=True)
class ExportTurn(TurnRecord):
    """One recorded model call as stored, with its tenant's name and its outcome."""

    tenant: str | None = None  # the tenant's name, when known
    score: float | None = None  # the turn's (or, per session, the session's) score
    scored_by: str = "none"  # "turn", "session", "turns" or "none"

    @property
    def verdict(self) -> Verdict:
        if self.score is None:
            return "unscored"
        return "good" if self.score > 0 else "bad"

    @classmethod
    def from_record(cls, rec: TurnRecord) -> ExportTurn:
        """A turn just written by the recorder (no feedback yet)."""
        return cls(**{name: getattr(rec, name) for name in _TURN_FIELDS})


def _mean_score(*where: sa.ColumnElement[bool]) -> sa.ScalarSelect[Any]:
    f = t.feedback.c
    return sa.select(sa.func.avg(f.score)).where(f.score.is_not(None), *where).scalar_subquery()


def _scores() -> tuple[sa.ScalarSelect[Any], sa.ScalarSelect[Any], sa.ScalarSelect[Any]]:
    """Per row (correlated, each an index lookup): the turn's, the session's and its turns' mean."""
    f, tc = t.feedback.c, t.turns.c
    turn_own = _mean_score(f.turn_id == tc.id)
    session_own = _mean_score(f.session_id == tc.session_id, f.turn_id.is_(None))
    session_turns = _mean_score(f.session_id == tc.session_id, f.turn_id.is_not(None))
    return turn_own, session_own, session_turns


def _statement(sel: Selection) -> tuple[sa.Select[Any], list[sa.ColumnElement[Any]]]:
    """The selection as one SELECT (without paging) and the columns it is ordered by."""
    tc, tn = t.turns.c, t.tenants.c
    turn_own, session_own, session_turns = _scores()
    if sel.per == "session":
        score: sa.ColumnElement[Any] = sa.func.coalesce(session_own, session_turns)
    else:
        score = sa.func.coalesce(turn_own, session_own, session_turns)
    stmt = (
        sa.select(*(tc[name] for name in _TURN_FIELDS), tn.name.label("tenant"),
                  turn_own.label("s_turn"), session_own.label("s_session"),
                  session_turns.label("s_turns"))
        .select_from(t.turns.outerjoin(t.tenants, tn.id == tc.tenant_id))
    )
    if sel.tenant_id is not None:
        stmt = stmt.where(tc.tenant_id == sel.tenant_id)
    if sel.since is not None:
        stmt = stmt.where(tc.created_at >= sel.since)
    if sel.until is not None:
        stmt = stmt.where(tc.created_at < sel.until)
    if sel.per == "session":
        stmt = stmt.where(tc.turn_type == "main")
    elif not sel.include_replays:
        stmt = stmt.where(tc.turn_type != "replay")
    if sel.status == "ok":
        stmt = stmt.where(tc.status == "ok")
    elif sel.status == "error":
        stmt = stmt.where(tc.status != "ok")
    if sel.weight_version == BASE_VERSION:
        stmt = stmt.where(tc.weight_version.is_(None))
    elif sel.weight_version is not None:
        stmt = stmt.where(tc.weight_version == sel.weight_version)
    if sel.feedback == "good":
        stmt = stmt.where(score > 0)
    elif sel.feedback == "bad":
        stmt = stmt.where(score <= 0)
    elif sel.feedback == "unscored":
        stmt = stmt.where(score.is_(None))
    order: list[sa.ColumnElement[Any]] = (
        [tc.session_id, tc.idx, tc.id] if sel.per == "session" else [tc.created_at, tc.id])
    return stmt.order_by(*order), order


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _row_turn(row: sa.RowMapping, per: Per) -> ExportTurn:
    values = {name: row[name] for name in _TURN_FIELDS}
    s_turn, s_session, s_turns = _float(row["s_turn"]), _float(row["s_session"]), _float(row["s_turns"])
    ranked = [("session", s_session), ("turns", s_turns)]
    if per == "turn":
        ranked.insert(0, ("turn", s_turn))
    scored_by, score = next(((k, v) for k, v in ranked if v is not None), ("none", None))
    tenant = row["tenant"]
    return ExportTurn(**values, tenant=None if tenant is None else str(tenant),
                      score=score, scored_by=scored_by)


async def _pages(db: Database, sel: Selection, page_size: int) -> AsyncIterator[list[ExportTurn]]:
    stmt, order = _statement(sel)
    after: tuple[Any, ...] | None = None
    while True:
        page = stmt if after is None else stmt.where(sa.tuple_(*order) > sa.tuple_(*after))
        async with db.engine.connect() as conn:
            rows = (await conn.execute(page.limit(page_size))).mappings().all()
        if not rows:
            return
        yield [_row_turn(r, sel.per) for r in rows]
        if len(rows) < page_size:
            return
        last = rows[-1]
        after = tuple(last[c.name] for c in order)


async def iter_turns(
    db: Database, sel: Selection, *, page_size: int = 500
) -> AsyncIterator[ExportTurn]:
    """The selected turns, streamed (see the module docstring for order and meaning)."""
    if page_size < 1:
        raise InvalidInput("page_size must be at least 1")
    if sel.per == "turn":
        async for page in _pages(db, sel, page_size):
            for turn in page:
                yield turn
        return
    # Ordered by (session, idx): a session's last selected turn is the one before the next session.
    held: ExportTurn | None = None
    async for page in _pages(db, sel, page_size):
        for turn in page:
            if held is not None and held.session_id != turn.session_id:
                yield held
            held = turn
    if held is not None:
        yield held
