"""Pretrain the tiny policy from scratch on CPU: ``python -m bench.policy.pretrain``.

Reads top to bottom: arguments, tokenizer, model, the training loop on
conversations generated on the fly from toolworld (see ``bench.policy.data``
for the mixture), loss on assistant tokens only, then the checkpoint
(``config.json``, ``model.safetensors``, tokenizer files, ``meta.json``).
Training starts with a warm-up on short conversations (no system prompt,
skills or tool list): in a short context the model finds the attention that
copies a value from the request or a tool result within a few minutes, which
it did not find in 20 minutes of full-length conversations (dev/LOG.md).
The learning-rate schedule runs on wall-clock time, so a run always ends
within ``--minutes`` whatever the machine's speed (``--max-steps`` also ends
it by step count); ``meta.json`` records the steps it reached.

On a GPU (``--device cuda --workers 7``) the same recipe sees ~8x the data
of a 19-minute CPU run in 6 minutes, which is what the accuracy targets take
(dev/LOG.md); ``--init`` continues pretraining a checkpoint on any device.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import multiprocessing
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from bench.policy.chat import ASSISTANT_HEAD, CHAT_TEMPLATE, END
from bench.policy.data import Conversation, pretraining_example, short_example
from bench.policy.model import CHECKPOINT_DIR, ModelShape, llama_config, shape_dict, train_tokenizer
from bench.toolworld.tools import tool_schemas

IGNORE = -100
_ASSISTANT = re.compile(re.escape(ASSISTANT_HEAD) + r".*?" + re.escape(END), re.DOTALL)


def encode(conv: Conversation, tokenizer: PreTrainedTokenizerFast,
           tools: list[dict[str, Any]] | None) -> tuple[list[int], list[int]]:
    """Token ids and labels; labels are -100 outside the trained assistant turns."""
    text = tokenizer.apply_chat_template(conv.messages, tools=tools, tokenize=False)
    assert isinstance(text, str)
    assistant_indices = [i for i, m in enumerate(conv.messages) if m["role"] == "assistant"]
    spans = []
    for index, match in zip(assistant_indices, _ASSISTANT.finditer(text), strict=True):
        if index not in conv.no_loss:
            spans.append((match.start() + len(ASSISTANT_HEAD), match.end()))
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids: list[int] = enc["input_ids"]
    labels = [IGNORE] * len(ids)
    for k, (start, _end) in enumerate(enc["offset_mapping"]):
        if any(a <= start < b for a, b in spans):
            labels[k] = ids[k]
    return ids, labels


def copy_weights(ids: list[int], labels: list[int], structural: set[int],
                 boost: float) -> list[float]:
    """Loss weight per token: ``1 + boost`` for a trained token that copies context.

    A trained token "copies" when the same token occurs earlier outside the
    trained turns (in the user's message, a tool result, a skill) and is not
    part of the fixed scaffolding (tool list, JSON punctuation, keys). Names,
    cities, ids, digits are such tokens; they are few among the assistant's
    tokens, and the skill this policy needs most is to copy them right.
    """
    seen: set[int] = set()
    weights = [0.0] * len(ids)
    for k, (token, label) in enumerate(zip(ids, labels, strict=True)):
        if label == IGNORE:
            if token not in structural:
                seen.add(token)
            continue
        weights[k] = 1.0 + (boost if token in seen else 0.0)
    return weights


def structural_tokens(tokenizer: PreTrainedTokenizerFast) -> set[int]:
    """Token ids of the fixed scaffolding: tool list, JSON punctuation, argument keys."""
    tools = tool_schemas()
    scaffold = tokenizer.apply_chat_template(
        [{"role": "assistant", "content": "", "tool_calls": [{"function": {
            "name": "x", "arguments": {k: "" for t in tools
                                      for k in t["function"]["parameters"]["properties"]}}}]}],
        tools=tools, tokenize=False)
    return set(tokenizer(scaffold, add_special_tokens=False)["input_ids"])


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def pool_batches(rng: random.Random, tokenizer: PreTrainedTokenizerFast, batch_tokens: int,
                 max_len: int, boost: float, short_only: bool, short_share: float,
                 structural: set[int], think_share: float = 0.0) -> list[Batch]:
    """One pool of examples cut into padded batches of about ``batch_tokens`` tokens.

    Examples are sorted by length and cut into batches of similar lengths, so
    little is spent on padding and short examples come many to a batch. With
    ``short_only`` every example is a warm-up one (``short_example``, rendered
    without the tool list); otherwise a ``short_share`` of them still are.
    """
    tools = tool_schemas()
    pad = tokenizer.pad_token_id

    def example() -> tuple[list[int], list[int]]:
        while True:
            if short_only or rng.random() < short_share:
                ids, labels = encode(short_example(rng), tokenizer, None)
            else:
                conv = pretraining_example(rng, think_share)
                ids, labels = encode(conv, tokenizer, conv.tools or tools)
            ids, labels = ids[:max_len], labels[:max_len]
            # a conversation cut at max_len may have no trained token left: a batch of
            # those alone would divide by a zero loss weight
            if any(label != IGNORE for label in labels):
                return ids, labels

    pool = sorted((example() for _ in range(max(8, batch_tokens // 64))),
                  key=lambda p: len(p[0]))
    groups: list[list[tuple[list[int], list[int]]]] = [[]]
    for item in pool:
        # widths rounded up to a multiple of 64: few distinct shapes keep oneDNN's
        # per-shape kernels cached (bf16 autocast is slow on every new shape)
        width = -(-len(item[0]) // 64) * 64
        if groups[-1] and width * (len(groups[-1]) + 1) > batch_tokens:
            groups.append([])
        groups[-1].append(item)
    rng.shuffle(groups)
    out: list[Batch] = []
    for group in groups:
        width = -(-max(len(i) for i, _ in group) // 64) * 64
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        labels = torch.full((len(group), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        weights = torch.zeros((len(group), width))
        for row, (i, lab) in enumerate(group):
            ids[row, :len(i)] = torch.tensor(i)
            labels[row, :len(lab)] = torch.tensor(lab)
            mask[row, :len(i)] = 1
            weights[row, :len(i)] = torch.tensor(copy_weights(i, lab, structural, boost))
        out.append((ids, labels, mask, weights))
    return out


def batches(rng: random.Random, tokenizer: PreTrainedTokenizerFast, batch_tokens: int,
            max_len: int, boost: float = 0.0, short: Callable[[], bool] = lambda: False,
            short_share: float = 0.0, workers: int = 0, think_share: float = 0.0) -> Iterator[Batch]:
    """Endless batches (see ``pool_batches``); ``short()`` says whether the warm-up is on.

    With ``workers`` > 0, pools are made in that many processes (each seeded
    from ``rng``), a few pools ahead of training: on a GPU a single process
    cannot generate conversations as fast as the model trains on them.
    """
    structural = structural_tokens(tokenizer)
    if workers <= 0:
        while True:
            yield from pool_batches(rng, tokenizer, batch_tokens, max_len, boost, short(),
                                    short_share, structural, think_share)
    context = multiprocessing.get_context("fork")
    setup = (tokenizer, batch_tokens, max_len, boost, short_share, structural, think_share)
    with context.Pool(workers, initializer=_worker_setup, initargs=(setup,)) as pool:
        pending: deque[Any] = deque()
        while True:
            while len(pending) < 2 * workers:
                pending.append(pool.apply_async(_worker_pool, (rng.getrandbits(64), short())))
            yield from pending.popleft().get()


_WORKER: dict[str, Any] = {}


def _worker_setup(setup: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    _WORKER["setup"] = setup


def _worker_pool(seed: int, short_only: bool) -> list[Batch]:
    tokenizer, batch_tokens, max_len, boost, short_share, structural, think = _WORKER["setup"]
    return pool_batches(random.Random(seed), tokenizer, batch_tokens, max_len, boost,
                        short_only, short_share, structural, think)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=19.0, help="wall-clock training budget")
    parser.add_argument("--batch-tokens", type=int, default=8192,
                        help="tokens per batch, padding included")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--max-len", type=int, default=768)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--copy-boost", type=float, default=4.0,
                        help="extra loss weight on assistant tokens copied from the context")
    parser.add_argument("--warmup-frac", type=float, default=0.2,
                        help="share of the budget spent on short warm-up examples only")
    parser.add_argument("--short-share", type=float, default=0.2,
                        help="share of short examples after the warm-up")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="bfloat16 autocast (about 25%% faster on CPUs with AMX)")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR)
    parser.add_argument("--max-steps", type=int, default=0,
                        help="also end (and schedule the learning rate) by step count")
    parser.add_argument("--device", default="cpu", help="cpu (the shipped setting) or cuda")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes generating training data (for a GPU run; 0: in-process)")
    parser.add_argument("--think-share", type=float, default=0.0,
                        help="share of examples served the TAFC way: think-augmented tools, calls "
                             "that think first (bench.policy.data; e.g. 0.3 with --init)")
    parser.add_argument("--init", type=Path, default=None,
                        help="continue pretraining this checkpoint (its tokenizer and weights)")
    parser.add_argument("--hidden", type=int, default=ModelShape().hidden_size)
    parser.add_argument("--layers", type=int, default=ModelShape().num_hidden_layers)
    parser.add_argument("--ttt", action="store_true",
                        help="attach in-place TTT layers (modeling/ttt.py) and train them too; "
                             "they are saved apart, in <out>/ttt/, as a ttt_delta version folder")
    parser.add_argument("--ttt-only", action="store_true",
                        help="with --ttt: train only the TTT layers (conv, W_target); use with --init")
    parser.add_argument("--ttt-chunk", type=int, default=32, help="TTT chunk size (tokens)")
    parser.add_argument("--ttt-every", type=int, default=2, help="TTT on every k-th layer")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(f"pretrain:{args.seed}")
    start = time.monotonic()

    if args.init is not None:
        # continued pretraining: the checkpoint's own tokenizer and weights
        tokenizer = PreTrainedTokenizerFast.from_pretrained(args.init)
        model = LlamaForCausalLM.from_pretrained(args.init).to(args.device)
        c = model.config
        shape = ModelShape(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                           intermediate_size=c.intermediate_size,
                           num_hidden_layers=c.num_hidden_layers,
                           num_attention_heads=c.num_attention_heads,
                           max_position_embeddings=c.max_position_embeddings)
        print(f"continuing from {args.init}", flush=True)
    else:
        # 1. tokenizer, trained on rendered conversations from the same mixture
        plain = train_tokenizer(["hello"], 300)  # only to render text with the chat template
        tools = tool_schemas()
        corpus = [plain.apply_chat_template(pretraining_example(rng).messages, tools=tools,
                                            tokenize=False) for _ in range(3000)]
        tokenizer = train_tokenizer([str(t) for t in corpus], args.vocab)
        print(f"tokenizer: {len(tokenizer)} tokens ({time.monotonic() - start:.0f}s)", flush=True)

        # 2. model
        shape = ModelShape(vocab_size=len(tokenizer), hidden_size=args.hidden,
                           intermediate_size=args.hidden * 8 // 3 // 32 * 32,
                           num_hidden_layers=args.layers, num_attention_heads=args.hidden // 32)
        model = LlamaForCausalLM(llama_config(shape, tokenizer)).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters", flush=True)
    ttt = None
    if args.ttt:
        from modeling.ttt import attach
        from modeling.ttt_config import TTTConfig

        ttt = attach(model, TTTConfig(every=args.ttt_every, chunk_size=args.ttt_chunk))
        if args.ttt_only:
            for p in model.parameters():
                p.requires_grad_(False)
            for p in ttt.parameters():
                p.requires_grad_(True)
        print(f"TTT on layers {ttt.layers}, chunks of {args.ttt_chunk}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and p.requires_grad]
    other = [p for n, p in model.named_parameters() if p.dim() < 2 and p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                   {"params": other, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.98))

    # 3. training loop: cosine schedule over the wall-clock budget
    budget = args.minutes * 60 - (time.monotonic() - start)
    train_start = time.monotonic()
    step, tokens, ema, skipped = 0, 0, None, 0
    model.train()
    progress = 0.0

    def warming_up() -> bool:
        return progress < args.warmup_frac

    for ids, _labels, mask, weights in batches(rng, tokenizer, args.batch_tokens, args.max_len,
                                              args.copy_boost, warming_up, args.short_share,
                                              args.workers, args.think_share):
        frac = (time.monotonic() - train_start) / budget
        if args.max_steps:
            frac = max(frac, step / args.max_steps)
        progress = frac
        if frac >= 1.0:
            break
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * cosine
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids, mask, weights = ids.to(args.device), mask.to(args.device), weights.to(args.device)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(input_ids=ids, attention_mask=mask).logits
        per_token = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
        loss = (per_token * weights[:, 1:]).sum() / weights[:, 1:].sum()
        if not torch.isfinite(loss):
            skipped += 1
            print(f"step {step}: loss is not finite, batch skipped ({skipped} so far)", flush=True)
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                              1.0)
        if not torch.isfinite(norm):
            # one non-finite gradient would turn every weight into NaN (a GPU run ended in NaN: dev/LOG.md)
            skipped += 1
            print(f"step {step}: gradient norm is not finite, batch skipped "
                  f"({skipped} so far)", flush=True)
            continue
        optimizer.step()
        step += 1
        tokens += int(mask.sum())
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        if step % 25 == 0:
            elapsed = time.monotonic() - train_start
            print(f"step {step:5d}  loss {ema:.4f}  lr {lr:.2e}  {elapsed / 60:5.1f} min  "
                  f"{tokens / elapsed:,.0f} tok/s", flush=True)

    # 4. checkpoint
    train_minutes = (time.monotonic() - start) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    model.to("cpu")
    if ttt is not None:
        ttt.save_version(args.out / "ttt")  # register it as a ttt_delta version of this base
        ttt.detach()  # the checkpoint itself holds the plain model's weights
    model.save_pretrained(args.out)
    save_tokenizer(tokenizer, args.out)
    meta = {
        "step": step,
        "tokens": tokens,
        "final_loss_ema": ema,
        "skipped_batches": skipped,
        "train_minutes": round(train_minutes, 2),
        "parameters": n_params,
        "shape": shape_dict(shape),
        "args": {k: str(v) for k, v in vars(args).items()},
        "date": dt.date.today().isoformat(),
        "figures": {},
    }
    if args.init is not None and (args.init / "meta.json").exists():
        prior = json.loads((args.init / "meta.json").read_text())
        meta["continued_from"] = {k: prior.get(k) for k in
                                  ("step", "tokens", "train_minutes", "args", "date",
                                   "continued_from")}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"done: {step} steps, {tokens:,} tokens, loss {ema:.4f}, {train_minutes:.1f} min "
          f"-> {args.out}", flush=True)


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """Save tokenizer files; the chat template also goes into ``tokenizer_config.json``."""
    tokenizer.save_pretrained(out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = CHAT_TEMPLATE
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")


if __name__ == "__main__":
    main()
