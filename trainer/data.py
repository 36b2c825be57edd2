"""Query data for one training window, from the store; export for trl and as JSONL.

What trains the policy (MetaClaw's support/query separation, our instantiation):
- main turns only (`turn_type == "main"`: no side calls, no evolver replays), finished
  (`status == "ok"`) with a reply or a tool call, in the chat-completions shape;
- served under the tenant's current skill generation (store/skills/revisions.py); a turn
  stamped with no generation counts as current only while the tenant's generation is 0
  (skills were never served);
- never a turn that caused an evolution: the turn ids an evolver proposal names as its
  provenance (store/evolution.py), and those a skill revision records (store/skills).

Held out for evaluation: whole sessions, chosen by a hash of the session's name and the seed
(`sha256(seed:name) < heldout_fraction`), so the same session is held out in every
window. The name is the agent's own id for the session (`X-Session-Id`, the sessions
row's `external_id`) when it sent one, else molt's session id: traffic replayed with the
same ids (a rerun, an import into another store) holds out the same sessions. Retention: turns of earlier generations (older tasks: what the policy must not
forget), a seeded sample of at most `retention_size`. Every step carries its rewards
(trainer/rewards.py, from the next request and the feedback rows), the weight version
that produced it, the skills the proxy injected into it (names and token estimates: what
the eval gate tests for internalization, trainer/internalize.py), and, when a call of it was refused (an error result) and the agent
later called the same tool and it ran, that later call in its place (`hindsight`: a
hindsight relabel the trainer may use as an off-policy sample, trainer/grpo.py).

`to_dataset` gives a `datasets.Dataset` trl consumes as it is: `prompt` is the
conversation (OpenAI messages, content as text, tool-call arguments as JSON strings), and
`tools` a JSON string per row (trl's own convention: Arrow would merge the differing tool
schemas of different rows into one struct).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from modeling.blocks import is_molt_block
from store import tables as t
from store.database import Database
from store.evolution import EvolutionStore
from store.feedback import FeedbackStore
from store.skills.revisions import RevisionStore
from store.trajectories import TrajectoryStore
from trainer.errors import NotEnoughData
from trainer.evidence import call_outcomes
from trainer.rewards import RewardWeights, fill_rewards, recorded_scores
from trainer.types import JSON, Split, Step


@dataclass(frozen=True, slots=True)
class DataConfig:
    heldout_fraction: float = 0.2
    retention_size: int = 64
    seed: int = 0
    since: float = 0.0  # only turns recorded at or after this time

    def __post_init__(self) -> None:
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError("heldout_fraction must be in [0, 1)")
        if self.retention_size < 0:
            raise ValueError("retention_size must be >= 0")


def is_heldout(session_id: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic: the same session, fraction and seed always give the same answer."""
    digest = hashlib.sha256(f"{seed}:{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


async def used_turn_ids(db: Database, tenant_id: str) -> set[str]:
    """Turns that caused an evolution: proposal and skill-revision provenance."""
    used: set[str] = set()
    for p in await EvolutionStore(db).proposals(tenant_id, limit=1_000_000):
        used |= {str(x) for x in p.provenance or []}
    r = t.skill_revisions.c
    async with db.engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(r.provenance).where(r.tenant_id == tenant_id, r.provenance.is_not(None))
        )).all()
    for (prov,) in rows:
        used |= {str(x) for x in prov or []}
    return used


def _openai_shaped(request: Mapping[str, Any]) -> bool:
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages or "system" in request:
        return False
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") in ("tool_use", "tool_result") for p in content
        ):
            return False
    return True


def _completion(turn: Mapping[str, Any]) -> JSON | None:
    calls = turn.get("tool_calls") or []
    content = turn.get("content")
    if not calls and not (isinstance(content, str) and content.strip()):
        return None
    msg: JSON = {"role": "assistant", "content": content if isinstance(content, str) else None}
    if calls:
        msg["tool_calls"] = [dict(c) for c in calls]
    return msg


def _agent_messages(messages: Sequence[Mapping[str, Any]]) -> list[JSON]:
    """The agent's own messages: molt's blocks taken out (a request may echo them)."""
    return [dict(m) for m in messages
            if not (m.get("role") == "system" and is_molt_block(m.get("content")))]


def injected(records: Any) -> tuple[list[str], dict[str, int]]:
    """A turn's injected-skill records -> (names in order, name -> estimated tokens)."""
    names: list[str] = []
    tokens: dict[str, int] = {}
    for r in records if isinstance(records, list) else []:
        name = r.get("id") if isinstance(r, dict) else None
        if not isinstance(name, str) or name in names:
            continue
        names.append(name)
        cost = r.get("tokens")
        if isinstance(cost, int) and not isinstance(cost, bool) and cost >= 0:
            tokens[name] = cost
    return names, tokens


