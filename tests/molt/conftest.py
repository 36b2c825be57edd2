"""Fixtures of the scale-out tests: a blank PostgreSQL, a Chroma server, real molt processes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.runner import DEFAULT_CHECKPOINT
from tests.molt.cluster import Procs, chroma_server, policy_config
from tests.store.conftest import _reset_pg


@pytest.fixture
def policy_procs(tmp_path: Path) -> Iterator[Procs]:
    """Processes of one scaled-out molt serving the tiny policy (see `policy_config`);
    the registry is a `file://` URL, so every process reaches it through fsspec."""
    pg = os.environ.get("MOLT_TEST_PG_URL")
    if pg is None:
        pytest.skip("needs PostgreSQL: set MOLT_TEST_PG_URL")
    if not (DEFAULT_CHECKPOINT / "config.json").exists():
        pytest.skip("the tiny policy checkpoint is not built")
    # a blank database: keys other tests left there would close the proxies (no open mode)
    asyncio.run(_reset_pg(pg))
    with chroma_server(tmp_path / "chroma-server") as chroma:
        procs = Procs(tmp_path, policy_config(
            tmp_path, store_url=pg, chroma_url=chroma, registry=f"file://{tmp_path}/registry",
            policy=DEFAULT_CHECKPOINT))
        try:
            yield procs
        finally:
            procs.stop_all()
