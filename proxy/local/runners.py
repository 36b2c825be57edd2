"""Servable versions of the local model: runners, and the loader the version tracker drives.

A LoRA version is served one of two ways (the route's `lora_mode`):
- merged (default up to 1B parameters): its own copy of the base with the
  adapter merged in, built on a worker thread while the old version serves;
  the engine thread only ever sees finished model objects, so a swap does not
  pause generation, and generation runs at the base model's speed;
- shared: an adapter on the one peft-wrapped base (`LoraHost`); each forward
  pass names its adapter, and attaching or detaching happens on the engine
  thread between two steps (generation pauses while peft injects it), so no
  running request ever sees its weights change. One base in memory.
Delta and full-weight versions are always separate model objects; a delta version
with trained TTT layers is a `TTTRunner`, whose fast weights live per session
(proxy/local/ttt_sessions.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import torch

from modeling.loading import (
    LoadedBase,
    LoadError,
    LoraHost,
    forward_step,
    load_full,
    load_merged_lora,
    load_with_delta,
    parameter_count,
    read_lora,
)
from modeling.ttt import TTTError, has_ttt, load_version
from proxy.errors import UpstreamError
from proxy.local.engine import Engine
from proxy.local.ttt_sessions import TTTRunner
from store.registry import VersionMeta


class LoraRunner:
    """Rows of the shared (peft-wrapped) base model, with one adapter or none."""

    def __init__(self, host: LoraHost, adapter: str | None) -> None:
        self.host = host
        self.adapter = adapter

    def forward(self, input_ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        return forward_step(self.host.model_for(self.adapter), input_ids, cache)


class ModelRunner:
    """A version with weights of its own (a delta applied, or full weights)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def forward(self, input_ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        return forward_step(self.model, input_ids, cache)


Runner = LoraRunner | ModelRunner | TTTRunner


class LocalLoader:
    """Loads registry versions into the local engine (see `proxy.upstream.versions.Loader`)."""

    MERGE_UP_TO = 1_000_000_000  # parameters, for lora_mode "auto"

    def __init__(self, engine: Engine, base: LoadedBase, lora_mode: str = "auto") -> None:
        self.engine = engine
        self.base_model = base
        self.host = LoraHost(base)
        self.merge = lora_mode == "merged" or (
            lora_mode == "auto" and parameter_count(base) <= self.MERGE_UP_TO)
        self._n = 0

    def base(self) -> Runner:
        return LoraRunner(self.host, None)

    async def open(self, meta: VersionMeta, path: Path) -> Runner:
        try:
            if meta.kind == "lora" and self.merge:
                return ModelRunner(await asyncio.to_thread(load_merged_lora, self.base_model, path))
            if meta.kind == "lora":
                files = await asyncio.to_thread(read_lora, path, self.base_model.device)
                self._n += 1
                adapter = f"{meta.version}_{self._n}"
                await self.engine.call(lambda: self.host.attach(adapter, files))
                return LoraRunner(self.host, adapter)
            if meta.kind == "ttt_delta" and has_ttt(path):
                # trained TTT layers: per-session fast weights (proxy/local/ttt_sessions.py)
                model, ttt = await asyncio.to_thread(load_version, self.base_model, path)
                return TTTRunner(model, ttt)
            if meta.kind == "ttt_delta":
                return ModelRunner(await asyncio.to_thread(load_with_delta, self.base_model, path))
            return ModelRunner(await asyncio.to_thread(load_full, self.base_model, path))
        except (LoadError, TTTError) as exc:
            raise UpstreamError(f"version {meta.version} failed to load: {exc}",
                                code="version_load_failed") from exc

    async def close(self, handle: Runner) -> None:
        if isinstance(handle, LoraRunner) and handle.adapter is not None:
            adapter = handle.adapter
            await self.engine.call(lambda: self.host.detach(adapter))
