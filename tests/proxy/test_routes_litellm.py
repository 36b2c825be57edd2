"""[[models]] routes: a litellm route's api_base, key and extra parameters; fallbacks
across route kinds; unknown keys refused.

Everything goes through molt under a real uvicorn with the official openai SDK;
the upstreams are scripted fake servers (tests/fakes/) or a closed port.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from molt.cli import cli
from molt.config import ConfigError, load_settings
from store.settings import MoltSettings
from tests.fakes.fake_llm import FakeLLM, Reply
from tests.fakes.server import ServerThread

HI = [{"role": "user", "content": "hi"}]
KEY_ENV = "ROUTE_TEST_KEY"


@pytest.fixture(autouse=True)
def route_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The provider key litellm routes name with api_key_env (litellm refuses a call without)."""
    monkeypatch.setenv(KEY_ENV, "sk-route-secret-1")
    return "sk-route-secret-1"


@pytest.fixture
def backup_llm() -> Iterator[FakeLLM]:
    """A second provider, for the route a failing one falls back to."""
    fake = FakeLLM()
    with ServerThread(fake.app) as srv:
        fake.url = srv.url  # type: ignore[attr-defined]
        yield fake


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _client(m: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=m.base_url, api_key="x", max_retries=0)


def test_litellm_route_with_api_base_key_and_params(
    fake_llm: FakeLLM, molt_factory: Any, monkeypatch: pytest.MonkeyPatch, route_key: str
) -> None:
    """The route's own api_base, key and litellm_params reach the provider; no ambient
    OPENAI_* variable is needed (none is set)."""
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    m = molt_factory(models=[{
        "alias": "routed", "litellm": "openai/provider-model",
        "api_base": fake_llm.url + "/v1",  # type: ignore[attr-defined]
        "api_key_env": KEY_ENV, "num_retries": 0,
        "litellm_params": {"extra_headers": {"x-route-tag": "blue"}},
    }])
    client = _client(m)
    fake_llm.push(Reply(content="from the provider"), Reply(content="streamed from it"))
    raw = client.chat.completions.with_raw_response.create(model="routed", messages=HI)
    assert raw.parse().choices[0].message.content == "from the provider"
    stream = client.chat.completions.create(model="routed", messages=HI, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == \
        "streamed from it"

    assert len(fake_llm.requests) == 2
    for body, headers in zip(fake_llm.requests, fake_llm.headers, strict=True):
        assert body["model"] == "provider-model"
        assert headers["authorization"] == f"Bearer {route_key}"
        assert headers["x-route-tag"] == "blue"
    turn = m.wait_turn(raw.headers["x-molt-turn-id"])
    assert turn["upstream"] == "litellm:openai/provider-model" and turn["status"] == "ok"


def test_litellm_num_retries_is_per_route(fake_llm: FakeLLM, molt_factory: Any) -> None:
    base = fake_llm.url + "/v1"  # type: ignore[attr-defined]
    m = molt_factory(models=[
        {"alias": "once", "litellm": "openai/a", "api_base": base, "api_key_env": KEY_ENV,
         "num_retries": 0},
        {"alias": "twice", "litellm": "openai/b", "api_base": base, "api_key_env": KEY_ENV,
         "num_retries": 1},
    ])
    client = _client(m)
    fake_llm.push(*[Reply(status=500, error="provider down")] * 2)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="once", messages=HI)
    assert err.value.status_code == 502 and "provider down" in err.value.message
    assert [b["model"] for b in fake_llm.requests] == ["a"]
    assert client.chat.completions.create(model="twice", messages=HI).choices[0].message.content
    assert [b["model"] for b in fake_llm.requests] == ["a", "b", "b"]


def _fallback_routes(kind: str, primary_url: str, backup_url: str) -> list[dict[str, Any]]:
    primary: dict[str, Any] = {"alias": "main", "fallbacks": ["backup"], "timeout_s": 5,
                               "num_retries": 0}
    if kind == "litellm":
        primary.update(litellm="openai/main-model", api_base=primary_url, api_key_env=KEY_ENV)
    else:
        primary.update(base_url=primary_url)
    backup = {"alias": "backup", "base_url": backup_url, "upstream_model": "backup-model"}
    return [primary, backup]


