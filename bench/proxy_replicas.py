"""Throughput of 1, 2, 3 ... `molt proxy` replicas on one store, against the fast upstream.

    python -m bench.proxy_replicas [--replicas 1,2,3] [--requests 1000] [--concurrency 32]
                                   [--store-url postgresql+asyncpg://...]

Starts the fast fake upstream and N `molt proxy` processes (recording on, skills off)
sharing one store (a SQLite file by default, or --store-url), then sends the same
non-streamed load spread round-robin over the replicas from one client process (no
load balancer: it would be one more process on the same cores). Reports requests/s,
p50/p99 latency and the replicas' CPU time per request; prints the machine's core count
and load average, since on a small shared machine they decide the result.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.proxy_overhead import BODY, cpu_seconds, free_port, pct, wait_http


async def spread(urls: list[str], n: int, conc: int) -> tuple[float, list[float]]:
    lat: list[float] = []
    targets = itertools.cycle(urls)
    queue = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def worker() -> None:
            for _ in queue:
                t0 = time.perf_counter()
                async with s.post(next(targets), json=BODY) as r:
                    await r.read()
                    assert r.status == 200, r.status
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        return time.perf_counter() - t0, lat


def run(n_replicas: int, requests: int, conc: int, up_port: int, store_url: str | None,
        tmp: Path) -> tuple[float, float, float, float]:
    url = store_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        ports: set[int] = {up_port}
        for i in range(n_replicas):
            port = free_port()
            while port in ports:  # two calls may hand back the same free port
                port = free_port()
            ports.add(port)
            cfg = tmp / f"r{n_replicas}-{i}.toml"
            cfg.write_text(
                f'data_dir = "{tmp}/r{n_replicas}-{i}"\n[server]\nport = {port}\n'
                f'[store]\nurl = "{url}"\n[skills]\nenabled = false\n'
                f'[[models]]\nalias = "bench"\nbase_url = "http://127.0.0.1:{up_port}/v1"\n')
            env = {**os.environ, "MOLT_CONFIG": str(cfg), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "molt", "proxy", "--log-level", "warning"], env=env,
                cwd=tmp))
            urls.append(f"http://127.0.0.1:{port}")
        for u in urls:
            wait_http(f"{u}/healthz")
        assert all(p.poll() is None for p in procs), "a replica exited at start"
        chat = [f"{u}/v1/chat/completions" for u in urls]
        asyncio.run(spread(chat, 200, 8))  # warm-up
        c0 = sum(cpu_seconds(p.pid) for p in procs)
        wall, lat = asyncio.run(spread(chat, requests, conc))
        cpu_ms = (sum(cpu_seconds(p.pid) for p in procs) - c0) / requests * 1000
        return requests / wall, pct(lat, .5), pct(lat, .99), cpu_ms
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", default="1,2,3")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--store-url", default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="molt-replicas-"))
    up_port = free_port()
    up = subprocess.Popen([sys.executable, "-m", "bench.fast_upstream", "--port", str(up_port)])
    rows = []
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models")
        for n in (int(x) for x in args.replicas.split(",")):
            rows.append((n, *run(n, args.requests, args.concurrency, up_port, args.store_url,
                                 tmp)))
    finally:
        up.terminate()
        up.wait(30)
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}, "
          f"store: {'postgresql' if args.store_url else 'sqlite'}, "
          f"requests {args.requests}, concurrency {args.concurrency}")
    print("replicas | rps | p50 ms | p99 ms | proxy CPU ms/req")
    print("--- | --- | --- | --- | ---")
    for n, rps, p50, p99, cpu in rows:
        print(f"{n} | {rps:.0f} | {p50:.1f} | {p99:.1f} | {cpu:.2f}")


if __name__ == "__main__":
    main()
