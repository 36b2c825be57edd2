"""The generation loop: one thread owns the model and steps every active request in turn.

Scheduling is a round-robin token-step loop: each round gives every active
request one forward pass (its prompt the first time, one token after that),
so a long generation never holds back a short one, and a new request starts
within one round. Each request has its own KV cache and its own `Runner`
(the model and adapter of the version it was admitted with), fixed for its
whole life: a hot-swap changes which runner *new* requests get, never the
weights a running request is generated with. At most `max_active` requests
run at once; the rest wait in arrival order.

Work that must not overlap a forward pass (attaching or detaching a LoRA
adapter on the shared model) is sent to the thread with `call` and runs
between two steps. Results go back to the asyncio loop with
`call_soon_threadsafe`; the thread never touches asyncio objects directly.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from modeling.detokenize import IncrementalDetokenizer
from proxy.local.sampling import SamplingParams, StopMatcher, make_generator, sample

log = logging.getLogger("molt.local")
T = TypeVar("T")


class Runner(Protocol):
    """One servable version: a model object, and an adapter on it if any."""

    def forward(self, input_ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]: ...


@dataclass(frozen=True, slots=True)
class Piece:
    text: str


@dataclass(frozen=True, slots=True)
class Done:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Failed:
    message: str


Event = Piece | Done | Failed
Emit = Callable[[Event], None]


@dataclass(eq=False)
class GenRequest:
    prompt: list[int]
    params: SamplingParams
    runner: Runner
    emit: Emit
    cancelled: bool = False
    cache: Any = None
    generated: int = 0
    next_input: list[int] = field(default_factory=list)


class _Active:
    def __init__(self, req: GenRequest, tokenizer: Any, device: torch.device) -> None:
        self.req = req
        self.detok = IncrementalDetokenizer(tokenizer)
        self.stops = StopMatcher(req.params.stop)
        self.gen = make_generator(req.params, device)
        req.next_input = list(req.prompt)


class Engine:
    def __init__(
        self, tokenizer: Any, *, device: torch.device, eos_ids: set[int], max_context: int,
        max_active: int = 16,
    ) -> None:
        self.tokenizer = tokenizer
        self.device = device
        self.eos_ids = eos_ids
        self.max_context = max_context
        self.max_active = max_active
        self._inbox: collections.deque[GenRequest] = collections.deque()
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="molt-local-engine", daemon=True)
        self._thread.start()

    # -- the asyncio side --------------------------------------------------
    def submit(self, req: GenRequest) -> None:
        with self._wake:
            self._inbox.append(req)
            self._wake.notify()

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the engine thread between two steps; return its result."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                loop.call_soon_threadsafe(_set_exception, fut, exc)
            else:
                loop.call_soon_threadsafe(_set_result, fut, result)

        with self._wake:
            self._calls.append(job)
            self._wake.notify()
        return await fut

    @property
    def queued(self) -> int:
        return len(self._inbox)

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)

    # -- the engine thread -------------------------------------------------
    def _run(self) -> None:
        active: list[_Active] = []
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not (self._stopping or self._calls or self._inbox or active):
                        self._wake.wait()
                    if self._stopping:
                        break
                    calls = list(self._calls)
                    self._calls.clear()
                    while self._inbox and len(active) < self.max_active:
                        active.append(_Active(self._inbox.popleft(), self.tokenizer, self.device))
                for job in calls:
                    job()
                for a in list(active):
                    if a.req.cancelled or self._step(a):
                        active.remove(a)
        for a in active:
            _safe_emit(a.req, Failed("the local model server is shutting down"))
        for req in self._inbox:
            _safe_emit(req, Failed("the local model server is shutting down"))

    def _step(self, a: _Active) -> bool:
        """One forward pass for one request; True when it is finished."""
        req = a.req
        try:
            ids = torch.tensor([req.next_input], device=self.device)
            logits, req.cache = req.runner.forward(ids, req.cache)
            token = sample(logits[0, -1], req.params, a.gen)
        except (RuntimeError, ValueError, IndexError) as exc:
            log.error("local generation failed: %s", type(exc).__name__)
            _safe_emit(req, Failed(f"local generation failed: {type(exc).__name__}"))
            return True
        req.generated += 1
        req.next_input = [token]
        finish: str | None = None
        if token in self.eos_ids and not req.params.ignore_eos:
            finish = "stop"
            text = a.detok.flush()
        else:
            text = a.detok.push(token)
        out, stopped = a.stops.feed(text)
        if stopped:
            finish = "stop"
        elif finish is None and (
            req.generated >= req.params.max_tokens
            or len(req.prompt) + req.generated >= self.max_context
        ):
            finish = "length"
            out += a.stops.feed(a.detok.flush())[0]
        if finish is not None and not stopped:
            out += a.stops.flush()
        if out:
            _safe_emit(req, Piece(out))
        if finish is not None:
            _safe_emit(req, Done(finish, len(req.prompt), req.generated))
            req.cache = None
            return True
        return False


def _safe_emit(req: GenRequest, event: Event) -> None:
    try:
        req.emit(event)
    except RuntimeError:  # the event loop is gone: nobody is listening any more
        req.cancelled = True


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
