"""The live watch: a promoted version that serves worse than the one it replaced is rolled back.

After the eval gate promotes a version, its live record decides whether it
stays. `RollbackWatch.check` reads from the store the main turns (agent
traffic, not replays) served by the newly active version since its promotion
(`turns.weight_version`) and those served by the version it replaced in the
window before, with their evidence: the turn's feedback scores (any source:
user, judge, verifier, tool error), else its session's, and whether the turn
failed in serving. Each turn with evidence is a success or a failure
(`WatchConfig`); `judge_live` compares the two success rates, and a drop past
the allowance, with enough turns on both sides, rolls the version back with
`Registry.rollback` (serving hot-swaps back). The decision and its figures are
logged, written under `eval_gate.live` in the version's `meta.json`, and the
registry's history records the rollback with its reason.

Only the newest promotion is watched: after a rollback there is nothing to
watch until the next promotion, so the watch cannot flap between versions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from store import tables as t
from store.database import Database
from store.errors import StoreError
from store.keys import KeyStore
from store.registry import Registry, base_id
from store.settings import ModelRoute
from trainer.gate_config import WatchConfig

log = logging.getLogger("molt.trainer.rollback")

BASE = "base"
FAILED_STATUSES = ("error", "upstream_error")  # a client that went away is not the model's fault


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """What one version's served turns say about it."""

    version: str
    turns: int  # served main turns read
    judged: int  # turns with evidence: successes + failures + neutral (score 0)
    successes: int
    failures: int
    mean: float | None  # mean evidence score over turns with a score

    @property
    def rate(self) -> float | None:
        return self.successes / self.judged if self.judged else None


@dataclass(frozen=True, slots=True)
class WatchDecision:
    tenant: str
    base: str
    # rollback: done; refused: wanted, but the registry refused; keep: no regression;
    # wait: too few turns yet; idle: no promotion to watch
    action: str
    reason: str
    active: str | None = None
    previous: str | None = None
    promoted_at: float | None = None
    new: LiveFigures | None = None
    old: LiveFigures | None = None
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("new", "old"):
            f = getattr(self, k)
            if f is not None:
                d[k]["rate"] = f.rate
        return d


def judge_live(new: LiveFigures, old: LiveFigures, config: WatchConfig) -> tuple[str, str]:
    """(action, reason) from both versions' live figures (pure)."""
    if new.judged < config.min_samples or old.judged < config.min_samples:
        return "wait", (f"{new.judged} judged turns on {new.version}, {old.judged} on "
                        f"{old.version} (need {config.min_samples} each)")
    assert new.rate is not None and old.rate is not None
    if new.rate < old.rate - config.max_drop - 1e-9:
        return "rollback", (f"live success rate of {new.version} {new.rate:.3f} "
                            f"(n={new.judged}) is below {old.rate:.3f} of {old.version} "
                            f"(n={old.judged}) by more than {config.max_drop:.3f}")
    return "keep", (f"live success rate of {new.version} {new.rate:.3f} (n={new.judged}), "
                    f"{old.version} {old.rate:.3f} (n={old.judged})")


def aliases_by_base(routes: Sequence[ModelRoute]) -> dict[str, list[str]]:
    """Registry base name -> the aliases that serve it (what agents put in `model`)."""
    out: dict[str, list[str]] = {}
    for r in routes:
        if r.local or r.vllm:
            out.setdefault(base_id(r.upstream_model or r.alias), []).append(r.alias)
    return out


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


