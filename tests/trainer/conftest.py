"""Shared pieces of the trainer tests: the tiny policy, recorded steps, a SQLite store."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from store.database import Database
from store.settings import StoreSettings
from trainer.advantages import Completion
from trainer.types import Step

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "bench" / "policy" / "checkpoint"

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def call(name: str, args: str, cid: str = "call_1") -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def make_step(i: int, *, skills: bool = True) -> Step:
    user = {"role": "user", "content": f"What is the weather in city number {i}?"}
    served = [{"role": "system", "content": "<molt-skills>\n## weather\nCall get_weather with "
               "the city.\n</molt-skills>"}, user] if skills else None
    return Step(
        turn_id=f"turn_{i}", session_id=f"ses_{i}", tenant_id="ten_a", idx=0, created_at=float(i),
        model="tiny", messages=[user], tools=[WEATHER],
        completion={"role": "assistant", "content": None,
                    "tool_calls": [call("get_weather", '{"city": "x"}')]},
        served_messages=served, weight_version=None, skill_generation=0,
    )


def hashed_reward(step: Step, completion: Completion) -> list[float | None]:
    """A reward that varies with the sampled text (so groups carry a signal)."""
    out: list[float | None] = []
    for s in completion.steps:
        h = hashlib.sha256(s.text.encode()).digest()[0]
        out.append(h / 255.0)
    return out


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{tmp_path}/store.db"))
    yield db
    await db.close()
