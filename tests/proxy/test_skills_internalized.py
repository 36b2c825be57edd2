"""A weight version that internalized a skill is served without it; a rollback brings it back.

Real molt under uvicorn serving the tiny model locally, with skills on and two
standing rules for the weather tool, and a real registry version whose
`meta.json` lists one of them as internalized.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from molt.cli import cli
from store.registry import Registry
from store.registry_check import base_fingerprint
from tests.fakes.tiny_model import TOOL_PROMPT, WEATHER_TOOL
from tests.proxy.local_helpers import backend, client
from tests.proxy.test_skills_injection import cli_config

RULES = {"weather-city": "Use for weather: name the city.",
         "weather-units": "Use for weather: metric units."}


@pytest.fixture
def m(molt_factory: Any, tiny_base: Path, tmp_path: Path) -> Any:
    seed = tmp_path / "seed"
    for name, desc in RULES.items():
        (seed / name).mkdir(parents=True)
        (seed / name / "SKILL.md").write_text(
            f"---\nname: {name}\ndescription: {json.dumps(desc)}\nscope: tools\n"
            f"tools: [get_weather]\n---\n\n1. Do it.\n")
    return molt_factory(models=[{"alias": "tiny", "local": str(tiny_base)}],
                        skills={"enabled": True, "seed_dir": str(seed), "poll_interval_s": 0.2})


def ask(m: Any, model: str = "tiny", **headers: str) -> tuple[str, list[str], str]:
    """One weather request: (served version, injected skills as recorded, the block sent)."""
    raw = client(m).chat.completions.with_raw_response.create(
        model=model, messages=TOOL_PROMPT, tools=[WEATHER_TOOL], temperature=0, max_tokens=4,
        extra_headers=headers or None)
    turn = m.wait_turn(raw.headers["x-molt-turn-id"])
    sent = (turn["upstream_request"] or turn["request"])["messages"]
    block = next((x["content"] for x in sent if x["role"] == "system"), "")
    return (raw.headers["x-molt-weight-version"], [s["id"] for s in turn["injected_skills"] or []],
            block)


def test_the_version_that_internalized_a_skill_is_served_without_it(
    m: Any, tiny_base: Path, tiny_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    version, skills, block = ask(m)
    assert (version, skills) == ("base", ["weather-city", "weather-units"])
    assert "## weather-units" in block

    reg = Registry(m.settings.registry_root())
    v = reg.create("default", "tiny", kind="lora", files_from=tiny_artifacts["lora1"],
                   base_model="tiny", base_hash=base_fingerprint(tiny_base)).version
    reg.update_internalized("default", "tiny", v, ["weather-units"])
    # pinned while still a candidate: its list already holds (the gate's joint test)
    assert ask(m, f"tiny@{v}")[:2] == (v, ["weather-city"])
    reg.promote("default", "tiny", v, base_dir=tiny_base)
    assert m.run(backend(m).sync_versions("default")) == v

    version, skills, block = ask(m)
    assert (version, skills) == (v, ["weather-city"])
    assert "## weather-city" in block and "weather-units" not in block
    # the base weights pinned still get every skill
    assert ask(m, "tiny@base")[1] == ["weather-city", "weather-units"]
    # the library keeps both, and says which version carries the one left out
    listed = skills_list(m, tmp_path)
    assert listed["weather-units"] == [f"tiny@{v}"] and listed["weather-city"] == []
    r = CliRunner().invoke(cli, ["--config", cli_config(tmp_path, m), "skills", "list"])
    assert f"(internalized in tiny@{v})" in r.output

    reg.rollback("default", "tiny", to="base", base_dir=tiny_base)
    assert m.run(backend(m).sync_versions("default")) == "base"
    version, skills, block = ask(m)
    assert (version, skills) == ("base", ["weather-city", "weather-units"])
    assert "## weather-units" in block
    assert skills_list(m, tmp_path)["weather-units"] == []


def skills_list(m: Any, tmp_path: Path) -> dict[str, list[str]]:
    """`molt skills list --json`: skill name -> the active versions that internalized it."""
    r = CliRunner().invoke(cli, ["--config", cli_config(tmp_path, m), "skills", "list", "--json"])
    assert r.exit_code == 0, r.output
    return {s["name"]: s["internalized_in"] for s in json.loads(r.output)["skills"]}


def test_a_replay_can_leave_skills_out(m: Any) -> None:
    replay = {"X-Molt-Replay": "current", "X-Molt-Tenant": "default"}
    _, skills, block = ask(m, "tiny@base", **replay, **{"X-Molt-Skills-Exclude": "weather-city"})
    assert skills == ["weather-units"] and "weather-city" not in block
    _, skills, _ = ask(m, **replay, **{"X-Molt-Skills-Exclude": "weather-city, weather-units"})
    assert skills == []
    with pytest.raises(openai.BadRequestError) as err:
        ask(m, **replay, **{"X-Molt-Skills-Exclude": "Not A Name"})
    assert (err.value.code, err.value.param) == ("invalid_value", "x-molt-skills-exclude")
    assert "is not a slug" in err.value.message