def step_of(turn: Mapping[str, Any], next_turn: Mapping[str, Any] | None,
            feedback: Sequence[Mapping[str, Any]], weights: RewardWeights) -> Step | None:
    """A recorded turn as a Step with its rewards, or None when it is not usable for training."""
    request = turn.get("request") or {}
    completion = _completion(turn)
    if completion is None or not _openai_shaped(request):
        return None
    upstream = turn.get("upstream_request") or {}
    served = upstream.get("messages") if isinstance(upstream, dict) else None
    step = Step(
        turn_id=str(turn["id"]), session_id=str(turn["session_id"]), tenant_id=str(turn["tenant_id"]),
        idx=int(turn["idx"]), created_at=float(turn["created_at"]),
        model=str(turn.get("request_model") or request.get("model") or ""),
        messages=_agent_messages(request["messages"]), tools=request.get("tools") or None,
        completion=completion, served_messages=[dict(m) for m in served] if served else None,
        weight_version=turn.get("weight_version"), skill_generation=turn.get("skill_generation"),
    )
    step.injected_skills, step.skill_tokens = injected(turn.get("injected_skills"))
    next_messages = (next_turn.get("request") or {}).get("messages") if next_turn else None
    return fill_rewards(step, recorded_scores(completion, next_messages, feedback, weights), weights)


def _calls(turn: Mapping[str, Any]) -> list[JSON]:
    return [dict(c) for c in turn.get("tool_calls") or [] if isinstance(c, Mapping)]


def _outcomes(rows: Sequence[Mapping[str, Any]], i: int) -> list[bool | None]:
    """Per call of turn i: error (True), ran (False), no result seen (None)."""
    nxt = rows[i + 1] if i + 1 < len(rows) else None
    return call_outcomes(_calls(rows[i]), (nxt.get("request") or {}).get("messages") if nxt else None)


def _tool(call: Mapping[str, Any]) -> str:
    return str((call.get("function") or {}).get("name") or "")


def hindsight_fix(rows: Sequence[Mapping[str, Any]], i: int) -> JSON | None:
    """Turn i's message with each refused call replaced by the agent's own later fix.

    A call is refused when its result in the next request is an error. Its fix is the
    first later call in the session to the same tool whose result is not an error. None
    when no call of turn i was refused, or one was never fixed.
    """
    calls = _calls(rows[i])
    outcomes = _outcomes(rows, i)
    if not calls or True not in outcomes:
        return None
    later = [(c, o) for j in range(i + 1, len(rows))
             for c, o in zip(_calls(rows[j]), _outcomes(rows, j), strict=True)]
    fixed: list[JSON] = []
    for call, refused in zip(calls, outcomes, strict=True):
        if refused is not True:
            fixed.append(call)
            continue
        fix = next((c for c, o in later if o is False and _tool(c) == _tool(call)), None)
        if fix is None:
            return None
        fixed.append({**fix, "id": call.get("id")})
    return {"role": "assistant", "content": None, "tool_calls": fixed}


