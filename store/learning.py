"""How a tenant's agents are doing over time: session outcomes, bucketed, and version changes.

A session's score is the mean of the scores given to the session itself
(an episode verifier, a user's verdict); without any, the mean of the scores
given to its turns (judge, step verifiers, tool errors). A scored session is a
success when its score is above 0. Sessions count in the bucket of their last
turn (when the outcome happened).

Markers are the turns at which the served skill generation or weight version
differs from the tenant's previous turn: where the fast loop (skills) or the
slow loop (weights) changed what served the agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from store import tables as t
from store.database import Database

# Bucket widths to choose from, in seconds (1 s ... 1 week).
NICE_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a session came to: its score (None: nobody scored it) and where it came from."""

    score: float | None
    scored_by: str  # "session", "turns" or "none"

    @property
    def label(self) -> str:
        if self.score is None:
            return "unscored"
        return "success" if self.score > 0 else "failure"


@dataclass(frozen=True, slots=True)
class Bucket:
    start: float
    sessions: int  # scored sessions whose last turn falls in the bucket
    successes: int
    reward_sum: float

    @property
    def success_rate(self) -> float:
        return self.successes / self.sessions if self.sessions else 0.0

    @property
    def avg_reward(self) -> float:
        return self.reward_sum / self.sessions if self.sessions else 0.0


@dataclass(frozen=True, slots=True)
class Marker:
    at: float
    kind: str  # "skills" or "weights"
    value: str  # the new generation ("g7") or weight version ("v0003", "base")
    previous: str | None


@dataclass(frozen=True, slots=True)
class LearningSeries:
    bucket_s: int
    buckets: list[Bucket]
    markers: list[Marker]
    unscored: int  # sessions in the window that nobody scored

    @property
    def scored(self) -> int:
        return sum(b.sessions for b in self.buckets)


def _outcome(session_score: object, turn_score: object) -> Outcome:
    if session_score is not None:
        return Outcome(float(session_score), "session")  # type: ignore[arg-type]
    if turn_score is not None:
        return Outcome(float(turn_score), "turns")  # type: ignore[arg-type]
    return Outcome(None, "none")


def _scores(tenant_id: str | None) -> sa.Subquery:
    """Per session: the mean score on the session itself and the mean over its turns."""
    f = t.feedback.c
    stmt = sa.select(
        f.session_id.label("sid"),
        sa.func.avg(sa.case((f.turn_id.is_(None), f.score))).label("session_score"),
        sa.func.avg(sa.case((f.turn_id.is_not(None), f.score))).label("turn_score"),
    ).where(f.score.is_not(None), f.session_id.is_not(None))
    if tenant_id is not None:
        stmt = stmt.where(f.tenant_id == tenant_id)
    return stmt.group_by(f.session_id).subquery()


async def session_outcomes(db: Database, session_ids: Sequence[str]) -> dict[str, Outcome]:
    """The outcome of each of these sessions (at most a page of them)."""
    if not session_ids:
        return {}
    f = t.feedback.c
    stmt = sa.select(
        f.session_id,
        sa.func.avg(sa.case((f.turn_id.is_(None), f.score))),
        sa.func.avg(sa.case((f.turn_id.is_not(None), f.score))),
    ).where(f.session_id.in_(list(session_ids)), f.score.is_not(None)).group_by(f.session_id)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    out = {sid: Outcome(None, "none") for sid in session_ids}
    for sid, s_score, t_score in rows:
        out[str(sid)] = _outcome(s_score, t_score)
    return out


def pick_bucket(span_s: float, *, target: int = 30) -> int:
    """The smallest nice bucket width that cuts `span_s` into at most `target` buckets."""
    for width in NICE_BUCKETS:
        if span_s / width <= target:
            return width
    return NICE_BUCKETS[-1]


async def learning_series(
    db: Database, tenant_id: str, *, since: float | None = None, until: float | None = None,
    bucket_s: int | None = None,
) -> LearningSeries:
    """Success rate and average reward per time bucket, and the version markers, of one tenant."""
    s = t.sessions.c
    sc = _scores(tenant_id)
    stmt = (
        sa.select(s.last_turn_at, sc.c.session_score, sc.c.turn_score)
        .select_from(t.sessions.outerjoin(sc, sc.c.sid == s.id))
        .where(s.tenant_id == tenant_id)
    )
    if since is not None:
        stmt = stmt.where(s.last_turn_at >= since)
    if until is not None:
        stmt = stmt.where(s.last_turn_at < until)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(stmt.order_by(s.last_turn_at))).all()
        markers = await _markers(conn, tenant_id, since, until)
    points = [(float(at), _outcome(ss, ts)) for at, ss, ts in rows]
    scored = [(at, o) for at, o in points if o.score is not None]
    if bucket_s is None:
        span = scored[-1][0] - scored[0][0] if scored else 0.0
        bucket_s = pick_bucket(span)
    acc: dict[int, list[float]] = {}
    for at, o in scored:
        assert o.score is not None
        acc.setdefault(int(at // bucket_s), []).append(o.score)
    buckets = [
        Bucket(float(k * bucket_s), len(v), sum(1 for x in v if x > 0), sum(v))
        for k, v in sorted(acc.items())
    ]
    return LearningSeries(bucket_s, buckets, markers, len(points) - len(scored))


async def _markers(
    conn: AsyncConnection, tenant_id: str, since: float | None,
    until: float | None,
) -> list[Marker]:
    tc = t.turns.c
    order = (tc.created_at, tc.id)
    inner = sa.select(
        tc.created_at,
        tc.skill_generation,
        tc.weight_version,
        sa.func.lag(tc.skill_generation).over(order_by=order).label("prev_gen"),
        sa.func.lag(tc.weight_version).over(order_by=order).label("prev_weights"),
        sa.func.row_number().over(order_by=order).label("n"),
    ).where(tc.tenant_id == tenant_id, tc.turn_type != "replay").subquery()
    stmt = sa.select(inner).where(
        inner.c.n > 1,
        sa.or_(inner.c.skill_generation.is_distinct_from(inner.c.prev_gen),
               inner.c.weight_version.is_distinct_from(inner.c.prev_weights)),
    )
    if since is not None:
        stmt = stmt.where(inner.c.created_at >= since)
    if until is not None:
        stmt = stmt.where(inner.c.created_at < until)
    rows = (await conn.execute(stmt.order_by(inner.c.created_at))).mappings().all()
    out: list[Marker] = []
    for r in rows:
        at = float(r["created_at"])
        if r["skill_generation"] != r["prev_gen"] and r["skill_generation"] is not None:
            prev = r["prev_gen"]
            out.append(Marker(at, "skills", f"g{r['skill_generation']}",
                              None if prev is None else f"g{prev}"))
        if r["weight_version"] != r["prev_weights"]:
            out.append(Marker(at, "weights", r["weight_version"] or "base", r["prev_weights"]))
    return out
