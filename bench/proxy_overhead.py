"""What molt adds on the hot path: the same load sent directly and through molt.

    python -m bench.proxy_overhead [--requests 2000] [--concurrency 1,16]

Starts the fast fake upstream and `molt serve` (uvloop + httptools, recording
on, skills off) as separate processes, then for each mode (non-streamed,
streamed with 20 chunks) and concurrency reports requests/s, p50/p99 latency,
p50 time to first byte, the latency molt adds, and molt's CPU time per request
(read from /proc, so it is molt's own work, recording included).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

BODY = {"model": "bench", "messages": [{"role": "system", "content": "You are a bench."},
                                       {"role": "user", "content": "Say ok twenty times."}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout

    async def probe() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(url) as r:
                return r.status < 500
        except aiohttp.ClientError:
            return False

    while time.monotonic() < deadline:
        if asyncio.run(probe()):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


async def load(url: str, stream: bool, n: int, conc: int) -> tuple[float, list[float], list[float]]:
    lat: list[float] = []
    ttfb: list[float] = []
    body = dict(BODY, stream=stream)
    queue = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def worker() -> None:
            for _ in queue:
                t0 = time.perf_counter()
                async with s.post(url, json=body) as r:
                    first = None
                    async for _piece in r.content.iter_any():
                        if first is None:
                            first = time.perf_counter()
                    assert r.status == 200, r.status
                t1 = time.perf_counter()
                lat.append(t1 - t0)
                ttfb.append((first or t1) - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        wall = time.perf_counter() - t0
    return wall, lat, ttfb


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", default="1,16")
    args = ap.parse_args()
    up_port, molt_port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="molt-bench-"))
    cfg = tmp / "molt.toml"
    cfg.write_text(
        f'[server]\nport = {molt_port}\n[store]\nurl = "sqlite+aiosqlite:///{tmp}/bench.db"\n'
        f'[[models]]\nalias = "bench"\nbase_url = "http://127.0.0.1:{up_port}/v1"\n'
    )
    env = {**os.environ, "MOLT_CONFIG": str(cfg), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    up = subprocess.Popen([sys.executable, "-m", "bench.fast_upstream", "--port", str(up_port)])
    molt = subprocess.Popen([sys.executable, "-m", "molt", "serve", "--log-level", "warning"],
                            env=env, cwd=tmp)
    rows = []
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models")
        wait_http(f"http://127.0.0.1:{molt_port}/healthz")
        direct = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        proxied = f"http://127.0.0.1:{molt_port}/v1/chat/completions"
        asyncio.run(load(proxied, False, 200, 4))  # warm-up
        asyncio.run(load(proxied, True, 200, 4))
        for stream in (False, True):
            for conc in (int(c) for c in args.concurrency.split(",")):
                wd, ld, td = asyncio.run(load(direct, stream, args.requests, conc))
                c0 = cpu_seconds(molt.pid)
                wp, lp, tp = asyncio.run(load(proxied, stream, args.requests, conc))
                cpu_ms = (cpu_seconds(molt.pid) - c0) / args.requests * 1000
                rows.append((
                    "stream" if stream else "json", conc, args.requests / wd, args.requests / wp,
                    pct(ld, .5), pct(lp, .5), pct(lp, .5) - pct(ld, .5), pct(lp, .99) - pct(ld, .99),
                    statistics.median(td) * 1000, statistics.median(tp) * 1000, cpu_ms,
                ))
    finally:
        molt.terminate()
        up.terminate()
        molt.wait(30)
        up.wait(30)
    head = ("mode", "conc", "direct rps", "molt rps", "direct p50", "molt p50", "+p50 ms",
            "+p99 ms", "direct ttfb", "molt ttfb", "molt CPU ms/req")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        print(" | ".join([r[0], str(r[1])] + [f"{x:.2f}" for x in r[2:]]))


if __name__ == "__main__":
    main()
