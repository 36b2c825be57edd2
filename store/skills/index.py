"""The vector index of skills: one Chroma collection per tenant.

Embedded (`chromadb.PersistentClient` under the data folder) by default; a
Chroma server (`HttpClient`) when `skills.chroma_url` is set, so several proxy
replicas share one index. We embed ourselves (the collection has no embedding
function, so Chroma never tries to download one) and keep each skill's
content hash in its metadata: syncing re-embeds only skills whose text
changed, and a replica that finds the index already current does nothing.
Only `active` skills are in the index: retired and quarantined skills can
never come back from a query.

The client is opened on first use (`SkillIndex` takes an opener, not a client):
importing chromadb costs seconds and tens of MB, which a proxy that never
retrieves should not pay.

All methods block (Chroma, the model): the proxy calls them from a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from store.skills.embedding import Embedder
from store.skills.errors import SkillIndexError
from store.skills.index_lock import claim
from store.skills.skillfile import Skill

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Hit:
    name: str
    content_hash: str
    similarity: float


@dataclass(frozen=True, slots=True)
class IndexSync:
    embedded: int
    deleted: int


def open_client(path: Path | None, url: str | None) -> Any:
    try:
        import chromadb
        from chromadb.config import Settings
    except ImportError as exc:
        raise SkillIndexError(f"chromadb is not installed: {exc}") from exc
    cfg = Settings(anonymized_telemetry=False)
    try:
        if url:
            u = urlparse(url)
            return chromadb.HttpClient(
                host=u.hostname or "localhost", port=u.port or 8000, ssl=u.scheme == "https",
                settings=cfg,
            )
        assert path is not None
        claim(path)  # one process per embedded folder (store/skills/index_lock.py)
        return chromadb.PersistentClient(path=str(path), settings=cfg)
    except (ValueError, OSError, RuntimeError) as exc:
        raise SkillIndexError(f"cannot open the skill index: {exc}") from exc


class SkillIndex:
    """`opener` gives the Chroma client (`open_client`); it is called once, on first use."""

    def __init__(self, opener: Callable[[], Any], embedder: Embedder, *, batch: int = 512) -> None:
        self.opener = opener
        self.embedder = embedder
        self.batch = batch
        self._lock = threading.Lock()
        self._client: Any = None
        self._collections: dict[str, Any] = {}

    def _opened(self) -> Any:
        """The client, opened now if this is the first use (call under `_lock`)."""
        if self._client is None:
            self._client = self.opener()
        return self._client

    def _collection(self, tenant_id: str) -> Any:
        col = self._collections.get(tenant_id)
        if col is None:
            name = f"molt_skills_{tenant_id}"[:500]
            col = self._opened().get_or_create_collection(
                name, embedding_function=None, metadata={"hnsw:space": "cosine"}
            )
            self._collections[tenant_id] = col
        return col

    def sync(self, tenant_id: str, active: Mapping[str, tuple[Skill, str]]) -> IndexSync:
        """Make the tenant's collection hold exactly `active` (name -> (skill, content hash))."""
        with self._lock:
            try:
                col = self._collection(tenant_id)
                have = col.get(include=["metadatas"])
                stored = {
                    i: (m or {}).get("hash") for i, m in zip(have["ids"], have["metadatas"] or [])
                }
                stale = [i for i in stored if i not in active]
                todo = [n for n, (_, h) in sorted(active.items()) if stored.get(n) != h]
                for start in range(0, len(todo), self.batch):
                    names = todo[start:start + self.batch]
                    skills = [active[n][0] for n in names]
                    vectors = self.embedder.embed([s.embedding_text() for s in skills])
                    col.upsert(
                        ids=names, embeddings=vectors,
                        metadatas=[{"hash": active[n][1]} for n in names],
                    )
                for start in range(0, len(stale), self.batch):
                    col.delete(ids=stale[start:start + self.batch])
            except SkillIndexError:
                raise
            except Exception as exc:  # chromadb raises many unrelated types
                raise SkillIndexError(f"skill index sync failed: {exc}") from exc
        return IndexSync(len(todo), len(stale))

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        import numpy as np

        vectors: npt.NDArray[np.float32] = self.embedder.embed([text])
        return np.ascontiguousarray(vectors[0])

    def query(self, tenant_id: str, vector: npt.NDArray[np.float32], n: int) -> list[Hit]:
        """The `n` nearest active skills, most similar first (similarity = cosine)."""
        if n <= 0:
            return []
        with self._lock:
            try:
                col = self._collection(tenant_id)
                count = col.count()
                if count == 0:
                    return []
                res = col.query(
                    query_embeddings=[vector], n_results=min(n, count),
                    include=["distances", "metadatas"],
                )
            except SkillIndexError:
                raise
            except Exception as exc:  # chromadb raises many unrelated types
                raise SkillIndexError(f"skill index query failed: {exc}") from exc
        ids = res["ids"][0]
        dists = (res.get("distances") or [[]])[0]
        metas = (res.get("metadatas") or [[]])[0]
        return [
            Hit(i, str((m or {}).get("hash", "")), 1.0 - float(d))
            for i, d, m in zip(ids, dists, metas)
        ]

    def drop(self, tenant_id: str) -> None:
        with self._lock:
            self._collections.pop(tenant_id, None)
            try:
                self._opened().delete_collection(f"molt_skills_{tenant_id}"[:500])
            except SkillIndexError:
                raise
            except Exception as exc:  # chromadb raises many unrelated types
                raise SkillIndexError(f"cannot drop the skill index: {exc}") from exc
