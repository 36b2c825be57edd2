"""Where the weight-version registry keeps its files: a local folder, or fsspec by URL.

`store.registry` says what the files mean; this module only moves bytes, with
one relative path syntax (`tenant/base/v0007/meta.json`) for both kinds:

- `LocalFiles`, for a plain path (the default, and any shared mount: NFS, a
  Kubernetes volume): `flock` serialises writers, `os.replace` flips a file
  atomically, a version is its own folder, read where it lies.
- `FsspecFiles`, for a URL (`file://`, `memory://`, `s3://`, `gs://`: any
  filesystem fsspec knows whose driver is installed): a file is replaced by
  writing a temporary object and moving it over (on an object store a single
  PUT, which readers see whole); writers take a lock object made by exclusive
  create (taken over when older than `lock_ttl_s`: its holder died); a
  version's files are copied into a local cache folder before anything reads
  them (artifacts never change once written, and serving loads from a path).

Both keep the registry's one rule for readers: a version exists once its
`meta.json` does, and `meta.json` is written after every artifact file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from store.errors import Conflict, InvalidInput

_CREATE = threading.Lock()


def is_url(root: str | Path) -> bool:
    """`s3://bucket/registry`, `file:///srv/registry`: a registry reached through fsspec."""
    return isinstance(root, str) and "://" in root


class RegistryFiles(Protocol):
    """The file operations the registry needs; `rel` is a '/'-joined path under the root."""

    location: str  # the root as the user wrote it, for messages

    def read_text(self, rel: str) -> str:
        """The file's text; FileNotFoundError when it does not exist."""
        ...

    def write_text(self, rel: str, text: str) -> None:
        """Replace the file whole: a reader sees the old text or the new one."""
        ...

    def append_text(self, rel: str, text: str) -> None:
        """Append to the file (the caller holds the lock of its folder)."""
        ...

    def is_file(self, rel: str) -> bool: ...

    def dirs(self, rel: str) -> list[str]:
        """Names of the folders directly under `rel` ([] when it does not exist)."""
        ...

    def reserve(self, rel: str) -> None:
        """Claim a new version folder (under the lock); FileExistsError if it is taken."""
        ...

    def put_tree(self, src: Path, rel: str) -> None:
        """Copy the files of the local folder `src` into `rel`."""
        ...

    def remove(self, rel: str) -> None:
        """Delete one file; FileNotFoundError when it does not exist."""
        ...

    def remove_tree(self, rel: str) -> None: ...

    def lock(self, rel: str) -> contextlib.AbstractContextManager[None]:
        """Exclusive, across threads and processes, for the folder `rel`."""
        ...

    def signature(self, rel: str) -> object:
        """A cheap value that changes when the file changes (None when it does not exist)."""
        ...

    def local_dir(self, rel: str, tag: str) -> Path:
        """A local folder holding the files of `rel`; `tag` names this write of them."""
        ...


