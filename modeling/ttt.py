"""In-place test-time training (arXiv 2604.06169): the MLP's W_down as fast weights.

For each selected decoder layer of a Llama- or Qwen-architecture transformers model, the
MLP block is replaced by `TTTMLP`, which keeps the block's own gate/up/down projections
(same parameter names, so LoRA targets, deltas and checkpoints still match) and adds two
trained parameters, a depthwise `ttt_conv` and a square `ttt_target`:

- key    Z = act(W_gate x) * (W_up x)                 (C x intermediate per chunk)
- target t = x (the MLP input, "hidden") or the token embeddings ("embedding")
- value  V = Conv1D(t) W_target^T                      (C x hidden per chunk)
  Conv1D: depthwise, kernel 5, padding 2, no bias, zero-initialised, applied within
  each chunk (a chunk's tokens are zero-padded at its borders), so position p's value
  sees t[p-2 .. p+2]: the next tokens, which aligns the update with next-token prediction.
- update dW_i = eta * V_i^T Z_i                         (hidden x intermediate: W_down's shape)
- output chunk i: Z_i W^(i)^T, with W^(i) = W_down + sum_{j<i} dW_j  (apply, then update:
  a chunk never sees its own update, so the model stays causal at chunk level).

Two paths compute the same thing:
- parallel (training, or a whole sequence at once): all chunks' dW, an exclusive cumsum
  over chunks, one batched product;
- streaming (inference, `TTT.stream(state)`): a sequential loop over pieces of any size,
  the partial chunk buffered in a `TTTState` that carries across forward calls (one per
  serving session); when a chunk fills, its update is folded into the state.
At inference (streaming, or the parallel path in eval mode) every chunk's update is
clipped to ||dW||_F <= tau. With the conv at zero, V = 0 and the model computes exactly
the base model's outputs.

`ttt_target` starts as the identity (our choice; the paper trains it from its own init):
with a zero conv only the conv gets a gradient in the first step, W_target from then on.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeling.ttt_config import CONFIG_FILE, TTTConfig

WEIGHTS_FILE = "ttt.safetensors"
DELTA_FILE = "delta.safetensors"  # the registry's ttt_delta weight file
_TTT_MARK = ".ttt_"


class TTTError(ValueError):
    """A model, state or file the TTT layers cannot work with."""


# -- state ---------------------------------------------------------------------

@dataclass(slots=True)
class LayerState:
    """One layer's fast-weight state: the accumulated update and the partial chunk."""

    delta: torch.Tensor  # (B, hidden, intermediate), float32: sum of the applied updates
    z_buf: torch.Tensor  # (B, m, intermediate), m < chunk_size: keys of the partial chunk
    t_buf: torch.Tensor  # (B, m, hidden): targets of the partial chunk
    updates: int = 0  # chunks folded in
    clipped: int = 0  # of which clipped to tau
    max_norm: float = 0.0  # largest ||dW||_F applied (after clipping)

    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in (self.delta, self.z_buf, self.t_buf))


@dataclass(slots=True)
class TTTState:
    """The fast weights of one stream (a serving session, or the overnight pass)."""

    layers: dict[int, LayerState] = field(default_factory=dict)
    tokens: int = 0  # tokens absorbed (that passed through with update=True)

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.layers.values())

    def deltas(self) -> dict[int, torch.Tensor]:
        """Layer -> the accumulated update of W_down (batch row 0), float32."""
        return {i: s.delta[0].detach().clone() for i, s in self.layers.items()}


@dataclass(slots=True)
class _Run:
    """What the hooks hand the TTT layers during one forward call."""

    state: TTTState | None = None
    update: bool = True
    enabled: bool = True
    embeddings: torch.Tensor | None = None
    mask: torch.Tensor | None = None


# -- the layer -----------------------------------------------------------------

def _clip(dw: torch.Tensor, tau: float | None) -> torch.Tensor:
    """Scale each update (the last two dims) to ||dW||_F <= tau."""
    if tau is None:
        return dw
    norm = torch.linalg.matrix_norm(dw.float()).to(dw.dtype)
    scale = torch.clamp(tau / torch.clamp(norm, min=1e-12), max=1.0)
    return dw * scale[..., None, None]


