"""Per-key rate limits: requests per minute, tokens per minute, requests in flight.

Each API key has its own limits (`molt keys create --rpm N --tpm N
--concurrency N`); a limit the key leaves unset is the server's `[limits]`
default, and 0 turns it off for that key. Callers without a key (the server's
`admin_key`, the open loopback mode) are not limited.

    ticket = limiter.admit(principal, body, request.scope)  # RateLimited (429) if over
    rec.on_recorded = ticket.recorded                       # the tokens it really used

or, outside an HTTP exchange, `with limiter.admit(principal, body) as ticket:
...; ticket.used(tokens)`.

Requests and tokens are counted over a sliding window of the last 60 seconds.
A request reserves an estimate of its tokens (4 characters a token, plus its
`max_tokens`) when it is admitted; when it is recorded the reservation is
replaced by the usage the upstream reported (prompt + completion). A request
is admitted into an empty token window whatever its size, so none waits
forever. Over a limit the answer is a 429 whose `retry-after` is the whole
number of seconds until the window has room (for the concurrency limit,
which frees when some request ends, 1 s).

The counts live in this process: behind a load balancer each replica limits
on its own, so a key may get up to N times its limits across N replicas.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.auth import Principal
from proxy.errors import RateLimited
from proxy.metrics import Metrics
from store.keys import KeyLimits
from store.records import TurnRecord
from store.settings import LimitsSettings

WINDOW_S = 60.0
CHARS_PER_TOKEN = 4
# Where an HTTP exchange keeps its tickets (set by the ReleaseTickets middleware).
SCOPE_KEY = "molt.tickets"


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits in force for one key; None: no limit."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    @property
    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.concurrency is not None


def effective(own: KeyLimits, default: LimitsSettings) -> Limits:
    """A key's own limit where it sets one (0: none), else the default."""
    def pick(mine: int | None, dflt: int | None) -> int | None:
        return dflt if mine is None else (mine or None)

    return Limits(pick(own.rpm, default.rpm), pick(own.tpm, default.tpm),
                  pick(own.concurrency, default.concurrency))


def _chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts: count the text ones
        return sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return 0


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A rough count of the tokens a chat request sends (no tokenizer: 4 characters a token)."""
    chars = 0
    for m in body.get("messages") or ():
        if isinstance(m, dict):
            chars += _chars(m.get("content"))
            for call in m.get("tool_calls") or ():
                if isinstance(call, dict):
                    chars += len(str((call.get("function") or {}).get("arguments") or ""))
    if body.get("tools"):
        chars += len(json.dumps(body["tools"]))
    return math.ceil(chars / CHARS_PER_TOKEN)


def completion_allowance(body: dict[str, Any]) -> int:
    """The completion tokens a request allows itself (`max_completion_tokens`, `max_tokens`)."""
    most = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return most if isinstance(most, int) and most > 0 else 0


class _Use:
    """Tokens counted at a time; zeroed once it leaves the window or is replaced."""

    __slots__ = ("at", "tokens")

    def __init__(self, at: float, tokens: int) -> None:
        self.at = at
        self.tokens = tokens


class _Bucket:
    """One key's window: admission times, token uses, and requests in flight."""

    __slots__ = ("in_flight", "requests", "tokens", "uses")

    def __init__(self) -> None:
        self.requests: deque[float] = deque()
        self.uses: deque[_Use] = deque()
        self.tokens = 0
        self.in_flight = 0

    def expire(self, now: float) -> None:
        cutoff = now - WINDOW_S
        while self.requests and self.requests[0] <= cutoff:
            self.requests.popleft()
        while self.uses and self.uses[0].at <= cutoff:
            use = self.uses.popleft()
            self.tokens -= use.tokens
            use.tokens = 0

    def add(self, use: _Use) -> None:
        self.uses.append(use)
        self.tokens += use.tokens

    def idle(self) -> bool:
        return not (self.requests or self.uses or self.in_flight)

    def rpm_wait(self, rpm: int, now: float) -> float | None:
        """Seconds until one more request fits, or None if it fits now."""
        if len(self.requests) < rpm:
            return None
        return self.requests[len(self.requests) - rpm] + WINDOW_S - now

    def tpm_wait(self, tpm: int, estimate: int, now: float) -> float | None:
        """Seconds until `estimate` more tokens fit (or the window is empty), or None if now."""
        if self.tokens == 0 or self.tokens + estimate <= tpm:
            return None
        to_free = self.tokens if estimate >= tpm else self.tokens + estimate - tpm
        freed = 0
        for use in self.uses:
            freed += use.tokens
            if freed >= to_free:
                return use.at + WINDOW_S - now
        return WINDOW_S


