"""Skills reach requests through the real proxy, with the openai SDK as the agent."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from modeling.blocks import SKILLS_OPEN
from molt.cli import cli
from store.trajectories import TrajectoryStore
from tests.fakes.fake_llm import FakeLLM

SKILLS = {
    "book-travel": (("Use when booking flights, trains or hotels for a trip: compare fares, "
                    "dates and traveller details before paying."), "travel"),
    "analyze-spreadsheet": (("Use when analyzing CSV or spreadsheet data: load the table, "
                            "clean columns, aggregate totals and chart results."), "data"),
    "fix-failing-tests": (("Use when unit tests fail or a program crashes: reproduce, read the "
                          "traceback, fix the root cause, rerun the tests."), "coding"),
    "draft-email-reply": (("Use when writing or replying to an email: match tone, answer every "
                          "question, keep it short."), "writing"),
}
SYSTEM = {"role": "system", "content": "You are a helpful agent with tools."}
TRAVEL = "[Slack #ops 10:32] Please book me a flight from Berlin to Oslo on Friday and a hotel near the station"
DATA = "<@U024BE7LH> here's sales.csv — compute monthly revenue totals per region and chart them (2024-05-01T09:00Z)"


def write_skill(folder: Path, name: str, description: str, category: str, body: str = "") -> None:
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / "SKILL.md").write_text(
        f"---\nname: {name}\ndescription: {json.dumps(description)}\ncategory: {category}\n---\n\n"
        f"{body or '1. Start with the goal.'}\n\nAnti-patterns:\n- Guessing.\n"
    )


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    seed = tmp_path / "seed"
    for name, (desc, cat) in SKILLS.items():
        write_skill(seed, name, desc, cat)
    return seed


@pytest.fixture
def m(molt_factory: Any, seeded: Path) -> Any:
    return molt_factory(skills={"enabled": True, "seed_dir": str(seeded), "top_k": 2,
                                "poll_interval_s": 0.2})


def cli_config(tmp_path: Path, m: Any) -> str:
    p = tmp_path / "cli.toml"
    p.write_text(
        f'data_dir = "{m.settings.data_dir}"\n[store]\nurl = "{m.settings.store.url}"\n'
        f'[skills]\nseed_dir = "{m.settings.skills.seed_dir}"\n'
    )
    return str(p)


def ask(m: Any, content: str, **headers: str) -> tuple[str, str]:
    """One chat request; returns (session id, turn id)."""
    client = openai.OpenAI(base_url=m.base_url, api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-fake", messages=[SYSTEM, {"role": "user", "content": content}],
        extra_headers=headers or None,
    )
    return raw.headers["x-molt-session-id"], raw.headers["x-molt-turn-id"]


def turn(m: Any, turn_id: str) -> dict[str, Any]:
    m.flush()
    row: dict[str, Any] = m.run(TrajectoryStore(m.state.db).get_turn(turn_id))
    return row


def injected_names(fake: FakeLLM) -> list[str]:
    msgs = fake.requests[-1]["messages"]
    blocks = [x["content"] for x in msgs if x["role"] == "system" and x["content"].startswith(SKILLS_OPEN)]
    assert len(blocks) <= 1
    return [ln[3:] for ln in blocks[0].splitlines() if ln.startswith("## ")] if blocks else []


def test_different_tasks_get_different_skills(fake_llm: FakeLLM, m: Any) -> None:
    _, t1 = ask(m, TRAVEL)
    travel = injected_names(fake_llm)
    sent = fake_llm.requests[-1]["messages"]
    # the block is one system message right after the agent's own, which is untouched
    assert sent[0] == SYSTEM and sent[1]["content"].startswith(SKILLS_OPEN) and sent[2]["role"] == "user"
    _, t2 = ask(m, DATA)
    data = injected_names(fake_llm)
    assert "book-travel" in travel and "analyze-spreadsheet" not in travel
    assert "analyze-spreadsheet" in data and "book-travel" not in data
    r1, r2 = turn(m, t1), turn(m, t2)
    assert [s["id"] for s in r1["injected_skills"]] == travel
    assert [s["id"] for s in r2["injected_skills"]] == data
    assert all(len(s["hash"]) == 64 and s["revision"].startswith("srev_") for s in r1["injected_skills"])
    assert r1["skill_generation"] == r2["skill_generation"] >= len(SKILLS)
    # the recorded request is the agent's own; the upstream one carries the block
    assert len(r1["request"]["messages"]) == 2 and len(r1["upstream_request"]["messages"]) == 3
    # the same task again renders the very same block (stable prefix, cached retrieval)
    block = fake_llm.requests[-2]["messages"][1]["content"]
    ask(m, TRAVEL)
    assert fake_llm.requests[-1]["messages"][1]["content"] == block


def test_side_turns_and_disabled_tenants_get_nothing(fake_llm: FakeLLM, m: Any, tmp_path: Path) -> None:
    ask(m, TRAVEL, **{"X-Turn-Type": "side"})
    assert injected_names(fake_llm) == [] and len(fake_llm.requests[-1]["messages"]) == 2
    r = CliRunner().invoke(cli, ["--config", cli_config(tmp_path, m), "skills", "settings",
                                 "--set", "enabled=false"])
    assert r.exit_code == 0, r.output
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ask(m, TRAVEL + " please")
        if not injected_names(fake_llm):
            break
        time.sleep(0.1)
    assert injected_names(fake_llm) == []


def test_cli_changes_reach_serving_and_generation_rises(fake_llm: FakeLLM, m: Any, tmp_path: Path) -> None:
    cfg = cli_config(tmp_path, m)
    run = CliRunner().invoke
    _, t0 = ask(m, "Translate this paragraph into Norwegian bokmål for our website")
    g0 = turn(m, t0)["skill_generation"]
    assert "translate-text" not in injected_names(fake_llm)

    new = tmp_path / "new" / "translate-text" / "SKILL.md"
    write_skill(tmp_path / "new", "translate-text",
                "Use when translating text between languages: keep meaning, tone and terms.", "writing")
    r = run(cli, ["--config", cfg, "skills", "add", str(new), "-m", "users asked"])
    assert r.exit_code == 0, r.output
    _, t1 = ask(m, "Translate these release notes into Norwegian, keeping product names")
    assert "translate-text" in injected_names(fake_llm)
    g1 = turn(m, t1)["skill_generation"]
    assert g1 == g0 + 1

    r = run(cli, ["--config", cfg, "skills", "rm", "translate-text", "-m", "bad advice"])
    assert r.exit_code == 0, r.output
    deadline = time.monotonic() + 10
    seen: list[tuple[int, list[str]]] = []
    while time.monotonic() < deadline:
        _, tid = ask(m, "Translate these release notes into Norwegian, keeping product names")
        seen.append((turn(m, tid)["skill_generation"], injected_names(fake_llm)))
        if seen[-1][0] > g1:
            break
        time.sleep(0.1)
    assert seen[-1][0] == g1 + 1
    for _ in range(3):  # once retired, never served: cached or new task
        for text in ("Translate these release notes into Norwegian, keeping product names",
                     "Please translate this menu into Norwegian"):
            _, tid = ask(m, text)
            seen.append((turn(m, tid)["skill_generation"], injected_names(fake_llm)))
    assert all("translate-text" not in names for gen, names in seen if gen > g1)

    r = run(cli, ["--config", cfg, "skills", "history", "translate-text", "--json"])
    assert r.exit_code == 0, r.output
    assert '"action": "retire"' in r.output and '"reason": "bad advice"' in r.output


def test_disk_edit_is_served_and_broken_edit_keeps_last_good(fake_llm: FakeLLM, m: Any) -> None:
    _, t0 = ask(m, TRAVEL)
    g0 = turn(m, t0)["skill_generation"]
    lib_file = Path(m.settings.data_dir) / "skills" / "default" / "book-travel" / "SKILL.md"
    text = lib_file.read_text()
    lib_file.write_text(text.replace("1. Start with the goal.", "1. Check passport validity first."))

    def wait_for_generation(g: int) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _, tid = ask(m, TRAVEL)
            if turn(m, tid)["skill_generation"] >= g:
                return str(fake_llm.requests[-1]["messages"][1]["content"])
            time.sleep(0.1)
        raise AssertionError("the edit never reached serving")

    assert "Check passport validity first." in wait_for_generation(g0 + 1)
    lib_file.write_text("---\nname: book-travel\ndescription: [broken\n---\n")
    time.sleep(0.6)  # a few watcher rounds
    _, tid = ask(m, TRAVEL)
    assert turn(m, tid)["skill_generation"] == g0 + 1
    assert "Check passport validity first." in fake_llm.requests[-1]["messages"][1]["content"]


def test_admin_rest(fake_llm: FakeLLM, m: Any) -> None:
    import httpx

    with httpx.Client(base_url=m.url) as c:
        listed = c.get("/admin/skills").json()
        assert {s["name"] for s in listed["data"]} == set(SKILLS)
        r = c.post("/admin/skills", json={"name": "bake-bread", "description": "Use when baking bread",
                                          "body": "1. Knead.", "reason": "rest"})
        assert r.status_code == 201, r.text
        rev1 = r.json()["revision"]["id"]
        r = c.put("/admin/skills/bake-bread", json={"body": "1. Knead longer."})
        assert r.status_code == 200 and r.json()["revision"]["generation"] == listed["generation"] + 2
        assert "+1. Knead longer." in c.get("/admin/skills/bake-bread/diff").json()["diff"]
        r = c.post("/admin/skills/bake-bread/revert", json={"revision": rev1})
        assert c.get("/admin/skills/bake-bread").json()["body"] == "1. Knead."
        assert [h["action"] for h in c.get("/admin/skills/bake-bread/history").json()["data"]] == \
            ["add", "update", "revert"]
        bad = c.post("/admin/skills", json={"name": "../x", "description": "d"})
        assert bad.status_code == 400 and "not a slug" in bad.json()["error"]["message"]
        dup = c.post("/admin/skills", json={"content": "---\nname: bake-bread\ndescription: d\n---\nx"})
        assert dup.status_code == 409 and dup.json()["error"]["code"] == "skill_exists"
        missing = c.get("/admin/skills/nope")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
        assert c.delete("/admin/skills/bake-bread").json()["revision"]["status"] == "retired"
        approve = c.post("/admin/skills/bake-bread/approve")
        assert approve.status_code == 400 and "not quarantined" in approve.json()["error"]["message"]


def test_replay_injects_a_proposals_candidate_library(fake_llm: FakeLLM, m: Any) -> None:
    from store.evolution import EvolutionStore, Proposal

    ask(m, TRAVEL)
    tenant_id = m.run(m.state.keys.tenant_by_name("default")).id
    ops = [{"op": "add", "name": "pack-for-trips", "turn_ids": ["turn_x"], "reason": "trips",
            "description": "Use when booking flights and hotels for a trip abroad: pack "
                           "passport, charger and tickets.", "body": "1. Check the passport."},
           {"op": "retire", "name": "book-travel", "reason": "replaced"}]
    m.run(EvolutionStore(m.state.db).add_proposal(Proposal(
        "prop_1", tenant_id, None, time.time(), "llm", "pending", ops, "test", None, None, None)))
    client = openai.OpenAI(base_url=m.base_url, api_key="x", max_retries=0)
    msgs: Any = [SYSTEM, {"role": "user", "content": TRAVEL}]

    def replay(which: str) -> list[str]:
        client.chat.completions.create(model="gpt-fake", messages=msgs, extra_headers={
            "X-Molt-Tenant": "default", "X-Molt-Replay": which})
        return injected_names(fake_llm)

    candidate = replay("prop_1")
    assert "pack-for-trips" in candidate and "book-travel" not in candidate
    assert "book-travel" in replay("current")
    ask(m, TRAVEL)  # the live library is untouched
    assert "book-travel" in injected_names(fake_llm) and "pack-for-trips" not in injected_names(fake_llm)
    with pytest.raises(openai.NotFoundError):
        replay("prop_missing")


def test_a_standing_rule_is_served_whenever_its_tool_is_offered(fake_llm: FakeLLM, molt_factory: Any,
                                                                 seeded: Path) -> None:
    """`scope: tools`: a rule about a tool's arguments, whatever the task's words."""
    (seeded / "contact-names").mkdir()
    (seeded / "contact-names" / "SKILL.md").write_text(
        "---\nname: contact-names\ndescription: How find_contact wants names.\ntools: [find_contact]\n"
        "scope: tools\n---\n\nWrite names Last, First.\n")
    m = molt_factory(skills={"enabled": True, "seed_dir": str(seeded), "top_k": 1, "poll_interval_s": 0.2})
    tool = {"type": "function", "function": {"name": "find_contact", "parameters": {"type": "object"}}}
    client = openai.OpenAI(base_url=m.base_url, api_key="x", max_retries=0)

    def chat(content: str, tools: list[dict[str, Any]] | None) -> list[str]:
        extra = {"tools": tools} if tools else {}
        client.chat.completions.create(model="gpt-fake", messages=[SYSTEM, {"role": "user", "content": content}],
                                       **extra)  # type: ignore[call-overload]
        return injected_names(fake_llm)

    # the task's words are about travel; the rule rides along because find_contact is offered,
    # and it takes no top-k place from the skill the words call for
    assert chat(TRAVEL, [tool]) == ["book-travel", "contact-names"]
    assert chat(TRAVEL, None) == ["book-travel"]
    m.flush()
    rows = m.run(TrajectoryStore(m.state.db).turns_since(0))
    pinned = [s for s in rows[-2]["injected_skills"] if s.get("pinned")]
    assert [s["id"] for s in pinned] == ["contact-names"]
