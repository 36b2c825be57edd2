"""The judge's and the evolver's model: any OpenAI-compatible endpoint.

Point it at a provider, at a vLLM server, or at molt's own proxy (then any
configured route works, litellm ones included). Calls and tokens are counted
so that each evolution records its cost. The `openai` SDK (about a second to
import) is loaded by the first call, so a process that never calls the model
(a `molt proxy`) does not pay for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from evolver.errors import ModelCallFailed

if TYPE_CHECKING:
    import openai


@dataclass
class Cost:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


class ChatModel(Protocol):
    name: str
    cost: Cost

    async def complete(self, messages: list[dict[str, Any]], *, temperature: float = 0.0,
                       max_tokens: int = 1024, response_format: dict[str, Any] | None = None) -> str: ...


@dataclass
class OpenAICompatModel:
    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 120.0
    cost: Cost = field(default_factory=Cost)
    # calls whose structured-output request the provider refused (answered without it)
    structured_fallbacks: int = 0

    def __post_init__(self) -> None:
        self.name = self.model
        self._client: openai.AsyncOpenAI | None = None

    def client(self) -> openai.AsyncOpenAI:
        """The SDK client, made (and `openai` imported) on first use."""
        if self._client is None:
            import openai

            self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key or "none",
                                              timeout=self.timeout_s, max_retries=2)
        return self._client

    @classmethod
    def from_settings(cls, base_url: str, model: str, api_key_env: str | None) -> OpenAICompatModel:
        return cls(base_url, model, os.environ.get(api_key_env) if api_key_env else None)

    async def complete(self, messages: list[dict[str, Any]], *, temperature: float = 0.0,
                       max_tokens: int = 1024, response_format: dict[str, Any] | None = None) -> str:
        """The model's answer; with `response_format` (structured output, e.g. a JSON schema) when
        the provider takes it, else, on a 400 for it, the same call without (the prompt asks for
        the same JSON)."""
        import openai

        client = self.client()
        extra: dict[str, Any] = {"response_format": response_format} if response_format else {}
        try:
            try:
                r = await client.chat.completions.create(
                    model=self.model, messages=messages, temperature=temperature,  # type: ignore[arg-type]
                    max_tokens=max_tokens, extra_headers={"X-Turn-Type": "side"}, **extra)
            except openai.BadRequestError:
                if not extra:
                    raise
                self.structured_fallbacks += 1
                r = await client.chat.completions.create(
                    model=self.model, messages=messages, temperature=temperature,  # type: ignore[arg-type]
                    max_tokens=max_tokens, extra_headers={"X-Turn-Type": "side"})
        except openai.APIError as exc:
            raise ModelCallFailed(f"{self.model} at {self.base_url}: {type(exc).__name__}") from exc
        self.cost.calls += 1
        if r.usage:
            self.cost.input_tokens += r.usage.prompt_tokens
            self.cost.output_tokens += r.usage.completion_tokens
        return r.choices[0].message.content or ""

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
