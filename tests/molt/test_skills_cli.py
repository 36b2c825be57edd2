"""`molt skills ...` on the store and the library files, no server running."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from molt.cli import cli


def _cfg(tmp_path: Path) -> str:
    p = tmp_path / "molt.toml"
    p.write_text(f'data_dir = "{tmp_path / "data"}"\n[store]\nurl = "sqlite+aiosqlite:///{tmp_path}/m.db"\n')
    return str(p)


def test_import_list_edit_approve_export(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    run = CliRunner().invoke
    tree = tmp_path / "metaclaw"
    for name in ("triage-bugs", "write-changelog"):
        (tree / name).mkdir(parents=True)
        (tree / name / "SKILL.md").write_text(
            f"---\nname: {name}\ndescription: use for {name}\nstatus: quarantined\n---\n\n1. Go.\n")
    r = run(cli, ["--config", cfg, "skills", "import", str(tree), "--json"])
    assert r.exit_code == 0, r.output
    assert sorted(x["name"] for x in json.loads(r.output)) == ["triage-bugs", "write-changelog"]

    r = run(cli, ["--config", cfg, "skills", "list", "--json"])
    listed = json.loads(r.output)
    seeds = {s["name"] for s in listed["skills"] if s["origin"] == "seed"}
    assert len(seeds) >= 6  # the shipped seed skills came in on first use
    assert {s["name"]: s["status"] for s in listed["skills"]}["triage-bugs"] == "quarantined"

    gen = listed["generation"]
    r = run(cli, ["--config", cfg, "skills", "approve", "triage-bugs", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["generation"] == gen + 1
    r = run(cli, ["--config", cfg, "skills", "approve", "triage-bugs"])
    assert r.exit_code == 1 and "not quarantined" in r.output

    r = run(cli, ["--config", cfg, "skills", "edit", "triage-bugs"],
            env={"EDITOR": "sed -i s/Go./Reproduce./"})
    assert r.exit_code == 0, r.output
    r = run(cli, ["--config", cfg, "skills", "show", "triage-bugs"])
    assert "1. Reproduce." in r.output
    r = run(cli, ["--config", cfg, "skills", "history", "triage-bugs", "--json"])
    hist = json.loads(r.output)
    assert [h["action"] for h in hist] == ["import", "approve", "update"]
    r = run(cli, ["--config", cfg, "skills", "revert", "triage-bugs", hist[0]["id"]])
    assert r.exit_code == 0, r.output
    r = run(cli, ["--config", cfg, "skills", "list", "--status", "quarantined", "--json"])
    assert [s["name"] for s in json.loads(r.output)["skills"]] == ["triage-bugs", "write-changelog"]

    bad = tmp_path / "bad.md"
    bad.write_text("---\nname: ok\n---\nbody\n")
    r = run(cli, ["--config", cfg, "skills", "add", str(bad)])
    assert r.exit_code == 1 and str(bad) in r.output and "missing 'description'" in r.output

    r = run(cli, ["--config", cfg, "skills", "export", str(tmp_path / "out")])
    assert r.exit_code == 0 and (tmp_path / "out" / "write-changelog" / "SKILL.md").exists()
