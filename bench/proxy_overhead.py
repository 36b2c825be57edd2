"""What a proxy adds on the hot path: the same load sent directly, through molt and
through LiteLLM's own proxy, in one run.

    python -m bench.proxy_overhead [--requests 2000] [--concurrency 1,16]
                                   [--skip-litellm] [--role proxy|serve] [--out FILE]

Starts the fast fake upstream (`bench.fast_upstream`), a `molt proxy` (uvloop +
httptools, recording on, skills off; `--role serve` runs `molt serve`, the
evolver loop included) and LiteLLM's proxy (`litellm --config ...`, one worker,
from a separate virtual environment this bench creates itself under
`.bench-venvs/litellm` with `pip install litellm[proxy]==LITELLM_VERSION`; torch
is never installed there). For each mode (non-streamed; streamed, 20 chunks) and
concurrency it reports, per target: requests/s, p50/p99 latency and what the
proxy adds to direct's, p50 time to first token (first content chunk; the whole
answer when not streamed), p50/p99 inter-chunk gap, and the proxy's CPU time per
request (from /proc, the process and its children: its own work, recording
included). Then RSS at healthy and peak (VmHWM), and the ratios molt/LiteLLM and
molt/direct. The load average is printed before and after: on a shared machine
latency percentiles follow it, CPU per request much less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VERSION = "1.108.7"
BODY = {"model": "bench", "messages": [{"role": "system", "content": "You are a bench."},
                                       {"role": "user", "content": "Say ok twenty times."}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (LiteLLM may fork workers)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Summed over the process tree; `VmHWM` is each process's peak."""
    total = 0.0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


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


@dataclass
class Load:
    wall: float
    lat: list[float]  # seconds per request
    ttft: list[float]  # first content chunk (stream) or whole answer
    gaps: list[float]  # between successive received pieces of one stream


