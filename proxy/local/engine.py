"""The generation loop: one thread owns the model and steps every active request in turn.

Scheduling is a round-robin token-step loop: each round gives every active
request one forward pass (its prompt the first time, one token after that),
so a long generation never holds back a short one, and a new request starts
within one round. Each request has its own KV cache and its own `Runner`
(the model and adapter of the version it was admitted with), fixed for its
whole life: a hot-swap changes which runner *new* requests get, never the
weights a running request is generated with. At most `max_active` requests
run at once; the rest wait in arrival order.

Failures stay with the request that caused them: any `Exception` raised while
stepping one request (a forward pass, sampling, detokenizing, a warning
turned into an error) ends that request with `Failed(kind="error")` and the
loop goes on with the others. The thread is supervised: if it dies anyway
(a `BaseException` that is not an `Exception`, or a bug in the loop itself),
every request it holds or that is waiting fails at once with
`Failed(kind="dead")`, later submissions fail as they arrive, and `dead`
says why, for `/healthz`. A dead engine is not restarted: the model's state
is unknown, so the process reports itself unhealthy and is replaced.

A request the asyncio side gives up on (its deadline passed, its client went
away) is marked `cancelled`; the engine drops it before its next step, or
before admitting it when it is still waiting.

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
from typing import Any, Literal, Protocol, TypeVar

import torch

from modeling.detokenize import IncrementalDetokenizer
from proxy.local.sampling import SamplingParams, StopMatcher, make_generator, sample

log = logging.getLogger("molt.local")
T = TypeVar("T")


class Runner(Protocol):
    """One servable version: a model object, and an adapter on it if any."""

    def forward(self, input_ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]: ...


class EngineStopped(RuntimeError):
    """Work handed to an engine whose thread has ended (died or stopped)."""


@dataclass(frozen=True, slots=True)
class Piece:
    text: str


@dataclass(frozen=True, slots=True)
class Done:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


FailKind = Literal["error", "timeout", "dead", "shutdown"]


@dataclass(frozen=True, slots=True)
class Failed:
    message: str
    # error: this request failed; timeout: its deadline passed; dead: the engine
    # thread died; shutdown: the server is stopping.
    kind: FailKind = "error"


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


@dataclass(frozen=True, slots=True)
class _Call:
    run: Callable[[], None]
    fail: Callable[[BaseException], None]


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
        self._calls: collections.deque[_Call] = collections.deque()
        self._active: list[_Active] = []
        self._wake = threading.Condition()
        self._stopping = False
        # Why the thread died (None while it runs, or after an orderly stop).
        self.dead: str | None = None
        self._ended = False
        self.failed_requests = 0
        self._thread = threading.Thread(target=self._run, name="molt-local-engine", daemon=True)
        self._thread.start()

    # -- the asyncio side --------------------------------------------------
    def submit(self, req: GenRequest) -> None:
        """Queue a request; on an engine that has ended it fails at once (an event, as always)."""
        with self._wake:
            if not self._ended:
                self._inbox.append(req)
                self._wake.notify()
                return
        _safe_emit(req, self._ended_event())

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the engine thread between two steps; return its result."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def fail(exc: BaseException) -> None:
            loop.call_soon_threadsafe(_set_exception, fut, exc)

        def job() -> None:
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                fail(exc)
            else:
                loop.call_soon_threadsafe(_set_result, fut, result)

        with self._wake:
            if self._ended:
                raise EngineStopped(self._ended_event().message)
            self._calls.append(_Call(job, fail))
            self._wake.notify()
        return await fut

    @property
    def queued(self) -> int:
        """Requests waiting to be admitted."""
        return len(self._inbox)

    @property
    def running(self) -> int:
        """Requests admitted and being stepped."""
        return len(self._active)

    @property
    def alive(self) -> bool:
        return self.dead is None and self._thread.is_alive()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def _ended_event(self) -> Failed:
        if self.dead is not None:
            return Failed(f"the local model engine stopped ({self.dead}); molt must be restarted",
                          "dead")
        return Failed("the local model server is shutting down", "shutdown")

    # -- the engine thread -------------------------------------------------
    def _run(self) -> None:
        try:
            with torch.inference_mode():
                self._loop()
        except BaseException as exc:  # the supervisor: record it, fail everyone
            self.dead = type(exc).__name__
            log.critical("the local model engine thread died (%s); failing its requests",
                         self.dead, exc_info=exc)
        self._end()

    def _loop(self) -> None:
        active = self._active
        while True:
            with self._wake:
                while not (self._stopping or self._calls or self._inbox or active):
                    self._wake.wait()
                if self._stopping:
                    return
                calls = list(self._calls)
                self._calls.clear()
                admit: list[GenRequest] = []
                while self._inbox and len(active) + len(admit) < self.max_active:
                    req = self._inbox.popleft()
                    if not req.cancelled:
                        admit.append(req)
            for job in calls:
                job.run()
            for req in admit:
                self._admit(req)
            for a in list(active):
                if a.req.cancelled or self._step(a):
                    a.req.cache = None
                    active.remove(a)

    def _end(self) -> None:
        """The thread is leaving: nothing more is accepted; everything held fails now."""
        with self._wake:
            self._ended = True
            pending = [a.req for a in self._active] + list(self._inbox)
            calls = list(self._calls)
            self._active.clear()
            self._inbox.clear()
            self._calls.clear()
        event = self._ended_event()
        for req in pending:
            if not req.cancelled:
                _safe_emit(req, event)
        for job in calls:
            job.fail(EngineStopped(event.message))

    def _fail(self, req: GenRequest, exc: Exception) -> None:
        self.failed_requests += 1
        name = type(exc).__name__
        log.error("local generation failed for one request (%s); the others go on", name,
                  exc_info=exc)
        _safe_emit(req, Failed(f"local generation failed ({name}); other requests are unaffected"))

    def _admit(self, req: GenRequest) -> None:
        try:
            self._active.append(_Active(req, self.tokenizer, self.device))
        except Exception as exc:  # noqa: BLE001 - any failure belongs to this request alone
            self._fail(req, exc)

    def _step(self, a: _Active) -> bool:
        """One forward pass for one request; True when it is finished (or failed)."""
        try:
            return self._advance(a)
        except Exception as exc:  # noqa: BLE001 - any failure belongs to this request alone
            self._fail(a.req, exc)
            return True

    def _advance(self, a: _Active) -> bool:
        req = a.req
        ids = torch.tensor([req.next_input], device=self.device)
        logits, req.cache = req.runner.forward(ids, req.cache)
        token = sample(logits[0, -1], req.params, a.gen)
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
        if out or req.generated == 1:  # the first step always reports: the prompt went through
            _safe_emit(req, Piece(out))
        if finish is not None:
            _safe_emit(req, Done(finish, len(req.prompt), req.generated))
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
