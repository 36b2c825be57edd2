"""How fast and how small a `molt proxy` starts, and what its first skill retrieval costs.

    python -m bench.proxy_startup [--runs 3]

For each case (skills off; skills on with the seed skills) it starts the fast
fake upstream once and then, `--runs` times, a fresh `molt proxy` process on a
blank data folder (routes `base_url` only: no local model) and reports:
- startup to healthy: from spawning the process to the first 200 of /healthz;
- RSS (VmRSS from /proc) and CPU seconds of the process at that moment (on a
  busy machine CPU seconds say more than wall time);
- whether torch is loaded (libtorch mapped into the process, /proc/PID/maps);
- the first chat request's latency, then a second one with another task and a
  third that continues the first's agent loop (skills on: the first pays the index and the
  embedding model; the second embeds one query; the third is a cache hit),
  and RSS after them.

molt's own modules are byte-compiled first, as `pip install` does for a
deployment (a checkout run with PYTHONDONTWRITEBYTECODE=1 compiles them on
every start instead: add `--no-compile` to measure that).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.proxy_overhead import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("store", "modeling", "proxy", "evolver", "trainer", "molt", "bench")
SKILLS_OFF = "[skills]\nenabled = false\n"
SKILLS_ON = "[skills]\nenabled = true\n"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def torch_loaded(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def chat(url: str, task: str, after: list[dict[str, Any]] | None = None) -> float:
    """One non-streamed chat request (`after`: the agent loop's turns since the task); ms."""
    messages = [{"role": "system", "content": "You are an agent."},
                {"role": "user", "content": task}, *(after or [])]
    req = urllib.request.Request(
        url, data=json.dumps({"model": "bench", "messages": messages}).encode(),
        headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as r:
        assert r.status == 200, r.status
        r.read()
    return (time.perf_counter() - t0) * 1000


@dataclass
class Run:
    healthy_s: float
    rss_mb: float
    cpu_s: float
    torch_at_start: bool
    requests_ms: list[float] = field(default_factory=list)
    first_cpu_s: float = 0.0  # the process's CPU seconds spent on the first request
    rss_after_mb: float = 0.0
    torch_after: bool = False


FIRST = "Book a table for two at the harbour restaurant tonight."
SECOND = "Send Ann the quarterly report as a PDF."
# The first task's next step: a tool call and its result (the same task: a cache hit)
CONTINUATION: list[dict[str, Any]] = [
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "book_table", "arguments": '{"people": 2}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "booked for 20:00"},
]


def one_run(skills: str, up_port: int) -> Run:
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="molt-startup-"))
    cfg = tmp / "molt.toml"
    cfg.write_text(
        f'data_dir = "{tmp}/data"\n{skills}[server]\nport = {port}\n'
        f'[store]\nurl = "sqlite+aiosqlite:///{tmp}/molt.db"\n[evolver]\nenabled = false\n'
        f'[[models]]\nalias = "bench"\nbase_url = "http://127.0.0.1:{up_port}/v1"\n')
    env = {**os.environ, "MOLT_CONFIG": str(cfg)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "molt", "proxy", "--log-level", "warning"],
                            env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        while not healthy(base + "/healthz"):
            if proc.poll() is not None:
                raise RuntimeError(f"molt proxy exited with {proc.returncode}")
            if time.perf_counter() - t0 > 120:
                raise RuntimeError("molt proxy did not become healthy in 120 s")
            time.sleep(0.01)
        run = Run(time.perf_counter() - t0, rss_mb(proc.pid), cpu_s(proc.pid),
                  torch_loaded(proc.pid))
        url = base + "/v1/chat/completions"
        run.requests_ms.append(chat(url, FIRST))
        run.first_cpu_s = cpu_s(proc.pid) - run.cpu_s
        run.requests_ms.append(chat(url, SECOND))
        run.requests_ms.append(chat(url, FIRST, CONTINUATION))
        run.rss_after_mb = rss_mb(proc.pid)
        run.torch_after = torch_loaded(proc.pid)
        return run
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true",
                    help="do not byte-compile molt's modules first")
    args = ap.parse_args()
    if not args.no_compile:
        for pkg in PACKAGES:
            compileall.compile_dir(ROOT / pkg, quiet=1)
    up_port = free_port()
    up = subprocess.Popen([sys.executable, "-m", "bench.fast_upstream", "--port", str(up_port)])
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models")
        head = ("skills", "healthy s", "RSS MB", "CPU s", "torch", "1st req ms", "1st req CPU s",
                "2nd req ms", "3rd req ms", "RSS after MB", "torch after")
        print(" | ".join(head))
        print(" | ".join("---" for _ in head))
        for name, skills in (("off", SKILLS_OFF), ("on", SKILLS_ON)):
            runs = [one_run(skills, up_port) for _ in range(args.runs)]
            for r in runs:
                print(" | ".join([name, f"{r.healthy_s:.2f}", f"{r.rss_mb:.0f}", f"{r.cpu_s:.2f}",
                                  str(r.torch_at_start), f"{r.requests_ms[0]:.0f}",
                                  f"{r.first_cpu_s:.2f}"] + [f"{x:.0f}" for x in r.requests_ms[1:]]
                                 + [f"{r.rss_after_mb:.0f}", str(r.torch_after)]))
            print(" | ".join([f"{name} median", f"{statistics.median(r.healthy_s for r in runs):.2f}",
                              f"{statistics.median(r.rss_mb for r in runs):.0f}",
                              f"{statistics.median(r.cpu_s for r in runs):.2f}", "",
                              f"{statistics.median(r.requests_ms[0] for r in runs):.0f}",
                              f"{statistics.median(r.first_cpu_s for r in runs):.2f}"]
                             + [f"{statistics.median(r.requests_ms[i] for r in runs):.0f}"
                                for i in (1, 2)]
                             + [f"{statistics.median(r.rss_after_mb for r in runs):.0f}", ""]))
    finally:
        up.terminate()
        up.wait(30)


if __name__ == "__main__":
    main()
