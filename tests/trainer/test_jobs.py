"""One job's windows, run by `JobRunner` with real cheap parts and a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store.database import Database
from store.keys import KeyStore
from store.registry import Registry
from store.settings import StoreSettings
from store.training import TrainingStore
from tests.trainer.job_helpers import BASE, Clock, CountingBody, parts, write_turns
from trainer.jobs import Budget, Control, JobParts, JobRunner, TrainOutcome, TrainRun, read_split
from trainer.types import Split
from trainer.windows import Window

T0 = 1_800_000_000.0
WINDOW = Window("manual", T0, None, "test", yields_to_traffic=False)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{tmp_path}/molt.db"))
    yield database
    await database.close()


async def _job(db: Database, n_turns: int = 8) -> tuple[TrainingStore, str]:
    ten = await KeyStore(db).ensure_tenant("acme")
    if n_turns:
        await write_turns(db, ten.id, at=T0, n=n_turns)
    store = TrainingStore(db)
    job, _ = await store.create_job(ten.id, "acme", trigger="manual", now=T0, data_until=T0)
    return store, job.id


async def test_a_finished_job_is_registered_gated_and_recorded(db: Database,
                                                               tmp_path: Path) -> None:
    store, job_id = await _job(db)
    reg = Registry(tmp_path / "registry")
    runner = JobRunner(store, parts(db, CountingBody(total=4), reg, bar=2.0), tmp_path / "jobs",
                       Clock(T0))
    job = await runner.run(await store.get(job_id), WINDOW, Budget(10, 100), Control(), "p1")
    assert (job.status, job.steps, job.version) == ("succeeded", 4, "v0001")
    # the score gate's bar is not reached: registered, judged, not promoted
    assert job.gate == {"status": "rejected", "promoted": False, "heldout": 2, "reward": 1.0,
                        "bar": 2.0}
    assert job.metrics is not None and job.metrics["kl"] == pytest.approx(0.04)
    assert job.metrics["data"] == {"train": 6, "heldout": 2, "retention": 0}
    meta = reg.get("acme", BASE, "v0001")
    assert meta.status == "candidate" and meta.data_window == {
        "until": T0, "train": 6, "heldout": 2, "retention": 0}
    assert reg.active("acme", BASE) is None
    assert len(read_split(Path(job.work_dir or "") / "split.json").train) == 6


class Exploding:
    """A training body that fails after two steps (a real failure, e.g. out of memory)."""

    def __call__(self, split: Split, run: TrainRun) -> TrainOutcome:
        run.report(2, {"reward": 0.1})
        raise MemoryError("the model does not fit")


async def test_a_failing_body_fails_the_job_with_its_message(db: Database,
                                                             tmp_path: Path) -> None:
    store, job_id = await _job(db)
    reg = Registry(tmp_path / "registry")
    p = parts(db, CountingBody(total=1), reg)
    broken = JobParts(load=p.load, train=Exploding(), register=p.register, gate=p.gate)
    job = await JobRunner(store, broken, tmp_path / "jobs", Clock(T0)).run(
        await store.get(job_id), WINDOW, Budget(10, 100), Control(), "p1")
    assert (job.status, job.steps) == ("failed", 2)
    assert job.error == "MemoryError: the model does not fit"
    assert [e.kind for e in await store.events(job_id)] == ["queued", "started", "failed"]
    assert reg.bases("acme") == []


async def test_no_training_data_ends_the_job_without_a_version(db: Database,
                                                               tmp_path: Path) -> None:
    store, job_id = await _job(db, n_turns=0)
    body = CountingBody(total=1)
    job = await JobRunner(store, parts(db, body, Registry(tmp_path / "r")), tmp_path / "jobs",
                          Clock(T0)).run(await store.get(job_id), WINDOW, Budget(10, 100),
                                         Control(), "p1")
    assert (job.status, job.stop_reason, job.version) == ("succeeded", "no_data", None)
    assert body.train_sizes == []


async def test_a_stop_before_the_first_step_pauses_with_nothing_lost(db: Database,
                                                                    tmp_path: Path) -> None:
    store, job_id = await _job(db)
    control = Control()
    control.stop("shutdown")
    job = await JobRunner(store, parts(db, CountingBody(total=3), Registry(tmp_path / "r")),
                          tmp_path / "jobs", Clock(T0)).run(
        await store.get(job_id), WINDOW, Budget(10, 100), control, "p1")
    assert (job.status, job.stop_reason, job.steps, job.checkpoint) == (
        "paused", "shutdown", 0, None)
