"""Hot-swap under load: swap time, added latency, tokens/s with and without an adapter.

    python -m bench.hot_swap [--model DIR] [--clients 4] [--tokens 48] [--seconds 6] [--swaps 4]

Serves a model with molt's local backend (the tiny policy's shape, random
weights, unless --model names a folder), registers two LoRA adapters, and
drives it with streaming clients over HTTP (aiohttp, `ignore_eos` so every
answer is exactly --tokens long):

1. tokens/s on the base weights, then with adapter v1 active (1 client and --clients);
2. continuous load while v2 and v1 are promoted in turn (--swaps times, over REST,
   which returns once serving has swapped): the swap time, and against the
   no-swap baseline, the worst gap between two tokens of a request in flight
   during a swap and the worst time to first token of one queued during it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--model", type=Path, default=None, help="a local model folder (default: a fresh random tiny Llama)")
ap.add_argument("--clients", type=int, default=4)
ap.add_argument("--tokens", type=int, default=48)
ap.add_argument("--seconds", type=float, default=6.0, help="length of each throughput phase")
ap.add_argument("--swaps", type=int, default=4)
ap.add_argument("--rank", type=int, default=8)
ap.add_argument("--lora-mode", default="auto", choices=["auto", "merged", "shared"])
PROMPT = [{"role": "user", "content": "Write the weather report for Oslo, please."}]
SENTENCE = "the weather in Oslo is fine today, and the quick brown fox jumps over the lazy dog. "


@dataclass
class Rec:
    start: float
    version: str = ""
    arrivals: list[float] = field(default_factory=list)
    tokens: int = 0
    end: float = 0.0
    error: str | None = None


def build_model(out: Path, steps: int = 40) -> Path:
    """The tiny policy's shape, trained a few steps on one sentence so that it writes text."""
    import torch
    from transformers import LlamaForCausalLM

    from bench.policy.model import ModelShape, llama_config, train_tokenizer

    torch.manual_seed(0)
    tok = train_tokenizer([SENTENCE] * 20, 400)
    model = LlamaForCausalLM(llama_config(ModelShape(), tok))
    ids = torch.tensor([tok(SENTENCE * 4, add_special_tokens=False)["input_ids"][:256]])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_adapter(base: Path, out: Path, seed: int, rank: int) -> Path:
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj",
                     "o_proj", "gate_proj", "up_proj", "down_proj"], lora_dropout=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(model, cfg)
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.02)
        pm.save_pretrained(str(out))
    return out


async def request(session: aiohttp.ClientSession, url: str, tokens: int) -> Rec:
    rec = Rec(time.perf_counter())
    body = {"model": "policy", "messages": PROMPT, "stream": True, "max_tokens": tokens,
            "temperature": 0, "ignore_eos": True, "stream_options": {"include_usage": True}}
    try:
        async with session.post(url + "/v1/chat/completions", json=body) as r:
            rec.version = r.headers.get("x-molt-weight-version", "?")
            async for line in r.content:
                if line.startswith(b"data: {"):
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        rec.tokens = chunk["usage"]["completion_tokens"]
                    if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                        rec.arrivals.append(time.perf_counter())
                    elif "error" in chunk:
                        rec.error = chunk["error"]["message"]
            if r.status != 200:
                rec.error = f"HTTP {r.status}"
    except aiohttp.ClientError as exc:
        rec.error = type(exc).__name__
    rec.end = time.perf_counter()
    return rec


async def load(url: str, clients: int, tokens: int, until: asyncio.Event) -> list[Rec]:
    recs: list[Rec] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
        async def client() -> None:
            while not until.is_set():
                recs.append(await request(s, url, tokens))

        await asyncio.gather(*(client() for _ in range(clients)))
    return recs


async def timed_load(url: str, clients: int, tokens: int, seconds: float) -> tuple[list[Rec], float]:
    until = asyncio.Event()
    t0 = time.perf_counter()
    task = asyncio.create_task(load(url, clients, tokens, until))
    await asyncio.sleep(seconds)
    until.set()
    recs = await task
    return recs, time.perf_counter() - t0


def tok_per_s(recs: list[Rec], wall: float) -> float:
    return sum(r.tokens for r in recs) / wall


def gaps(r: Rec) -> list[float]:
    pts = [r.start, *r.arrivals]
    return [b - a for a, b in itertools.pairwise(pts)][1:]