class RollbackWatch:
    """Watches the newest promotion of each tenant and base; rolls back a live regression."""

    def __init__(
        self, db: Database, registry: Registry, config: WatchConfig | None = None, *,
        aliases: Mapping[str, Sequence[str]], base_dirs: Mapping[str, Path | None] | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.config = config or WatchConfig()
        # registry base name -> the model aliases agents request it by (`tiny`, `tiny@v7`)
        self.aliases = {b: tuple(a) for b, a in aliases.items()}
        self.base_dirs = dict(base_dirs or {})

    async def check_all(self, tenants: Collection[str] = ()) -> list[WatchDecision]:
        """Every tenant's served bases, or only those of `tenants` (names) when given."""
        out = []
        for tenant in await asyncio.to_thread(self.registry.tenants):
            if tenants and tenant not in tenants:
                continue
            for base in await asyncio.to_thread(self.registry.bases, tenant):
                if base in self.aliases:
                    out.append(await self.check(tenant, base))
        return out

    async def check(self, tenant: str, base: str) -> WatchDecision:
        decision = await self._check(tenant, base)
        if decision.action in ("rollback", "refused"):
            log.warning("live watch %s/%s %s: %s: %s", tenant, base, decision.active,
                        decision.action, decision.reason)
        else:
            log.log(logging.DEBUG if decision.action == "idle" else logging.INFO,
                    "live watch %s/%s %s: %s: %s", tenant, base, decision.active,
                    decision.action, decision.reason)
        if decision.action in ("rollback", "refused", "keep") and decision.active:
            await self._record(decision)
        return decision

    async def _check(self, tenant: str, base: str) -> WatchDecision:
        active = await asyncio.to_thread(self.registry.active, tenant, base)
        history = await asyncio.to_thread(self.registry.history, tenant, base)
        last = history[-1] if history else None
        if active is None or last is None or last.get("action") != "promote" \
                or last.get("to") != active or last.get("from") == active:
            return WatchDecision(tenant, base, "idle", "no promotion to watch", active)
        previous = str(last.get("from") or BASE)
        promoted_at = float(last["at"])
        ten = await KeyStore(self.db).tenant_by_name(tenant)
        if ten is None:
            return WatchDecision(tenant, base, "idle", "the tenant has no traffic in the store",
                                 active, previous, promoted_at)
        aliases = self.aliases.get(base) or (base,)
        new = await self._figures(ten.id, aliases, active, promoted_at)
        old = await self._figures(ten.id, aliases, previous,
                                  promoted_at - self.config.baseline_window_s)
        action, reason = judge_live(new, old, self.config)
        if action == "rollback":
            try:
                await asyncio.to_thread(
                    self.registry.rollback, tenant, base, previous,
                    base_dir=self.base_dirs.get(base), reason=f"live watch: {reason}")
            except StoreError as exc:
                action, reason = "refused", f"{reason}; the rollback was refused: {exc}"
        return WatchDecision(tenant, base, action, reason, active, previous, promoted_at,
                             new, old)

    async def _figures(self, tenant_id: str, aliases: Sequence[str], version: str,
                       since: float) -> LiveFigures:
        tc, fc = t.turns.c, t.feedback.c
        served = sa.and_(
            tc.tenant_id == tenant_id, tc.turn_type == "main", tc.weight_version == version,
            tc.created_at >= since,
            sa.or_(*(sa.or_(tc.request_model == a, tc.request_model.startswith(a + "@",
                                                                                autoescape=True))
                     for a in aliases)),
        )
        own = (sa.select(tc.id, tc.status, fc.score)
               .select_from(t.turns.outerjoin(t.feedback, sa.and_(fc.turn_id == tc.id,
                                                                  fc.score.is_not(None))))
               .where(served))
        session = (sa.select(tc.id, fc.score)
                   .select_from(t.turns.join(t.feedback, sa.and_(
                       fc.session_id == tc.session_id, fc.turn_id.is_(None),
                       fc.score.is_not(None))))
                   .where(served))
        async with self.db.engine.connect() as conn:
            own_rows = (await conn.execute(own)).all()
            session_rows = (await conn.execute(session)).all()
        status: dict[str, str] = {}
        scores: dict[str, list[float]] = {}
        for tid, st, score in own_rows:
            status[str(tid)] = str(st)
            if score is not None:
                scores.setdefault(str(tid), []).append(float(score))
        session_scores: dict[str, list[float]] = {}
        for tid, score in session_rows:
            session_scores.setdefault(str(tid), []).append(float(score))
        judged = successes = failures = 0
        evidence: list[float] = []
        for tid, st in status.items():
            score = _mean(scores.get(tid) or session_scores.get(tid) or [])
            if score is not None:
                evidence.append(score)
            if self.config.count_errors and st in FAILED_STATUSES:
                judged, failures = judged + 1, failures + 1
            elif score is not None:
                judged += 1
                successes += score > 0
                failures += score < 0
        return LiveFigures(version, len(status), judged, successes, failures, _mean(evidence))

    async def _record(self, d: WatchDecision) -> None:
        assert d.active is not None
        meta = await asyncio.to_thread(self.registry.get, d.tenant, d.base, d.active)
        live = (meta.eval_gate or {}).get("live") or {}
        if d.action == "keep" and live.get("action") == "keep":
            return  # recorded already; the figures of later checks are in the log
        await asyncio.to_thread(self.registry.update_eval_gate, d.tenant, d.base, d.active,
                                {"live": d.to_dict()})
