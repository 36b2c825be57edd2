"""What a backend that serves registry versions offers to promotion.

The local backend and the vLLM backend both follow the registry's `active`
pointer on their own (polling it); `sync_versions` makes one follow it *now*,
so an admin route or an in-process trainer can promote and know that serving
has swapped when the call returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class VersionedBackend(Protocol):
    # The registry folder name of the base model this backend serves.
    base_name: str
    # The base model's weights as served here (None when they live elsewhere).
    base_dir: Path | None

    async def sync_versions(self, tenant: str) -> str:
        """Swap to the tenant's active version if it changed; return the version now served."""
        ...

    def served_versions(self) -> dict[str, str]:
        """tenant -> version now served to it (tenants with a registry version only)."""
        ...
