"""Tenants and API keys, through the real SDK and the real CLI."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from molt.cli import cli


def _toml(tmp_path: Any, molt: Any) -> str:
    path = tmp_path / "molt.toml"
    path.write_text(f'[store]\nurl = "{molt.settings.store.url}"\n')
    return str(path)


def test_keys_tenants_and_revocation(fake_llm: Any, molt_factory: Any, tmp_path: Any) -> None:
    # ttl 0: every request reads the keys afresh, so no test waits for a cache to expire
    m = molt_factory(server={"key_cache_ttl_s": 0})
    cfg = _toml(tmp_path, m)
    runner = CliRunner()
    r = runner.invoke(cli, ["--config", cfg, "keys", "create", "--tenant", "acme", "--name", "ci"])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    assert key.startswith("molt-")
    other = runner.invoke(cli, ["--config", cfg, "keys", "create", "--tenant", "globex", "--json"])
    assert other.exit_code == 0

    anon = openai.OpenAI(base_url=m.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anon.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "x"}])
    with httpx.Client(base_url=m.base_url) as c:
        r = c.post("/chat/completions", json={"model": "gpt-fake", "messages": []})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"

    client = openai.OpenAI(base_url=m.base_url, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-fake", messages=[{"role": "user", "content": "x"}])
    assert raw.parse().choices[0].message.content == "echo: x"
    m.flush()
    turn = m.run(m.state.trajectories.get_turn(raw.headers["x-molt-turn-id"]))
    tenant = m.run(m.state.keys.tenant_by_name("acme"))
    assert turn["tenant_id"] == tenant.id

    listed = runner.invoke(cli, ["--config", cfg, "keys", "list", "--json"])
    assert key not in listed.output and "acme" in listed.output
    # the key is stored only as a hash
    db_text = (tmp_path / "molt.db").read_bytes()
    assert key.encode() not in db_text

    key_id = next(line for line in listed.output.split('"') if line.startswith("key_"))
    assert runner.invoke(cli, ["--config", cfg, "keys", "revoke", key_id]).exit_code == 0
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "x"}])


def test_admin_key_guards_admin_routes(fake_llm: Any, molt_factory: Any) -> None:
    m = molt_factory(server={"admin_key": "test-admin-key-0123456789"})

    async def agent_key() -> str:
        return (await m.state.keys.create_key("acme"))[0]

    key = m.run(agent_key())
    with httpx.Client(base_url=m.url) as c:
        r = c.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": "gpt-fake", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200
        # the admin key works as a caller too
        r = c.get("/v1/models", headers={"Authorization": "Bearer test-admin-key-0123456789"})
        assert r.status_code == 200


def test_serve_refuses_open_non_loopback(tmp_path: Any) -> None:
    cfg = tmp_path / "molt.toml"
    cfg.write_text(f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path}/m.db"\n')
    r = CliRunner().invoke(cli, ["--config", str(cfg), "serve", "--host", "0.0.0.0", "--port", "1"])
    assert r.exit_code != 0
    assert "no API keys exist" in r.output


def test_keys_never_logged(fake_llm: Any, molt_factory: Any, caplog: Any) -> None:
    m = molt_factory()
    key = m.run(m.state.keys.create_key("acme"))[0]
    with httpx.Client(base_url=m.base_url) as c:
        c.post("/chat/completions", headers={"Authorization": f"Bearer {key}"},
               json={"model": "gpt-fake", "messages": [{"role": "user", "content": "secret prompt text"}]})
    m.flush()
    assert key not in caplog.text and "secret prompt text" not in caplog.text



def test_keys_create_roles(fake_llm: Any, molt_factory: Any, tmp_path: Any) -> None:
    m = molt_factory()
    cfg = _toml(tmp_path, m)
    runner = CliRunner()

    def create(*args: str) -> Any:
        return runner.invoke(cli, ["--config", cfg, "keys", "create", *args, "--json"])

    assert json.loads(create("--tenant", "acme").stdout)["role"] == "agent"
    assert json.loads(create("--tenant", "acme", "--admin").stdout)["role"] == "admin"
    made = json.loads(create("--global").stdout)
    assert (made["role"], made["tenant"]) == ("global_admin", "default")
    assert json.loads(create("--global", "--tenant", "ops").stdout)["tenant"] == "ops"
    missing = create()
    assert missing.exit_code == 2 and "--tenant" in missing.output
    listed = runner.invoke(cli, ["--config", cfg, "keys", "list"])
    assert "role=global_admin" in listed.output and "role=admin" in listed.output
