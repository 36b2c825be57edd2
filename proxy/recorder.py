"""The recorder: a bounded queue and a background batch writer.

A request only ever calls `submit`, which never blocks and never raises: when
the queue is full the turn is dropped, counted, and logged once per interval.
The writer assembles streamed responses, writes batches in one transaction,
retries failed writes without losing the batch, and `stop()` drains everything
queued before returning (orderly shutdown loses nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from proxy.metrics import Metrics
from store.assemble import finalize_turn
from store.records import TurnRecord
from store.settings import RecorderSettings
from store.trajectories import TrajectoryStore

log = logging.getLogger("molt.recorder")


class Recorder:
    def __init__(
        self, store: TrajectoryStore, settings: RecorderSettings, metrics: Metrics
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self._queue: asyncio.Queue[TurnRecord] = asyncio.Queue(maxsize=settings.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._dropped_since_log = 0
        self._last_drop_log = 0.0
        self._idle = asyncio.Event()
        self._idle.set()
        metrics.watch_queue(self._queue.qsize)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, rec: TurnRecord) -> bool:
        try:
            self._queue.put_nowait(rec)
        except asyncio.QueueFull:
            self.metrics.recorder_dropped.inc()
            self._dropped_since_log += 1
            now = time.monotonic()
            if now - self._last_drop_log >= self.settings.drop_log_interval_s:
                log.warning(
                    "recorder queue full (%d): dropped %d turns since last report",
                    self.settings.queue_size, self._dropped_since_log,
                )
                self._last_drop_log = now
                self._dropped_since_log = 0
            return False
        self._idle.clear()
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="molt-recorder")

    async def flush(self) -> None:
        """Wait until everything submitted so far is written."""
        if self._task is None:
            await self._drain_inline()
            return
        await self._queue.join()

    async def stop(self) -> None:
        """Write everything still queued, then stop the writer."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drain_inline()

    async def _drain_inline(self) -> None:
        while not self._queue.empty():
            batch = self._take_batch()
            await self._write(batch)

    def _take_batch(self, first: TurnRecord | None = None) -> list[TurnRecord]:
        batch = [first] if first is not None else []
        while len(batch) < self.settings.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if self.settings.linger_s > 0 and self._queue.qsize() < self.settings.batch_size:
                await asyncio.sleep(self.settings.linger_s)
            batch = self._take_batch(first)
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[TurnRecord]) -> None:
        for rec in batch:
            finalize_turn(rec)
        delay = 0.05
        while True:
            try:
                await self.store.write_turns(batch)
                self.metrics.recorder_written.inc(len(batch))
                return
            except Exception as exc:  # noqa: BLE001 - any DB failure: keep the batch and retry
                self.metrics.recorder_write_errors.inc()
                log.error("recorder: writing %d turns failed (%s); retrying", len(batch), type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
