"""`molt connect AGENT`: each SDK, set up with exactly what the command printed, goes through
a real molt (uvicorn on loopback, keys on) to the scripted upstream, and its turns land in
the store under the tenant of the key the command minted."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from click.testing import CliRunner

from molt.cli import cli
from molt.connect import AGENTS
from store.keys import KeyStore
from tests.conftest import Molt
from tests.fakes.fake_llm import FakeLLM, Reply

ADMIN = "connect-test-admin-key-0123456789"
# Variables an SDK reads, cleared first so that only the printed ones count.
SDK_VARS = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_DEFAULT_MODEL",
            "OPENAI_AGENTS_DISABLE_TRACING", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN", "MOLT_API_KEY")


@pytest.fixture
def keyed(molt_factory: Any) -> Molt:
    m: Molt = molt_factory(server={"admin_key": ADMIN})
    return m


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SDK_VARS:
        monkeypatch.delenv(name, raising=False)


def _config(m: Molt, tmp_path: Path, *, admin: bool = True) -> str:
    """The molt.toml a user's `molt connect` reads: the running proxy's store and port."""
    port = httpx.URL(m.url).port
    p = tmp_path / "connect.toml"
    p.write_text(
        f'data_dir = "{m.settings.data_dir}"\n[store]\nurl = "{m.settings.store.url}"\n'
        f'[server]\nport = {port}\n' + (f'admin_key = "{ADMIN}"\n' if admin else "")
        + '[[models]]\nalias = "gpt-fake"\nbase_url = "http://127.0.0.1:9/v1"\n')
    return str(p)


def _connect(cfg: str, *args: str) -> Any:
    r = CliRunner().invoke(cli, ["--config", cfg, "connect", *args])
    assert r.exit_code == 0, r.output
    return r


def _exports(stdout: str) -> dict[str, str]:
    """The variables the printed shell lines export, parsed as a shell would."""
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        if line.startswith("export "):
            name, _, value = shlex.split(line)[1].partition("=")
            out[name] = value
    return out


def _setup(m: Molt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent: str,
           tenant: str) -> dict[str, str]:
    """`molt connect AGENT --tenant T`, its exports applied; also what --json says."""
    cfg = _config(m, tmp_path)
    shell = _connect(cfg, agent, "--tenant", tenant)
    env = _exports(shell.stdout)
    assert env, shell.stdout
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert "minted key key_" in shell.stderr and f"tenant {tenant}" in shell.stderr
    return env


def _tenant_turns(m: Molt, tenant: str) -> list[dict[str, Any]]:
    """The recorded turns of `tenant`, oldest first."""
    async def read() -> list[dict[str, Any]]:
        ten = await KeyStore(m.state.db).tenant_by_name(tenant)
        assert ten is not None, f"no tenant {tenant!r}"
        sessions = await m.state.trajectories.list_sessions(tenant_id=ten.id)
        turns: list[dict[str, Any]] = []
        for s in sessions:
            turns += (await m.state.trajectories.get_session(s.id)).turns
        return sorted(turns, key=lambda t: t["created_at"])

    m.flush()
    got: list[dict[str, Any]] = m.run(read())
    return got


def _assert_recorded(m: Molt, tenant: str, n: int, *, content: str) -> list[dict[str, Any]]:
    turns = _tenant_turns(m, tenant)
    assert len(turns) == n, [t["content"] for t in turns]
    assert all(t["status"] == "ok" and t["request_model"] == "gpt-fake" for t in turns)
    assert turns[-1]["content"] == content
    # served with the key, not open: nothing landed in the default tenant
    assert _default_turns(m) == 0
    return turns


def _default_turns(m: Molt) -> int:
    async def count() -> int:
        ten = await KeyStore(m.state.db).tenant_by_name("default")
        assert ten is not None
        return len(await m.state.trajectories.list_sessions(tenant_id=ten.id))

    n: int = m.run(count())
    return n


# -- each agent, driven with exactly the printed settings --------------------------------------

def test_openai_sdk_chat_and_responses(keyed: Molt, fake_llm: FakeLLM, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    env = _setup(keyed, tmp_path, monkeypatch, "openai", "t-openai")
    assert env["OPENAI_BASE_URL"] == keyed.base_url
    client = openai.OpenAI(max_retries=0)  # the variables only
    fake_llm.push(Reply(content="chat answer"), Reply(content="responses answer"))
    chat = client.chat.completions.create(model="gpt-fake",
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content == "chat answer"
    resp = client.responses.create(model="gpt-fake", input="hello again")
    assert resp.output_text == "responses answer"
    _assert_recorded(keyed, "t-openai", 2, content="responses answer")


def test_anthropic_sdk_messages(keyed: Molt, fake_llm: FakeLLM, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    env = _setup(keyed, tmp_path, monkeypatch, "anthropic", "t-anthropic")
    assert env["ANTHROPIC_BASE_URL"] == keyed.url  # the SDK appends /v1/messages
    client = anthropic.Anthropic(max_retries=0)  # ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY
    fake_llm.push(Reply(content="Sunny."), Reply(content="Still sunny."))
    msg = client.messages.create(model="gpt-fake", max_tokens=50,
                                 messages=[{"role": "user", "content": "Weather?"}])
    assert msg.content[0].text == "Sunny."  # type: ignore[union-attr]
    with client.messages.stream(model="gpt-fake", max_tokens=50,
                                messages=[{"role": "user", "content": "And now?"}]) as s:
        assert s.get_final_text() == "Still sunny."
    _assert_recorded(keyed, "t-anthropic", 2, content="Still sunny.")


def test_claude_code_settings(keyed: Molt, fake_llm: FakeLLM, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Claude Code's variables, as the anthropic SDK (which Claude Code is built on) reads
    them: a Bearer token, an emptied API key, the model from ANTHROPIC_MODEL, the beta
    Messages route and count_tokens as Claude Code calls them."""
    env = _setup(keyed, tmp_path, monkeypatch, "claude-code", "t-claude")
    assert env["ANTHROPIC_API_KEY"] == "" and env["ANTHROPIC_AUTH_TOKEN"].startswith("molt-")
    client = anthropic.Anthropic(api_key=None, max_retries=0)
    ask = [{"role": "user", "content": "Fix the bug."}]
    count = client.beta.messages.count_tokens(model=env["ANTHROPIC_MODEL"], messages=ask)  # type: ignore[arg-type]
    assert count.input_tokens > 0
    fake_llm.push(Reply(content="Done."))
    with client.beta.messages.stream(model=env["ANTHROPIC_DEFAULT_HAIKU_MODEL"],
                                     max_tokens=100, messages=ask,  # type: ignore[arg-type]
                                     betas=["interleaved-thinking-2025-05-14"]) as s:
        assert s.get_final_text() == "Done."
    # molt's key stays with molt: the upstream never sees it
    assert env["ANTHROPIC_AUTH_TOKEN"] not in json.dumps(fake_llm.headers)
    _assert_recorded(keyed, "t-claude", 1, content="Done.")


