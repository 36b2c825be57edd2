"""Per-tenant limits on TTT session states: a tenant over its limit loses its own oldest.

Served tests run molt under a real uvicorn with real keys of two tenants (created with
`molt keys create`), each with its own `ttt_delta` version of the tiny model.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from click.testing import CliRunner

from modeling.loading import load_base
from modeling.ttt import attach
from modeling.ttt_config import TTTConfig
from molt.cli import cli
from molt.config import ConfigError, load_settings
from proxy.local.ttt_sessions import TTTRunner, TTTSessions
from store.registry import Registry
from store.registry_check import base_fingerprint
from tests.proxy.local_helpers import backend, start_local
from tests.proxy.test_local_ttt import PROBE, REVEAL, ttt_version

ADMIN_KEY = "server-admin-key-0123456789"


class Tenant:
    """One tenant's client: its own key and its own TTT version of `tiny`."""

    def __init__(self, m: Any, key: str, model: str) -> None:
        self.client = openai.OpenAI(base_url=m.base_url, api_key=key, max_retries=0)
        self.model = model

    def ask(self, session: str, messages: list[dict[str, Any]], max_tokens: int = 12) -> str:
        r = self.client.chat.completions.create(
            model=self.model, messages=messages,  # type: ignore[arg-type]
            temperature=0, max_tokens=max_tokens,
            extra_headers={"X-Session-Id": session})
        return r.choices[0].message.content or ""

    def adapted(self, session: str) -> str:
        """Show `session` the long revealing prefix, then probe it."""
        self.ask(session, REVEAL, max_tokens=24)
        return self.ask(session, PROBE)


def _key(m: Any, tmp_path: Path, tenant: str) -> str:
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'data_dir = "{m.settings.data_dir}"\n[store]\nurl = "{m.settings.store.url}"\n')
    r = CliRunner().invoke(cli, ["--config", str(cfg), "keys", "create", "--tenant", tenant,
                                 "--json"])
    assert r.exit_code == 0, r.output
    key: str = json.loads(r.stdout)["key"]
    return key


def held(ttt: TTTSessions) -> dict[str, int]:
    """How many session states each tenant holds."""
    return dict(Counter(tenant for tenant, _, _ in ttt.sessions()))


def two_tenants(molt_factory: Any, tiny_base: Path, tmp_path: Path,
                **limits: Any) -> tuple[Any, Tenant, Tenant]:
    """molt with `[ttt_sessions]` = `limits`, and tenants a and b."""
    art = ttt_version(tiny_base, tmp_path / "ttt")  # before molt starts loading the model
    m = start_local(molt_factory, tiny_base, ttt_sessions=limits,
                    server={"admin_key": ADMIN_KEY})
    reg = Registry(m.settings.registry_root())
    out = []
    for name in ("a", "b"):
        v = reg.create(name, "tiny", kind="ttt_delta", files_from=art, base_model="tiny",
                       base_hash=base_fingerprint(tiny_base)).version
        out.append(Tenant(m, _key(m, tmp_path, name), f"tiny@{v}"))
    return m, out[0], out[1]


def test_a_tenants_many_sessions_drop_its_own_oldest_never_another_tenants(
        molt_factory: Any, tiny_base: Path, tmp_path: Path) -> None:
    m, a, b = two_tenants(molt_factory, tiny_base, tmp_path, tenant_max_sessions=2)
    fresh = b.ask("fresh", PROBE)
    b_adapted = b.adapted("b1")  # b holds two sessions: fresh and b1
    assert b_adapted != fresh
    a_adapted = a.adapted("a1")
    assert a_adapted == b_adapted  # the same version, the same prefix
    for sid in ("a2", "a3", "a4"):  # a passes its limit of 2, three times
        a.ask(sid, PROBE)
    ttt = backend(m).ttt_sessions
    assert held(ttt) == {"a": 2, "b": 2}
    assert ttt.tenant_evicted == {"a": 2} and ttt.evicted == 0
    # what an operator sees: /healthz shows the states held per tenant and the drops
    health = httpx.get(f"{m.url}/healthz").json()
    shown = health["ttt_sessions"]["tiny"]
    assert health["status"] == "ok" and shown["sessions"] == 4 and shown["tenant_evicted"] == {"a": 2}
    assert {t: v["sessions"] for t, v in shown["tenants"].items()} == {"a": 2, "b": 2}
    assert shown["bytes"] == ttt.nbytes() > 0 and shown["evicted"] == shown["expired"] == 0
    # b's session still has its fast weights (a probe of W_down answers `fresh`); a's
    # oldest starts from W_down again
    assert b.ask("b1", PROBE) != fresh
    assert a.ask("a1", PROBE) == fresh


