"""Which tool overlay versions served a turn, through the real proxy (openai SDK, uvicorn, the
scripted upstream): recorded on the turn, shown by `molt sessions show` and in exports, and gone
from new turns once reverted."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pyarrow.parquet as pq
from click.testing import CliRunner

from molt.cli import cli
from store.tool_overlays import ToolOverlayStore
from tests.fakes.fake_llm import FakeLLM, Reply

# `ship` nests as pydantic v2 writes it: the city is in `$defs`, reached through `$ref`
TOOLS = [
    {"type": "function", "function": {"name": "ship", "description": "Ship a parcel.", "parameters": {
        "$defs": {"Address": {"type": "object", "title": "Address", "required": ["city"],
                              "properties": {"city": {"type": "string", "description": "The city."}}}},
        "type": "object", "required": ["to"],
        "properties": {"to": {"$ref": "#/$defs/Address"},
                       "date": {"type": "string", "description": "The date."}}}}},
    {"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "description": "The city."}}}}},
]


def _ask(m: Any, tools: list[Any] | None, session: str) -> str:
    client = openai.OpenAI(base_url=m.base_url, api_key="x", max_retries=0)
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-fake", messages=[{"role": "user", "content": "Ship it to Oslo."}],
        extra_headers={"X-Session-Id": session}, **extra)
    raw.parse()
    return raw.headers["x-molt-turn-id"]


def _cli(m: Any, tmp_path: Path, *args: str) -> str:
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'[store]\nurl = "{m.settings.store.url}"\n')
    r = CliRunner().invoke(cli, ["--config", str(cfg), *args])
    assert r.exit_code == 0, r.output
    return r.output


def _city(request: dict[str, Any]) -> str:
    params = request["tools"][0]["function"]["parameters"]
    return str(params["$defs"]["Address"]["properties"]["city"]["description"])


def test_a_turn_records_the_overlay_versions_that_served_it(molt: Any, fake_llm: FakeLLM,
                                                            tmp_path: Path) -> None:
    tenant = molt.run(molt.state.keys.ensure_tenant("default")).id
    store = ToolOverlayStore(molt.state.db)

    def overlay(param: str, text: str, base: str) -> Any:
        ov = molt.run(store.add_candidate(tenant, "ship", param, text, base=base, proposal_id=None,
                                          reason="test"))
        return molt.run(store.activate(ov.id))

    city1 = overlay("to.city", "The city, in English.", "The city.")
    city2 = overlay("to.city", "The city's English name, e.g. as on a map.", "The city.")
    date = overlay("date", "The date, as DD.MM.YYYY.", "The date.")
    for _ in range(4):
        fake_llm.push(Reply(content="Done."))

    served = _ask(molt, TOOLS, "with")
    plain = _ask(molt, None, "without")
    molt.flush()
    turn = molt.run(molt.state.trajectories.get_turn(served))
    assert sorted((o["id"], o["version"], o["tool"], o["param"]) for o in turn["tool_overlays"]) == sorted(
        [(city2.id, 2, "ship", "to.city"), (date.id, 1, "ship", "date")])
    assert _city(turn["upstream_request"]) == city2.description  # and it is what went upstream
    assert _city(turn["request"]) == "The city."  # the agent's own request, as it sent it
    assert molt.run(molt.state.trajectories.get_turn(plain))["tool_overlays"] == []
    # the weather tool's city is another parameter: untouched, and no overlay claims it
    assert fake_llm.requests[0]["tools"][1] == TOOLS[1]

    # where users read turns: the transcript, its JSON, the exports
    shown = _cli(molt, tmp_path, "sessions", "show", turn["session_id"])
    assert f"ship.to.city v2 ({city2.id})" in shown and f"ship.date v1 ({date.id})" in shown
    as_json = json.loads(_cli(molt, tmp_path, "sessions", "show", turn["session_id"], "--json"))
    assert {o["id"] for o in as_json["turns"][0]["tool_overlays"]} == {city2.id, date.id}
    plain_shown = _cli(molt, tmp_path, "sessions", "show",
                       molt.run(molt.state.trajectories.get_turn(plain))["session_id"])
    assert "overlays" not in plain_shown
    _cli(molt, tmp_path, "export", str(tmp_path / "t.parquet"))
    rows = {r["turn_id"]: r for r in pq.read_table(tmp_path / "t.parquet").to_pylist()}
    assert sorted((o["id"], o["version"]) for o in rows[served]["tool_overlays"]) == sorted(
        [(city2.id, 2), (date.id, 1)])
    assert rows[plain]["tool_overlays"] is None
    _cli(molt, tmp_path, "export", str(tmp_path / "t.jsonl"), "--meta")
    meta = [json.loads(line)["metadata"] for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert sorted(next(x for x in meta if x["turn_id"] == served)["tool_overlays"]) == sorted(
        [f"{city2.id}@v2", f"{date.id}@v1"])

    # reverted: v2 no longer serves new turns, the version it replaced does; the old turn keeps its record
    r = httpx.post(f"{molt.url}/admin/tools/overlays/{city2.id}/revert", timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["restored"]["id"] == city1.id
    after = _ask(molt, TOOLS, "after")
    molt.flush()
    later = molt.run(molt.state.trajectories.get_turn(after))
    assert sorted((o["id"], o["version"]) for o in later["tool_overlays"]) == sorted(
        [(city1.id, 1), (date.id, 1)])
    assert _city(later["upstream_request"]) == city1.description
    assert {o["id"] for o in molt.run(molt.state.trajectories.get_turn(served))["tool_overlays"]} == \
        {city2.id, date.id}

    # and on the session's page in the dashboard (logged in with an admin key, as a person does)
    key = molt.run(molt.state.keys.create_key("default", role="admin"))[0]
    molt.run(molt.state.auth.mode(force=True))
    with httpx.Client(base_url=molt.url, timeout=30) as browser:
        form = browser.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        assert browser.post("/ui/login", data={"csrf": csrf.group(1), "key": key}).status_code == 303
        page = browser.get(f"/ui/sessions/{turn['session_id']}")
    assert page.status_code == 200
    assert "overlay <b>ship.to.city v2</b>" in page.text and "overlay <b>ship.date v1</b>" in page.text
