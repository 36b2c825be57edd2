"""A run's configuration as a JSON file beside every artifact it writes.

Training configs (trainer/rl_config.py, trainer/ttt_config.py,
modeling/ttt_config.py) are plain dataclasses; these functions give each the
same strict round trip: unknown keys are refused, the file is sorted JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def config_dict(config: Any) -> dict[str, Any]:
    return asdict(config)


def config_from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """`cls(**data)`, refusing keys `cls` does not have (a typo is an error, not a default)."""
    assert is_dataclass(cls)
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} config keys: {', '.join(sorted(unknown))}")
    return cls(**data)


def save_config(config: Any, folder: Path, name: str) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(asdict(config), indent=2, sort_keys=True))
    return path


def read_config(folder: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(folder) / name).read_text())
    return data