@pytest.mark.parametrize(("kind", "failure"), [
    ("base_url", "500"), ("base_url", "closed port"), ("litellm", "500"),
    ("litellm", "closed port"),
])
def test_fallback_from_a_failing_route(
    kind: str, failure: str, fake_llm: FakeLLM, backup_llm: FakeLLM, molt_factory: Any
) -> None:
    primary_url = _closed_port_url() if failure == "closed port" else fake_llm.url + "/v1"  # type: ignore[attr-defined]
    m = molt_factory(models=_fallback_routes(kind, primary_url, backup_llm.url + "/v1"))  # type: ignore[attr-defined]
    client = _client(m)
    if failure == "500":
        fake_llm.push(Reply(status=500), Reply(status=503))
    backup_llm.push(Reply(content="the backup answers"), Reply(content="a backup stream"))

    raw = client.chat.completions.with_raw_response.create(model="main", messages=HI)
    assert raw.parse().choices[0].message.content == "the backup answers"
    stream = client.chat.completions.create(model="main", messages=HI, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == \
        "a backup stream"

    assert len(fake_llm.requests) == (2 if failure == "500" else 0)
    assert [b["model"] for b in backup_llm.requests] == ["backup-model", "backup-model"]
    turn = m.wait_turn(raw.headers["x-molt-turn-id"])
    assert turn["status"] == "ok"
    assert turn["upstream"] == backup_llm.url + "/v1"  # type: ignore[attr-defined]
    assert turn["request"]["model"] == "main"


def test_fallback_to_a_litellm_route(fake_llm: FakeLLM, molt_factory: Any) -> None:
    m = molt_factory(models=[
        {"alias": "main", "base_url": _closed_port_url(), "fallbacks": ["spare"]},
        {"alias": "spare", "litellm": "openai/spare-model", "num_retries": 0, "api_key_env": KEY_ENV,
         "api_base": fake_llm.url + "/v1"},  # type: ignore[attr-defined]
    ])
    fake_llm.push(Reply(content="litellm spare"))
    raw = _client(m).chat.completions.with_raw_response.create(model="main", messages=HI)
    assert raw.parse().choices[0].message.content == "litellm spare"
    assert fake_llm.requests[-1]["model"] == "spare-model"
    assert m.wait_turn(raw.headers["x-molt-turn-id"])["upstream"] == "litellm:openai/spare-model"


def test_no_fallback_for_the_requests_own_fault(
    fake_llm: FakeLLM, backup_llm: FakeLLM, molt_factory: Any
) -> None:
    m = molt_factory(models=_fallback_routes("base_url", fake_llm.url + "/v1",  # type: ignore[attr-defined]
                                             backup_llm.url + "/v1"))  # type: ignore[attr-defined]
    fake_llm.push(Reply(status=400, error="messages too long for this model"))
    with pytest.raises(openai.BadRequestError) as err:
        _client(m).chat.completions.create(model="main", messages=HI)
    assert "messages too long" in err.value.message
    assert backup_llm.requests == []


def test_every_route_failing_names_each(
    fake_llm: FakeLLM, backup_llm: FakeLLM, molt_factory: Any
) -> None:
    m = molt_factory(models=_fallback_routes("base_url", fake_llm.url + "/v1",  # type: ignore[attr-defined]
                                             backup_llm.url + "/v1"))  # type: ignore[attr-defined]
    fake_llm.push(Reply(status=500, error="main is down"))
    backup_llm.push(Reply(status=503, error="backup is down"))
    with pytest.raises(openai.APIStatusError) as err:
        _client(m).chat.completions.create(model="main", messages=HI)
    assert err.value.status_code == 502
    body = err.value.body
    assert isinstance(body, dict)
    assert "main: " in body["message"] and "main is down" in body["message"]
    assert "backup: " in body["message"] and "backup is down" in body["message"]


# -- strict [[models]] ---------------------------------------------------------------------


def _settings_error(models: list[dict[str, Any]]) -> str:
    with pytest.raises(ValidationError) as err:
        MoltSettings.model_validate({"models": models})
    return str(err.value)


def test_unknown_models_key_is_refused_with_the_close_match() -> None:
    text = _settings_error([{"alias": "claude", "litellm": "anthropic/x",
                             "api_bse": "https://example.invalid"}])
    assert "model alias 'claude': unknown key 'api_bse' (did you mean 'api_base'?)" in text
    assert "litellm_params" in text


def test_route_keys_that_do_not_fit_the_route_are_refused() -> None:
    assert "api_base applies only to a litellm route (use base_url)" in _settings_error(
        [{"alias": "a", "base_url": "http://x/v1", "api_base": "http://y/v1"}])
    assert "set by the entry's own key 'api_key_env'" in _settings_error(
        [{"alias": "a", "litellm": "openai/x", "litellm_params": {"api_key": "sk-1"}}])
    assert "falls back to unknown alias(es) 'nope'" in _settings_error(
        [{"alias": "a", "base_url": "http://x/v1", "fallbacks": ["nope"]}])
    assert "lists itself as a fallback" in _settings_error(
        [{"alias": "a", "base_url": "http://x/v1", "fallbacks": ["a"]}])


def test_doctor_and_serve_fail_on_an_unknown_models_key(tmp_path: Path) -> None:
    cfg = tmp_path / "molt.toml"
    cfg.write_text('[[models]]\nalias = "claude"\nlitellm = "anthropic/x"\n'
                   'api_key = "sk-do-not-print-me"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(str(cfg))
    assert "unknown key 'api_key' (did you mean 'api_key_env'?)" in str(err.value)
    for args in (["doctor"], ["serve"]):
        r = CliRunner().invoke(cli, ["--config", str(cfg), *args])
        assert r.exit_code != 0
        assert f"invalid settings in {cfg}" in r.output
        assert "models.0: model alias 'claude': unknown key 'api_key'" in r.output
        assert "sk-do-not-print-me" not in r.output  # the value may be a secret


def test_doctor_shows_a_litellm_routes_params(tmp_path: Path) -> None:
    cfg = tmp_path / "molt.toml"
    cfg.write_text(f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path}/m.db"\n'
                   '[[models]]\nalias = "azure"\nlitellm = "azure/gpt-4o"\n'
                   'api_base = "https://example.invalid"\napi_key_env = "AZURE_KEY"\n'
                   'litellm_params = { api_version = "2024-06-01" }\n')
    r = CliRunner(env={"AZURE_KEY": None}).invoke(cli, ["--config", str(cfg), "doctor", "--json"])
    report = json.loads(r.stdout)
    route = report["settings"]["models"][0]
    assert route["api_base"] == "https://example.invalid"
    assert route["litellm_params"] == {"api_version": "2024-06-01"}
    check = next(c for c in report["checks"] if c["name"] == "model azure")
    assert check == {"name": "model azure", "ok": False,
                     "detail": "api_key_env names AZURE_KEY, which is not set"}
    assert r.exit_code == 1
