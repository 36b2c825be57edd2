"""The arms of `molt bench run`: one table, each arm a fresh molt with its own settings.

`baseline`: the policy alone, no skills. `oracle`: the day's true conventions
stated in molt's skills block (the upper bound of what context can do). Later
arms (skills, rl, ttt, ...) are rows added here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.toolworld import BASE, conventions_for_day, state_conventions
from modeling.blocks import render_skills_block


@dataclass(frozen=True)
class Arm:
    name: str
    description: str
    # Settings overrides for the arm's fresh molt, given its data folder.
    settings: Callable[[Path], dict[str, Any]] = field(default=lambda _d: {})
    # Extra system messages the driver sends on a day (after its own prompt).
    extra_system: Callable[[int], list[str]] = field(default=lambda _day: [])


def _oracle_block(day: int) -> list[str]:
    conv = conventions_for_day(day)
    drifted = [f for f, v in conv.items() if v != BASE[f]]
    skills = state_conventions(conv, families=drifted) if drifted else []
    return [render_skills_block(skills)] if skills else []


ARMS: dict[str, Arm] = {
    "baseline": Arm("baseline", "the tiny policy alone, no skills"),
    "oracle": Arm("oracle", "the day's true conventions stated in the skills block (upper bound)",
                  extra_system=_oracle_block),
}
