"""Skills in and out: MetaClaw's JSON skill bank, per-skill import reports, Agent-Skills
`allowed-tools`, a front-matter name that is not its folder's, and exports that keep bundled files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from store.database import Database
from store.settings import SkillsSettings
from store.skills import SkillFileError, SkillLibrary
from tests.store.test_skills_library import T, skill_md


@pytest.fixture
def lib(db: Database, tmp_path: Path) -> SkillLibrary:
    return SkillLibrary(db, SkillsSettings(seed_dir=None, max_body_bytes=1024), tmp_path / "data")


BANK = [  # the shape of MetaClaw's memory_data/conversation/conversation_skills.json
    {"name": "clarify_first", "description": "Use when a request is ambiguous.",
     "content": "1. Ask one short question before acting.", "category": "conversation"},
    {"name": "summarize-at-end", "description": "Use at the end of a long answer.",
     "body": "1. Close with a two-line summary."},
]


@pytest.mark.parametrize("shape", ["list", "skills", "by-name"])
async def test_a_metaclaw_json_skill_bank_imports(lib: SkillLibrary, tmp_path: Path, shape: str) -> None:
    data: object = {"list": BANK, "skills": {"skills": BANK},
                    "by-name": {s["name"]: {k: v for k, v in s.items() if k != "name"} for s in BANK}}[shape]
    bank = tmp_path / "conversation_skills.json"
    bank.write_text(json.dumps(data))
    report = await lib.import_report(T, bank, author="alice")
    assert [(r.name, r.action) for r in report] == [("clarify-first", "imported"), ("summarize-at-end", "imported")]
    cur = await lib.current(T)
    assert cur["clarify-first"].skill.category == "conversation"
    assert cur["summarize-at-end"].skill.body.startswith("1. Close with")


async def test_a_name_collision_is_reported_per_skill(lib: SkillLibrary, tmp_path: Path) -> None:
    bank = tmp_path / "bank.json"
    bank.write_text(json.dumps(BANK))
    await lib.import_report(T, bank, author="alice")
    bank.write_text(json.dumps([{**BANK[0], "content": "1. Ask, then act."},
                                {"name": "new-one", "description": "d", "content": "1. x"}]))
    skipped = await lib.import_report(T, bank, author="alice")
    assert [(r.name, r.action) for r in skipped] == [("clarify-first", "skipped"), ("new-one", "imported")]
    assert "replace" in (skipped[0].reason or "")
    replaced = await lib.import_report(T, bank, author="alice", replace=True)
    assert [(r.name, r.action) for r in replaced] == [("clarify-first", "replaced"), ("new-one", "replaced")]
    assert (await lib.current(T))["clarify-first"].skill.body == "1. Ask, then act."


async def test_agent_skills_allowed_tools_are_the_skill_s_tools(lib: SkillLibrary, tmp_path: Path) -> None:
    folder = tmp_path / "pdf-forms"
    folder.mkdir()
    (folder / "SKILL.md").write_text("---\nname: pdf-forms\ndescription: Fill PDF forms.\n"
                                     "allowed-tools: Read Bash\n---\n1. Read the form first.\n")
    await lib.import_path(T, folder, author="a")
    assert (await lib.current(T))["pdf-forms"].skill.tools == ("Read", "Bash")


async def test_a_front_matter_name_that_is_not_its_folder_is_refused(lib: SkillLibrary, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "write-sql").mkdir(parents=True)
    (tree / "write-sql" / "SKILL.md").write_text(skill_md("debug-sql", "Use when SQL fails"))
    with pytest.raises(SkillFileError, match="front-matter name 'debug-sql' differs from its folder 'write-sql'"):
        await lib.import_path(T, tree, author="a")
    assert await lib.current(T) == {}


async def test_export_keeps_the_files_a_skill_ships(lib: SkillLibrary, tmp_path: Path) -> None:
    folder = tmp_path / "src" / "run-report"
    (folder / "scripts").mkdir(parents=True)
    (folder / "SKILL.md").write_text(skill_md("run-report", "Use to build the weekly report"))
    (folder / "scripts" / "build.sh").write_text("echo report\n")
    (folder / "template.md").write_text("# Report\n")
    await lib.import_path(T, folder, author="a")
    out = tmp_path / "out"
    await lib.export(T, out)
    assert (out / "run-report" / "scripts" / "build.sh").read_text() == "echo report\n"
    assert (out / "run-report" / "template.md").read_text() == "# Report\n"
    # and the exported tree imports again as it is
    assert [r.action for r in await lib.import_report("other", out, author="a")] == ["imported"]