class TTTMLP(nn.Module):
    """A gated MLP whose down projection is a fast weight (see the module docstring)."""

    original: nn.Module  # the wrapped block (not a submodule: it shares these parameters)
    gate_proj: Any
    up_proj: Any
    down_proj: Any  # an nn.Linear, or peft's LoRA layer around one
    act_fn: Any

    def __init__(self, mlp: nn.Module, layer: int, cfg: TTTConfig, run: _Run) -> None:
        super().__init__()
        for name in ("gate_proj", "up_proj", "down_proj", "act_fn"):
            if not hasattr(mlp, name):
                raise TTTError(f"layer {layer}'s MLP ({type(mlp).__name__}) has no {name}: "
                               "TTT needs a gated MLP (Llama, Qwen2, Qwen3)")
        self.gate_proj = mlp.gate_proj
        self.up_proj = mlp.up_proj
        self.down_proj = mlp.down_proj
        self.act_fn = mlp.act_fn
        self.layer = layer
        self.cfg = cfg
        self._run = run
        w = self._down_weight()
        hidden = int(w.shape[0])
        self.ttt_conv = nn.Conv1d(hidden, hidden, cfg.kernel_size, groups=hidden, bias=False,
                                  device=w.device, dtype=w.dtype)
        self.ttt_target = nn.Linear(hidden, hidden, bias=False, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            self.ttt_conv.weight.zero_()
            self.ttt_target.weight.copy_(torch.eye(hidden, dtype=w.dtype, device=w.device))
        # keep the original module out of this module's parameters (it shares them)
        object.__setattr__(self, "original", mlp)
        self.train(mlp.training)  # eval mode (inference: clipping) follows the model's

    def _down_weight(self) -> torch.Tensor:
        w = getattr(self.down_proj, "weight", None)
        if w is None:  # a peft LoRA layer wraps the Linear
            w = self.down_proj.base_layer.weight
        assert isinstance(w, torch.Tensor)
        return w

    # V = Conv1D(t) W_target^T, within each chunk: t is (N, C, hidden), one row per chunk
    def value(self, t: torch.Tensor) -> torch.Tensor:
        w = self.ttt_conv.weight
        conv = F.conv1d(t.to(w.dtype).transpose(1, 2), w, padding=self.cfg.kernel_size // 2,
                        groups=w.shape[0]).transpose(1, 2)
        v: torch.Tensor = self.ttt_target(conv)
        return v

    def chunk_update(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """dW = eta V^T Z for chunks z (N, C, inter), t (N, C, hidden) -> (N, hidden, inter)."""
        v = self.value(t)
        return self.cfg.eta * torch.einsum("nch,nci->nhi", v, z.to(v.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.act_fn(self.gate_proj(x)) * self.up_proj(x)
        out: torch.Tensor = self.down_proj(z)
        run = self._run
        if not run.enabled:
            return out
        t = x if self.cfg.target == "hidden" else self._embeddings(x)
        mask = self._mask(x)
        if mask is not None:
            t = t * mask[..., None].to(t.dtype)
            zu = z * mask[..., None].to(z.dtype)
        else:
            zu = z
        if run.state is None:
            return out + self._parallel(z, zu, t)
        return out + self._stream(z, zu, t, run.state, run.update)

    def _embeddings(self, x: torch.Tensor) -> torch.Tensor:
        e = self._run.embeddings
        if e is None or e.shape[:2] != x.shape[:2]:
            raise TTTError("target='embedding' needs the token embeddings of this forward call "
                           "(call the model with input_ids or inputs_embeds)")
        return e

    def _mask(self, x: torch.Tensor) -> torch.Tensor | None:
        m = self._run.mask
        if m is None or m.dim() != 2 or m.shape[0] != x.shape[0] or m.shape[1] < x.shape[1]:
            return None
        return m[:, -x.shape[1]:]

    def _parallel(self, z: torch.Tensor, zu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b, n_tok, inter = z.shape
        hidden = t.shape[-1]
        c = self.cfg.chunk_size
        n = -(-n_tok // c)
        pad = n * c - n_tok
        zc = F.pad(z, (0, 0, 0, pad)).reshape(b, n, c, inter)
        zuc = F.pad(zu, (0, 0, 0, pad)).reshape(b * n, c, inter)
        tc = F.pad(t, (0, 0, 0, pad)).reshape(b * n, c, hidden)
        dw = self.chunk_update(zuc, tc).reshape(b, n, hidden, inter)
        if not self.training:
            dw = _clip(dw, self.cfg.tau)
        # W^(i) - W_down = sum_{j<i} dW_j: an exclusive cumsum over chunks (in float32, as
        # the streaming state accumulates)
        acc = torch.cumsum(dw.float(), dim=1)
        before = torch.cat([torch.zeros_like(acc[:, :1]), acc[:, :-1]], dim=1)
        extra = torch.einsum("bnci,bnhi->bnch", zc.to(before.dtype), before)
        return extra.reshape(b, n * c, hidden)[:, :n_tok].to(z.dtype)

    def new_layer_state(self, batch: int) -> LayerState:
        w = self._down_weight()
        hidden, inter = int(w.shape[0]), int(w.shape[1])
        dev = w.device
        return LayerState(
            delta=torch.zeros(batch, hidden, inter, device=dev, dtype=torch.float32),
            z_buf=torch.zeros(batch, 0, inter, device=dev, dtype=w.dtype),
            t_buf=torch.zeros(batch, 0, hidden, device=dev, dtype=w.dtype),
        )

    def _stream(self, z: torch.Tensor, zu: torch.Tensor, t: torch.Tensor, state: TTTState,
                update: bool) -> torch.Tensor:
        ls = state.layers.get(self.layer)
        if ls is None:
            ls = state.layers[self.layer] = self.new_layer_state(z.shape[0])
        if ls.delta.shape[0] != z.shape[0]:
            raise TTTError(f"a TTT state for batch {ls.delta.shape[0]} got batch {z.shape[0]}")
        c = self.cfg.chunk_size
        pieces = []
        pos = 0
        n_tok = z.shape[1]
        while pos < n_tok:
            take = n_tok - pos if not update else min(c - ls.z_buf.shape[1], n_tok - pos)
            zp = z[:, pos:pos + take]
            pieces.append(torch.einsum("bci,bhi->bch", zp.float(), ls.delta).to(z.dtype))
            if update:
                ls.z_buf = torch.cat([ls.z_buf, zu[:, pos:pos + take].detach()], dim=1)
                ls.t_buf = torch.cat([ls.t_buf, t[:, pos:pos + take].detach().to(ls.t_buf.dtype)],
                                     dim=1)
                if ls.z_buf.shape[1] == c:
                    self.fold(ls)
            pos += take
        return torch.cat(pieces, dim=1) if pieces else torch.zeros_like(z[..., :0])

    @torch.no_grad()
    def fold(self, ls: LayerState) -> None:
        """Apply the buffered (possibly partial) chunk's clipped update and clear the buffer."""
        if ls.z_buf.shape[1] == 0:
            return
        raw = self.chunk_update(ls.z_buf, ls.t_buf).float()
        dw = _clip(raw, self.cfg.tau)
        norms = torch.linalg.matrix_norm(dw)
        ls.delta += dw
        ls.updates += 1
        if self.cfg.tau is not None and bool((torch.linalg.matrix_norm(raw) > self.cfg.tau).any()):
            ls.clipped += 1
        ls.max_norm = max(ls.max_norm, float(norms.max()))
        ls.z_buf = ls.z_buf[:, :0]
        ls.t_buf = ls.t_buf[:, :0]


# -- attaching to a model ----------------------------------------------------------

def _unwrap(model: nn.Module) -> nn.Module:
    inner = model
    get_base = getattr(inner, "get_base_model", None)
    if callable(get_base):
        inner = get_base()
    return inner


def _decoder(model: nn.Module) -> Any:
    inner = _unwrap(model)
    get_decoder = getattr(inner, "get_decoder", None)
    dec = get_decoder() if callable(get_decoder) else getattr(inner, "model", None)
    if dec is None or not hasattr(dec, "layers"):
        raise TTTError(f"{type(inner).__name__} has no decoder layers TTT can wrap")
    return dec


class TTT:
    """The TTT layers attached to one model (`attach`): parameters, states, streaming."""

    def __init__(self, model: nn.Module, cfg: TTTConfig) -> None:
        self.model = model
        self.cfg = cfg
        self._run = _Run()
        dec = _decoder(model)
        layers = list(dec.layers)
        self.layers = cfg.selected_layers(len(layers))
        self.modules: dict[int, TTTMLP] = {}
        for i in self.layers:
            mlp = layers[i].mlp
            if isinstance(mlp, TTTMLP):
                raise TTTError(f"layer {i} already has TTT attached")
            wrapped = TTTMLP(mlp, i, cfg, self._run)
            layers[i].mlp = wrapped
            self.modules[i] = wrapped
        self._hooks = [
            dec.register_forward_pre_hook(self._capture_inputs, with_kwargs=True),
            dec.embed_tokens.register_forward_hook(self._capture_embeddings),
        ]

    # hooks: the attention mask and the embeddings of the current forward call
    def _capture_inputs(self, module: nn.Module, args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("attention_mask")
        self._run.mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        embeds = kwargs.get("inputs_embeds")
        self._run.embeddings = embeds if isinstance(embeds, torch.Tensor) else None
        ids = kwargs.get("input_ids", args[0] if args else None)
        shaped = ids if isinstance(ids, torch.Tensor) else self._run.embeddings
        if self._run.state is not None and self._run.update and shaped is not None:
            self._run.state.tokens += int(shaped.shape[1])

    def _capture_embeddings(self, module: nn.Module, args: tuple[Any, ...],
                            output: torch.Tensor) -> None:
        self._run.embeddings = output

    def detach(self) -> None:
        """Put the original MLP blocks back and remove the hooks."""
        layers = list(_decoder(self.model).layers)
        for i, m in self.modules.items():
            layers[i].mlp = m.original
        for h in self._hooks:
            h.remove()
        self.modules = {}

    # parameters
    def named_parameters(self) -> dict[str, nn.Parameter]:
        """The TTT parameters (conv and W_target), by their name in the model."""
        return {n: p for n, p in self.model.named_parameters() if _TTT_MARK in n}

    def parameters(self) -> list[nn.Parameter]:
        return list(self.named_parameters().values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in self.named_parameters().items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        own = self.named_parameters()
        missing = sorted(set(own) - set(tensors))
        extra = sorted(set(tensors) - set(own))
        if missing or extra:
            raise TTTError(f"TTT weights do not fit this model: missing {missing[:3]}, "
                           f"unexpected {extra[:3]}")
        with torch.no_grad():
            for n, p in own.items():
                if tuple(tensors[n].shape) != tuple(p.shape):
                    raise TTTError(f"TTT tensor {n!r} has shape {list(tensors[n].shape)}; "
                                   f"the model's has {list(p.shape)}")
                p.copy_(tensors[n].to(p.device, p.dtype))

    def save(self, folder: Path) -> None:
        """`ttt.safetensors` (conv and W_target of every layer) and `ttt_config.json`."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict(), str(folder / WEIGHTS_FILE))
        self.cfg.save(folder)

    def save_version(self, folder: Path) -> None:
        """A `ttt_delta` registry folder that adds these TTT layers and changes no weight:
        `save` plus a zero `delta.safetensors` on the selected layers' W_down."""
        from safetensors.torch import save_file

        folder = Path(folder)
        self.save(folder)
        params = dict(_unwrap(self.model).named_parameters())
        zeros = {}
        for i, name in self.down_proj_names().items():
            w = self.modules[i]._down_weight()
            zeros[name] = torch.zeros(w.shape, dtype=params[name].dtype if name in params
                                      else w.dtype)
        save_file(zeros, str(folder / DELTA_FILE))

    # streaming
    def new_state(self, batch: int = 1) -> TTTState:
        return TTTState({i: m.new_layer_state(batch) for i, m in self.modules.items()})

    @contextlib.contextmanager
    def stream(self, state: TTTState, *, update: bool = True) -> Iterator[TTTState]:
        """Forward calls inside run the streaming path on `state` (absorbing their tokens
        unless `update` is False: then the current fast weights only apply)."""
        if self._run.state is not None:
            raise TTTError("a TTT stream is already open on this model")
        self._run.state, self._run.update = state, update
        try:
            yield state
        finally:
            self._run.state, self._run.update = None, True

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Forward calls inside compute the model without its TTT layers (W_down only)."""
        self._run.enabled = False
        try:
            yield
        finally:
            self._run.enabled = True

    def down_proj_names(self) -> dict[int, str]:
        """Layer -> the model's name for that layer's W_down (as in the base checkpoint)."""
        by_id = {id(p): n for n, p in _unwrap(self.model).named_parameters()}
        out = {}
        for i, m in self.modules.items():
            name = by_id.get(id(m._down_weight()))
            if name is None:
                raise TTTError(f"layer {i}'s W_down is not a parameter of the model")
            out[i] = name.replace(".base_layer.", ".")
        return out

    def down_weights(self) -> dict[int, torch.Tensor]:
        """Layer -> that layer's W_down as the model computes with it (detached)."""
        return {i: m._down_weight().detach() for i, m in self.modules.items()}

    def flush(self, state: TTTState) -> None:
        """Fold every layer's partial chunk into its fast weights (end of a stream)."""
        for i, m in self.modules.items():
            if i in state.layers:
                m.fold(state.layers[i])


def attach(model: nn.Module, cfg: TTTConfig) -> TTT:
    """Wrap the selected layers' MLPs of `model` (in place) and return the handle."""
    return TTT(model, cfg)


def load_version(base: Any, folder: Path) -> tuple[nn.Module, TTT]:
    """A new model object for a TTT-enabled `ttt_delta` version: the base weights plus
    `delta.safetensors`, with the version's trained TTT layers attached (eval mode)."""
    from modeling.loading import load_with_delta

    model: nn.Module = load_with_delta(base, folder)
    handle = load_ttt(model, folder)
    model.eval()
    return model, handle


def has_ttt(folder: Path) -> bool:
    return (Path(folder) / WEIGHTS_FILE).is_file() and (Path(folder) / CONFIG_FILE).is_file()


def load_ttt(model: nn.Module, folder: Path) -> TTT:
    """Attach TTT to `model` with the config and trained parameters saved in `folder`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        cfg = TTTConfig.load(folder)
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, ValueError, json.JSONDecodeError, SafetensorError) as exc:
        raise TTTError(f"cannot read the TTT layers in {folder}: {exc}") from exc
    handle = attach(model, cfg)
    handle.load_state_dict(tensors)
    return handle
