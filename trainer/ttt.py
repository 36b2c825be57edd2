"""Training the in-place TTT layers, and the overnight in-place update of W_down.

Both read recorded sessions as token sequences (`session_tokens`: each session's longest
recorded context plus its last reply, rendered with the model's chat template, the same
way serving renders it) and use the TTT layers of modeling/ttt.py.

`train_ttt` (conv + W_target, end to end, next-token loss; arXiv 2604.06169):
1. the base model is loaded from its folder (or from a TTT version, to continue), the TTT
   layers are attached, every base weight is frozen; optionally a fresh LoRA is added;
2. long sessions are cut into windows of `seq_len` tokens; each optimiser step takes
   `batch_size` windows (right-padded; padding is masked out of the updates and the loss)
   through the parallel path (cumsum over chunks), with the loss on every next token;
3. `should_stop()` is checked after every step; a stopped run still writes its artifact
   (`stopped_early`), and a later run may continue from it (`init_from`);
4. the held-out sessions' next-token loss is measured with and without the TTT layers;
5. the artifact is a `ttt_delta` registry folder: `delta.safetensors` (the LoRA merged into
   base-weight deltas, or zero deltas of the TTT layers' W_down), `ttt.safetensors` and
   `ttt_config.json` (the trained layers), `ttt_train_config.json` and `train_log.json`.

`overnight_update` streams the window's sessions through the TTT layers of a version
(streaming path, clipped per-chunk updates, every session's partial chunk folded in at its
end) and writes a new `ttt_delta` artifact: the parent's delta plus the accumulated update
of each TTT layer's W_down, with the parent's TTT layers and the figures
(`ttt_update.json`). By default (`overnight = "session_mean"`) each session starts from the
version's W_down, as a served session does, and the update is the mean over sessions of
what each session accumulated: what a typical session of the day taught the fast weights,
a size that does not grow with the traffic. ("stream" carries one state through all the
sessions and sums every chunk's update: with 20 sessions of the tiny policy that sum was
3 times ||W_down||_F and broke the policy; dev/LOG.md.) The update is scaled by
`delta_scale` and bounded to `max_delta_ratio` times the parent's ||W_down||_F (each night's
update is bounded; a chain of nights can move further). `register` adds either artifact as
a candidate version; the eval gate and promotion are the ones every version goes through (trainer/gate.py).

Hardware is configuration: the model goes wherever `device` says; nothing else names one.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modeling.chat import TemplateError, normalize_messages
from modeling.loading import LoadedBase, load_base
from modeling.ttt import TTT, WEIGHTS_FILE, TTTState, attach, has_ttt, load_version
from modeling.ttt_config import CONFIG_FILE as TTT_CONFIG_FILE
from store.registry import Registry, VersionMeta
from store.registry_check import base_fingerprint
from trainer.errors import NotEnoughData, TrainerError
from trainer.gate import register_candidate
from trainer.jobs import TrainOutcome, TrainRun
from trainer.ttt_config import TTTTrainConfig
from trainer.types import Split, Step

DELTA_FILE = "delta.safetensors"
UPDATE_FILE = "ttt_update.json"
KIND = "ttt_delta"
IGNORE = -100


# -- data ------------------------------------------------------------------------

def session_tokens(steps: Sequence[Step], tokenizer: Any) -> list[list[int]]:
    """One token sequence per session, sessions in the order they started.

    A session's sequence is its longest recorded context with that step's reply, rendered
    with the chat template (no generation prompt: the reply is part of the text).
    """
    by_session: dict[str, list[Step]] = {}
    for s in steps:
        by_session.setdefault(s.session_id, []).append(s)
    ordered = sorted(by_session.values(), key=lambda ss: min(s.created_at for s in ss))
    out = []
    for ss in ordered:
        last = max(ss, key=lambda s: (len(s.messages), s.idx))
        messages = normalize_messages([*last.messages, last.completion])
        try:
            text = tokenizer.apply_chat_template(messages, tools=last.tools or None,
                                                 add_generation_prompt=False, tokenize=False)
        except Exception as exc:  # jinja2 errors, raise_exception() in templates
            raise TemplateError(f"chat template failed on session {last.session_id}: {exc}") from exc
        ids: list[int] = tokenizer(str(text), add_special_tokens=False)["input_ids"]
        if len(ids) >= 2:
            out.append(ids)
    return out


def windows(seq: Sequence[int], seq_len: int) -> list[list[int]]:
    """`seq` cut into consecutive windows of at most `seq_len` tokens (the last may be short)."""
    return [list(seq[i:i + seq_len]) for i in range(0, len(seq), seq_len) if len(seq[i:i + seq_len]) >= 2]


def _batch(rows: Sequence[list[int]], pad: int, device: torch.device,
           row_labels: Sequence[list[int]] | None = None) -> dict[str, torch.Tensor]:
    """Padded ids and labels: every token's own id, or `row_labels` (IGNORE: no loss)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, :len(r)] = torch.tensor(r)
        mask[k, :len(r)] = 1
    labels = ids.masked_fill(mask == 0, IGNORE)
    if row_labels is not None:
        for k, lab in enumerate(row_labels):
            labels[k, :len(lab)] = torch.tensor(lab)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
            "labels": labels.to(device)}