def _sessions(turns: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for turn in turns:
        out.setdefault(str(turn["session_id"]), []).append(turn)
    for rows in out.values():
        rows.sort(key=lambda r: int(r["idx"]))
    return out


async def _session_names(db: Database, tenant_id: str, session_ids: list[str]) -> dict[str, str]:
    """session id -> the agent's own id for it (`external_id`), for sessions that have one."""
    sc = t.sessions.c
    out: dict[str, str] = {}
    async with db.engine.connect() as conn:
        for i in range(0, len(session_ids), 500):
            rows = (await conn.execute(sa.select(sc.id, sc.external_id).where(
                sc.tenant_id == tenant_id, sc.id.in_(session_ids[i:i + 500]),
                sc.external_id.is_not(None)))).all()
            out.update({str(r[0]): str(r[1]) for r in rows})
    return out


async def load_split(db: Database, tenant_id: str, cfg: DataConfig | None = None,
                     weights: RewardWeights | None = None) -> Split:
    """The query data, held-out and retention sets of a tenant, as of now."""
    cfg = cfg or DataConfig()
    weights = weights or RewardWeights()
    generation = await RevisionStore(db).generation(tenant_id)
    used = await used_turn_ids(db, tenant_id)
    # every main turn: a failed one still carries the results of the calls before it
    turns = [r for r in await TrajectoryStore(db).turns_since(cfg.since, tenant_id=tenant_id)
             if r.get("turn_type") == "main"]
    fstore = FeedbackStore(db)
    by_turn: dict[str, list[dict[str, Any]]] = {}
    for row in await fstore.for_turns([str(r["id"]) for r in turns]):
        by_turn.setdefault(str(row["turn_id"]), []).append(row)
    sessions = _sessions(turns)
    # Feedback on a whole session is outcome evidence: it goes to the session's last turn.
    for row in await fstore.for_sessions(list(sessions)):
        if row.get("turn_id") is None and sessions.get(str(row["session_id"])):
            last = sessions[str(row["session_id"])][-1]
            by_turn.setdefault(str(last["id"]), []).append(row)

    names = await _session_names(db, tenant_id, list(sessions))
    split = Split()
    older: list[Step] = []
    for sid, rows in sessions.items():
        for i, turn in enumerate(rows):
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            gen = turn.get("skill_generation")
            current = gen == generation or (gen is None and generation == 0)
            if turn.get("status") != "ok" or (current and str(turn["id"]) in used):
                continue
            step = step_of(turn, nxt, by_turn.get(str(turn["id"]), []), weights)
            if step is None:
                continue
            step.hindsight = hindsight_fix(rows, i)
            if not current:
                older.append(step)
            elif is_heldout(names.get(sid) or sid, cfg.heldout_fraction, cfg.seed):
                split.heldout.append(step)
            else:
                split.train.append(step)
    older.sort(key=lambda s: s.turn_id)
    rng = random.Random(cfg.seed)
    split.retention = sorted(rng.sample(older, min(cfg.retention_size, len(older))),
                             key=lambda s: s.created_at)
    split.train.sort(key=lambda s: s.created_at)
    split.heldout.sort(key=lambda s: s.created_at)
    return split


def with_signal(steps: Sequence[Step], *, served_skills: bool = False) -> list[Step]:
    """The steps a window can learn from: a hindsight fix, or a negative step reward (the
    evidence says the recorded answer was wrong); with `served_skills`, also the steps molt
    served with skills (skill-conditioned distillation's teacher context).

    On the others the policy already does what the evidence asks: GRPO groups over them
    score alike and are skipped, so they only cost sampling (RLConfig.focus).
    """
    return [s for s in steps if s.hindsight or any(r is not None and r < 0 for r in s.step_rewards)
            or (served_skills and s.served_messages is not None)]


# -- export ------------------------------------------------------------------

def _wire_message(m: Mapping[str, Any]) -> JSON:
    """An OpenAI message with text content and JSON-string arguments (Arrow-friendly)."""
    out: JSON = {"role": str(m.get("role") or "user"), "content": _text(m.get("content"))}
    if m.get("tool_calls"):
        out["tool_calls"] = [
            {"id": str(tc.get("id") or ""), "type": "function",
             "function": {"name": str((tc.get("function") or {}).get("name") or ""),
                          "arguments": _args_text((tc.get("function") or {}).get("arguments"))}}
            for tc in m["tool_calls"]
        ]
    if m.get("tool_call_id"):
        out["tool_call_id"] = str(m["tool_call_id"])
    if m.get("name"):
        out["name"] = str(m["name"])
    return out


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))


def _args_text(args: Any) -> str:
    if isinstance(args, str):
        return args
    return json.dumps(args if args is not None else {}, ensure_ascii=False)


def to_row(step: Step) -> JSON:
    """One dataset row: trl's `prompt` plus the step's identity, tools, completion and rewards."""
    return {
        "prompt": [_wire_message(m) for m in step.messages],
        "tools": json.dumps(step.tools) if step.tools else None,
        "served_prompt": (json.dumps([_wire_message(m) for m in step.served_messages])
                          if step.served_messages else None),
        "completion_json": json.dumps(step.completion, ensure_ascii=False),
        "turn_id": step.turn_id, "session_id": step.session_id, "tenant_id": step.tenant_id,
        "idx": step.idx, "model": step.model, "weight_version": step.weight_version,
        "skill_generation": step.skill_generation,
        "reward": step.reward, "rewards": json.dumps(step.rewards),
        "step_rewards": list(step.step_rewards),
        "step_scores": json.dumps(step.step_scores),
        "hindsight_json": json.dumps(step.hindsight, ensure_ascii=False) if step.hindsight else None,
    }


def to_dataset(steps: Sequence[Step]) -> Any:
    """A `datasets.Dataset`, one row per step (`to_row`)."""
    from datasets import Dataset

    if not steps:
        raise NotEnoughData("no steps to export")
    return Dataset.from_list([to_row(s) for s in steps])


def write_jsonl(steps: Iterable[Step], path: Path) -> int:
    """Every step as one JSON line (all fields of `Step`); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for step in steps:
            f.write(json.dumps(asdict(step), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> list[Step]:
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(Step(**json.loads(line)))
    return out
