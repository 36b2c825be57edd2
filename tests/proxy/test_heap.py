"""A server process settles its heap once started: a full collection then skips it."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc, time
from proxy import heap
junk = [[{"k": i}] for i in range(200_000)]  # what a started server holds: never garbage
def full_ms():
    t0 = time.perf_counter(); gc.collect(); return (time.perf_counter() - t0) * 1000
before = min(full_ms() for _ in range(3))
frozen = heap.settle()
after = min(full_ms() for _ in range(3))
print(frozen, gc.get_threshold()[0], before, after)
"""


def test_settle_freezes_the_heap_and_widens_the_young_generation() -> None:
    # In a child: freezing is for the life of the process, and this one runs other tests.
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    frozen, young, before, after = int(out[0]), int(out[1]), float(out[2]), float(out[3])
    assert frozen > 200_000  # the 200k lists at least (dicts of atoms are not tracked)
    assert young == 20_000
    assert after < before / 3  # a full collection no longer walks them
