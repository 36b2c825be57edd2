"""The CLI a user types: sessions, feedback, doctor."""

from __future__ import annotations

import json
from typing import Any

import openai
from click.testing import CliRunner

from molt.cli import cli
from tests.fakes.fake_llm import FakeLLM, Reply


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