def test_litellm_completion(keyed: Molt, fake_llm: FakeLLM, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    import litellm

    env = _setup(keyed, tmp_path, monkeypatch, "litellm", "t-litellm")
    code = json.loads(_connect(_config(keyed, tmp_path), "litellm", "--key",
                               env["MOLT_API_KEY"], "--json").stdout)["code"]
    api_base = re.search(r"api_base='([^']+)'", code)
    model = re.search(r"model='([^']+)'", code)
    assert api_base and model and api_base[1] == keyed.base_url
    fake_llm.push(Reply(content="via litellm"))
    out = litellm.completion(model=model[1], api_base=api_base[1],
                             api_key=env["MOLT_API_KEY"], num_retries=0,
                             messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "via litellm"
    assert fake_llm.requests[-1]["model"] == "gpt-fake"
    _assert_recorded(keyed, "t-litellm", 1, content="via litellm")


def test_openai_agents_sdk(keyed: Molt, fake_llm: FakeLLM, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The printed variables alone (the Responses API, the model from OPENAI_DEFAULT_MODEL),
    then an OpenAIChatCompletionsModel on a client that reads the same variables."""
    env = _setup(keyed, tmp_path, monkeypatch, "openai-agents", "t-agents")
    assert env["OPENAI_AGENTS_DISABLE_TRACING"] == "1"
    from agents import Agent, OpenAIChatCompletionsModel, Runner

    async def run() -> tuple[str, str]:
        fake_llm.push(Reply(content="agent via responses"), Reply(content="agent via chat"))
        a = await Runner.run(Agent(name="assistant", instructions="Be brief."), "Hello")
        model = OpenAIChatCompletionsModel(model=env["OPENAI_DEFAULT_MODEL"],
                                           openai_client=openai.AsyncOpenAI(max_retries=0))
        b = await Runner.run(Agent(name="assistant", instructions="Be brief.", model=model),
                             "Hello again")
        return str(a.final_output), str(b.final_output)

    assert asyncio.run(run()) == ("agent via responses", "agent via chat")
    turns = _assert_recorded(keyed, "t-agents", 2, content="agent via chat")
    assert turns[0]["request"]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_langchain_chat_openai(keyed: Molt, fake_llm: FakeLLM, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_openai import ChatOpenAI

    _setup(keyed, tmp_path, monkeypatch, "langchain", "t-langchain")
    fake_llm.push(Reply(content="via langchain"))
    llm = ChatOpenAI(model="gpt-fake", max_retries=0)  # the variables only
    assert llm.invoke("Hello").content == "via langchain"
    _assert_recorded(keyed, "t-langchain", 1, content="via langchain")


# -- keys: minted, reused, refused -------------------------------------------------------------

def test_key_reuse_and_refusals(keyed: Molt, tmp_path: Path) -> None:
    cfg = _config(keyed, tmp_path)
    run = CliRunner().invoke
    first = json.loads(_connect(cfg, "openai", "--tenant", "acme", "--json").stdout)
    assert first["tenant"] == "acme" and first["key_id"].startswith("key_")
    # reused: no new key, the tenant read from the key
    again = json.loads(_connect(cfg, "anthropic", "--key", first["key"], "--json").stdout)
    assert (again["key"], again["tenant"], again["key_id"]) == (first["key"], "acme", None)
    assert again["env"]["ANTHROPIC_API_KEY"] == first["key"]
    listed = json.loads(run(cli, ["--config", cfg, "keys", "list", "--json"]).stdout)
    assert [k["tenant"] for k in listed] == ["acme"]
    assert listed[0]["name"] == "molt connect openai" and listed[0]["role"] == "agent"

    # $MOLT_API_KEY (the litellm recipe exports it) is reused for its own tenant, and
    # passed over for another one: a key is minted there
    from_env = json.loads(run(cli, ["--config", cfg, "connect", "langchain", "--json"],
                              env={"MOLT_API_KEY": first["key"]}).stdout)
    assert (from_env["key"], from_env["tenant"], from_env["key_id"]) == (first["key"], "acme", None)
    other = json.loads(run(cli, ["--config", cfg, "connect", "openai", "--tenant", "other",
                                 "--json"], env={"MOLT_API_KEY": first["key"]}).stdout)
    assert other["tenant"] == "other" and other["key"] != first["key"] and other["key_id"]
    dead = run(cli, ["--config", cfg, "connect", "openai"], env={"MOLT_API_KEY": "molt-old"})
    assert dead.exit_code != 0 and "$MOLT_API_KEY is not a live key" in dead.output

    wrong = run(cli, ["--config", cfg, "connect", "openai", "--key", first["key"],
                      "--tenant", "other"])
    assert wrong.exit_code != 0 and "belongs to tenant 'acme'" in wrong.output
    bogus = run(cli, ["--config", cfg, "connect", "openai", "--key", "molt-nope"])
    assert bogus.exit_code != 0 and "not a live key" in bogus.output
    none = run(cli, ["--config", cfg, "connect", "openai"])
    assert none.exit_code != 0 and "keys are on: give --tenant NAME" in none.output
    unknown = run(cli, ["--config", cfg, "connect", "cursor"])
    assert unknown.exit_code != 0 and "openai-agents" in unknown.output
    bad_model = run(cli, ["--config", cfg, "connect", "openai", "--tenant", "acme",
                          "--model", "gpt-nope"])
    assert bad_model.exit_code != 0 and "not a model alias" in bad_model.output


def test_open_proxy_needs_no_key_and_first_key_warns(molt: Molt, fake_llm: FakeLLM,
                                                     tmp_path: Path) -> None:
    cfg = _config(molt, tmp_path, admin=False)
    shown = _connect(cfg, "openai")
    env = _exports(shown.stdout)
    assert env["OPENAI_BASE_URL"] == molt.base_url and "runs open" in shown.stderr
    fake_llm.push(Reply(content="open"))
    client = openai.OpenAI(base_url=env["OPENAI_BASE_URL"], api_key=env["OPENAI_API_KEY"],
                           max_retries=0)
    r = client.chat.completions.create(model="gpt-fake",
                                       messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "open"
    minted = _connect(cfg, "openai", "--tenant", "acme")
    assert "first API key" in minted.stderr


@pytest.mark.parametrize("agent", AGENTS)
def test_every_agent_prints_shell_and_json_alike(keyed: Molt, tmp_path: Path,
                                                 agent: str) -> None:
    cfg = _config(keyed, tmp_path)
    data = json.loads(_connect(cfg, agent, "--tenant", "acme", "--json").stdout)
    shell = _connect(cfg, agent, "--key", data["key"]).stdout
    assert _exports(shell) == data["env"]
    # every line is a comment or an export: `eval "$(molt connect ...)"` runs nothing else
    assert all(line.startswith(("#", "export ")) for line in shell.splitlines())
    assert data["key"] in shell and data["url"] == keyed.url
