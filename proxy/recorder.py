"""The recorder: a bounded queue and a supervised background batch writer.

Invariants:

1. A request only ever calls `submit`, which never blocks, never raises and
   does no per-record work beyond an append (plus, with `spool = true`, one
   line written and flushed to the spool). When the queue is full the turn is
   dropped, counted and logged once per interval.
2. No record can stop recording. The writer finalises each turn (assembling
   streams; `finalize_turn` is total) and the store normalises it (lengths,
   non-finite numbers, NUL, lone surrogates) before writing. A batch the store
   refuses (InvalidInput) is written again turn by turn; a turn that is still
   refused goes to the `dead_letters` table, whole, and a minimal version of it
   (no bodies) into `turns`, so the others are never blocked.
3. A write the store cannot take now (StoreUnavailable: database down, locked)
   is retried with backoff, the same batch, until it succeeds or `stop()`.
4. The writer is supervised: if it dies (a bug), that is logged (error class
   and place, never prompt text), counted (`molt_recorder_restarts_total`) and
   it restarts on the same batch; after three deaths on one batch the batch
   is dead-lettered so that the rest can go on.
5. Turns are written in the order they were submitted, so `flush()` waits for
   a count, never for an empty queue, and it has a deadline (`flush_timeout_s`).
6. `stop()` writes what is queued for at most `stop_timeout_s`, then spills the
   turns still queued (and not spooled) to a local file; the next recorder to
   start on the same folder replays spill and spool files into the store
   (turn ids are primary keys: a replay is idempotent) and removes them.
7. `health()` says whether the writer is alive and keeping up: /healthz
   reports "degraded" when it is dead or a queued turn has waited longer than
   `stuck_after_s`.
8. Sinks (`TurnSink`, e.g. the OTLP export) get each batch once it is stored,
   in the writer; a sink must not block, and one that raises is logged and
   counted, never retried: a sink cannot stop or slow recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from proxy.metrics import Metrics
from proxy.spool import LocalFiles
from proxy.sse_assembly import finalize_turn
from store.dead_letters import DeadLetterStore
from store.errors import InvalidInput, StoreUnavailable
from store.records import TurnRecord
from store.settings import RecorderSettings
from store.trajectories import TrajectoryStore

log = logging.getLogger("molt.recorder")

WriterState = Literal[
    "not_started", "replaying", "idle", "writing", "retrying", "restarting", "stopped"
]
_CRASHES_PER_BATCH = 3
_PREPARE_SLICE = 16  # turns finalised between two yields to the event loop


class TurnSink(Protocol):
    """Something told about the turns the recorder has stored (they are final by then)."""

    def turns_written(self, batch: Sequence[TurnRecord]) -> None:
        """Must return at once (queue the work elsewhere) and should not raise."""
        ...


@dataclass(slots=True)
class RecorderHealth:
    """What /healthz shows under `recorder`."""

    healthy: bool
    alive: bool
    state: WriterState
    queue_depth: int
    oldest_queued_age_s: float | None
    last_write_at: float | None
    last_write_age_s: float | None
    restarts: int
    dead_letters: int
    spool: bool
    replay_done: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy, "alive": self.alive, "state": self.state,
            "queue_depth": self.queue_depth, "oldest_queued_age_s": self.oldest_queued_age_s,
            "last_write_at": self.last_write_at, "last_write_age_s": self.last_write_age_s,
            "restarts": self.restarts, "dead_letters": self.dead_letters, "spool": self.spool,
            "replay_done": self.replay_done,
        }


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame: enough to find the bug, no data from it."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno} in {last.name}"


def _minimal(rec: TurnRecord, dead_letter_id: str) -> TurnRecord:
    """The turn without its bodies, pointing at its dead letter."""
    return TurnRecord(
        id=rec.id, tenant_id=rec.tenant_id, session_id=rec.session_id, idx=rec.idx,
        turn_type=rec.turn_type, created_at=rec.created_at, request_model=rec.request_model,
        stream=rec.stream, request={}, session_external_id=rec.session_external_id,
        session_done=rec.session_done, upstream=rec.upstream, status=rec.status,
        http_status=rec.http_status, latency_ms=rec.latency_ms, ttft_ms=rec.ttft_ms,
        weight_version=rec.weight_version, skill_generation=rec.skill_generation,
        context_version=rec.context_version, request_hash=rec.request_hash,
        error={"type": "recorder_dead_letter", "dead_letter_id": dead_letter_id,
               "message": "the store refused this turn whole; it is kept in dead_letters"},
    )


class Recorder:
    def __init__(
        self,
        store: TrajectoryStore,
        settings: RecorderSettings,
        metrics: Metrics,
        *,
        data_dir: Path | None = None,
        sinks: Sequence[TurnSink] = (),
    ) -> None:
        self.store = store
        self.sinks = tuple(sinks)
        self.dead_letters = DeadLetterStore(store.db)
        self.settings = settings
        self.metrics = metrics
        root = settings.dir if settings.dir is not None else (
            settings.files_dir(data_dir) if data_dir is not None else None)
        self.files = (
            LocalFiles(root, spool=settings.spool, segment_turns=settings.spool_segment_turns)
            if root is not None else None
        )
        self._pending: deque[TurnRecord] = deque()
        self._inflight: list[TurnRecord] = []
        self._inflight_crashes = 0
        self._submitted = 0
        self._completed = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._state: WriterState = "not_started"
        self._replayed = False
        self._replay_done = asyncio.Event()
        self._last_write_at: float | None = None
        self._restarts = 0
        self._dead = 0
        self._dropped_since_log = 0
        self._last_drop_log = 0.0
        metrics.watch_recorder(lambda: self.depth, self.oldest_queued_age)

    # -- the request side ------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._pending) + len(self._inflight)

    def submit(self, rec: TurnRecord) -> bool:
        if len(self._pending) >= self.settings.queue_size:
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
        rec.queued_at = time.monotonic()
        if self.files is not None and self.files.spooling and not self.files.append(rec):
            self.metrics.recorder_spool_errors.inc()
        self._pending.append(rec)
        self._submitted += 1
        self._wake.set()
        return True

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="molt-recorder")

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every turn submitted so far is written; False if the deadline passed first."""
        timeout = self.settings.flush_timeout_s if timeout_s is None else timeout_s
        target = self._submitted
        if self._completed >= target:
            return True
        if self._task is None:
            return await self._drain_inline(timeout)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (target, fut)
        self._waiters.append(entry)
        self._hurry.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except TimeoutError:
            log.warning("recorder flush: %d turns still queued after %.1f s",
                        self.depth, timeout)
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    async def wait_replayed(self, timeout_s: float) -> bool:
        """Wait until the files left by recorders that are gone are written (readiness)."""
        if self.files is None:
            return True
        try:
            await asyncio.wait_for(self._replay_done.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        """Write what is queued (at most `stop_timeout_s`), spill the rest, stop the writer."""
        timeout = self.settings.stop_timeout_s
        if self._task is not None:
            await self.flush(timeout)
            task, self._task = self._task, None
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if task in done and not task.cancelled() and task.exception() is not None:
                log.error("recorder writer ended with %s", type(task.exception()).__name__)
        else:
            await self._drain_inline(timeout)
        self._state = "stopped"
        leftover = [*self._inflight, *self._pending]
        self._inflight, self._pending = [], deque()
        if leftover:
            self._spill(leftover)
        if self.files is not None:
            self.files.close()

    def _spill(self, leftover: list[TurnRecord]) -> None:
        if self.files is None:
            self.metrics.recorder_lost.inc(len(leftover))
            log.error("recorder stopped with %d turns unwritten and no folder to spill them to",
                      len(leftover))
            return
        try:
            path, lost = self.files.spill(leftover)
        except OSError as exc:
            self.metrics.recorder_lost.inc(len(leftover))
            log.error("recorder: spilling %d turns failed (%s); they are lost",
                      len(leftover), type(exc).__name__)
            return
        spooled = sum(r.spool_segment is not None for r in leftover)
        self.metrics.recorder_spilled.inc(len(leftover) - spooled - lost)
        if lost:
            self.metrics.recorder_lost.inc(lost)
        log.warning(
            "recorder stopped before writing %d turns: %d spilled to %s, %d kept in the spool, "
            "%d lost; the next start writes them", len(leftover), len(leftover) - spooled - lost,
            path, spooled, lost,
        )

    # -- health ----------------------------------------------------------------

    def oldest_queued_age(self) -> float:
        head = self._inflight[0] if self._inflight else (self._pending[0] if self._pending else None)
        if head is None or head.queued_at is None:
            return 0.0
        return max(0.0, time.monotonic() - head.queued_at)

    def health(self) -> RecorderHealth:
        alive = self._task is not None and not self._task.done()
        age = self.oldest_queued_age() if self.depth else None
        stuck = age is not None and age > self.settings.stuck_after_s
        last = self._last_write_at
        return RecorderHealth(
            healthy=alive and not stuck, alive=alive, state=self._state, queue_depth=self.depth,
            oldest_queued_age_s=None if age is None else round(age, 3),
            last_write_at=last,
            last_write_age_s=None if last is None else round(max(0.0, time.time() - last), 3),
            restarts=self._restarts, dead_letters=self._dead,
            spool=bool(self.files and self.files.spooling),
            replay_done=self.files is None or self._replay_done.is_set(),
        )

    # -- the writer ------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = 0.05
        while True:
            try:
                await self._run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - supervised: logged, counted, restarted
                self._restarts += 1
                self._state = "restarting"
                self.metrics.recorder_restarts.inc()
                log.error("recorder writer died (%s at %s); restarting",
                          type(exc).__name__, _where(exc))
                if self._inflight:
                    self._inflight_crashes += 1
                    if self._inflight_crashes >= _CRASHES_PER_BATCH:
                        await self._give_up(self._inflight, f"writer died: {type(exc).__name__}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.max_retry_delay_s)

    async def _run(self) -> None:
        if not self._replayed:
            self._replayed = True  # once: a replay that kills the writer is left for next start
            try:
                await self._replay()
            finally:
                self._replay_done.set()
        while True:
            if not self._inflight:
                await self._take_batch()
            batch = self._inflight
            self._state = "writing"
            await self._write(batch)
            self._finish(batch)

    async def _take_batch(self) -> None:
        self._state = "idle"
        while not self._pending:
            self._wake.clear()
            await self._wake.wait()
        if (self.settings.linger_s > 0 and len(self._pending) < self.settings.batch_size
                and not self._hurry.is_set()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), self.settings.linger_s)
        n = min(self.settings.batch_size, len(self._pending))
        self._inflight = [self._pending.popleft() for _ in range(n)]
        self._inflight_crashes = 0

    def _finish(self, batch: list[TurnRecord]) -> None:
        self._completed += len(batch)
        if batch is self._inflight:
            self._inflight = []
        if self.files is not None:
            self.files.done(batch)
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, fut in self._waiters:
            if target <= self._completed:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((target, fut))
        self._waiters = still
        if not still:
            self._hurry.clear()

    async def _drain_inline(self, timeout: float) -> bool:
        """Write what is queued without a writer task (a recorder never started)."""
        async def drain() -> None:
            while self._pending:
                n = min(self.settings.batch_size, len(self._pending))
                self._inflight = [self._pending.popleft() for _ in range(n)]
                await self._write(self._inflight)
                self._finish(self._inflight)

        try:
            await asyncio.wait_for(drain(), timeout)
            return True
        except TimeoutError:
            return False

    async def _replay(self) -> None:
        """Write the spool and spill files of recorders that are gone, then remove them."""
        if self.files is None:
            return
        self._state = "replaying"
        for orphan in self.files.orphans():
            try:
                n = 0
                for batch in orphan.batches(self.settings.batch_size):
                    await self._write(batch)
                    n += len(batch)
                self.metrics.recorder_replayed.inc(n)
                log.info("recorder: replayed %d turns from %s%s", n, orphan.path.name,
                         f" ({orphan.bad_lines} unreadable lines skipped)" if orphan.bad_lines else "")
                orphan.remove()
            finally:
                orphan.release()

    # -- writing ---------------------------------------------------------------

    def _prepare(self, rec: TurnRecord) -> None:
        try:
            finalize_turn(rec)
        except Exception as exc:  # noqa: BLE001 - finalize_turn is total; a bug must not lose the turn
            self.metrics.recorder_finalize_errors.inc()
            log.error("recorder: reading turn %s's response failed (%s at %s); stored without it",
                      rec.id, type(exc).__name__, _where(exc))
            rec.stream_chunks = rec.response_bytes = None
            rec.response = None
            rec.error = {"type": "recorder_error", "message": "molt could not read this response"}
        if rec.on_recorded is not None:
            notify, rec.on_recorded = rec.on_recorded, None
            try:
                notify(rec)
            except Exception as exc:  # noqa: BLE001 - a watcher's bug must not lose the turn
                log.error("recorder: the usage watcher of turn %s failed (%s at %s)",
                          rec.id, type(exc).__name__, _where(exc))

    async def _backoff(self, delay: float, exc: StoreUnavailable, n: int) -> float:
        self._state = "retrying"
        self.metrics.recorder_write_errors.inc()
        log.error("recorder: writing %d turns failed (%s); retrying in %.2f s", n, exc, delay)
        await asyncio.sleep(delay)
        return min(delay * 2, self.settings.max_retry_delay_s)

    async def _write(self, batch: list[TurnRecord]) -> None:
        """Store `batch`: whole, else turn by turn, else dead letters. Returns only when done."""
        for i, rec in enumerate(batch, 1):
            self._prepare(rec)
            if i % _PREPARE_SLICE == 0:
                # Assembling a batch of streams is milliseconds of work per slice: the
                # requests waiting on the loop go first.
                await asyncio.sleep(0)
        delay = 0.05
        while True:
            try:
                await self.store.write_turns(batch)
                self._wrote(batch)
                return
            except StoreUnavailable as exc:
                delay = await self._backoff(delay, exc, len(batch))
            except InvalidInput as exc:
                if len(batch) == 1:
                    await self._dead_letter(batch[0], str(exc))
                    return
                log.warning("recorder: the store refused a batch of %d turns (%s); "
                            "writing them one by one", len(batch), exc)
                break
        for rec in batch:
            await self._write([rec])

    def _wrote(self, batch: Sequence[TurnRecord]) -> None:
        self.metrics.recorder_written.inc(len(batch))
        self._last_write_at = time.time()
        for sink in self.sinks:
            try:
                sink.turns_written(batch)
            except Exception as exc:  # noqa: BLE001 - a sink never stops recording
                self.metrics.recorder_sink_errors.inc()
                log.error("recorder: sink %s failed (%s at %s)", type(sink).__name__,
                          type(exc).__name__, _where(exc))

    async def _dead_letter(self, rec: TurnRecord, why: str) -> None:
        log.error("recorder: the store refused turn %s (%s); kept in dead_letters", rec.id, why)
        delay = 0.05
        while True:
            try:
                dl_id = await self.dead_letters.add(rec, why)
                break
            except StoreUnavailable as exc:
                delay = await self._backoff(delay, exc, 1)
            except InvalidInput as exc:
                self.metrics.recorder_lost.inc()
                log.error("recorder: turn %s could not be kept as a dead letter either (%s); lost",
                          rec.id, exc)
                return
        self._dead += 1
        self.metrics.recorder_dead_letters.inc()
        minimal = _minimal(rec, dl_id)
        while True:
            try:
                await self.store.write_turns([minimal])
                self._wrote([minimal])
                return
            except StoreUnavailable as exc:
                delay = await self._backoff(delay, exc, 1)
            except InvalidInput as exc:
                log.error("recorder: not even a minimal turn %s could be stored (%s)", rec.id, exc)
                return

    async def _give_up(self, batch: list[TurnRecord], why: str) -> None:
        """After repeated writer deaths on `batch`: write each turn alone; keep the ones that
        still kill the writer as dead letters (without their record if even that fails)."""
        for rec in batch:
            try:
                await self._write([rec])
                continue
            except Exception as exc:  # noqa: BLE001 - this turn is the one that kills the writer
                log.error("recorder: turn %s kills the writer (%s at %s)", rec.id,
                          type(exc).__name__, _where(exc))
            try:
                await self.dead_letters.add(rec, why)
                self._dead += 1
                self.metrics.recorder_dead_letters.inc()
            except Exception as exc:  # noqa: BLE001 - last resort; counted and logged
                self.metrics.recorder_lost.inc()
                log.error("recorder: turn %s lost (%s)", rec.id, type(exc).__name__)
        self._finish(batch)
