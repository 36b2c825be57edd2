"""The CLI a user types: sessions, feedback, doctor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from molt.cli import cli
from tests.fakes.fake_llm import FakeLLM, Reply

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Any, m: Any, fake_url: str) -> str:
    p = tmp_path / "cli.toml"
    p.write_text(
        f'[store]\nurl = "{m.settings.store.url}"\n'
        f'[[models]]\nalias = "gpt-fake"\nbase_url = "{fake_url}/v1"\n'
        f'[[models]]\nalias = "secret-route"\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "X"\n'
        f'[server]\nadmin_key = "super-secret-admin-key-123"\n'
    )
    return str(p)


def test_sessions_list_show_and_feedback(fake_llm: FakeLLM, molt: Any, tmp_path: Any) -> None:
    client = openai.OpenAI(base_url=molt.base_url, api_key="x", max_retries=0)
    fake_llm.push(Reply(tool_calls=[("lookup", {"q": "cats"})]))
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-fake", messages=[{"role": "user", "content": "find cats"}])
    sid, tid = raw.headers["x-molt-session-id"], raw.headers["x-molt-turn-id"]
    molt.flush()
    cfg = _cfg(tmp_path, molt, fake_llm.url)  # type: ignore[attr-defined]
    run = CliRunner().invoke

    r = run(cli, ["--config", cfg, "feedback", tid, "--score", "-1", "--text", "wrong tool"])
    assert r.exit_code == 0, r.output
    r = run(cli, ["--config", cfg, "feedback", sid, "--score", "0.5"])
    assert r.exit_code == 0, r.output
    bad = run(cli, ["--config", cfg, "feedback", sid, "--score", "4"])
    assert bad.exit_code != 0

    listed = json.loads(run(cli, ["--config", cfg, "sessions", "list", "--json"]).output)
    assert listed[0]["id"] == sid and listed[0]["turns"] == 1 and listed[0]["tenant"] == "default"
    assert {"id", "tenant", "turns", "started_at"} <= set(listed[0])

    shown = json.loads(run(cli, ["--config", cfg, "sessions", "show", sid, "--json"]).output)
    turn = shown["turns"][0]
    assert turn["request"]["messages"][0]["content"] == "find cats"
    assert turn["tool_calls"][0]["function"]["name"] == "lookup"
    assert turn["feedback"][0]["text"] == "wrong tool"
    assert shown["feedback"][0]["score"] == 0.5

    text = run(cli, ["--config", cfg, "sessions", "show", sid]).output
    assert "find cats" in text and "→ lookup" in text and "wrong tool" in text
    missing = run(cli, ["--config", cfg, "sessions", "show", "ses_nope"])
    assert missing.exit_code != 0 and "no session" in missing.output


def test_doctor_masks_secrets_and_checks(fake_llm: FakeLLM, molt: Any, tmp_path: Any) -> None:
    cfg = _cfg(tmp_path, molt, fake_llm.url)  # type: ignore[attr-defined]
    r = CliRunner().invoke(cli, ["--config", cfg, "doctor", "--json"])
    assert "super-secret-admin-key-123" not in r.output
    data = json.loads(r.output)
    checks = {c["name"]: c["ok"] for c in data["checks"]}
    assert checks["store"] and checks["model gpt-fake"]
    assert checks["model secret-route"] is False and r.exit_code == 1


def test_env_overrides_file(tmp_path: Any, monkeypatch: Any) -> None:
    from molt.config import load_settings

    p = tmp_path / "m.toml"
    p.write_text('[server]\nport = 9001\n[[models]]\nalias = "a"\nbase_url = "http://x/v1"\n')
    monkeypatch.setenv("MOLT_SERVER__PORT", "9002")
    s = load_settings(str(p))
    assert s.server.port == 9002 and s.models[0].alias == "a"
    assert load_settings(str(p), {"server": {"port": 9003}}).server.port == 9003
    p.write_text('[[models]]\nalias = "a"\n')
    import pytest

    from molt.config import ConfigError

    with pytest.raises(ConfigError, match="exactly one of base_url, litellm or local"):
        load_settings(str(p))


def _molt(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m molt ...` in a folder with no molt.toml: the default setup a user starts with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLT_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "molt", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


# peft's own call of a deprecated transformers method, while the test builds an adapter
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_promote_on_the_default_setup_validates_against_the_shipped_policy(
    tmp_path: Path, tiny_artifacts: dict[str, Path]
) -> None:
    """No molt.toml: `molt serve` would serve the shipped tiny policy as `tiny`, so promote
    checks a `tiny` version against it, as the REST route does, and refuses a misfit."""
    from molt.wiring import DEFAULT_POLICY
    from store.registry import Registry
    from store.registry_check import base_fingerprint
    from tests.fakes.tiny_model import make_lora

    reg = Registry(tmp_path / ".molt" / "registry")
    wrong = reg.create("default", "tiny", kind="lora", files_from=tiny_artifacts["other_lora"],
                       base_model="tiny", base_hash=None).version
    good_dir = make_lora(DEFAULT_POLICY, tmp_path / "good-lora", seed=3)
    good = reg.create("default", "tiny", kind="lora", files_from=good_dir, base_model="tiny",
                      base_hash=base_fingerprint(DEFAULT_POLICY)).version

    r = _molt(tmp_path, "versions", "promote", wrong)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "refused" in r.stderr and "does not fit base weight" in r.stderr
    assert reg.active("default", "tiny") is None
    listed = json.loads(_molt(tmp_path, "versions", "list", "--json").stdout)
    assert listed[0]["active"] is None

    r = _molt(tmp_path, "versions", "promote", good, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["active"] == good
    assert reg.active("default", "tiny") == good