class Ticket:
    """One admitted request: its slot in flight and its token reservation."""

    __slots__ = ("_bucket", "_limiter", "_prompt", "_released", "_use")

    def __init__(self, limiter: Limiter | None, bucket: _Bucket | None, use: _Use | None,
                 prompt_estimate: int) -> None:
        self._limiter = limiter
        self._bucket = bucket
        self._use = use
        self._prompt = prompt_estimate
        self._released = bucket is None

    def used(self, tokens: int) -> None:
        """The tokens the request really used replace its estimate, counted from now."""
        bucket, limiter = self._bucket, self._limiter
        if bucket is None or limiter is None or self._use is None:
            return
        now = limiter.clock()
        bucket.expire(now)
        bucket.tokens -= self._use.tokens
        self._use.tokens = 0
        self._use = _Use(now, max(0, tokens))
        bucket.add(self._use)

    def recorded(self, rec: TurnRecord) -> None:
        """A finished turn's usage (the recorder calls this once the response is read)."""
        if self._use is None:
            return
        if rec.input_tokens is not None or rec.output_tokens is not None:
            self.used((rec.input_tokens or 0) + (rec.output_tokens or 0))
        elif rec.response is None:  # nothing came back: the upstream failed or the client left
            self.used(0)
        else:  # an answer without usage (a stream without include_usage): estimate it
            out = len(rec.content or "") + (len(json.dumps(rec.tool_calls)) if rec.tool_calls else 0)
            self.used(self._prompt + math.ceil(out / CHARS_PER_TOKEN))

    def release(self) -> None:
        """The request is no longer in flight (idempotent)."""
        if self._released:
            return
        self._released = True
        assert self._bucket is not None
        self._bucket.in_flight -= 1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()


UNLIMITED = Ticket(None, None, None, 0)


class Limiter:
    def __init__(self, defaults: LimitsSettings, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.defaults = defaults
        self.metrics = metrics
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        # A key's own limits -> the limits in force (few distinct values; the defaults are fixed).
        self._effective: dict[KeyLimits, Limits] = {}

    def admit(self, principal: Principal, body: dict[str, Any],
              scope: MutableMapping[str, Any] | None = None) -> Ticket:
        """Count the request in, or raise RateLimited. With an ASGI `scope`, the ticket is
        released when that exchange's response ends (ReleaseTickets); without, by its owner."""
        if principal.key_id is None:
            return UNLIMITED
        limits = self._effective.get(principal.limits)
        if limits is None:
            limits = self._effective[principal.limits] = effective(principal.limits, self.defaults)
        if not limits.any:
            return UNLIMITED
        held: list[Ticket] | None = None
        if scope is not None:
            held = scope.get(SCOPE_KEY)
            if held is None:
                raise RuntimeError("Limiter.admit with a scope needs the ReleaseTickets middleware")
        now = self.clock()
        bucket = self._bucket(principal.key_id)
        bucket.expire(now)
        prompt = estimate_prompt_tokens(body) if limits.tpm is not None else 0
        estimate = prompt + completion_allowance(body) if limits.tpm is not None else 0
        self._check(limits, bucket, estimate, now)
        if limits.rpm is not None:
            bucket.requests.append(now)
        bucket.in_flight += 1
        use = None
        if limits.tpm is not None:
            use = _Use(now, estimate)
            bucket.add(use)
        ticket = Ticket(self, bucket, use, prompt)
        if held is not None:
            held.append(ticket)
        return ticket

    def _check(self, limits: Limits, bucket: _Bucket, estimate: int, now: float) -> None:
        over: list[tuple[str, str, float]] = []
        if limits.concurrency is not None and bucket.in_flight >= limits.concurrency:
            over.append(("concurrency", f"{limits.concurrency} requests in flight", 1.0))
        if limits.rpm is not None:
            wait = bucket.rpm_wait(limits.rpm, now)
            if wait is not None:
                over.append(("rpm", f"{limits.rpm} requests per minute", wait))
        if limits.tpm is not None:
            wait = bucket.tpm_wait(limits.tpm, estimate, now)
            if wait is not None:
                over.append(("tpm", (f"{limits.tpm} tokens per minute (this request: about "
                                    f"{estimate}, used in the last minute: {bucket.tokens})"), wait))
        if not over:
            return
        retry = max(1, math.ceil(max(w for _, _, w in over)))
        if self.metrics is not None:
            for kind, _, _ in over:
                self.metrics.rate_limited.labels(kind).inc()
        raise RateLimited(
            f"Rate limit reached for this API key: {'; '.join(m for _, m, _ in over)}. "
            f"Try again in {retry} s.", retry_after_s=retry)

    def _bucket(self, key_id: str) -> _Bucket:
        bucket = self._buckets.get(key_id)
        if bucket is None:
            if len(self._buckets) >= 10_000:
                now = self.clock()
                for kid, b in list(self._buckets.items()):
                    b.expire(now)
                    if b.idle():
                        del self._buckets[kid]
            bucket = self._buckets[key_id] = _Bucket()
        return bucket


def _release(tickets: list[Ticket]) -> None:
    for t in tickets:
        t.release()
    tickets.clear()


class ReleaseTickets:
    """Pure ASGI middleware: an exchange's tickets are released as its response ends.

    They are released just before the last message of the response goes out, so
    a client that has the whole answer finds the slot free for its next request;
    and in any case when the exchange ends (an error, a client that left).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tickets: list[Ticket] = []
        scope[SCOPE_KEY] = tickets

        async def sending(message: Message) -> None:
            if (tickets and message["type"] == "http.response.body"
                    and not message.get("more_body", False)):
                _release(tickets)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _release(tickets)