async def load(url: str, stream: bool, n: int, conc: int,
               headers: dict[str, str] | None = None) -> Load:
    lat: list[float] = []
    ttft: list[float] = []
    gaps: list[float] = []
    body = dict(BODY, stream=stream)
    queue = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def worker() -> None:
            for _ in queue:
                t0 = time.perf_counter()
                first = last = None
                async with s.post(url, json=body, headers=headers) as r:
                    async for piece in r.content.iter_any():
                        now = time.perf_counter()
                        if first is None and (not stream or b'"content":"' in piece
                                              or b'"content": "' in piece):
                            first = now
                        if last is not None:
                            gaps.append(now - last)
                        last = now
                    assert r.status == 200, r.status
                t1 = time.perf_counter()
                lat.append(t1 - t0)
                ttft.append((first or t1) - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        wall = time.perf_counter() - t0
    return Load(wall, lat, ttft, gaps)


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


@dataclass
class Row:
    target: str
    mode: str
    conc: int
    rps: float
    p50_ms: float
    p99_ms: float
    added_p50_ms: float
    added_p99_ms: float
    ttft_p50_ms: float
    gap_p50_ms: float
    gap_p99_ms: float
    cpu_ms_per_req: float | None


def litellm_venv(cache: Path) -> Path:
    """LiteLLM's proxy in its own environment (created once): never molt's dependencies."""
    exe = cache / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"creating {cache} with litellm[proxy]=={LITELLM_VERSION} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(cache)], check=True)
    subprocess.run([str(cache / "bin" / "pip"), "install", "-q",
                    f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    return exe


def start_molt(tmp: Path, up_port: int, role: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cfg = tmp / "molt.toml"
    cfg.write_text(
        f'[server]\nport = {port}\n[store]\nurl = "sqlite+aiosqlite:///{tmp}/bench.db"\n'
        f'[skills]\nenabled = false\n'
        f'[[models]]\nalias = "bench"\nbase_url = "http://127.0.0.1:{up_port}/v1"\n'
    )
    env = {**os.environ, "MOLT_CONFIG": str(cfg), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen([sys.executable, "-m", "molt", role, "--log-level", "warning"],
                            env=env, cwd=tmp)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    return proc, f"{base}/v1/chat/completions"


LITELLM_KEY = "sk-bench-" + secrets.token_hex(16)  # it refuses to start without a master key


def start_litellm(tmp: Path, up_port: int, exe: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cfg = tmp / "litellm.yaml"
    cfg.write_text(
        "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench\n"
        f"      api_base: http://127.0.0.1:{up_port}/v1\n      api_key: bench\n"
        "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
        f"general_settings:\n  master_key: {LITELLM_KEY}\n"
    )
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "DISABLE_ADMIN_UI": "True"}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.Popen([str(exe), "--config", str(cfg), "--port", str(port),
                             "--num_workers", "1"], env=env, cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/health/liveliness", timeout=180)
    return proc, f"{base}/v1/chat/completions"


def _auth(target: str) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {LITELLM_KEY}"} if target == "litellm" else None


def measure(target: str, url: str, pid: int | None, stream: bool, n: int, conc: int,
            direct: Load | None) -> tuple[Row, Load]:
    c0 = cpu_seconds(pid) if pid else 0.0
    r = asyncio.run(load(url, stream, n, conc, _auth(target)))
    cpu = (cpu_seconds(pid) - c0) / n * 1000 if pid else None
    base = direct or r
    return Row(
        target, "stream" if stream else "json", conc, n / r.wall, pct(r.lat, .5), pct(r.lat, .99),
        pct(r.lat, .5) - pct(base.lat, .5), pct(r.lat, .99) - pct(base.lat, .99),
        pct(r.ttft, .5), pct(r.gaps, .5), pct(r.gaps, .99), cpu,
    ), r


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--skip-litellm", action="store_true", help="direct and molt only")
    ap.add_argument("--role", choices=("proxy", "serve"), default="proxy",
                    help="`molt proxy` (proxy only) or `molt serve` (with the learning loops)")
    ap.add_argument("--litellm-requests", type=int, default=None,
                    help="requests per LiteLLM cell (default: --requests; it is ~20x slower)")
    ap.add_argument("--venv-cache", type=Path, default=ROOT / ".bench-venvs" / "litellm")
    ap.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    concs = [int(c) for c in args.concurrency.split(",")]
    load_before = os.getloadavg()
    up_port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="molt-bench-"))
    up = subprocess.Popen([sys.executable, "-m", "bench.fast_upstream", "--port", str(up_port)],
                          cwd=ROOT)
    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    rows: list[Row] = []
    rss: dict[str, tuple[float, float]] = {}
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models")
        procs["molt"] = start_molt(tmp, up_port, args.role)
        if not args.skip_litellm:
            procs["litellm"] = start_litellm(tmp, up_port, litellm_venv(args.venv_cache))
        start_rss = {name: rss_mb(p.pid) for name, (p, _) in procs.items()}
        for name, (_p, url) in procs.items():  # warm-up
            asyncio.run(load(url, False, 100, 4, _auth(name)))
            asyncio.run(load(url, True, 100, 4, _auth(name)))
        direct_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        for stream in (False, True):
            for conc in concs:
                drow, d = measure("direct", direct_url, None, stream, args.requests, conc, None)
                rows.append(drow)
                for name, (p, url) in procs.items():
                    n = args.litellm_requests or args.requests if name == "litellm" else args.requests
                    rows.append(measure(name, url, p.pid, stream, n, conc, d)[0])
        rss = {name: (start_rss[name], rss_mb(p.pid, "VmHWM")) for name, (p, _) in procs.items()}
    finally:
        for p, _ in procs.values():
            p.terminate()
        up.terminate()
        for p, _ in procs.values():
            p.wait(30)
        up.wait(30)
    load_after = os.getloadavg()
    head = ("target", "mode", "conc", "req/s", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms",
            "TTFT p50", "gap p50", "gap p99", "CPU ms/req")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} CPUs); molt role: {args.role}")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        cells = [r.target, r.mode, str(r.conc)] + [f"{x:.2f}" for x in (
            r.rps, r.p50_ms, r.p99_ms, r.added_p50_ms, r.added_p99_ms, r.ttft_p50_ms,
            r.gap_p50_ms, r.gap_p99_ms)] + ["-" if r.cpu_ms_per_req is None else f"{r.cpu_ms_per_req:.2f}"]
        print(" | ".join(cells))
    print()
    for name, (start, peak) in rss.items():
        print(f"{name}: RSS at healthy {start:.0f} MB, peak {peak:.0f} MB")
    cell = {(r.target, r.mode, r.conc): r for r in rows}
    print("\nmode | conc | molt/direct req/s | molt/LiteLLM req/s | LiteLLM/molt CPU per request"
          " | LiteLLM/molt added p50")
    print("--- | --- | --- | --- | --- | ---")
    for mode in ("json", "stream"):
        for conc in concs:
            m, d, lt = (cell.get((t, mode, conc)) for t in ("molt", "direct", "litellm"))
            if m is None or d is None:
                continue
            print(f"{mode} | {conc} | {_ratio(m.rps, d.rps)} | {_ratio(m.rps, lt and lt.rps)} | "
                  f"{_ratio(lt and lt.cpu_ms_per_req, m.cpu_ms_per_req)} | "
                  f"{_ratio(lt and lt.added_p50_ms, m.added_p50_ms)}")
    if args.out:
        args.out.write_text(json.dumps({
            "load_before": load_before, "load_after": load_after, "role": args.role,
            "rows": [asdict(r) for r in rows], "rss_mb": rss,
            "median_cpu_ms": statistics.median(
                [r.cpu_ms_per_req for r in rows if r.target == "molt" and r.cpu_ms_per_req] or [0]),
        }, indent=1))


if __name__ == "__main__":
    main()
