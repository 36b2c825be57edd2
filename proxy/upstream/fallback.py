"""A route's fallbacks: other aliases tried in order when its upstream fails.

Any route kind may fall back to any other (a base_url route to a litellm one,
a local model to a remote one). A fallback is tried only when the failure
happened before the upstream answered (a streamed reply that broke midway
cannot be taken back) and was not the request's own fault: 400, 413 and 422
mean the request itself is refused, and a fallback would refuse it too. The
call goes to the fallback under its own alias (its model name, its key), and
no pinned version carries over. The turn records the upstream that answered.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from proxy.errors import UpstreamError
from proxy.upstream.base import Backend, UpstreamCall, UpstreamResponse

log = logging.getLogger("molt.proxy.upstream")

# The upstream refused the request itself: every other upstream would too.
REQUEST_FAULTS = frozenset({400, 413, 422})


def worth_falling_back(exc: UpstreamError) -> bool:
    return exc.status not in REQUEST_FAULTS


class FallbackBackend:
    """The backend of `alias`, then each `(alias, backend)` of its fallbacks."""

    def __init__(self, alias: str, primary: Backend,
                 fallbacks: Sequence[tuple[str, Backend]]) -> None:
        self.alias = alias
        self.primary = primary
        self.fallbacks = list(fallbacks)
        self.name = primary.name

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        try:
            return await self.primary.send(call)
        except UpstreamError as exc:
            if not worth_falling_back(exc):
                raise
            failures = [(self.alias, exc)]
        for alias, backend in self.fallbacks:
            log.info("model %s: upstream failed (HTTP %d); trying fallback %s",
                     failures[-1][0], failures[-1][1].status, alias)
            try:
                return await backend.send(dataclasses.replace(call, alias=alias, version=None))
            except UpstreamError as exc:
                if not worth_falling_back(exc):
                    raise
                failures.append((alias, exc))
        raise _all_failed(failures)

    async def check(self) -> str:
        return await self.primary.check()

    async def aclose(self) -> None:
        """Nothing of its own: the backends it tries are closed by their owner (Upstreams)."""


def _all_failed(failures: list[tuple[str, UpstreamError]]) -> UpstreamError:
    """The last failure's kind and status, with what each alias answered."""
    last = failures[-1][1]
    message = "; ".join(f"{alias}: {exc.message}" for alias, exc in failures)
    return type(last)(f"every route failed ({message})", param=last.param, code=last.code,
                      status=last.status, type=last.type)
