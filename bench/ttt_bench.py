"""In-place TTT on the tiny policy: ``python -m bench.ttt_bench``.

Arguments at the top; then, in order:
1. long sessions: toolworld conversations (the pretraining mixture) rendered with the
   chat template and concatenated up to `--session-tokens` tokens each;
2. the TTT layers (every 2nd layer, chunks of `--chunk`) are trained on the training
   sessions for `--steps` steps (trainer/ttt.py, base weights frozen);
3. held-out next-token loss on long sessions seen through a short attention window
   (`--window` tokens, attention restarts at every window): without TTT, with TTT whose
   fast weights carry across the windows of a session (the streaming path), and with TTT
   reset at every window (what the carried fast weights add beyond the trained layers);
4. the cost of serving: greedy generation tokens/s of the plain model and of the TTT
   version through a per-session runner (proxy/local/ttt_sessions.py).
Prints one JSON summary at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.policy.data import pretraining_example
from bench.policy.model import CHECKPOINT_DIR
from bench.toolworld.tools import tool_schemas
from modeling.loading import forward_step, load_base
from modeling.ttt import TTT, load_version
from modeling.ttt_config import TTTConfig
from proxy.local.ttt_sessions import TTTRunner, TTTSessions
from trainer.ttt import train_ttt
from trainer.ttt_config import TTTTrainConfig


def sessions(tokenizer: Any, n: int, length: int, seed: int) -> list[list[int]]:
    rng = random.Random(f"ttt-bench:{seed}")
    tools = tool_schemas()
    out = []
    for _ in range(n):
        ids: list[int] = []
        while len(ids) < length:
            text = tokenizer.apply_chat_template(pretraining_example(rng).messages, tools=tools,
                                                 tokenize=False)
            ids += tokenizer(str(text), add_special_tokens=False)["input_ids"]
        out.append(ids[:length])
    return out


def windowed_loss(model: Any, ttt: TTT, seqs: list[list[int]], window: int,
                  use_ttt: bool, carry: bool = True) -> dict[str, float]:
    """Next-token loss per token, all windows and windows after the first (attention restarts
    at every window; with TTT and `carry` the fast weights carry on through the session,
    without `carry` they restart at every window too)."""
    total = {"all": [0.0, 0], "later": [0.0, 0]}
    with torch.no_grad():
        for seq in seqs:
            state = ttt.new_state()
            for k in range(0, len(seq), window):
                w = torch.tensor([seq[k:k + window]])
                if w.shape[1] < 2:
                    continue
                if use_ttt and not carry:
                    state = ttt.new_state()
                if use_ttt:
                    with ttt.stream(state):
                        logits = model(input_ids=w).logits
                else:
                    with ttt.disabled():
                        logits = model(input_ids=w).logits
                loss = torch.nn.functional.cross_entropy(logits[0, :-1], w[0, 1:], reduction="sum")
                for name in ("all", "later") if k else ("all",):
                    total[name][0] += float(loss)
                    total[name][1] += w.shape[1] - 1
    return {k: s / n for k, (s, n) in total.items() if n}


def tokens_per_s(runner: Any, prompt: list[int], new_tokens: int) -> float:
    with torch.inference_mode():
        ids = torch.tensor([prompt])
        t0 = time.perf_counter()
        cache = None
        for _ in range(new_tokens):
            logits, cache = runner.forward(ids, cache)
            ids = logits[:, -1:].argmax(-1)
        return new_tokens / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--policy", type=Path, default=CHECKPOINT_DIR)
    p.add_argument("--train-sessions", type=int, default=24)
    p.add_argument("--heldout-sessions", type=int, default=8)
    p.add_argument("--session-tokens", type=int, default=1024)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="keep the trained TTT version here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    base = load_base(args.policy)
    seqs = sessions(base.tokenizer, args.train_sessions + args.heldout_sessions,
                    args.session_tokens, seed=0)
    train, heldout = seqs[:args.train_sessions], seqs[args.train_sessions:]
    cfg = TTTTrainConfig(ttt=TTTConfig(every=2, chunk_size=args.chunk), max_steps=args.steps,
                         learning_rate=args.lr, seq_len=args.session_tokens)
    out = args.out or Path(tempfile.mkdtemp(prefix="ttt-bench-"))
    t0 = time.monotonic()
    result = train_ttt(train, heldout, args.policy, out, cfg)
    print(f"trained {result.steps} steps in {time.monotonic() - t0:.0f}s: loss "
          f"{result.loss_first:.4f} -> {result.loss_last:.4f}", flush=True)

    model, ttt = load_version(base, out)
    without = windowed_loss(model, ttt, heldout, args.window, use_ttt=False)
    with_ttt = windowed_loss(model, ttt, heldout, args.window, use_ttt=True)
    no_carry = windowed_loss(model, ttt, heldout, args.window, use_ttt=True, carry=False)

    class Plain:
        def forward(self, ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
            with ttt.disabled():
                return forward_step(model, ids, cache)

    prompt = heldout[0][:args.window]
    plain_tps = tokens_per_s(Plain(), prompt, args.gen_tokens)
    session = TTTSessions().runner(TTTRunner(model, ttt), "bench", "s", "v")
    ttt_tps = tokens_per_s(session, prompt, args.gen_tokens)
    summary = {
        "chunk": args.chunk, "window": args.window, "session_tokens": args.session_tokens,
        "train_steps": result.steps,
        "heldout_full_context_loss": {"without_ttt": result.heldout_loss_without,
                                      "ttt": result.heldout_loss_ttt},
        "heldout_windowed_loss": {"without_ttt": without, "ttt": with_ttt,
                                  "ttt_reset_every_window": no_carry},
        "tokens_per_s": {"without_ttt": round(plain_tps, 1), "ttt": round(ttt_tps, 1)},
        "artifact": str(out),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
