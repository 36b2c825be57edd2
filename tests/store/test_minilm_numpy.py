"""The numpy all-MiniLM-L6-v2 gives sentence-transformers' vectors, without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from store.skills.embedding import DIM, MiniLMEmbedder, NumpyEmbedder

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "Book a table for two at the harbour restaurant tonight.",
    "hi",
    "",
    "[Slack #ops 10:32] Ünïcödé 東京 🎉 — résumé naïve café",
    # longer than 256 word pieces: both truncate at the same place
    "Use when a tool call returns an error; diagnose and retry with corrected arguments. " * 30,
    "create_invoice send_email lookup_contact",
]


def test_the_same_vectors_as_sentence_transformers() -> None:
    texts = TEXTS * 3  # batches mix lengths; rows come back in the order given
    ours = NumpyEmbedder(batch_size=4).embed(texts)
    theirs = MiniLMEmbedder().embed(texts)
    assert ours.shape == (len(texts), DIM) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # rankings agree: the nearest other text to each (distinct) text is the same
    a, b = ours[:len(TEXTS)], theirs[:len(TEXTS)]
    assert ((a @ a.T).argsort(1)[:, -2] == (b @ b.T).argsort(1)[:, -2]).all()


def test_no_texts_no_vectors() -> None:
    assert NumpyEmbedder().embed([]).shape == (0, DIM)


def test_it_imports_no_torch() -> None:
    code = ("import sys\nfrom store.skills.embedding import NumpyEmbedder\n"
            "v = NumpyEmbedder().embed(['plan the steps first'])\n"
            "print(v.shape, sorted({'torch', 'transformers', 'sentence_transformers'} & "
            "{m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.stdout.strip() == "(1, 384) []", out.stderr