def _pad_id(tokenizer: Any) -> int:
    for v in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if v is not None:
            return int(v)
    return 0


# -- training ----------------------------------------------------------------------

@dataclass(slots=True)
class TTTTrainResult:
    steps: int
    artifact_dir: Path
    stopped_early: bool
    loss_first: float | None
    loss_last: float | None
    heldout_loss_ttt: float | None  # held-out next-token loss with the TTT layers
    heldout_loss_without: float | None  # the same model with the TTT layers off
    trainable: list[str] = field(default_factory=list)
    seconds: float = 0.0
    log: list[dict[str, float]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        return {"steps": self.steps, "stopped_early": self.stopped_early,
                "loss_first": self.loss_first, "loss_last": self.loss_last,
                "heldout_loss_ttt": self.heldout_loss_ttt,
                "heldout_loss_without": self.heldout_loss_without, "seconds": self.seconds}


@dataclass(slots=True)
class TTTModel:
    """A model with its TTT layers attached (and maybe a LoRA), ready to train."""

    base: LoadedBase
    model: Any  # the model to call (a peft wrapper when a LoRA is trained)
    ttt: TTT
    lora: bool


def build(base_dir: Path, cfg: TTTTrainConfig, *, init_from: Path | None = None,
          device: str = "cpu") -> TTTModel:
    """Step 1 of the module docstring: the model, its TTT layers, what is trainable."""
    base = load_base(base_dir, device=device)
    if init_from is not None:
        model, handle = load_version(base, Path(init_from))
        base.model = model
    else:
        model = base.model
        handle = attach(model, cfg.ttt)
    for p in model.parameters():
        p.requires_grad_(False)
    top: Any = model
    if cfg.lora:
        import warnings

        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                          target_modules=list(cfg.lora_target_modules))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            top = get_peft_model(model, lcfg)
    for p in handle.parameters():
        p.requires_grad_(True)
    return TTTModel(base, top, handle, cfg.lora)


