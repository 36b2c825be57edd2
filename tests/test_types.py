"""mypy --strict holds for store, proxy and evolver (STYLE.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_strict_packages() -> None:
    r = subprocess.run([sys.executable, "-m", "mypy", "store", "proxy", "evolver"], cwd=ROOT, check=False,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
