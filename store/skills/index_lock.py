"""One process per embedded Chroma folder: a `flock` held for the process's whole life.

Embedded Chroma (`PersistentClient`) keeps its state in memory and in a SQLite file
that it does not re-read: a second process on the same folder never sees the
first one's writes, and their writes interleave into an index neither trusts
(issue 18: a skill learned by one process was served for unrelated queries). So
the first process to open a folder takes `<folder>/molt.lock` and keeps it until
it exits; another process asking for the same folder is refused with a message
that names the fix (`skills.chroma_url`, a Chroma server shared by all of them).
Inside one process the claim is shared (Chroma itself shares one client per path).

The kernel releases the lock when the process dies, kill -9 included.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from store.skills.errors import IndexInUse

LOCK_NAME = "molt.lock"

_held: dict[Path, int] = {}  # resolved folder -> the open, locked file descriptor
_guard = threading.Lock()


def claim(folder: Path) -> None:
    """Take `folder`'s lock for this process (again: no-op), or raise `IndexInUse`."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    with _guard:
        if key in _held:
            return
        path = key / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise IndexInUse(
                f"the embedded skill index {key} is in use by another molt process (pid "
                f"{owner}); processes cannot share an embedded Chroma folder. Run a Chroma "
                "server (`chroma run --path DIR`) and set skills.chroma_url (env "
                "MOLT_SKILLS__CHROMA_URL) in every process, or give each its own "
                "skills.chroma_path") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _held[key] = fd
