"""Per-key rate limits: the window arithmetic on a test clock, then the real thing
through molt under uvicorn, the official openai SDK and the real CLI.

A limited request is refused before it reaches a model, so it is not recorded
as a turn; /metrics counts it (`molt_rate_limited_total{limit=...}`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from molt.cli import cli
from proxy.auth import Principal
from proxy.errors import RateLimited
from proxy.limits import UNLIMITED, Limiter
from store.keys import KeyLimits
from store.records import TurnRecord
from store.settings import LimitsSettings
from tests.conftest import Molt
from tests.fakes.fake_llm import FakeLLM, Reply

HI = [{"role": "user", "content": "hi"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def at(self, offset: float) -> None:
        self.now = 1000.0 + offset


def _key(**limits: int | None) -> Principal:
    return Principal("ten_1", "acme", "agent", "key_1", KeyLimits(**limits))


def _body(chars: int = 8, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "x" * chars}], **extra}


def _refused(limiter: Limiter, principal: Principal, body: dict[str, Any]) -> RateLimited:
    with pytest.raises(RateLimited) as err:
        limiter.admit(principal, body)
    assert err.value.status == 429 and err.value.code == "rate_limit_exceeded"
    assert err.value.headers == {"retry-after": str(err.value.retry_after_s)}
    return err.value


# -- the window, on a test clock -------------------------------------------------------


def test_rpm_retry_after_is_when_the_oldest_request_leaves_the_window() -> None:
    clock = Clock()
    limiter = Limiter(LimitsSettings(), clock=clock)
    key = _key(rpm=2)
    limiter.admit(key, _body()).release()
    clock.at(10)
    limiter.admit(key, _body()).release()
    clock.at(30)
    err = _refused(limiter, key, _body())
    assert err.retry_after_s == 30 and "2 requests per minute" in err.message
    clock.at(59.5)
    assert _refused(limiter, key, _body()).retry_after_s == 1  # whole seconds, never 0
    clock.at(60)
    limiter.admit(key, _body()).release()  # the first one has left the window
    assert _refused(limiter, key, _body()).retry_after_s == 10


def test_tpm_reserves_an_estimate_and_counts_the_usage_when_it_is_known() -> None:
    clock = Clock()
    limiter = Limiter(LimitsSettings(), clock=clock)
    key = _key(tpm=100)
    first = limiter.admit(key, _body(chars=200))  # about 50 tokens reserved
    clock.at(1)
    limiter.admit(key, _body(chars=200))  # 100: still fits
    clock.at(2)
    err = _refused(limiter, key, _body(chars=200))
    assert err.retry_after_s == 58 and "100 tokens per minute" in err.message
    clock.at(3)
    first.used(10)  # it really used 10: the 50 reserved at 0 give way to 10 counted at 3
    assert _refused(limiter, key, _body(chars=200)).retry_after_s == 58  # the 50 from t=1
    limiter.admit(key, _body(chars=160))  # 60 + 40 fits
    clock.at(61)  # t=1's reservation has expired: 10 + 40 remain
    limiter.admit(key, _body(chars=200))


def test_tpm_counts_max_tokens_and_admits_a_big_request_into_an_empty_window() -> None:
    clock = Clock()
    limiter = Limiter(LimitsSettings(), clock=clock)
    key = _key(tpm=50)
    limiter.admit(key, _body(chars=4, max_tokens=500))  # alone it may pass, or never would
    clock.at(5)
    err = _refused(limiter, key, _body(chars=4))
    assert err.retry_after_s == 55 and "about 1" in err.message and "last minute: 501" in err.message


def test_concurrency_frees_when_a_request_ends() -> None:
    limiter = Limiter(LimitsSettings(), clock=Clock())
    key = _key(concurrency=2)
    with limiter.admit(key, _body()), limiter.admit(key, _body()):
        err = _refused(limiter, key, _body())
        assert err.retry_after_s == 1 and "2 requests in flight" in err.message
    with limiter.admit(key, _body()) as ticket:
        ticket.release()  # idempotent with the context's own release
    limiter.admit(key, _body())


def test_defaults_apply_to_keys_without_their_own_and_zero_turns_one_off() -> None:
    limiter = Limiter(LimitsSettings(rpm=1), clock=Clock())
    limiter.admit(_key(), _body())
    _refused(limiter, _key(), _body())
    off = Principal("ten_1", "acme", "agent", "key_2", KeyLimits(rpm=0))
    for _ in range(5):
        assert limiter.admit(off, _body()) is UNLIMITED
    keyless = Principal("ten_1", "default", "global_admin", None)  # admin_key, open mode
    assert limiter.admit(keyless, _body()) is UNLIMITED


def test_recorded_usage_replaces_the_estimate() -> None:
    clock = Clock()
    limiter = Limiter(LimitsSettings(), clock=clock)
    key = _key(tpm=100)

    def rec(**fields: Any) -> TurnRecord:
        return TurnRecord(id="turn_1", tenant_id="ten_1", session_id="ses_1", idx=0,
                          turn_type="main", created_at=0.0, request_model="m", stream=False,
                          request={}, **fields)

    limiter.admit(key, _body(chars=200)).recorded(rec(input_tokens=60, output_tokens=30))
    _refused(limiter, key, _body(chars=44))  # 90 counted + 11 estimated > 100
    clock.at(61)
    limiter.admit(key, _body(chars=200)).recorded(rec(response=None))  # failed: counts 0
    limiter.admit(key, _body(chars=200)).recorded(
        rec(response={"choices": []}, content="y" * 40))  # no usage: 50 + 10
    err = _refused(limiter, key, _body(chars=200))
    assert "last minute: 60" in err.message


def test_a_scope_without_the_middleware_is_a_wiring_error() -> None:
    limiter = Limiter(LimitsSettings(rpm=1, concurrency=1), clock=Clock())
    with pytest.raises(RuntimeError, match="ReleaseTickets"):
        limiter.admit(_key(), _body(), {"type": "http"})
    limiter.admit(_key(), _body())  # the refused wiring counted nothing


# -- through molt -----------------------------------------------------------------------


def _cli(m: Molt, tmp_path: Path, *args: str) -> Any:
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'data_dir = "{m.settings.data_dir}"\n[store]\nurl = "{m.settings.store.url}"\n')
    r = CliRunner().invoke(cli, ["--config", str(cfg), *args])
    assert r.exit_code == 0, r.output
    return r


def _new_key(m: Molt, tmp_path: Path, *limits: str) -> tuple[str, str]:
    r = _cli(m, tmp_path, "keys", "create", "--tenant", "acme", *limits, "--json")
    made = json.loads(r.stdout)
    return made["key"], made["id"]


@pytest.fixture
def keyed(molt_factory: Any) -> Molt:
    # ttl 0: every request reads its key (and the key's limits) afresh
    m: Molt = molt_factory(server={"key_cache_ttl_s": 0})
    return m


def _metric(m: Molt, limit: str) -> float:
    text = httpx.get(m.url + "/metrics").text
    line = next((x for x in text.splitlines()
                 if x.startswith(f'molt_rate_limited_total{{limit="{limit}"}}')), None)
    return float(line.split()[-1]) if line else 0.0


def test_rpm_429_with_retry_after_through_the_sdk(
    keyed: Molt, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    key, key_id = _new_key(keyed, tmp_path, "--rpm", "2")
    client = openai.OpenAI(base_url=keyed.base_url, api_key=key, max_retries=0)
    for _ in range(2):
        assert client.chat.completions.create(model="gpt-fake", messages=HI).choices
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="gpt-fake", messages=HI)
    retry_after = err.value.response.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60
    assert err.value.code == "rate_limit_exceeded"
    assert isinstance(err.value.body, dict) and err.value.body["type"] == "rate_limit_error"
    assert "2 requests per minute" in err.value.message
    # refused before any model: the provider never saw it, and no turn was recorded
    assert len(fake_llm.requests) == 2
    keyed.flush()
    assert keyed.run(keyed.state.trajectories.count_turns()) == 2
    assert _metric(keyed, "rpm") == 1.0

    # another key of the same tenant has its own window
    other, _ = _new_key(keyed, tmp_path)
    openai.OpenAI(base_url=keyed.base_url, api_key=other, max_retries=0).chat.completions.create(
        model="gpt-fake", messages=HI)
    # lifting the key's limit applies to the running proxy
    r = _cli(keyed, tmp_path, "keys", "limit", key_id, "--rpm", "0")
    assert "rpm=none" in r.stdout
    assert client.chat.completions.create(model="gpt-fake", messages=HI).choices


def test_concurrency_limit_holds_through_a_stream(
    keyed: Molt, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    key, _ = _new_key(keyed, tmp_path, "--concurrency", "1")
    client = openai.OpenAI(base_url=keyed.base_url, api_key=key, max_retries=0)
    gate = threading.Event()
    fake_llm.push(Reply(content="held open stream", gate=gate))
    try:
        stream = client.chat.completions.create(model="gpt-fake", messages=HI, stream=True)
        chunks = iter(stream)
        first = next(chunks)  # the stream has begun, and waits on the gate
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="gpt-fake", messages=HI)
        assert err.value.response.headers["retry-after"] == "1"
        assert "1 requests in flight" in err.value.message
    finally:
        gate.set()
    text = "".join(c.choices[0].delta.content or "" for c in [first, *chunks] if c.choices)
    assert text == "held open stream"
    # the slot is free as soon as the client has the whole answer
    assert client.chat.completions.create(model="gpt-fake", messages=HI).choices
    # a request refused after admission (an unknown model) gives its slot back too
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=HI)
    assert client.chat.completions.create(model="gpt-fake", messages=HI).choices
    assert _metric(keyed, "concurrency") == 1.0


def test_tpm_counts_the_recorded_usage(keyed: Molt, fake_llm: FakeLLM, tmp_path: Path) -> None:
    key, _ = _new_key(keyed, tmp_path, "--tpm", "30")
    client = openai.OpenAI(base_url=keyed.base_url, api_key=key, max_retries=0)
    for _ in range(2):  # the fake reports 11 prompt + 7 completion tokens each
        raw = client.chat.completions.with_raw_response.create(model="gpt-fake", messages=HI)
        keyed.flush()  # recorded: the usage replaces the estimate
    assert keyed.run(keyed.state.trajectories.get_turn(raw.headers["x-molt-turn-id"]))[
        "input_tokens"] == 11
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="gpt-fake", messages=HI)
    assert "30 tokens per minute" in err.value.message and "last minute: 36" in err.value.message
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 60


def test_default_limits_spare_the_server_admin_key(molt_factory: Any) -> None:
    admin = "server-admin-key-0123456789"
    m: Molt = molt_factory(server={"key_cache_ttl_s": 0, "admin_key": admin},
                           limits={"rpm": 1, "concurrency": 1})
    client = openai.OpenAI(base_url=m.base_url, api_key=admin, max_retries=0)
    for _ in range(3):
        assert client.chat.completions.create(model="gpt-fake", messages=HI).choices


def test_keys_cli_shows_and_changes_limits(keyed: Molt, tmp_path: Path) -> None:
    _, key_id = _new_key(keyed, tmp_path, "--rpm", "5", "--tpm", "1000", "--concurrency", "2")
    listed = json.loads(_cli(keyed, tmp_path, "keys", "list", "--json").stdout)
    assert listed[0]["limits"] == {"rpm": 5, "tpm": 1000, "concurrency": 2}
    _cli(keyed, tmp_path, "keys", "limit", key_id, "--tpm", "0")
    listed = json.loads(_cli(keyed, tmp_path, "keys", "list", "--json").stdout)
    assert listed[0]["limits"] == {"rpm": None, "tpm": 0, "concurrency": None}
    assert "tpm=none" in _cli(keyed, tmp_path, "keys", "list").stdout
    bad = CliRunner().invoke(cli, ["keys", "create", "--tenant", "acme", "--rpm", "-1"])
    assert bad.exit_code == 2 and "-1" in bad.output
