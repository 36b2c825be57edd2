"""The `ttt` arm of `molt bench run`: in-place TTT serving against the arm's molt.

A day is one long session of one user. Its first `reveal` episodes show the day's
conventions the hard way (the tools' errors, the user's complaints, said in the chat
after the episode), and the later episodes need them again, in fresh conversations: the
revealing part has left the tiny policy's context window. The later episodes are
played four ways, all through the same running molt:

- `without_ttt`: `tiny@base`, nothing of the revealing part;
- `ttt`: the TTT version (`tiny@vNNNN`, kind `ttt_delta`) in the revealing episodes'
  session (`X-Session-Id`): its fast weights absorbed the revealing transcripts, sent
  through it once (one request each, `max_tokens` 1);
- `ttt_fresh_session`: the TTT version, a new session per episode (what the trained TTT
  layers do without the revealing part: the control);
- `in_context`: `tiny@base` with the revealing transcripts (the most recent that fit in
  `history_tokens`) still in the conversation: the reference TTT should approach.

The revealing episodes are played once, by `tiny@base`, so that every way sees the same
revealing text. The TTT layers are trained first (trainer/ttt.py, base frozen) on long
toolworld sessions of the same shape (a drifted convention revealed by tool errors in the
first conversations, used in the later ones), unless `MOLT_BENCH_TTT_VERSION` names a
trained artifact; the report states the CPU seconds either way.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openai

from bench.agent import AgentDriver, EpisodeResult

CONDITIONS = ("without_ttt", "ttt", "ttt_fresh_session", "in_context")


@dataclass(frozen=True)
class TTTPlan:
    reveal: int = 3  # episodes per day that reveal the day's conventions
    # training the TTT layers (bench/ttt_bench.py's recipe, on drift sessions)
    train_sessions: int = 24
    heldout_sessions: int = 6
    session_tokens: int = 1024
    window: int = 256  # the held-out loss's attention window
    steps: int = 40
    chunk: int = 32
    # (with the assistant's loss, 1e-4 and above wreck the policy at the first step: dev/LOG.md)
    learning_rate: float = 1e-5
    # the loss on the assistant's tokens only (what the policy was pretrained on and is
    # judged on); False: on every token (trainer/ttt.py's default)
    assistant_loss: bool = True
    # the in-context reference: revealing transcripts kept in the prompt, at most this many
    # tokens (the tiny policy reads 1,024: the later episode needs the rest)
    history_tokens: int = 448
    gen_tokens: int = 48  # the tokens/s probe


def drift_sessions(tokenizer: Any, n: int, length: int,
                   seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """Long toolworld sessions: one drifted set of conventions per session, never stated;
    the first conversations make the base-convention call first and get the tool's error,
    the later ones write the drifted form straight away. Rendered with the chat template;
    each with its labels as pretraining has them (the assistant's tokens, not the wrong
    calls; -100 elsewhere)."""
    from bench.policy.data import AGENT_PROMPTS, play, random_drift, sample_task, system_messages
    from bench.policy.pretrain import encode
    from bench.toolworld.conventions import BASE
    from bench.toolworld.tools import tool_schemas

    rng = random.Random(f"ttt-arm:{seed}")
    tools = tool_schemas()
    out: list[list[int]] = []
    out_labels: list[list[int]] = []
    for _ in range(n):
        conv = random_drift(rng)
        while conv == BASE:
            conv = random_drift(rng)
        prompt = rng.choice(AGENT_PROMPTS)
        ids: list[int] = []
        labels: list[int] = []
        k = 0
        while len(ids) < length:
            wrong = dict(BASE) if k < 2 else None
            c = play(sample_task(rng, conv, True), system_messages([], prompt), wrong_first=wrong)
            more, more_labels = encode(c, tokenizer, tools)
            ids += more
            labels += more_labels
            k += 1
        out.append(ids[:length])
        out_labels.append(labels[:length])
    return out, out_labels


def prepare_version(plan: TTTPlan, checkpoint: Path, out: Path, seed: int) -> tuple[Path, dict[str, Any]]:
    """The trained TTT artifact (a `ttt_delta` folder) and its figures: training CPU time,
    held-out next-token loss on long sessions (full context, and through a short window)."""
    from bench.rl_arm import cpu_seconds
    from bench.ttt_bench import windowed_loss
    from modeling.loading import load_base
    from modeling.ttt import load_version
    from modeling.ttt_config import TTTConfig
    from trainer.ttt import train_ttt
    from trainer.ttt_config import TTTTrainConfig

    given = os.environ.get("MOLT_BENCH_TTT_VERSION")
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    base = load_base(checkpoint)
    seqs, labels = drift_sessions(base.tokenizer, plan.train_sessions + plan.heldout_sessions,
                                  plan.session_tokens, seed)
    train, heldout = seqs[:plan.train_sessions], seqs[plan.train_sessions:]
    figures: dict[str, Any] = {}
    if given:
        art = Path(given)
        figures["trained"] = f"given: MOLT_BENCH_TTT_VERSION={given}"
    else:
        art = out / "ttt-version"
        cfg = TTTTrainConfig(ttt=TTTConfig(every=2, chunk_size=plan.chunk), max_steps=plan.steps,
                             learning_rate=plan.learning_rate, seq_len=plan.session_tokens)
        result = train_ttt(train, heldout, checkpoint, art, cfg, train_labels=(
            labels[:plan.train_sessions] if plan.assistant_loss else None))
        figures["trained"] = {**result.metrics(), "train_sessions": len(train),
                              "loss_on": "assistant" if plan.assistant_loss else "all",
                              "session_tokens": plan.session_tokens,
                              "cpu_s": round(cpu_seconds() - cpu0, 1),
                              "wall_s": round(time.monotonic() - wall0, 1)}
    model, ttt = load_version(base, art)
    figures["heldout_windowed_loss"] = {
        "window": plan.window, "sessions": len(heldout),
        "without_ttt": windowed_loss(model, ttt, heldout, plan.window, use_ttt=False),
        "ttt": windowed_loss(model, ttt, heldout, plan.window, use_ttt=True),
        "ttt_reset_every_window": windowed_loss(model, ttt, heldout, plan.window,
                                                use_ttt=True, carry=False)}
    del model, ttt
    return art, figures


def register(art: Path, registry_root: Path, checkpoint: Path) -> str:
    """The artifact as a candidate `ttt_delta` version of the arm's molt (not promoted: the
    driver pins it as `tiny@vNNNN`)."""
    from store.registry import Registry
    from store.registry_check import base_fingerprint

    return Registry(registry_root).create(
        "default", "tiny", kind="ttt_delta", files_from=art, base_model="tiny",
        base_hash=base_fingerprint(checkpoint)).version


def _chat_lines(result: EpisodeResult, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A revealing episode as the session's chat: its conversation after the system prompt,
    and the user's complaints said afterwards."""
    body = [m for m in messages if m.get("role") != "system"]
    return body + [{"role": "user", "content": c} for c in result.complaints]