class LocalFiles:
    """The registry in a local (or mounted) folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    def _p(self, rel: str) -> Path:
        return self.root / rel

    def read_text(self, rel: str) -> str:
        return self._p(rel).read_text()

    def write_text(self, rel: str, text: str) -> None:
        path = self._p(rel)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def append_text(self, rel: str, text: str) -> None:
        with self._p(rel).open("a") as f:
            f.write(text)

    def is_file(self, rel: str) -> bool:
        return self._p(rel).is_file()

    def dirs(self, rel: str) -> list[str]:
        d = self._p(rel)
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir())

    def reserve(self, rel: str) -> None:
        self._p(rel).mkdir(parents=True)

    def put_tree(self, src: Path, rel: str) -> None:
        shutil.copytree(src, self._p(rel), dirs_exist_ok=True)

    def remove(self, rel: str) -> None:
        os.remove(self._p(rel))

    def remove_tree(self, rel: str) -> None:
        shutil.rmtree(self._p(rel))

    @contextlib.contextmanager
    def lock(self, rel: str) -> Iterator[None]:
        d = self._p(rel)
        d.mkdir(parents=True, exist_ok=True)
        with (d / ".lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def signature(self, rel: str) -> object:
        try:
            st = os.stat(self._p(rel))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def local_dir(self, rel: str, tag: str) -> Path:
        return self._p(rel)


class FsspecFiles:
    """The registry on any fsspec filesystem, with a local cache of version folders."""

    def __init__(self, url: str, cache_dir: Path, *, lock_ttl_s: float = 30.0,
                 lock_wait_s: float = 60.0) -> None:
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover - fsspec is a dependency
            raise InvalidInput(f"registry_dir {url!r} is a URL, but fsspec is not installed") from exc
        try:
            # a local folder through fsspec makes parent folders as it writes, like a store
            local = url.startswith(("file://", "local://"))
            fs, path = fsspec.core.url_to_fs(url, **({"auto_mkdir": True} if local else {}))
        except (ImportError, ValueError) as exc:  # an unknown scheme, or its driver missing
            raise InvalidInput(f"registry_dir {url!r}: {exc}") from exc
        self.fs: Any = fs  # fsspec ships no type information
        self.base = str(path).rstrip("/")
        self.location = url
        # one cache per registry URL, so two registries never share cached files
        self.cache = cache_dir / hashlib.sha256(url.encode()).hexdigest()[:16]
        self.lock_ttl_s = lock_ttl_s
        self.lock_wait_s = lock_wait_s

    def _p(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def read_text(self, rel: str) -> str:
        data: bytes = self.fs.cat_file(self._p(rel))
        return data.decode()

    def write_text(self, rel: str, text: str) -> None:
        path = self._p(rel)
        parent, _, name = path.rpartition("/")
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        self.fs.pipe_file(tmp, text.encode())
        self.fs.mv(tmp, path)

    def append_text(self, rel: str, text: str) -> None:
        # object stores cannot append: read, add, replace (the caller holds the lock)
        try:
            old = self.read_text(rel)
        except FileNotFoundError:
            old = ""
        self.write_text(rel, old + text)

    def is_file(self, rel: str) -> bool:
        return bool(self.fs.isfile(self._p(rel)))

    def dirs(self, rel: str) -> list[str]:
        path = self._p(rel)
        self.fs.invalidate_cache(path)  # s3fs and others cache listings
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        return sorted(str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
                      for e in entries if e.get("type") == "directory")

    def reserve(self, rel: str) -> None:
        # an object store has no empty folders: a marker object holds the name
        self._create_exclusive(f"{self._p(rel)}/.reserved", b"")

    def put_tree(self, src: Path, rel: str) -> None:
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            self.fs.put_file(str(f), f"{self._p(rel)}/{f.relative_to(src).as_posix()}")

    def remove(self, rel: str) -> None:
        self.fs.rm_file(self._p(rel))

    def remove_tree(self, rel: str) -> None:
        self.fs.rm(self._p(rel), recursive=True)

    def _create_exclusive(self, path: str, data: bytes) -> None:
        """Create `path`, or raise FileExistsError; fsspec's "xb" mode where the store has it."""
        with _CREATE:  # some stores (memory://) check, then create: not atomic across threads
            try:
                with self.fs.open(path, "xb") as f:
                    f.write(data)
            except (NotImplementedError, ValueError):
                # no exclusive create on this store: check, then write (a narrow race; see RUNBOOK)
                if self.fs.exists(path):
                    raise FileExistsError(path) from None
                self.fs.pipe_file(path, data)

    @contextlib.contextmanager
    def lock(self, rel: str) -> Iterator[None]:
        path = f"{self._p(rel)}/.lock"
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            me = json.dumps({"owner": owner, "at": time.time()}).encode()
            try:
                self._create_exclusive(path, me)
                break
            except FileExistsError:
                self._break_if_stale(path)
            if time.monotonic() > deadline:
                raise Conflict(f"the registry lock {self.location}/{rel}/.lock is held; if no "
                               "molt process is writing the registry, delete it")
            time.sleep(0.05)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                if self.fs.cat_file(path) == me:
                    self.fs.rm_file(path)

    def _break_if_stale(self, path: str) -> None:
        try:
            at = float(json.loads(self.fs.cat_file(path))["at"])
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError):
            # not written yet (a writer between create and write), or its writer died there:
            # judge by the object's own time where the store tells it
            try:
                at = self.fs.modified(path).timestamp()
            except (NotImplementedError, OSError, AttributeError):
                return
        if time.time() - at > self.lock_ttl_s:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(path)

    def signature(self, rel: str) -> object:
        # the pointer's content: cheap for a tiny file, and right on every store
        try:
            return self.read_text(rel)
        except FileNotFoundError:
            return None

    def local_dir(self, rel: str, tag: str) -> Path:
        key = hashlib.sha256(tag.encode()).hexdigest()[:12]
        target = self.cache / f"{rel}-{key}"
        if target.is_dir():
            return target
        stage = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        src = self._p(rel)
        self.fs.invalidate_cache(src)
        for remote in self.fs.find(src):
            name = str(remote)[len(src):].lstrip("/")
            if not name or name.rsplit("/", 1)[-1].startswith("."):
                continue  # markers and locks are not part of the artifact
            dest = stage / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(remote, str(dest))
        if not (stage / "meta.json").is_file():  # listed before its files (eventual consistency)
            shutil.rmtree(stage, ignore_errors=True)
            raise FileNotFoundError(f"{self.location}/{rel}: no files")
        try:
            os.rename(stage, target)
        except OSError:  # another thread or process cached it first
            shutil.rmtree(stage, ignore_errors=True)
        return target


def open_files(root: str | Path, cache_dir: Path | None) -> RegistryFiles:
    """The registry's files at `root`: fsspec for a URL, else the local folder.

    `cache_dir` holds local copies of a URL registry's versions (default: under the
    system's temporary folder); a local folder needs none.
    """
    if is_url(root):
        cache = cache_dir if cache_dir is not None else Path(tempfile.gettempdir()) / "molt-registry"
        return FsspecFiles(str(root), cache)
    return LocalFiles(Path(root))