def test_a_tenant_override_applies_to_that_tenant_only(
        molt_factory: Any, tiny_base: Path, tmp_path: Path) -> None:
    # a may hold one session (and a tiny memory cap); b keeps the defaults (no own limit)
    m, a, b = two_tenants(molt_factory, tiny_base, tmp_path,
                          tenants={"a": {"max_sessions": 1, "max_mb": 64}})
    fresh = a.ask("fresh", PROBE)
    assert a.adapted("a1") != fresh
    assert b.adapted("b1") != fresh
    for sid in ("b2", "b3"):
        b.ask(sid, PROBE)
    assert a.ask("a1", PROBE) != fresh  # one session: within a's limit, it kept its state
    a.ask("a2", PROBE)  # a's second session: a1 goes
    ttt = backend(m).ttt_sessions
    assert held(ttt) == {"a": 1, "b": 3}
    assert ttt.tenant_evicted == {"a": 2}  # "fresh", then a1
    assert a.ask("a1", PROBE) == fresh
    assert b.ask("b1", PROBE) != fresh


def test_the_memory_cap_of_all_tenants_takes_from_the_tenant_holding_the_most(
        tiny_base: Path) -> None:
    base = load_base(tiny_base)
    runner = TTTRunner(base.model, attach(base.model, TTTConfig(layers=[0, 1], chunk_size=16)))
    now = [0.0]
    sessions = TTTSessions(idle_s=60.0, max_bytes=10**9, clock=lambda: now[0])
    ids = torch.tensor([list(range(5, 37))])  # two whole chunks: every state is as large

    def use(tenant: str, sid: str) -> None:
        now[0] += 1.0
        r = sessions.runner(runner, tenant, sid, "v1")
        with torch.inference_mode():
            r.forward(ids, None)
        sessions.release(r, session_done=False, tenant=tenant, session_id=sid)

    use("b", "b1")  # b's state is the least recently used of all
    one = sessions.nbytes()
    sessions.max_bytes = int(one * 2.5)
    for sid in ("a1", "a2", "a3", "a4"):
        use("a", sid)
    # the cap holds two states: each time a's oldest went, never b's older one
    assert sessions.sessions() == [("b", "b1", "v1"), ("a", "a4", "v1")]
    assert sessions.evicted == 3 and sessions.tenant_evicted == {}


def _error(tmp_path: Path, toml: str) -> str:
    cfg = tmp_path / "molt.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(str(cfg))
    return str(err.value)


def test_bad_tenant_limits_give_a_clear_error(tmp_path: Path) -> None:
    assert "ttt_sessions.tenants.a.max_sessions: Input should be greater than or equal to 1" \
        in _error(tmp_path, "[ttt_sessions.tenants.a]\nmax_sessions = 0\n")
    assert ("ttt_sessions.tenant_max_mb = 2048 is over ttt_sessions.max_mb = 1024 (the cap of "
            "all tenants together)") in _error(tmp_path, "[ttt_sessions]\ntenant_max_mb = 2048\n")
    assert "ttt_sessions.tenants.b.max_mb = 300 is over ttt_sessions.max_mb = 256" in _error(
        tmp_path, "[ttt_sessions]\nmax_mb = 256\n[ttt_sessions.tenants.b]\nmax_mb = 300\n")
    text = _error(tmp_path, "[ttt_sessions.tenants.a]\nmax_session = 3\n")
    assert "ttt_sessions.tenants.a" in text and "max_session" in text
    # the limits as a user writes them
    cfg = tmp_path / "molt.toml"
    cfg.write_text("[ttt_sessions]\ntenant_max_sessions = 8\ntenant_max_mb = 256\n"
                   "[ttt_sessions.tenants.big]\nmax_sessions = 64\n")
    limits = load_settings(str(cfg)).ttt_sessions
    assert limits.tenant_limits("big") == (64, 256 * 1024 * 1024)
    assert limits.tenant_limits("other") == (8, 256 * 1024 * 1024)
    assert load_settings(None, {}).ttt_sessions.tenant_limits("x") == (None, None)
