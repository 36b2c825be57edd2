"""The recorder's local files: the spool, the spill at stop, and their replay.

Layout: `<root>/<pid>-<random>/` per recorder (one process may hold several
apps), holding `lock` (an exclusive `flock` for the recorder's whole life),
spool segments `spool-NNNNNN.jsonl` and spill files `spill-NNNNNN.jsonl`, one
turn per line (`store.records.turn_to_json`).

- Spool (optional): each finished turn is appended and flushed to the current
  segment before it is queued, so it survives the process (kill -9; not a
  power cut: no fsync). A segment is closed after `segment_turns` turns, and
  removed once every turn in it is written; the current one is closed and
  removed as soon as the writer has caught up with it.
- Spill: at a stop that ran past its deadline, the turns still queued and not
  already spooled are written (and fsynced) to a spill file.
- Replay: a folder whose lock nobody holds belongs to a recorder that is gone
  (stopped or killed); the next recorder to start takes its lock, writes its
  turns into the store (idempotent: turn ids are primary keys) and removes it.
  A folder whose lock is held belongs to a live process and is left alone.

POSIX only (`fcntl.flock`, released by the kernel when a process dies).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from store.records import TurnRecord, turn_from_json, turn_to_json

log = logging.getLogger("molt.recorder")


def _lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on `path`, or None if another holder has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _serialise(rec: TurnRecord) -> bytes:
    return (json.dumps(turn_to_json(rec), ensure_ascii=True, default=str) + "\n").encode("ascii")


class Orphan:
    """The folder of a recorder that is gone: its turns, to replay, then remove."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self.bad_lines = 0

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.glob("*.jsonl") if p.is_file())

    def batches(self, size: int) -> Iterator[list[TurnRecord]]:
        batch: list[TurnRecord] = []
        for file in self.files():
            with file.open("rb") as f:
                for line in f:
                    rec = self._parse(line)
                    if rec is None:
                        continue
                    batch.append(rec)
                    if len(batch) >= size:
                        yield batch
                        batch = []
        if batch:
            yield batch

    def _parse(self, line: bytes) -> TurnRecord | None:
        if not line.strip():
            return None
        try:
            return turn_from_json(json.loads(line))
        except (ValueError, TypeError, KeyError):
            # A line cut by a kill in the middle of a write, or not ours.
            self.bad_lines += 1
            return None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LocalFiles:
    """This recorder's folder (created on first use) and the folders of recorders gone."""

    def __init__(self, root: Path, *, spool: bool, segment_turns: int) -> None:
        self.root = root
        self.spooling = spool
        self.segment_turns = segment_turns
        self.dir = root / f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock_fd: int | None = None
        self._seq = 0
        self._segment: str | None = None
        self._segment_file: IO[bytes] | None = None
        self._segment_lines = 0
        self._outstanding: dict[str, int] = {}
        self.errors = 0

    def _ensure_dir(self) -> None:
        if self._lock_fd is not None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = _lock(self.dir / "lock")
        if fd is None:  # cannot happen: the name is ours alone
            raise RuntimeError(f"recorder folder {self.dir} is locked by another process")
        self._lock_fd = fd

    def _next_name(self, kind: str) -> str:
        self._seq += 1
        return f"{kind}-{self._seq:06d}.jsonl"

    # -- spool -------------------------------------------------------------

    def append(self, rec: TurnRecord) -> bool:
        """Spool `rec` (sets `rec.spool_segment`); False, counted, if it could not be written."""
        try:
            line = _serialise(rec)
            if self._segment_file is None:
                self._ensure_dir()
                self._segment = self._next_name("spool")
                self._segment_file = (self.dir / self._segment).open("ab")
                self._segment_lines = 0
            self._segment_file.write(line)
            self._segment_file.flush()
        except (OSError, ValueError, TypeError, RecursionError) as exc:
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.error("recorder spool: a turn could not be spooled (%s); %d so far",
                          type(exc).__name__, self.errors)
            return False
        assert self._segment is not None
        rec.spool_segment = self._segment
        self._outstanding[self._segment] = self._outstanding.get(self._segment, 0) + 1
        self._segment_lines += 1
        if self._segment_lines >= self.segment_turns:
            self._close_segment()
        return True

    def _close_segment(self) -> None:
        if self._segment_file is not None:
            self._segment_file.close()
        name, self._segment, self._segment_file = self._segment, None, None
        if name is not None and self._outstanding.get(name, 0) == 0:
            self._remove(name)

    def _remove(self, name: str) -> None:
        self._outstanding.pop(name, None)
        try:
            (self.dir / name).unlink()
        except FileNotFoundError:
            pass

    def done(self, batch: Sequence[TurnRecord]) -> None:
        """These turns are stored (or dead-lettered): drop them from the spool."""
        for rec in batch:
            name = rec.spool_segment
            if name is None:
                continue
            rec.spool_segment = None
            left = self._outstanding.get(name, 0) - 1
            self._outstanding[name] = left
            if left <= 0 and name != self._segment:
                self._remove(name)
        if self._segment is not None and self._outstanding.get(self._segment, 0) <= 0:
            self._close_segment()  # caught up: compact the spool to nothing

    # -- spill, close ------------------------------------------------------

    def spill(self, recs: Sequence[TurnRecord]) -> tuple[Path | None, int]:
        """Write the turns not already spooled to a spill file: (file, turns left unsaved)."""
        todo = [r for r in recs if r.spool_segment is None]
        if not todo:
            return None, 0
        self._ensure_dir()
        path = self.dir / self._next_name("spill")
        lost = 0
        with path.open("wb") as f:
            for rec in todo:
                try:
                    f.write(_serialise(rec))
                except (ValueError, TypeError, RecursionError):
                    lost += 1
            f.flush()
            os.fsync(f.fileno())
        return path, lost

    def close(self) -> None:
        """Release the folder: removed if nothing in it waits for the store, kept (to replay) if not."""
        if self._segment_file is not None:
            self._segment_file.close()
            self._segment_file = None
        self._segment = None
        if self._lock_fd is None:
            return
        waiting = [p for p in self.dir.glob("*.jsonl") if p.name.startswith("spill-")]
        waiting += [self.dir / n for n, left in self._outstanding.items() if left > 0]
        if not waiting:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            for p in self.dir.glob("spool-*.jsonl"):
                if self._outstanding.get(p.name, 0) <= 0:
                    p.unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None

    # -- replay ------------------------------------------------------------

    def orphans(self) -> Iterator[Orphan]:
        """The folders of recorders that are gone, each locked for us while we replay it."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.iterdir()):
            if not path.is_dir() or path == self.dir:
                continue
            try:
                fd = _lock(path / "lock")
            except OSError:
                continue
            if fd is None:
                continue  # a live recorder's
            yield Orphan(path, fd)
