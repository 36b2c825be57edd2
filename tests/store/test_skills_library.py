"""The skill library: revisions, revert, disk edits, import, bad input, the generation."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.database import Database
from store.settings import SkillsSettings
from store.skills import Skill, SkillExists, SkillFileError, SkillLibrary, SkillNotFound
from store.skills.skillfile import parse_skill

T = "acme"


def skill_md(name: str, description: str, body: str = "1. Do the thing.\n\nAnti-patterns:\n- Not doing it.",
             extra: str = "") -> str:
    return f"---\nname: {name}\ndescription: {description}\n{extra}---\n\n{body}\n"


@pytest.fixture
def lib(db: Database, tmp_path: Path) -> SkillLibrary:
    settings = SkillsSettings(seed_dir=None, max_body_bytes=1024)
    return SkillLibrary(db, settings, tmp_path / "data")


async def test_history_and_revert_round_trip(lib: SkillLibrary) -> None:
    g0 = await lib.generation(T)
    r1 = await lib.add(T, Skill("csv-report", "Summarize a CSV file", "1. Load it."),
                       author="alice", reason="first")
    r2 = await lib.update(T, Skill("csv-report", "Summarize a CSV file", "1. Load it.\n2. Group by month."),
                          author="evolver", reason="failures on monthly totals")
    assert r2 is not None
    r3 = await lib.retire(T, "csv-report", author="bob", reason="obsolete")
    assert r3 is not None
    assert [r1.generation, r2.generation, r3.generation] == [g0 + 1, g0 + 2, g0 + 3]
    hist = await lib.history(T, "csv-report")
    assert [(h.action, h.author, h.reason) for h in hist] == [
        ("add", "alice", "first"), ("update", "evolver", "failures on monthly totals"),
        ("retire", "bob", "obsolete"),
    ]
    assert "+2. Group by month." in hist[1].diff and "-status: active" in hist[2].diff
    assert len({h.content_hash for h in hist}) == 3

    back = await lib.revert(T, "csv-report", r1.id, author="carol")
    assert back is not None and back.content_hash == r1.content_hash
    cur = await lib.get(T, "csv-report")
    assert cur.skill.status == "active" and cur.skill.body == "1. Load it."
    assert cur.content_hash == r1.content_hash
    on_disk = (lib.root / T / "csv-report" / "SKILL.md").read_text()
    assert parse_skill(on_disk, "x", max_body_bytes=1024).body == "1. Load it."
    # by a unique id prefix too, and reverting to what is there changes nothing
    assert await lib.revert(T, "csv-report", r1.id[:30], author="carol") is None
    assert await lib.generation(T) == g0 + 4


async def test_edit_on_disk_becomes_a_revision_and_a_broken_one_is_refused(lib: SkillLibrary) -> None:
    await lib.add(T, Skill("git-rebase", "Rebase a branch onto main", "1. Fetch."), author="a")
    await lib.sync_disk(T)
    path = lib.root / T / "git-rebase" / "SKILL.md"
    path.write_text(skill_md("git-rebase", "Rebase a branch onto main", "1. Fetch.\n2. Rebase -i."))
    report = await lib.sync_disk(T)
    assert [(r.action, r.author) for r in report.revisions] == [("disk", "disk")]
    assert "+2. Rebase -i." in report.revisions[0].diff
    gen = await lib.generation(T)

    path.write_text("---\nname: git-rebase\ndescription: [unclosed\n---\nbody")
    report = await lib.sync_disk(T)
    assert not report.revisions and len(report.errors) == 1
    assert str(path) in str(report.errors[0]) and "front matter" in str(report.errors[0])
    assert (await lib.get(T, "git-rebase")).skill.body == "1. Fetch.\n2. Rebase -i."
    assert await lib.generation(T) == gen
    # a folder removed on disk is a delete, and revert brings it back
    path.unlink()
    path.parent.rmdir()
    report = await lib.sync_disk(T)
    assert [r.action for r in report.revisions] == ["delete"]
    with pytest.raises(SkillNotFound):
        await lib.get(T, "git-rebase")
    hist = await lib.history(T, "git-rebase")
    await lib.revert(T, "git-rebase", hist[1].id, author="a")
    assert path.exists() and (await lib.get(T, "git-rebase")).skill.body.endswith("Rebase -i.")


async def test_import_metaclaw_tree_and_export(lib: SkillLibrary, tmp_path: Path) -> None:
    tree = tmp_path / "metaclaw" / "skills"
    skills = {
        "debug-systematically": "Use when a program crashes or tests fail",
        "write-sql-queries": "Use when asked to query a relational database",
        "summarize-long-docs": "Use when asked to summarize a long document",
    }
    for name, desc in skills.items():
        (tree / name).mkdir(parents=True)
        (tree / name / "SKILL.md").write_text(skill_md(
            name, desc, extra="metadata:\n  category: coding\n  emoji: x\nlicense: MIT\n"))
    (tree / "write-sql-queries" / "references").mkdir()
    (tree / "write-sql-queries" / "references" / "joins.md").write_text("joins")
    revs = await lib.import_path(T, tmp_path / "metaclaw", author="alice")
    assert sorted(r.name for r in revs) == sorted(skills)
    cur = await lib.current(T)
    assert cur["write-sql-queries"].skill.category == "coding"
    assert cur["write-sql-queries"].skill.extra["license"] == "MIT"
    assert (lib.root / T / "write-sql-queries" / "references" / "joins.md").read_text() == "joins"
    # imported as it is: the file keeps its own text
    assert (lib.root / T / "debug-systematically" / "SKILL.md").read_text() == \
        (tree / "debug-systematically" / "SKILL.md").read_text()
    again = await lib.import_report(T, tree, author="alice")  # a collision skips, it does not abort
    assert {r.action for r in again} == {"skipped"} and len(again) == len(skills)
    single = tmp_path / "one.md"
    single.write_text(skill_md("handle-timeouts", "Use when a call times out"))
    assert [r.name for r in await lib.import_path(T, single, author="a")] == ["handle-timeouts"]
    written = await lib.export(T, tmp_path / "out")
    assert sorted(p.parent.name for p in written) == sorted([*skills, "handle-timeouts"])


@pytest.mark.parametrize("text,problem", [
    ("---\nname: x-y\ndescription: [oops\n---\nbody", "broken YAML front matter"),
    ("no front matter at all", "no YAML front matter"),
    ("---\ndescription: has no name\n---\nbody", "missing 'name'"),
    ("---\nname: ../../etc\ndescription: d\n---\nbody", "not a slug"),
    ("---\nname: Big Name\ndescription: d\n---\nbody", "not a slug"),
    ("---\nname: ok-name\n---\nbody", "missing 'description'"),
    ("---\nname: ok-name\ndescription: d\nstatus: live\n---\nbody", "status 'live'"),
    ("---\nname: ok-name\ndescription: d\nscope: always\n---\nbody", "scope 'always'"),
    ("---\nname: ok-name\ndescription: d\nscope: tools\n---\nbody", "needs the 'tools'"),
    ("---\nname: ok-name\ndescription: d\n---\n" + "x" * 2000, "over the limit of 1024"),
])
async def test_bad_files_are_refused_naming_file_and_problem(
    lib: SkillLibrary, tmp_path: Path, text: str, problem: str
) -> None:
    await lib.add(T, Skill("keep-me", "an existing skill", "1. Stay."), author="a")
    f = tmp_path / "bad" / "SKILL.md"
    f.parent.mkdir()
    f.write_text(text)
    with pytest.raises(SkillFileError) as err:
        await lib.add_file(T, f, author="a")
    assert str(f) in str(err.value) and problem in str(err.value)
    with pytest.raises(SkillFileError):
        await lib.import_path(T, f.parent, author="a")
    assert list(await lib.current(T)) == ["keep-me"]


async def test_duplicates_and_traversal(lib: SkillLibrary, tmp_path: Path) -> None:
    tree = tmp_path / "dups"
    for folder in ("a", "b"):
        (tree / folder / "same-name").mkdir(parents=True)
        (tree / folder / "same-name" / "SKILL.md").write_text(skill_md("same-name", "one of two"))
    with pytest.raises(SkillFileError) as err:
        await lib.import_path(T, tree, author="a")
    assert "duplicate name 'same-name'" in str(err.value) and str(tree / "b" / "same-name" / "SKILL.md") in str(err.value)
    await lib.add(T, Skill("taken", "first", "1."), author="a")
    with pytest.raises(SkillExists):
        await lib.add(T, Skill("taken", "second", "1."), author="a")
    for name in ("../evil", "a/b", "..", ".hidden", "UPPER"):
        with pytest.raises(SkillFileError):
            await lib.add(T, Skill(name, "d", "1."), author="a")
        with pytest.raises(SkillFileError):
            await lib.get(T, name)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "data" / "evil").exists()
    assert sorted(p.name for p in (lib.root / T).iterdir() if p.is_dir()) == ["taken"]
    assert [r.name for r in await lib.history(T)] == ["taken"]
    with pytest.raises(SkillFileError):
        await lib.add(T, Skill("big", "d", "x" * 5000), author="a")


async def test_quarantine_and_generation_rules(db: Database, tmp_path: Path) -> None:
    lib = SkillLibrary(db, SkillsSettings(seed_dir=None, quarantine_evolver_edits=True), tmp_path)
    g0 = await lib.generation(T)
    rev = await lib.put(T, Skill("from-traffic", "learned from failures", "1. Check.", origin="evolver",
                                 provenance=("turn_1", "turn_2")), author="evolver", reason="batch 3")
    assert rev is not None and rev.status == "quarantined" and rev.provenance == ["turn_1", "turn_2"]
    assert await lib.generation(T) == g0  # nothing new reached serving
    await lib.approve(T, "from-traffic", author="alice")
    assert (await lib.get(T, "from-traffic")).skill.status == "active"
    assert await lib.generation(T) == g0 + 1
    merged = await lib.merge(T, Skill("checks", "merged checks", "1. Check twice."), ["from-traffic"],
                             author="evolver", reason="dedup")
    assert [r.action for r in merged] == ["merge", "retire"]
    assert (await lib.get(T, "from-traffic")).skill.status == "retired"


def test_a_standing_rule_round_trips() -> None:
    from store.skills.skillfile import render_skill_file

    text = skill_md("date-form", "How tools want dates", extra="tools: [book_table]\nscope: tools\n")
    skill = parse_skill(text, "date-form/SKILL.md", max_body_bytes=1024)
    assert skill.scope == "tools" and skill.tools == ("book_table",)
    assert parse_skill(render_skill_file(skill), "x", max_body_bytes=1024) == skill
    assert parse_skill(skill_md("plain", "d"), "x", max_body_bytes=1024).scope is None


# -- caps on every front-matter field --------------------------------------------------------------

@pytest.mark.parametrize("extra, problem", [
    ("description: " + "d" * 2_000_000 + "\n", "'description' takes"),
    ("description: " + "d" * 1025 + "\n", "'description' is 1025 characters, over the limit of 1024"),
    ("description: ok\ncategory: " + "c" * 65 + "\n", "'category' is 65 characters"),
    ("description: ok\ntools: [" + ", ".join(f"t{i}" for i in range(65)) + "]\n", "'tools' lists 65 items"),
    ("description: ok\ntools: [" + "t" * 129 + "]\n", "an item of 'tools' is 129 characters"),
    ("description: ok\nprovenance: [" + ", ".join(f"turn_{i}" for i in range(257)) + "]\n",
     "'provenance' lists 257 items"),
    ("description: ok\nmetadata:\n  notes: " + "n" * 40_000 + "\n", "other keys take"),
], ids=["2mb-description", "description", "category", "tools", "tool-name", "provenance", "other-keys"])
async def test_every_front_matter_field_is_capped(lib: SkillLibrary, tmp_path: Path, extra: str,
                                                  problem: str) -> None:
    await lib.add(T, Skill("keep-me", "an existing skill", "1. Stay."), author="a")
    f = tmp_path / "big" / "SKILL.md"
    f.parent.mkdir()
    f.write_text(f"---\nname: big\n{extra}---\n\n1. Do it.\n")
    for attempt in (lib.add_file(T, f, author="a"), lib.import_path(T, f.parent, author="a")):
        with pytest.raises(SkillFileError) as err:
            await attempt
        assert str(f) in str(err.value) and problem in str(err.value)
    assert list(await lib.current(T)) == ["keep-me"]


async def test_a_skill_object_over_a_cap_is_refused_before_anything_is_written(lib: SkillLibrary) -> None:
    with pytest.raises(SkillFileError, match="'description' is 2000000 characters"):
        await lib.add(T, Skill("huge", "d" * 2_000_000, "1."), author="a")
    with pytest.raises(SkillFileError, match="'tools' lists 100 items"):
        await lib.put(T, Skill("wide", "d", "1.", tools=tuple(f"t{i}" for i in range(100))), author="evolver")
    assert await lib.current(T) == {} and not (lib.root / T / "huge").exists()


# -- symbolic links out of the library --------------------------------------------------------------

async def test_a_skill_file_linked_out_of_the_library_is_refused_on_load(lib: SkillLibrary, tmp_path: Path) -> None:
    await lib.add(T, Skill("linked", "a skill that will be replaced by a link", "1. Mine."), author="a")
    await lib.add(T, Skill("other", "another skill", "1. Still here."), author="a")
    await lib.sync_disk(T)
    secret = tmp_path / "outside" / "SKILL.md"
    secret.parent.mkdir()
    secret.write_text(skill_md("linked", "planted", "1. Read from outside the library."))
    path = lib.root / T / "linked" / "SKILL.md"
    path.unlink()
    path.symlink_to(secret)
    report = await lib.sync_disk(T)
    assert not report.revisions and len(report.errors) == 1
    assert str(path) in str(report.errors[0]) and "symbolic link" in str(report.errors[0])
    assert "outside the library" in str(report.errors[0])
    current = await lib.current(T)
    assert current["linked"].skill.body == "1. Mine." and current["other"].skill.body == "1. Still here."
    # a whole folder linked out is refused the same way, and not read as a delete
    folder = lib.root / T / "other"
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    folder.symlink_to(secret.parent, target_is_directory=True)
    report = await lib.sync_disk(T)
    assert [str(e.where) for e in report.errors] == [str(folder)] and not report.revisions
    assert (await lib.get(T, "other")).skill.body == "1. Still here."


async def test_a_skill_file_linked_out_of_an_imported_tree_is_refused(lib: SkillLibrary, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "SKILL.md").write_text(skill_md("planted", "read from outside the tree"))
    tree = tmp_path / "tree"
    (tree / "fine").mkdir(parents=True)
    (tree / "fine" / "SKILL.md").write_text(skill_md("fine", "a real file"))
    (tree / "planted").mkdir()
    (tree / "planted" / "SKILL.md").symlink_to(outside / "SKILL.md")
    with pytest.raises(SkillFileError) as err:
        await lib.import_path(T, tree, author="a")
    assert str(tree / "planted" / "SKILL.md") in str(err.value) and "symbolic link" in str(err.value)
    (tree / "planted" / "SKILL.md").unlink()
    (tree / "planted").rmdir()
    (tree / "planted").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SkillFileError, match="symbolic link"):
        await lib.import_path(T, tree, author="a")
    assert await lib.current(T) == {}
    # an asset linked out of the tree is not copied
    (tree / "planted").unlink()
    (tree / "fine" / "references").mkdir()
    (tree / "fine" / "references" / "key.pem").symlink_to(outside / "SKILL.md")
    (tree / "fine" / "references" / "notes.md").write_text("notes")
    assert [r.name for r in await lib.import_path(T, tree, author="a")] == ["fine"]
    assert (lib.root / T / "fine" / "references" / "notes.md").read_text() == "notes"
    assert not (lib.root / T / "fine" / "references" / "key.pem").exists()