async def main() -> None:
    args = ap.parse_args()
    from molt.config import load_settings
    from molt.embedded import ServerThread
    from molt.wiring import build_app
    from store.registry import Registry
    from store.registry_check import base_fingerprint

    work = Path(tempfile.mkdtemp(prefix="molt-hotswap-"))
    base = args.model or build_model(work / "base")
    settings = load_settings(None, {
        "store": {"url": f"sqlite+aiosqlite:///{work}/molt.db"}, "data_dir": str(work / "data"),
        "models": [{"alias": "policy", "local": str(base), "lora_mode": args.lora_mode}], "skills": {"enabled": False}})
    reg = Registry(settings.registry_root())
    fp = base_fingerprint(base)
    versions = [reg.create("default", "policy", kind="lora", base_model="policy", base_hash=fp,
                           files_from=make_adapter(base, work / f"a{i}", i, args.rank)).version
                for i in (1, 2)]
    with ServerThread(build_app(settings)) as srv:
        url = srv.url
        results: dict[str, float] = {}
        async with aiohttp.ClientSession() as s:
            await request(s, url, 4)  # waits for the model to load
            for label in ("base", versions[0]):
                if label != "base":
                    await s.post(f"{url}/admin/versions/default/policy/{label}/promote")
                for n in (1, args.clients):
                    recs, wall = await timed_load(url, n, args.tokens, args.seconds / 2)
                    results[f"{label}/{n}"] = tok_per_s(recs, wall)
            baseline, _ = await timed_load(url, args.clients, args.tokens, args.seconds)

            until = asyncio.Event()
            task = asyncio.create_task(load(url, args.clients, args.tokens, until))
            windows: list[tuple[float, float]] = []
            for k in range(args.swaps):
                await asyncio.sleep(1.0)
                target = versions[(k + 1) % 2]
                t0 = time.perf_counter()
                resp = await s.post(f"{url}/admin/versions/default/policy/{target}/promote")
                assert resp.status == 200, await resp.text()
                windows.append((t0, time.perf_counter()))
            await asyncio.sleep(1.0)
            until.set()
            swapped = await task

    failed = [r for r in baseline + swapped if r.error]
    base_gap = max(g for r in baseline for g in gaps(r))
    base_gap_p50 = statistics.median(g for r in baseline for g in gaps(r))
    base_ttft = [r.arrivals[0] - r.start for r in baseline if r.arrivals]
    inflight_gap = queued_ttft = 0.0
    inflight_n = queued_n = 0
    for a, b in windows:
        for r in swapped:
            if not r.arrivals:
                continue
            if r.arrivals[0] < a < r.end:  # streaming when the swap began
                inflight_n += 1
                pts = r.arrivals
                inflight_gap = max([inflight_gap] + [y - x for x, y in itertools.pairwise(pts)
                                                     if x <= b and y >= a])
            elif r.start <= b and r.arrivals[0] >= a:  # waiting for its first token
                queued_n += 1
                queued_ttft = max(queued_ttft, r.arrivals[0] - r.start)
    swap_ms = [(b - a) * 1000 for a, b in windows]
    print(f"model {base}  clients {args.clients}  tokens/request {args.tokens}  "
          f"lora rank {args.rank}  lora_mode {args.lora_mode}")
    print(f"tokens/s, base weights: {results['base/1']:.0f} (1 client), "
          f"{results[f'base/{args.clients}']:.0f} ({args.clients} clients)")
    print(f"tokens/s, adapter {versions[0]}: {results[f'{versions[0]}/1']:.0f} (1 client), "
          f"{results[f'{versions[0]}/{args.clients}']:.0f} ({args.clients} clients)")
    print(f"swap (validate + preload + flip, over REST): mean {statistics.mean(swap_ms):.0f} ms, "
          f"max {max(swap_ms):.0f} ms over {len(swap_ms)} swaps")
    print(f"inter-token gap without swaps: p50 {base_gap_p50 * 1000:.1f} ms, max {base_gap * 1000:.1f} ms")
    print(f"in-flight during a swap ({inflight_n}): worst gap {inflight_gap * 1000:.1f} ms "
          f"(added {max(0.0, inflight_gap - base_gap) * 1000:.1f} ms over the no-swap max)")
    print(f"queued during a swap ({queued_n}): worst TTFT {queued_ttft * 1000:.1f} ms "
          f"(no-swap max {max(base_ttft) * 1000:.1f} ms, "
          f"added {max(0.0, queued_ttft - max(base_ttft)) * 1000:.1f} ms)")
    versions_seen = sorted({r.version for r in swapped})
    print(f"requests: {len(baseline) + len(swapped)}, failed: {len(failed)}, "
          f"versions served during swaps: {', '.join(versions_seen)}")


if __name__ == "__main__":
    asyncio.run(main())