def _fit(tokenizer: Any, chats: Sequence[list[dict[str, Any]]], budget: int) -> list[dict[str, Any]]:
    """The most recent revealing chats whose rendering fits in `budget` tokens, in order."""
    kept: list[list[dict[str, Any]]] = []
    used = 0
    for chat in reversed(chats):
        text = tokenizer.apply_chat_template(chat, tokenize=False)
        n = len(tokenizer(str(text), add_special_tokens=False)["input_ids"])
        if used + n > budget:
            break
        kept.insert(0, chat)
        used += n
    return [m for chat in kept for m in chat]


def run_days(plan: TTTPlan, driver: AgentDriver, client: openai.OpenAI, version: str,
             days: Sequence[int], tasks_of: Any, tokenizer: Any) -> dict[str, Any]:
    """Every day's session, the four ways; per-condition results of the later episodes."""
    from bench.runner import summarize

    ttt_model, base_model = f"tiny@{version}", "tiny@base"
    later: dict[str, list[EpisodeResult]] = {c: [] for c in CONDITIONS}
    per_day: dict[str, dict[str, Any]] = {}
    revealing: list[EpisodeResult] = []
    history_messages: list[int] = []
    for day in days:
        tasks = tasks_of(day)
        reveal, rest = tasks[:plan.reveal], tasks[plan.reveal:]
        session = f"ttt-day{day}-{int(time.time())}"
        chats = []
        for task in reveal:
            r = driver.run(task, model=base_model)
            revealing.append(r)
            chats.append(_chat_lines(r, driver.last_messages))
        for chat in chats:  # the session's TTT state absorbs the revealing chat
            client.chat.completions.create(
                model=ttt_model, messages=[*driver.last_messages[:1], *chat], max_tokens=1,
                tools=driver.last_tools,  # type: ignore[arg-type]
                temperature=0, extra_headers={"X-Session-Id": session, "X-Turn-Type": "side"})
        history = _fit(tokenizer, chats, plan.history_tokens)
        history_messages.append(len(history))
        day_results: dict[str, list[EpisodeResult]] = {c: [] for c in CONDITIONS}
        for task in rest:
            day_results["without_ttt"].append(driver.run(task, model=base_model))
            day_results["ttt"].append(driver.run(task, model=ttt_model, session_id=session))
            day_results["ttt_fresh_session"].append(driver.run(task, model=ttt_model))
            day_results["in_context"].append(driver.run(task, model=base_model, history=history))
        for c in CONDITIONS:
            later[c] += day_results[c]
        per_day[str(day)] = {c: summarize(day_results[c]) for c in CONDITIONS}
    overall = {c: summarize(later[c]) for c in CONDITIONS}
    return {"per_day": per_day, "later": overall, "revealing": summarize(revealing),
            "recovered": {m: recovered(overall, m) for m in ("step_accuracy", "affected_accuracy")},
            "history_messages": history_messages,
            "episodes": {c: [asdict(r) for r in later[c]] for c in CONDITIONS}}


