"""The validation gate: a proposal reaches serving only if replay shows it helps.

Our instantiation of GEPA's minibatch-then-validation accept: the failing
turns the proposal rests on are replayed with the current and the candidate
library; a small minibatch first (a cheap early reject), then the rest
together with a sample of turns that went well. The candidate is accepted iff
it fixes strictly more failures than the current library and does not break
more than `tolerance` of the turns that went well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from evolver.checks import Check, supersede
from evolver.errors import ReplayFailed
from evolver.replay import Replayer


@dataclass
class GateResult:
    accepted: bool
    reason: str
    fix_current: float = 0.0
    fix_candidate: float = 0.0
    keep_current: float = 1.0
    keep_candidate: float = 1.0
    n_fix: int = 0
    n_keep: int = 0
    replays: int = 0
    # the turns that went well and fail with the candidate (what a rejection for breaking them names)
    broken: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Gate:
    def __init__(self, replayer: Replayer, tenant: str, *, minibatch: int = 3, tolerance: float = 0.0,
                 max_fix: int = 8) -> None:
        self.replayer = replayer
        self.tenant = tenant
        self.minibatch = minibatch
        self.tolerance = tolerance
        self.max_fix = max_fix
        self._current: dict[str, bool] = {}  # (check) -> passes with the current library
        self._last: dict[str, bool] = {}  # (check) -> passed with the candidate judged last
        self._last_calls: dict[str, list[tuple[str, dict[str, Any]]]] = {}  # what it called instead
        self.replays = 0

    async def _passes(self, check: Check, candidate: str | None, context: str | None = None) -> bool:
        key = check.key
        if candidate is None and key in self._current:
            return self._current[key]
        self.replays += 1
        calls: list[tuple[str, dict[str, Any]]] = []
        try:
            calls = await self.replayer.replay(check.request, tenant=self.tenant, candidate=candidate,
                                               context=context)
        except ReplayFailed:
            ok = False
        else:
            ok = check.passes(calls)
        if candidate is None:
            self._current[key] = ok
        else:
            self._last[key] = ok
            self._last_calls[key] = [] if ok else calls
        return ok

    async def _rate(self, checks: Sequence[Check], candidate: str | None, context: str | None = None) -> float:
        if not checks:
            return 1.0
        results = [await self._passes(c, candidate, context) for c in checks]
        return sum(results) / len(results)

    async def judge(self, candidate: str, fix: Sequence[Check], keep: Sequence[Check], *,
                    context: str | None = None) -> GateResult:
        """Replay with the current library and with the candidate (and, if named, a candidate context)."""
        fix = list(fix)[: self.max_fix]
        start = self.replays
        self._last = {}
        if not fix:
            return GateResult(False, "no evidence to replay: no failing turn with a known fix")
        mb = fix[: self.minibatch]
        mb_cur, mb_cand = await self._rate(mb, None), await self._rate(mb, candidate, context)
        if mb_cand <= mb_cur:
            return GateResult(False, f"minibatch: fixes {mb_cand:.2f} <= current {mb_cur:.2f}",
                              mb_cur, mb_cand, n_fix=len(mb), replays=self.replays - start)
        fc, fk = await self._rate(fix, None), await self._rate(fix, candidate, context)
        keep = [supersede(k, fix) for k in keep]
        kc, kk = await self._rate(keep, None), await self._rate(keep, candidate, context)
        broken = [{"turn_id": k.turn_id, "tool": k.tool, "expected": k.expect,
                   "called": [[n, a] for n, a in self._last_calls.get(k.key, [])][:4]} for k in keep
                  if self._current.get(k.key) and not self._last.get(k.key, True)]
        res = GateResult(False, "", fc, fk, kc, kk, len(fix), len(keep), self.replays - start, broken)
        if fk <= fc:
            res.reason = f"validation: fixes {fk:.2f} <= current {fc:.2f}"
        elif kk < kc - self.tolerance:
            names = ", ".join(f"{b['turn_id']} ({b['tool']})" for b in broken)
            res.reason = f"validation: breaks turns that went well ({kk:.2f} < {kc:.2f}): {names}"
        else:
            res.accepted = True
            res.reason = f"fixes {fc:.2f} -> {fk:.2f}, keeps {kc:.2f} -> {kk:.2f}"
        return res
