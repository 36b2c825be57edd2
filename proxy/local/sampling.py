"""Request parameters for local generation: reading them, sampling, and stop strings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from proxy.errors import InvalidRequest

DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    # vLLM's extension: keep generating past EOS up to max_tokens (benchmarks).
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def params_from_body(body: dict[str, Any]) -> SamplingParams:
    """The OpenAI fields the local backend honours; others are ignored as upstreams do."""
    n = body.get("n")
    if n not in (None, 1):
        raise InvalidRequest("the local backend generates one choice (n=1)", param="n",
                             code="unsupported_value")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequest("max_tokens must be a positive integer", param="max_tokens",
                             code="invalid_value")
    temperature = body.get("temperature")
    temperature = 1.0 if temperature is None else float(temperature)
    if not 0.0 <= temperature <= 2.0:
        raise InvalidRequest("temperature must be between 0 and 2", param="temperature",
                             code="invalid_value")
    top_p = body.get("top_p")
    top_p = 1.0 if top_p is None else float(top_p)
    if not 0.0 < top_p <= 1.0:
        raise InvalidRequest("top_p must be in (0, 1]", param="top_p", code="invalid_value")
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stops = tuple(stop)
    else:
        raise InvalidRequest("stop must be a string or an array of up to 4 strings",
                             param="stop", code="invalid_value")
    seed = body.get("seed")
    return SamplingParams(max_tokens, temperature, top_p, seed, tuple(s for s in stops if s),
                          ignore_eos=body.get("ignore_eos") is True)


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    if params.greedy:
        return None
    gen = torch.Generator(device=device)
    if params.seed is not None:
        gen.manual_seed(params.seed)
    else:
        gen.seed()
    return gen


def sample(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    """One token id from the last position's logits (1-D)."""
    if params.greedy or gen is None:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        cut = torch.cumsum(sorted_p, dim=-1) - sorted_p > params.top_p
        sorted_p[cut] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=gen).item())


class StopMatcher:
    """Finds stop strings across piece boundaries; holds back text that may begin one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.held = ""
        self.longest = max((len(s) for s in self.stops), default=0)

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string was reached)."""
        if not self.stops:
            return text, False
        buf = self.held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.held = ""
            return buf[: min(hits)], True
        keep = 0
        for n in range(min(len(buf), self.longest - 1), 0, -1):
            if any(s.startswith(buf[-n:]) for s in self.stops):
                keep = n
                break
        self.held = buf[len(buf) - keep:]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out
