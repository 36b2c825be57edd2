"""Failures for the local engine tests: a real runner wrapped so that chosen requests misbehave.

`Faulty` wraps the runner that serves the base weights. Each request is told
apart by its prompt's text (the first forward pass of a request has no cache)
and given a tag; `behave[tag](step)` runs before each of that request's forward
passes and may raise, or wait. Every step is logged as (tag, step), so a test
can check what the engine scheduled. Nothing in the engine is replaced: the
model still computes every answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from tests.proxy.local_helpers import backend

Classify = Callable[[str], str]  # the prompt's text -> a tag
Behaviour = Callable[[int], None]


class Faulty:
    def __init__(self, inner: Any, tokenizer: Any, classify: Classify,
                 behave: dict[str, Behaviour]) -> None:
        self.inner = inner
        self.tokenizer = tokenizer
        self.classify = classify
        self.behave = behave
        self.steps: list[tuple[str, int]] = []
        self._tags: dict[int, str] = {}  # id(cache) -> tag
        self._count: dict[int, int] = {}

    def forward(self, input_ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        if cache is None:
            tag = self.classify(self.tokenizer.decode([int(t) for t in input_ids[0]]))
            step = 0
        else:
            tag = self._tags.get(id(cache), "?")
            step = self._count[id(cache)]
        self.steps.append((tag, step))
        if tag in self.behave:
            self.behave[tag](step)
        logits, cache = self.inner.forward(input_ids, cache)
        self._tags[id(cache)] = tag
        self._count[id(cache)] = step + 1
        return logits, cache

    def tags(self, tag: str) -> int:
        return sum(1 for t, _ in self.steps if t == tag)


def install(m: Any, classify: Classify, behave: dict[str, Behaviour]) -> Faulty:
    """Wrap the base-weights runner of molt `m`'s `tiny` backend (booting it first)."""
    b = backend(m)
    m.run(b.ready())
    slot = b.versions.base_slot
    faulty = Faulty(slot.handle, b.base.tokenizer, classify, behave)
    slot.handle = faulty
    return faulty


def wait_until_queued(m: Any, timeout_s: float = 30.0) -> Behaviour:
    """A behaviour for step 3 of a request: hold the engine until another request is queued
    or admitted beside it, so that both run from the next round on (the engine thread
    waits here, not the test)."""
    def behave(step: int) -> None:
        if step != 3:
            return
        engine = backend(m).engine
        deadline = time.monotonic() + timeout_s
        while engine.queued + engine.running < 2:
            if time.monotonic() > deadline:
                raise AssertionError("no second request reached the engine")
            time.sleep(0.001)
    return behave


def block_until(event: threading.Event, timeout_s: float = 60.0) -> Behaviour:
    """A behaviour for a request's first step: hold the engine thread until `event` is set."""
    def behave(step: int) -> None:
        if step == 0 and not event.wait(timeout_s):
            raise AssertionError("the test never released the engine")
    return behave
