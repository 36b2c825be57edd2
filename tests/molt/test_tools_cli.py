"""`molt tools overlays list|revert` on a real SQLite store, as a user runs them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from molt.cli import cli
from store.database import Database
from store.keys import KeyStore
from store.settings import StoreSettings
from store.tool_overlays import ToolOverlayStore


def test_list_and_revert_an_active_overlay(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/store.db"

    async def seed() -> tuple[str, str]:
        db = await Database.open(StoreSettings(url=url))
        try:
            tenant = await KeyStore(db).ensure_tenant("acme")
            store = ToolOverlayStore(db)
            v1 = await store.add_candidate(tenant.id, "book", "date", "The date. Write DD.MM.YYYY.",
                                           base="The date.", proposal_id="p1", reason="r1")
            await store.activate(v1.id)
            v2 = await store.add_candidate(tenant.id, "book", "date", "The date, as DD.MM.YYYY.",
                                           base="The date.", proposal_id="p2", reason="r2")
            await store.activate(v2.id)
            return v1.id, v2.id
        finally:
            await db.close()

    v1, v2 = asyncio.run(seed())
    cfg = tmp_path / "molt.toml"
    cfg.write_text(f'[store]\nurl = "{url}"\n')
    run = CliRunner()

    def molt(*args: str) -> tuple[int, str]:
        out = run.invoke(cli, ["--config", str(cfg), "tools", "overlays", *args])
        return out.exit_code, out.output

    code, text = molt("list", "--tenant", "acme", "--status", "active", "--json")
    assert code == 0 and [o["id"] for o in json.loads(text)] == [v2]

    code, text = molt("revert", v2, "--tenant", "acme")
    assert code == 0, text
    assert f"reverted {v2}" in text and f"serving {v1}" in text
    code, text = molt("list", "--tenant", "acme", "--status", "active", "--json")
    assert [o["id"] for o in json.loads(text)] == [v1]

    code, text = molt("revert", v1, "--tenant", "acme")
    assert code == 0 and "the agent's own description" in text
    code, text = molt("revert", v1, "--tenant", "acme")  # no longer active
    assert code != 0 and "Error" in text
    code, text = molt("list", "--tenant", "nobody")
    assert code != 0 and "no tenant 'nobody'" in text