def recovered(overall: dict[str, Any], metric: str) -> float | None:
    """(ttt - without) / (in_context - without): the share of the in-context gain TTT keeps."""
    lo, hi, got = (overall[c].get(metric) for c in ("without_ttt", "in_context", "ttt"))
    if lo is None or hi is None or got is None or hi - lo <= 1e-9:
        return None
    return (got - lo) / (hi - lo)


def tokens_per_s(client: openai.OpenAI, version: str, n: int, gen_tokens: int) -> dict[str, Any]:
    """Decoding speed through serving: the same prompt, `tiny@base` vs the TTT version in a
    session of its own (its fast weights update at every chunk)."""
    prompt = [{"role": "user", "content": "Tell me about the weather in Oslo and Lisbon."}]
    out: dict[str, Any] = {}
    for name, model in (("without_ttt", "tiny@base"), ("ttt", f"tiny@{version}")):
        tokens, seconds = 0, 0.0
        for k in range(n):
            t0 = time.perf_counter()
            r = client.chat.completions.create(
                model=model, messages=prompt, max_tokens=gen_tokens, temperature=0,
                extra_headers={"X-Session-Id": f"tps-{name}-{k}", "X-Session-Done": "true"})
            seconds += time.perf_counter() - t0
            tokens += r.usage.completion_tokens if r.usage else 0
        out[name] = round(tokens / seconds, 1) if seconds else None
    return out


def run_arm(plan: TTTPlan, *, client: openai.OpenAI, driver: AgentDriver, data_dir: Path,
            out: Path, checkpoint: Path, days: Sequence[int], tasks_of: Any,
            seed: int) -> dict[str, Any]:
    """The whole arm against its running molt (data in `data_dir`): train (or take) the TTT
    layers, register them, play the days, measure decoding speed."""
    from transformers import AutoTokenizer

    t0 = time.monotonic()
    # molt loads the base model first: transformers' loading is not safe beside another load
    client.chat.completions.create(model="tiny@base", messages=[{"role": "user", "content": "hi"}],
                                   max_tokens=1)
    art, figures = prepare_version(plan, checkpoint, out, seed)
    version = register(art, data_dir / "registry", checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    played = run_days(plan, driver, client, version, days, tasks_of, tokenizer)
    return {"version": version, **figures, **played,
            "tokens_per_s": tokens_per_s(client, version, 3, plan.gen_tokens),
            "seconds": time.monotonic() - t0}


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m bench.ttt_arm --out DIR`: train the arm's TTT layers only (for
    `MOLT_BENCH_TTT_VERSION=DIR molt bench run --arms ttt`), print their figures."""
    import argparse
    import json

    from bench.runner import DEFAULT_CHECKPOINT

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=TTTPlan.steps)
    p.add_argument("--train-sessions", type=int, default=TTTPlan.train_sessions)
    p.add_argument("--lr", type=float, default=TTTPlan.learning_rate)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--all-tokens", action="store_true", help="the loss on every token")
    args = p.parse_args(argv)
    plan = TTTPlan(steps=args.steps, train_sessions=args.train_sessions, learning_rate=args.lr,
                   assistant_loss=not args.all_tokens)
    os.environ.pop("MOLT_BENCH_TTT_VERSION", None)
    art, figures = prepare_version(plan, DEFAULT_CHECKPOINT, args.out, args.seed)
    print(json.dumps({"artifact": str(art), **figures}, indent=2))


if __name__ == "__main__":
    main()
