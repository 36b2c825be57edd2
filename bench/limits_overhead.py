"""CPU per request of the rate limiter (proxy/limits.py) and its ASGI middleware.

    python -m bench.limits_overhead [--n 100000]

Prints microseconds per admitted request for a key without limits, a key with
all three limits (the window grows over the run, as under a high rpm), and the
ReleaseTickets middleware around a trivial ASGI app (minus the app alone).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import timeit
from typing import Any

from proxy.auth import Principal
from proxy.limits import Limiter, ReleaseTickets
from store.keys import KeyLimits
from store.settings import LimitsSettings

BODY = {"model": "m", "messages": [{"role": "system", "content": "s" * 2000},
                                   {"role": "user", "content": "u" * 500}]}


def admit_us(principal: Principal, n: int) -> float:
    limiter = Limiter(LimitsSettings())

    def one() -> None:
        ticket = limiter.admit(principal, BODY)
        ticket.used(100)
        ticket.release()

    return min(timeit.repeat(one, number=n, repeat=3)) / n * 1e6


def middleware_us(n: int) -> float:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    async def send(_m: Any) -> None:
        return None

    async def receive() -> Any:
        return {}

    async def loop(target: Any) -> float:
        t = time.perf_counter()
        for _ in range(n):
            await target({"type": "http"}, receive, send)
        return time.perf_counter() - t

    bare = min(asyncio.run(loop(app)) for _ in range(3))
    wrapped = min(asyncio.run(loop(ReleaseTickets(app))) for _ in range(3))
    return (wrapped - bare) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    n = parser.parse_args().n
    plain = Principal("ten", "t", "agent", "key_plain")
    full = Principal("ten", "t", "agent", "key_full",
                     KeyLimits(rpm=10**9, tpm=10**12, concurrency=10**6))
    print(f"admit, key without limits: {admit_us(plain, n):.2f} us")
    print(f"admit, rpm + tpm + concurrency: {admit_us(full, n):.2f} us")
    print(f"ReleaseTickets middleware: {middleware_us(n):.2f} us")


if __name__ == "__main__":
    main()
