"""Shared fixtures: the scripted fake upstream and molt under a real uvicorn."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from molt.config import load_settings
from molt.wiring import build_app
from store.settings import MoltSettings
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.server import ServerThread
from tests.fakes.tiny_model import tiny_artifacts, tiny_base  # noqa: F401 - fixtures


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    fake = FakeLLM()
    with ServerThread(fake.app) as srv:
        fake.url = srv.url  # type: ignore[attr-defined]
        yield fake


def make_settings(tmp_path: Path, fake_url: str, **extra: Any) -> MoltSettings:
    data: dict[str, Any] = {
        "store": {"url": f"sqlite+aiosqlite:///{tmp_path}/molt.db"},
        "data_dir": str(tmp_path / "data"),
        "models": [
            {"alias": "gpt-fake", "base_url": f"{fake_url}/v1", "timeout_s": 5},
        ],
    }
    # Skills (embedding model, index, injection) only where a test asks for them.
    data["skills"] = {"enabled": False}
    # The evolver loop likewise (tests that want it enable it or call it directly).
    data["evolver"] = {"enabled": False}
    for k, v in extra.items():
        data[k] = v
    return load_settings(None, data)


class Molt:
    """A running molt proxy and what tests need to reach it."""

    def __init__(self, srv: ServerThread, settings: MoltSettings, app: Any) -> None:
        self.srv = srv
        self.settings = settings
        self.app = app
        self.url = srv.url
        self.base_url = srv.url + "/v1"

    @property
    def state(self) -> Any:
        return self.app.state.molt

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the server's event loop (store reads in tests)."""
        return self.srv.call(coro)

    def flush(self) -> None:
        self.run(self.state.recorder.flush())

    def wait_turn(self, turn_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The recorded turn; a stream's turn is submitted just after its last byte."""
        from store.errors import NotFound

        deadline = time.monotonic() + timeout_s
        while True:
            self.flush()
            try:
                return self.run(self.state.trajectories.get_turn(turn_id))  # type: ignore[no-any-return]
            except NotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def molt_factory(tmp_path: Path, fake_llm: FakeLLM) -> Iterator[Any]:
    running: list[ServerThread] = []

    def factory(**extra: Any) -> Molt:
        settings = make_settings(tmp_path, fake_llm.url, **extra)  # type: ignore[attr-defined]
        app = build_app(settings)
        srv = ServerThread(app)
        srv.__enter__()
        running.append(srv)
        return Molt(srv, settings, app)

    yield factory
    for srv in reversed(running):
        srv.__exit__(None, None, None)


@pytest.fixture
def molt(molt_factory: Any) -> Molt:
    return molt_factory()