def mean_loss(model: Any, sequences: Sequence[list[int]], seq_len: int, pad: int) -> float | None:
    """Mean next-token loss (per predicted token) over `sequences`' windows, eval mode."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for seq in sequences:
            for w in windows(seq, seq_len):
                out = model(**_batch([w], pad, device))
                total += float(out.loss) * (len(w) - 1)
                count += len(w) - 1
    model.train(was)
    return total / count if count else None


def train_ttt(train: Sequence[list[int]], heldout: Sequence[list[int]], base_dir: Path,
              out_dir: Path, cfg: TTTTrainConfig, *, should_stop: Callable[[], bool] | None = None,
              on_step: Callable[[int, dict[str, float]], None] | None = None,
              init_from: Path | None = None, device: str = "cpu",
              max_steps: int | None = None,
              train_labels: Sequence[list[int]] | None = None) -> TTTTrainResult:
    """Train conv + W_target (and the optional LoRA) on `train`; see the module docstring.

    `train_labels` (one per train sequence, as long as it, IGNORE where a token is not
    trained on) puts the loss on some tokens only, e.g. the assistant's; default: all."""
    t0 = time.monotonic()
    if train_labels is not None and [len(x) for x in train_labels] != [len(x) for x in train]:
        raise ValueError("train_labels must match the train sequences one for one, token for token")
    labelled = [(w, lab) for k, seq in enumerate(train)
                for w, lab in zip(windows(seq, cfg.seq_len),
                                  windows(train_labels[k], cfg.seq_len) if train_labels is not None
                                  else windows(seq, cfg.seq_len), strict=True)
                if any(t != IGNORE for t in lab[1:])]
    rows = list(range(len(labelled)))
    if not rows:
        raise NotEnoughData("no session of two tokens or more (with a labelled token, given "
                            "train_labels) to train the TTT layers on")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tm = build(Path(base_dir), cfg, init_from=init_from, device=device)
    model = tm.model
    pad = _pad_id(tm.base.tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    model.train()
    log: list[dict[str, float]] = []
    order: list[int] = []
    stopped = False
    steps = max_steps or cfg.max_steps
    for step in range(1, steps + 1):
        if len(order) < cfg.batch_size:
            order += rng.sample(rows, len(rows))
        batch, order = order[:cfg.batch_size], order[cfg.batch_size:]
        loss = model(**_batch([labelled[i][0] for i in batch], pad, tm.base.device,
                              [labelled[i][1] for i in batch] if train_labels is not None
                              else None)).loss
        if not math.isfinite(float(loss.detach())):
            raise TrainerError(f"TTT training diverged at step {step} (loss {float(loss.detach())})")
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        log.append({"step": float(step), "loss": float(loss.detach()), "grad_norm": float(norm)})
        if on_step is not None:
            on_step(step, {"loss": log[-1]["loss"]})
        if should_stop is not None and should_stop() and step < steps:
            stopped = True
            break
    model.eval()
    held_ttt = mean_loss(model, heldout, cfg.seq_len, pad)
    with tm.ttt.disabled():
        held_without = mean_loss(model, heldout, cfg.seq_len, pad)
    out = Path(out_dir)
    result = TTTTrainResult(
        steps=len(log), artifact_dir=out, stopped_early=stopped,
        loss_first=log[0]["loss"] if log else None, loss_last=log[-1]["loss"] if log else None,
        heldout_loss_ttt=held_ttt, heldout_loss_without=held_without,
        trainable=[n for n, p in model.named_parameters() if p.requires_grad],
        seconds=time.monotonic() - t0, log=log,
    )
    write_artifact(tm, out, cfg, log, init_from)
    return result


def train_on_split(split: Split, base_dir: Path, out_dir: Path, cfg: TTTTrainConfig,
                   **kw: Any) -> TTTTrainResult:
    """`train_ttt` on a window's query data (train sessions) and its held-out sessions."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
    return train_ttt(session_tokens(split.train, tok), session_tokens(split.heldout, tok),
                     base_dir, out_dir, cfg, **kw)


def _lora_deltas(model: Any) -> dict[str, torch.Tensor]:
    """Every LoRA layer's B A * scaling, as a delta of the base weight it wraps."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in model.get_base_model().named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            dw: torch.Tensor = module.get_delta_weight("default")  # type: ignore[attr-defined]
            out[f"{name}.weight"] = dw.detach().float().cpu()
    return out


def write_artifact(tm: TTTModel, out: Path, cfg: TTTTrainConfig, log: list[dict[str, float]],
                   init_from: Path | None) -> None:
    """The registry's `ttt_delta` layout (see the module docstring, step 5)."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    delta: dict[str, torch.Tensor] = {}
    if init_from is not None and (Path(init_from) / DELTA_FILE).is_file():
        delta = {k: v.float() for k, v in load_file(str(Path(init_from) / DELTA_FILE)).items()}
    if tm.lora:
        for k, v in _lora_deltas(tm.model).items():
            delta[k] = delta.get(k, torch.zeros_like(v)) + v
    base_params = dict(tm.ttt.model.named_parameters())
    for name in tm.ttt.down_proj_names().values():
        if name not in delta:
            p = base_params.get(name)
            if p is None:
                p = base_params[name.replace(".weight", ".base_layer.weight")]
            delta[name] = torch.zeros(p.shape, dtype=torch.float32)
    dtype = tm.base.dtype
    save_file({k: v.to(dtype).contiguous() for k, v in delta.items()}, str(out / DELTA_FILE))
    tm.ttt.save(out)
    cfg.save(out)
    (out / "train_log.json").write_text(json.dumps(log, indent=1))


# -- the overnight in-place update -------------------------------------------------------

def stream_sessions(model: Any, handle: TTT, state: TTTState, sequences: Sequence[list[int]],
                    seq_len: int) -> int:
    """Stream every session through the TTT layers (one fast-weight state for all of them).

    A session longer than `seq_len` is fed in consecutive windows (attention restarts,
    the fast weights carry on); each session's partial chunk is folded in at its end.
    Returns the number of tokens streamed.
    """
    device = next(model.parameters()).device
    n = 0
    with torch.no_grad():
        for seq in sequences:
            for w in windows(seq, seq_len):
                with handle.stream(state):
                    model(input_ids=torch.tensor([w], device=device))
                n += len(w)
            handle.flush(state)
    return n


@dataclass(slots=True)
class Accumulated:
    """What streaming the window's sessions left: per layer, the update to add to W_down
    (before `delta_scale` and the bound) and the counts of the chunks folded in."""

    updates: dict[int, torch.Tensor]
    chunks: dict[int, int]
    clipped: dict[int, int]
    max_chunk_norm: dict[int, float]
    session_norms: dict[int, list[float]]  # "session_mean": each session's own update
    tokens: int
    sessions: int  # streamed (those of 2 tokens or more)


def accumulate(model: Any, handle: TTT, sequences: Sequence[list[int]], seq_len: int,
               mode: str) -> Accumulated:
    """Stream the sessions as `mode` says (TTTTrainConfig.overnight)."""
    usable = [s for s in sequences if len(s) >= 2]
    if mode == "stream":
        state = handle.new_state()
        tokens = stream_sessions(model, handle, state, usable, seq_len)
        ls = state.layers
        return Accumulated(state.deltas(), {i: s.updates for i, s in ls.items()},
                           {i: s.clipped for i, s in ls.items()},
                           {i: s.max_norm for i, s in ls.items()}, {}, tokens, len(usable))
    total: dict[int, torch.Tensor] = {}
    acc = Accumulated({}, {}, {}, {}, {}, 0, len(usable))
    for seq in usable:
        state = handle.new_state()  # a session starts from the version's W_down
        acc.tokens += stream_sessions(model, handle, state, [seq], seq_len)
        for i, d in state.deltas().items():
            one = state.layers[i]
            total[i] = total[i] + d if i in total else d
            acc.chunks[i] = acc.chunks.get(i, 0) + one.updates
            acc.clipped[i] = acc.clipped.get(i, 0) + one.clipped
            acc.max_chunk_norm[i] = max(acc.max_chunk_norm.get(i, 0.0), one.max_norm)
            acc.session_norms.setdefault(i, []).append(float(torch.linalg.matrix_norm(d)))
    acc.updates = {i: t / len(usable) for i, t in total.items()}
    return acc


def bound(add: torch.Tensor, limit: float | None) -> tuple[torch.Tensor, bool]:
    """`add` scaled down to ||add||_F <= limit (None: no bound); and whether it was."""
    norm = float(torch.linalg.matrix_norm(add))
    if limit is None or norm <= limit or norm == 0.0:
        return add, False
    return add * (limit / norm), True


@dataclass(slots=True)
class OvernightResult:
    artifact_dir: Path
    metrics: dict[str, Any]


def overnight_update(sequences: Sequence[list[int]], base_dir: Path, parent_dir: Path,
                     out_dir: Path, cfg: TTTTrainConfig, *, device: str = "cpu") -> OvernightResult:
    """A new `ttt_delta` artifact: `parent_dir`'s delta plus the window's accumulated updates
    (`cfg.overnight`), times `cfg.delta_scale`, bounded by `cfg.max_delta_ratio`."""
    from safetensors.torch import load_file, save_file

    parent = Path(parent_dir)
    if not has_ttt(parent):
        raise NotEnoughData(f"{parent} holds no trained TTT layers ({WEIGHTS_FILE}, "
                            f"{TTT_CONFIG_FILE}): train them first (train_ttt)")
    if not any(len(s) >= 2 for s in sequences):
        raise NotEnoughData("no session to stream through the TTT layers")
    t0 = time.monotonic()
    base = load_base(base_dir, device=device)
    model, handle = load_version(base, parent)
    acc = accumulate(model, handle, sequences, cfg.seq_len, cfg.overnight)
    names, weights = handle.down_proj_names(), handle.down_weights()
    delta = {k: v.float() for k, v in load_file(str(parent / DELTA_FILE)).items()}
    layers: dict[str, Any] = {}
    for i, upd in acc.updates.items():
        name = names[i]
        w_norm = float(torch.linalg.matrix_norm(weights[i].float()))
        limit = None if cfg.max_delta_ratio is None else cfg.max_delta_ratio * w_norm
        add, capped = bound(upd.cpu() * cfg.delta_scale, limit)
        delta[name] = delta.get(name, torch.zeros_like(add)) + add
        fig: dict[str, Any] = {
            "updates": acc.chunks[i], "clipped": acc.clipped[i],
            "max_update_norm": acc.max_chunk_norm[i],
            "accumulated_norm": float(torch.linalg.matrix_norm(upd)),
            "delta_norm": float(torch.linalg.matrix_norm(add)),
            "w_down_norm": w_norm, "bounded": capped}
        if acc.session_norms.get(i):
            norms = acc.session_norms[i]
            fig["session_norm_mean"] = sum(norms) / len(norms)
            fig["session_norm_max"] = max(norms)
        layers[str(i)] = fig
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(base.dtype).contiguous() for k, v in delta.items()}, str(out / DELTA_FILE))
    for name in (WEIGHTS_FILE, TTT_CONFIG_FILE):
        shutil.copyfile(parent / name, out / name)
    cfg.save(out)
    metrics = {"sessions": acc.sessions, "tokens": acc.tokens, "overnight": cfg.overnight,
               "delta_scale": cfg.delta_scale, "max_delta_ratio": cfg.max_delta_ratio,
               "tau": handle.cfg.tau, "chunk_size": handle.cfg.chunk_size, "layers": layers,
               "seconds": time.monotonic() - t0}
    (out / UPDATE_FILE).write_text(json.dumps(metrics, indent=2))
    return OvernightResult(out, metrics)


def register(registry: Registry, tenant: str, base: str, artifact: Path, base_dir: Path,
             cfg: TTTTrainConfig, metrics: dict[str, Any], **meta: Any) -> VersionMeta:
    """Add a TTT artifact as the next candidate `ttt_delta` version (a child of the active)."""
    return register_candidate(registry, tenant, base, artifact, kind=KIND,
                              base_model=str(base_dir), base_hash=base_fingerprint(base_dir),
                              config=cfg.to_dict(), metrics=metrics, **meta)


# -- the scheduler's training body ------------------------------------------------------

@dataclass(slots=True)
class TTTBody:
    """A `trainer.jobs.TrainBody` for TTT: the overnight in-place update when the tenant's
    active version has trained TTT layers (`active_dir(tenant)`), else training them.

    The outcome is a `ttt_delta` artifact, registered, gated and promoted like any other
    version. Training stops cooperatively (`run.should_stop()` after every step) and
    resumes from the artifact it wrote (its TTT layers and LoRA; the optimiser restarts).
    """

    base_dir: Path
    cfg: TTTTrainConfig
    active_dir: Callable[[str], Path | None]
    device: str = "cpu"

    def __call__(self, split: Split, run: TrainRun) -> TrainOutcome:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(self.base_dir), local_files_only=True)
        train = session_tokens(split.train, tok)
        parent = self.active_dir(run.tenant)
        if parent is not None and has_ttt(parent) and run.resume_from is None:
            res = overnight_update(train, self.base_dir, parent, run.work_dir / "ttt_update",
                                   self.cfg, device=self.device)
            run.report(run.steps_done + 1, {"tokens": float(res.metrics["tokens"])})
            flat = {"tokens": float(res.metrics["tokens"]),
                    "sessions": float(res.metrics["sessions"])}
            return TrainOutcome(steps=run.steps_done + 1, finished=True,
                                artifact=res.artifact_dir, kind=KIND, metrics=flat,
                                config={**self.cfg.to_dict(), "mode": "overnight_update"})
        left = max(1, self.cfg.max_steps - run.steps_done)
        out = run.checkpoint_dir / f"ttt-{run.steps_done + left}"

        def on_step(step: int, metrics: dict[str, float]) -> None:
            run.report(run.steps_done + step, metrics)

        result = train_ttt(train, session_tokens(split.heldout, tok), self.base_dir, out,
                           self.cfg, should_stop=run.should_stop, on_step=on_step,
                           init_from=run.resume_from, device=self.device, max_steps=left)
        finished = not result.stopped_early
        metrics = {k: float(v) for k, v in result.metrics().items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return TrainOutcome(steps=run.steps_done + result.steps, finished=finished,
                            checkpoint=out, artifact=out if finished else None, kind=KIND,
                            metrics=metrics, config={**self.cfg.to_dict(), "mode": "train"})
