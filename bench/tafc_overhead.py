"""What TAFC adds on the hot path: tool-calling requests through molt, TAFC off, function, parameter.

    python -m bench.tafc_overhead [--requests 1000] [--concurrency 1,16]

Starts the fast fake upstream (bench/fast_upstream.py: it answers a request
with tools with two parallel tool calls written as its schemas ask, `think`
first where TAFC added it) and `molt serve` (recording on, skills off) as
separate processes. For each mode (non-streamed, streamed over 20 chunks) and
concurrency it sends the same request with tools: directly to the upstream,
then through molt with the tenant's TAFC off, in function mode and in
parameter mode (switched through `/admin/tenants/default/settings`). It
reports p50/p99 latency, the p50 latency molt adds over direct, what TAFC
adds over TAFC off, p50 time to first byte, and molt's CPU time per request
(read from /proc: molt's own work, augmenting, stripping and recording
included). Every proxied answer is checked: the agent gets its own tools'
arguments, never a `think`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.proxy_overhead import cpu_seconds, free_port, pct, wait_http

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "book_room", "description": "Book a meeting room.",
        "parameters": {"type": "object", "properties": {
            "room": {"type": "string", "description": "Room name."},
            "date": {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$",
                     "description": "Day of the booking; the slot is on this day."},
            "slot": {"type": "string", "enum": ["morning", "afternoon", "evening"]},
            "people": {"type": "integer", "minimum": 1, "maximum": 40},
        }, "required": ["room", "date", "slot"]}}},
    {"type": "function", "function": {
        "name": "notify", "description": "Send a notification.",
        "parameters": {"type": "object", "properties": {
            "to": {"type": "array", "items": {"type": "string", "format": "email"}},
            "text": {"type": "string"},
        }, "required": ["to", "text"]}}},
]
BODY = {"model": "bench", "tools": TOOLS, "messages": [
    {"role": "system", "content": "You are a bench."},
    {"role": "user", "content": "Book the blue room tomorrow morning for 6 and tell the team."}]}


def _check(raw: bytes, stream: bool) -> None:
    """The agent sees no think: not in a streamed delta, not in a completion's arguments."""
    text = raw.decode()
    if stream:
        args = "".join(
            tc.get("function", {}).get("arguments") or ""
            for line in text.splitlines() if line.startswith("data: {")
            for ch in json.loads(line[6:]).get("choices", [])
            for tc in (ch.get("delta") or {}).get("tool_calls") or [])
    else:
        msg = json.loads(text)["choices"][0]["message"]
        args = "".join(tc["function"]["arguments"] for tc in msg.get("tool_calls") or [])
    if "think" in args or "book_room" not in text:
        raise AssertionError(f"the agent got what molt added: {args[:200]}")


async def load(url: str, stream: bool, n: int, conc: int,
               check: bool) -> tuple[float, list[float], list[float]]:
    lat: list[float] = []
    ttfb: list[float] = []
    body = dict(BODY, stream=stream)
    queue = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def worker() -> None:
            for i in queue:
                t0 = time.perf_counter()
                async with s.post(url, json=body) as r:
                    first = None
                    parts = []
                    async for piece in r.content.iter_any():
                        if first is None:
                            first = time.perf_counter()
                        parts.append(piece)
                    assert r.status == 200, r.status
                t1 = time.perf_counter()
                if check and i % 50 == 0:
                    _check(b"".join(parts), stream)
                lat.append(t1 - t0)
                ttfb.append((first or t1) - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        wall = time.perf_counter() - t0
    return wall, lat, ttfb


async def set_tafc(base: str, mode: str) -> None:
    async with aiohttp.ClientSession() as s, s.put(
            f"{base}/admin/tenants/default/settings", json={"tafc": {"mode": mode, "tau": 0.6}}) as r:
        assert r.status == 200, await r.text()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", default="1,16")
    args = ap.parse_args()
    up_port, molt_port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="molt-bench-"))
    cfg = tmp / "molt.toml"
    cfg.write_text(
        f'[server]\nport = {molt_port}\n[store]\nurl = "sqlite+aiosqlite:///{tmp}/bench.db"\n'
        '[skills]\nenabled = false\n[evolver]\nenabled = false\n'
        f'[[models]]\nalias = "bench"\nbase_url = "http://127.0.0.1:{up_port}/v1"\n'
    )
    env = {**os.environ, "MOLT_CONFIG": str(cfg), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    up = subprocess.Popen([sys.executable, "-m", "bench.fast_upstream", "--port", str(up_port)])
    molt = subprocess.Popen([sys.executable, "-m", "molt", "serve", "--log-level", "warning"],
                            env=env, cwd=tmp)
    base = f"http://127.0.0.1:{molt_port}"
    rows = []
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models")
        wait_http(f"{base}/healthz")
        direct = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        proxied = f"{base}/v1/chat/completions"
        for mode in ("off", "function", "parameter"):  # warm-up, and a check of each mode
            asyncio.run(set_tafc(base, mode))
            for stream in (False, True):
                asyncio.run(load(proxied, stream, 100, 4, check=True))
        for stream in (False, True):
            for conc in (int(c) for c in args.concurrency.split(",")):
                _, ld, _td = asyncio.run(load(direct, stream, args.requests, conc, False))
                off_p50 = None
                for mode in ("off", "function", "parameter"):
                    asyncio.run(set_tafc(base, mode))
                    c0 = cpu_seconds(molt.pid)
                    wp, lp, tp = asyncio.run(load(proxied, stream, args.requests, conc, True))
                    cpu_ms = (cpu_seconds(molt.pid) - c0) / args.requests * 1000
                    off_p50 = pct(lp, .5) if off_p50 is None else off_p50
                    rows.append((
                        "stream" if stream else "json", conc, mode, args.requests / wp,
                        pct(ld, .5), pct(lp, .5), pct(lp, .99), pct(lp, .5) - pct(ld, .5),
                        pct(lp, .5) - off_p50, statistics.median(tp) * 1000, cpu_ms))
    finally:
        molt.terminate()
        up.terminate()
        molt.wait(30)
        up.wait(30)
    head = ("mode", "conc", "tafc", "molt rps", "direct p50", "molt p50", "molt p99",
            "+p50 vs direct", "+p50 vs tafc off", "molt ttfb", "molt CPU ms/req")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        print(" | ".join([r[0], str(r[1]), r[2]] + [f"{x:.2f}" for x in r[3:]]))


if __name__ == "__main__":
    main()
