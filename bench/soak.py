"""Soak: mixed traffic through a real `molt serve` for a while; is every turn recorded?

    python -m bench.soak [--minutes 30] [--concurrency 8] [--tenants 3] [--spool]

Starts a fake upstream with a good and a faulty route (aiohttp, loopback), then
`molt serve` as its own process with one agent key per tenant. Traffic mixes:
plain and streamed calls, streams the client drops half way, calls to the faulty
route (HTTP 500, a 200 with a body that is not JSON, odd chunks, a stream cut
before `[DONE]`), and poison inputs (NaN, 1e999, NUL characters, lone
surrogates, an over-long session id, an over-long model name, deep nesting,
wrong shapes). Every response that names a turn (`x-molt-turn-id`) counts as
sent; at the end molt is stopped with SIGTERM and the store is read back.

Reported every `--every` seconds: molt's RSS, the recorder queue depth from
`/healthz`, and turns sent vs recorded per tenant. The target: no turn lost, RSS
flat after warm-up. Figures go to stdout and, with `--out`, to a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.proxy_overhead import free_port, wait_http

# -- the fake upstream ------------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "soak", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


GOOD_BODY = json.dumps({
    "id": "chatcmpl-soak", "object": "chat.completion", "created": 1700000000, "model": "soak",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine " * 10},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22},
}).encode()
GOOD_STREAM = [_chunk({"role": "assistant", "content": ""})] + [
    _chunk({"content": f"w{i} "}) for i in range(18)] + [_chunk({}, "stop"), b"data: [DONE]\n\n"]

# What a faulty upstream does, one of these per request, in turn.
FAULTS = ("http500", "not_json", "odd_chunks", "cut_stream", "choices_number", "usage_text")


def upstream_app() -> web.Application:
    counter = {"n": 0}

    async def good(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.Response(body=GOOD_BODY, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in GOOD_STREAM:
            await resp.write(piece)
            await asyncio.sleep(0.002)
        await resp.write_eof()
        return resp

    async def faulty(request: web.Request) -> web.StreamResponse:
        await request.read()
        counter["n"] += 1
        fault = FAULTS[counter["n"] % len(FAULTS)]
        if fault == "http500":
            return web.json_response({"error": {"message": "upstream broke"}}, status=500)
        if fault == "not_json":
            return web.Response(body=b"<html>gateway</html>", content_type="application/json")
        if fault == "choices_number":
            return web.Response(body=b'{"choices": 5, "model": "soak"}', content_type="application/json")
        if fault == "usage_text":
            return web.Response(
                body=json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                 "content": "x"}}], "usage": {"prompt_tokens": "many"}}).encode(),
                content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if fault == "odd_chunks":
            await resp.write(b'data: {"choices":[{"index":0,"delta":"oops"}]}\n\n')
            await resp.write(b'data: {"choices": 5}\n\ndata: [DONE]\n\n')
        else:  # cut_stream
            await resp.write(GOOD_STREAM[0] + GOOD_STREAM[1])
        await resp.write_eof()
        return resp

    async def health(_r: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/good/v1/chat/completions", good)
    app.router.add_post("/faulty/v1/chat/completions", faulty)
    return app


# -- traffic -----------------------------------------------------------------

DEEP = b"[" * 5000 + b'"x"' + b"]" * 5000

POISON_BODIES: list[bytes] = [
    b'{"model": "good", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b'{"model": "good", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}',
    json.dumps({"model": "good", "messages": [{"role": "user", "content": "nul\u0000here"}]}).encode(),
    b'{"model": "good", "messages": [{"role": "user", "content": "lone \\ud800 surrogate"}]}',
    json.dumps({"model": "g" * 300, "messages": [{"role": "user", "content": "long model"}]}).encode(),
    b'{"model": "good", "messages": [{"role": "user", "content": ' + DEEP + b"}]}",
    json.dumps({"model": "good", "messages": [{"role": "user", "content": "x"}], "functions": 5}).encode(),
    json.dumps({"model": "good", "messages": [{"role": "assistant", "tool_calls": 7}]}).encode(),
    b'{"model": "good", "messages": [{"role": "user", "content": "cut',
]


class Tally:
    def __init__(self) -> None:
        self.sent: dict[str, set[str]] = defaultdict(set)
        self.statuses: dict[int, int] = defaultdict(int)
        self.kinds: dict[str, int] = defaultdict(int)
        self.client_errors = 0


async def one_request(
    http: aiohttp.ClientSession, url: str, key: str, tenant: str, tally: Tally, rng: random.Random,
) -> None:
    kind = rng.choices(
        ["plain", "stream", "disconnect", "faulty", "faulty_stream", "poison", "long_session"],
        weights=[30, 25, 10, 10, 10, 10, 5])[0]
    tally.kinds[kind] += 1
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    msgs = [{"role": "user", "content": f"task {rng.randrange(10**6)} for {tenant}"}]
    body: bytes
    if kind == "poison":
        body = rng.choice(POISON_BODIES)
    else:
        model = "faulty" if kind.startswith("faulty") else "good"
        stream = kind in ("stream", "disconnect", "faulty_stream")
        body = json.dumps({"model": model, "messages": msgs, "stream": stream}).encode()
        if kind == "long_session":
            headers["X-Session-Id"] = "s" * 400
        elif rng.random() < 0.5:
            headers["X-Session-Id"] = f"{tenant}-run-{rng.randrange(50)}"
    try:
        async with http.post(url, data=body, headers=headers) as r:
            tally.statuses[r.status] += 1
            turn = r.headers.get("x-molt-turn-id")
            if kind == "disconnect":
                await r.content.readany()
                r.close()  # the client leaves mid-stream
            else:
                await r.read()
            if turn:
                tally.sent[tenant].add(turn)
    except (TimeoutError, aiohttp.ClientError):
        tally.client_errors += 1


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def recorded(db_path: Path) -> dict[str, set[str]]:
    """Turn ids in the store, by tenant name."""
    con = sqlite3.connect(db_path, timeout=30)
    try:
        names = dict(con.execute("select id, name from tenants").fetchall())
        rows = con.execute("select id, tenant_id from turns").fetchall()
    finally:
        con.close()
    out: dict[str, set[str]] = defaultdict(set)
    for turn_id, tid in rows:
        out[names.get(tid, tid)].add(turn_id)
    return out


def molt_cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "molt", *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def start_molt(args: argparse.Namespace, work: Path) -> tuple[subprocess.Popen[bytes], list[
        subprocess.Popen[bytes]], dict[str, str], dict[str, str], str]:
    """The fake upstream and `molt serve`, each its own process; one agent key per tenant."""
    up_port, molt_port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "bench.soak", "--serve-upstream",
                                 str(up_port)])
    cfg = work / "molt.toml"
    cfg.write_text(
        f'data_dir = "{work}/data"\n[server]\nport = {molt_port}\n'
        f'[store]\nurl = "sqlite+aiosqlite:///{work}/molt.db"\n'
        + ('[recorder]\nspool = true\n' if args.spool else '')
        + '[skills]\nenabled = false\n[evolver]\nenabled = false\n'
        f'[[models]]\nalias = "good"\nbase_url = "http://127.0.0.1:{up_port}/good/v1"\n'
        'timeout_s = 10\n'
        f'[[models]]\nalias = "faulty"\nbase_url = "http://127.0.0.1:{up_port}/faulty/v1"\n'
        'timeout_s = 10\n')
    env = {**os.environ, "MOLT_CONFIG": str(cfg), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    keys = {f"tenant{i}": json.loads(molt_cli(env, "keys", "create", "--tenant", f"tenant{i}",
                                              "--json"))["key"] for i in range(args.tenants)}
    with (work / "molt.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "molt", "serve", "--log-level", "warning"],
                                env=env, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{molt_port}"
    wait_http(f"http://127.0.0.1:{up_port}/health")
    wait_http(base + "/healthz")
    return proc, [upstream], keys, env, base


async def drive(args: argparse.Namespace, base: str, keys: dict[str, str], pid: int) -> tuple[
        Tally, list[dict[str, Any]]]:
    tenants = sorted(keys)
    tally = Tally()
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.minutes * 60
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async def worker(i: int) -> None:
            rng = random.Random(args.seed * 1000 + i)
            while time.monotonic() < deadline:
                tenant = tenants[i % len(tenants)]
                await one_request(http, base + "/v1/chat/completions", keys[tenant], tenant,
                                  tally, rng)

        async def sampler() -> None:
            while time.monotonic() < deadline:
                await asyncio.sleep(min(args.every, max(0.0, deadline - time.monotonic())))
                try:
                    async with http.get(base + "/healthz") as r:
                        health = await r.json()
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    health = {}
                rec = health.get("recorder")
                s = {"t_s": round(time.monotonic() - started, 1), "rss_mb": round(rss_mb(pid), 1),
                     "queue": rec.get("queue") if isinstance(rec, dict) else health.get(
                         "recorder_queue"),
                     "health": health.get("status"),
                     "sent": sum(len(v) for v in tally.sent.values())}
                samples.append(s)
                print(json.dumps(s), flush=True)

        await asyncio.gather(sampler(), *(worker(i) for i in range(args.concurrency)))
    return tally, samples


def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    proc, others, keys, _env, base = start_molt(args, work)
    try:
        tally, samples = asyncio.run(drive(args, base, keys, proc.pid))
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            rc: int | None = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            rc = None
            proc.kill()
        stop_s = time.monotonic() - t0
    finally:
        for p in (proc, *others):
            if p.poll() is None:
                p.kill()
    got = recorded(work / "molt.db")
    per_tenant = {t: {"sent": len(tally.sent[t]), "recorded": len(tally.sent[t] & got[t]),
                      "lost": len(tally.sent[t] - got[t])} for t in sorted(keys)}
    warm = [s["rss_mb"] for s in samples if s["t_s"] >= args.minutes * 60 * 0.25]
    return {
        "minutes": args.minutes, "concurrency": args.concurrency, "spool": args.spool,
        "requests": sum(tally.kinds.values()), "kinds": dict(tally.kinds),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "client_errors": tally.client_errors, "per_tenant": per_tenant,
        "lost": sum(v["lost"] for v in per_tenant.values()),
        "rss_mb": {"first": samples[0]["rss_mb"] if samples else None,
                   "after_warmup_min": min(warm) if warm else None,
                   "after_warmup_max": max(warm) if warm else None,
                   "last": samples[-1]["rss_mb"] if samples else None},
        "sigterm_exit": rc, "sigterm_seconds": round(stop_s, 2), "samples": samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--tenants", type=int, default=3)
    ap.add_argument("--every", type=float, default=30, help="seconds between samples")
    ap.add_argument("--spool", action="store_true", help="run with [recorder] spool = true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--serve-upstream", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_upstream is not None:
        web.run_app(upstream_app(), host="127.0.0.1", port=args.serve_upstream, print=None,
                    access_log=None)
        return
    with tempfile.TemporaryDirectory(prefix="molt-soak-") as d:
        report = soak(args, Path(d))
    summary = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    sys.exit(0 if report["lost"] == 0 else 1)


if __name__ == "__main__":
    main()
