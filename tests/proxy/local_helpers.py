"""What the local-backend tests share: molt serving the tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai


def start_local(molt_factory: Any, base_dir: Path, lora_mode: str = "auto", **extra: Any) -> Any:
    """molt with one local alias `tiny` (skills off: the prompts must be exactly these)."""
    return molt_factory(models=[{"alias": "tiny", "local": str(base_dir), "lora_mode": lora_mode}],
                        skills={"enabled": False}, **extra)


def client(m: Any, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=m.base_url, api_key="x", max_retries=0, **kw)


def backend(m: Any) -> Any:
    return m.state.upstreams.resolve("tiny")[2]
