"""Keys stay inside their tenant: tenant admins, global admins, feedback, session ids.

Everything runs through the real proxy (uvicorn on loopback), the real CLI and
a real SQLite store; the PostgreSQL cases need MOLT_TEST_PG_URL (as the store's
tests do).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from molt.cli import cli
from proxy.app import create_app
from store.errors import StoreError
from store.feedback import FeedbackStore
from tests.conftest import Molt, make_settings
from tests.fakes.server import ServerThread

ADMIN_KEY = "server-admin-key-0123456789"
SKILL_MD = "---\nname: {name}\ndescription: Use when {name} happens\n---\n\n1. Do it.\n"


def _cli(m: Molt, tmp_path: Path, *args: str) -> Any:
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'data_dir = "{m.settings.data_dir}"\n[store]\nurl = "{m.settings.store.url}"\n')
    return CliRunner().invoke(cli, ["--config", str(cfg), *args])


def _key(m: Molt, tmp_path: Path, *args: str) -> str:
    r = _cli(m, tmp_path, "keys", "create", *args, "--json")
    assert r.exit_code == 0, r.output
    key: str = json.loads(r.stdout)["key"]
    return key


def _bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _envelope(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def _chat(c: httpx.Client, key: str | None, text: str = "hi", **headers: str) -> httpx.Response:
    return c.post("/v1/chat/completions", headers={**_bearer(key), **headers},
                  json={"model": "gpt-fake", "messages": [{"role": "user", "content": text}]})


# --- 1. tenant admin and global admin on every /admin route ------------------------------


@dataclass(frozen=True)
class Call:
    """One request to an admin route on behalf of tenant `t`; `ok` are the allowed answers."""

    method: str
    url: Callable[[str, str], str]  # (tenant, who) -> url; `who` keeps names apart per caller
    body: Callable[[str, str], Any] | None = None
    ok: tuple[int, ...] = (200,)


def _admin_calls(tmp_path: Path) -> dict[tuple[str, str], Call]:
    def imp(t: str, who: str) -> Any:
        folder = tmp_path / f"import-{t}-{who}" / f"imported-{who}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "SKILL.md").write_text(SKILL_MD.format(name=f"imported-{who}"))
        return {"path": str(folder.parent)}

    s = "/admin/skills"
    v = "/admin/versions"
    return {
        ("GET", s): Call("GET", lambda t, w: f"{s}?tenant={t}"),
        ("POST", s): Call("POST", lambda t, w: f"{s}?tenant={t}",
                          lambda t, w: {"name": f"added-{w}", "description": "Use when adding"},
                          ok=(201,)),
        ("GET", f"{s}/generation"): Call("GET", lambda t, w: f"{s}/generation?tenant={t}"),
        ("GET", f"{s}/settings"): Call("GET", lambda t, w: f"{s}/settings?tenant={t}"),
        ("PUT", f"{s}/settings"): Call("PUT", lambda t, w: f"{s}/settings?tenant={t}",
                                       lambda t, w: {"top_k": 3}),
        ("POST", f"{s}/import"): Call("POST", lambda t, w: f"{s}/import?tenant={t}", imp),
        # No path: the archive comes back in the response.
        ("POST", f"{s}/export"): Call("POST", lambda t, w: f"{s}/export?tenant={t}",
                                      lambda t, w: {}),
        ("GET", f"{s}/{{name}}"): Call("GET", lambda t, w: f"{s}/base?tenant={t}"),
        ("PUT", f"{s}/{{name}}"): Call("PUT", lambda t, w: f"{s}/base?tenant={t}",
                                       lambda t, w: {"body": f"1. Edited by {w}."}),
        ("DELETE", f"{s}/{{name}}"): Call("DELETE", lambda t, w: f"{s}/doomed-{w}?tenant={t}"),
        ("GET", f"{s}/{{name}}/history"): Call("GET", lambda t, w: f"{s}/base/history?tenant={t}"),
        ("GET", f"{s}/{{name}}/diff"): Call("GET", lambda t, w: f"{s}/base/diff?tenant={t}"),
        ("POST", f"{s}/{{name}}/revert"): Call("POST", lambda t, w: f"{s}/base/revert?tenant={t}",
                                               lambda t, w: {"revision": FIRST_REV[t]}),
        ("POST", f"{s}/{{name}}/approve"): Call(
            "POST", lambda t, w: f"{s}/held-{w}/approve?tenant={t}"),
        # No registry exists here: 404 shows the caller got past the tenant check to the
        # lookup in the named tenant's registry.
        ("GET", v): Call("GET", lambda t, w: f"{v}?tenant={t}"),
        ("GET", f"{v}/{{tenant}}/{{base}}/{{version}}"): Call(
            "GET", lambda t, w: f"{v}/{t}/tiny/v0001", ok=(404,)),
        ("POST", f"{v}/{{tenant}}/{{base}}/{{version}}/promote"): Call(
            "POST", lambda t, w: f"{v}/{t}/tiny/v0001/promote", ok=(404,)),
        ("POST", f"{v}/{{tenant}}/{{base}}/rollback"): Call(
            "POST", lambda t, w: f"{v}/{t}/tiny/rollback", ok=(404, 409)),
        ("DELETE", f"{v}/{{tenant}}/{{base}}/{{version}}"): Call(
            "DELETE", lambda t, w: f"{v}/{t}/tiny/v0001", ok=(404,)),
        ("POST", "/admin/evolve"): Call("POST", lambda t, w: "/admin/evolve",
                                        lambda t, w: {"tenant": t}),
        ("GET", "/admin/proposals"): Call("GET", lambda t, w: f"/admin/proposals?tenant={t}"),
        ("GET", "/admin/evolutions"): Call("GET", lambda t, w: f"/admin/evolutions?tenant={t}"),
        # 400 where the loop does not run in this molt: past the tenant check either way
        ("POST", "/admin/evolver/tick"): Call("POST", lambda t, w: f"/admin/evolver/tick?tenant={t}",
                                              lambda t, w: {}, ok=(200, 400)),
        # This molt serves no local model, so it cannot train: 503 past the tenant check.
        ("POST", "/admin/train"): Call("POST", lambda t, w: "/admin/train",
                                       lambda t, w: {"tenant": t}, ok=(503,)),
        ("GET", "/admin/train/status"): Call("GET", lambda t, w: f"/admin/train/status?tenant={t}"),
        ("GET", "/admin/train/history"): Call("GET",
                                              lambda t, w: f"/admin/train/history?tenant={t}"),
        ("POST", "/admin/train/cancel"): Call("POST", lambda t, w: "/admin/train/cancel",
                                              lambda t, w: {"tenant": t}, ok=(404, 409)),
        ("GET", "/admin/tenants/{tenant}/settings"): Call(
            "GET", lambda t, w: f"/admin/tenants/{t}/settings"),
        ("PUT", "/admin/tenants/{tenant}/settings"): Call(
            "PUT", lambda t, w: f"/admin/tenants/{t}/settings",
            lambda t, w: {"tafc": {"mode": "function"}}),
        ("GET", "/admin/tools/overlays"): Call("GET", lambda t, w: f"/admin/tools/overlays?tenant={t}"),
        # no overlay exists: 404 past the tenant check, in the named tenant
        ("POST", "/admin/tools/overlays/{overlay_id}/revert"): Call(
            "POST", lambda t, w: f"/admin/tools/overlays/tov_none/revert?tenant={t}", ok=(404,)),
    }


FIRST_REV: dict[str, str] = {}


def _admin_routes(m: Molt) -> set[tuple[str, str]]:
    """Every admin route the app serves, as its OpenAPI schema lists them."""
    paths: dict[str, dict[str, Any]] = m.app.openapi()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() if path.startswith("/admin")
            for method in ops}


def _send(c: httpx.Client, key: str, call: Call, tenant: str, who: str) -> httpx.Response:
    body = call.body(tenant, who) if call.body else None
    return c.request(call.method, call.url(tenant, who), headers=_bearer(key),
                     json=body if body is not None else None)


def _seed(c: httpx.Client, tenant: str) -> None:
    """Skills every caller's calls need in `tenant`, added by the global admin."""
    g = _bearer(ADMIN_KEY)
    r = c.post(f"/admin/skills?tenant={tenant}", headers=g,
               json={"name": "base", "description": "Use when testing", "body": "1. First."})
    assert r.status_code == 201, r.text
    FIRST_REV[tenant] = r.json()["revision"]["id"]
    for who in ("own", "global", "other"):
        for name, extra in ((f"doomed-{who}", {}), (f"held-{who}", {"status": "quarantined"})):
            r = c.post(f"/admin/skills?tenant={tenant}", headers=g,
                       json={"name": name, "description": "Use when testing", **extra})
            assert r.status_code == 201, r.text


def test_every_admin_route_keeps_a_tenant_admin_in_its_tenant(
    molt_factory: Any, tmp_path: Path
) -> None:
    m = molt_factory(server={"admin_key": ADMIN_KEY})
    calls = _admin_calls(tmp_path)
    assert _admin_routes(m) == set(calls), "every /admin route needs a case here"
    a_admin = _key(m, tmp_path, "--tenant", "a", "--admin")
    a_agent = _key(m, tmp_path, "--tenant", "a")
    global_key = _key(m, tmp_path, "--global")
    with httpx.Client(base_url=m.url, timeout=60) as c:
        for t in ("a", "b"):
            _seed(c, t)
        before_b = c.get("/admin/skills?tenant=b", headers=_bearer(ADMIN_KEY)).json()
        for route, call in sorted(calls.items()):
            # a tenant admin naming another tenant: 403 in the envelope, before anything runs
            err = _envelope(_send(c, a_admin, call, "b", "other"), 403)
            assert err["type"] == "permission_error" and err["code"] == "tenant_forbidden", route
            # an ordinary key: 403 on every admin route, even for its own tenant
            err = _envelope(_send(c, a_agent, call, "a", "other"), 403)
            assert err["code"] == "admin_required", route
            # its own tenant: allowed
            r = _send(c, a_admin, call, "a", "own")
            assert r.status_code in call.ok, (route, r.status_code, r.text)
            # a global admin, by key and by the server's admin key: any tenant
            r = _send(c, global_key, call, "b", "global")
            assert r.status_code in call.ok, (route, r.status_code, r.text)
        # b's library saw only the global admin's changes, never the tenant admin's
        after_b = c.get("/admin/skills?tenant=b", headers=_bearer(ADMIN_KEY)).json()
        names_b = {s["name"] for s in after_b["data"]}
        assert "added-global" in names_b and "added-other" not in names_b
        assert "imported-other" not in names_b and "added-own" not in names_b
        assert after_b["generation"] > before_b["generation"]
        shown = c.get("/admin/skills/base?tenant=b", headers=_bearer(ADMIN_KEY)).json()
        assert "other" not in shown["body"]
        # no ?tenant=: the caller's own tenant
        assert c.get("/admin/skills", headers=_bearer(a_admin)).json()["tenant"] == "a"
        listed = c.get("/admin/versions", headers=_bearer(a_admin)).json()["data"]
        assert {v["tenant"] for v in listed} <= {"a"}


def test_x_molt_tenant_needs_a_global_admin(molt_factory: Any, tmp_path: Path) -> None:
    m = molt_factory(server={"admin_key": ADMIN_KEY})
    a_admin = _key(m, tmp_path, "--tenant", "a", "--admin")
    global_key = _key(m, tmp_path, "--global", "--tenant", "ops")
    _key(m, tmp_path, "--tenant", "b")
    with httpx.Client(base_url=m.url, timeout=30) as c:
        err = _envelope(_chat(c, a_admin, **{"x-molt-tenant": "b"}), 403)
        assert err["code"] == "tenant_forbidden" and err["param"] == "x-molt-tenant"
        own = _chat(c, a_admin, **{"x-molt-tenant": "a"})
        assert own.status_code == 200
        as_b = _chat(c, global_key, **{"x-molt-tenant": "b"})
        assert as_b.status_code == 200
        by_server_key = _chat(c, ADMIN_KEY, **{"x-molt-tenant": "b"})
        assert by_server_key.status_code == 200
    ten_a = m.run(m.state.keys.tenant_by_name("a"))
    ten_b = m.run(m.state.keys.tenant_by_name("b"))
    assert m.wait_turn(own.headers["x-molt-turn-id"])["tenant_id"] == ten_a.id
    assert m.wait_turn(as_b.headers["x-molt-turn-id"])["tenant_id"] == ten_b.id
    turns_b = m.run(m.state.trajectories.turns_since(0, tenant_id=ten_b.id))
    assert len(turns_b) == 2  # the refused request recorded nothing as b
    listed = json.loads(_cli(m, tmp_path, "keys", "list", "--json").stdout)
    assert {(k["tenant"], k["role"]) for k in listed} == {
        ("a", "admin"), ("ops", "global_admin"), ("b", "agent")}


# --- 2. revoking the last key never reopens the proxy -------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_revoking_the_last_key_never_reopens(
    molt_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str
) -> None:
    caplog.set_level(logging.INFO, logger="molt.proxy.auth")
    # ttl 0: every request re-reads the keys, so nothing here waits for a cache to expire
    m = molt_factory(server={"host": host, "key_cache_ttl_s": 0})
    loopback = host == "127.0.0.1"
    with httpx.Client(base_url=m.url, timeout=30) as c:
        first = _chat(c, None)
        if loopback:  # the local default: open, no key needed
            assert first.status_code == 200
            assert c.get("/admin/skills").status_code == 200
        else:  # never open on a non-loopback bind
            _envelope(first, 401)
            _envelope(c.get("/admin/skills"), 401)
        key = _key(m, tmp_path, "--tenant", "a", "--admin")
        _envelope(_chat(c, None), 401)
        assert _chat(c, key).status_code == 200
        key_id = json.loads(_cli(m, tmp_path, "keys", "list", "--json").stdout)[0]["id"]
        assert _cli(m, tmp_path, "keys", "revoke", key_id).exit_code == 0
        # no live key is left: still closed, and never with admin rights
        _envelope(_chat(c, None), 401)
        _envelope(c.get("/admin/skills"), 401)
        _envelope(c.get("/admin/versions"), 401)
        _envelope(_chat(c, key), 401)
        # a new key works again; the proxy did not reopen in between
        fresh = _key(m, tmp_path, "--tenant", "a")
        assert _chat(c, fresh).status_code == 200
        _envelope(_chat(c, None), 401)
    text = caplog.text
    assert "auth mode locked" in text and "auth mode keys" in text
    assert ("auth mode open" in text) == loopback
    assert key not in text and fresh not in text


# --- 3. feedback stays inside the caller's tenant -----------------------------------------


@pytest.fixture
def two_tenants(molt_factory: Any, tmp_path: Path) -> tuple[Molt, str, str]:
    m = molt_factory(server={"admin_key": ADMIN_KEY})
    return m, _key(m, tmp_path, "--tenant", "a"), _key(m, tmp_path, "--tenant", "b")


def _feedback(c: httpx.Client, key: str, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return c.post("/v1/feedback", content=content,
                  headers={**_bearer(key), "content-type": "application/json", **headers})


def test_feedback_turn_and_session_belong_to_the_caller_and_to_each_other(
    two_tenants: tuple[Molt, str, str], tmp_path: Path
) -> None:
    m, key_a, key_b = two_tenants
    with httpx.Client(base_url=m.url, timeout=30) as c:
        ra = _chat(c, key_a, "a's task", **{"X-Session-Id": "shared"})
        rb = _chat(c, key_b, "b's task", **{"X-Session-Id": "shared"})
        turn_a, ses_a = ra.headers["x-molt-turn-id"], ra.headers["x-molt-session-id"]
        turn_b, ses_b = rb.headers["x-molt-turn-id"], rb.headers["x-molt-session-id"]
        assert ses_a != ses_b
        # a's turn with b's session: refused (a cannot see b's session), nothing filed
        crossed = _feedback(c, key_a, {"turn_id": turn_a, "session_id": ses_b, "score": -1})
        assert _envelope(crossed, 404)["param"] == "session_id"
        # a's turn with another of a's sessions: they do not belong to each other
        other_a = _chat(c, key_a, "a's other task", **{"X-Session-Id": "other"})
        mixed = _feedback(c, key_a, {"turn_id": turn_a, "session_id": "other", "score": -1})
        assert _envelope(mixed, 400)["code"] == "session_mismatch"
        assert other_a.headers["x-molt-session-id"] != ses_a
        # b's turn, from a: not found
        _envelope(_feedback(c, key_a, {"turn_id": turn_b, "score": 1}), 404)
        # a's turn with a's own session, by id and by a's external id: filed
        ok = _feedback(c, key_a, {"turn_id": turn_a, "session_id": "shared", "score": 0.5})
        assert ok.status_code == 200, ok.text
        assert ok.json()["session_id"] == ses_a
        # b's external id is b's session, although a uses the same one
        mine = _feedback(c, key_b, {"session_id": "shared", "score": 1, "text": "b is happy"})
        assert mine.status_code == 200, mine.text
        assert mine.json()["session_id"] == ses_b
        # a global admin files for b with x-molt-tenant
        g = _feedback(c, ADMIN_KEY, {"turn_id": turn_b, "score": 0}, **{"x-molt-tenant": "b"})
        assert g.status_code == 200, g.text
    rows_b = m.run(m.state.feedback.for_sessions([ses_b]))
    assert sorted(r["score"] for r in rows_b) == [0.0, 1.0]
    assert all(r["turn_id"] in (None, turn_b) for r in rows_b)
    # the CLI (a global tool) names the tenant when a client session id is shared
    shown = _cli(m, tmp_path, "sessions", "show", "shared", "--tenant", "b", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["id"] == ses_b
    ambiguous = _cli(m, tmp_path, "sessions", "show", "shared")
    assert ambiguous.exit_code != 0 and "several tenants (a, b)" in ambiguous.output
    by_id = _cli(m, tmp_path, "sessions", "show", ses_a)
    assert by_id.exit_code == 0 and "a's task" in by_id.output


def test_feedback_refuses_what_is_not_a_score(two_tenants: tuple[Molt, str, str]) -> None:
    m, key_a, _ = two_tenants
    with httpx.Client(base_url=m.url, timeout=30) as c:
        turn = _chat(c, key_a).headers["x-molt-turn-id"]
        for raw in ('{"turn_id": "%s", "score": true}', '{"turn_id": "%s", "score": 1.5}',
                    '{"turn_id": "%s", "score": "1"}'):
            err = _envelope(_feedback(c, key_a, raw % turn), 400)
            assert err["param"] == "score", raw
        # not JSON at all (JSON has no NaN or infinities): refused as such, at the edge
        for raw in ('{"turn_id": "%s", "score": NaN}', '{"turn_id": "%s", "score": Infinity}',
                    '{"turn_id": "%s", "score": 1e999}'):
            err = _envelope(_feedback(c, key_a, raw % turn), 400)
            assert "not valid JSON" in err["message"], raw
        err = _envelope(_feedback(c, key_a, {"turn_id": turn, "score": 1, "meta": {"x": 1e999}}),
                        400)
        assert "not valid JSON" in err["message"]
        err = _envelope(_feedback(c, key_a, {"turn_id": turn, "text": "bad\u0000byte"}), 400)
        assert "NUL" in err["message"]
        too_big = _feedback(c, key_a, {"turn_id": turn, "text": "x" * 400_000})
        assert _envelope(too_big, 413)["code"] == "request_too_large"
        assert _feedback(c, key_a, {"turn_id": turn, "score": -1}).status_code == 200
    assert [r["score"] for r in m.run(m.state.feedback.for_turns([turn]))] == [-1.0]


def test_a_store_failure_never_logs_the_feedback(
    two_tenants: tuple[Molt, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    m, key_a, _ = two_tenants
    secret = "the user's private complaint " + uuid.uuid4().hex
    with httpx.Client(base_url=m.url, timeout=30) as c:
        turn = _chat(c, key_a).headers["x-molt-turn-id"]
        m.flush()

        async def break_table() -> None:
            async with m.state.db.engine.begin() as conn:
                await conn.execute(sa.text("DROP TABLE feedback"))

        m.run(break_table())
        err = _envelope(_feedback(c, key_a, {"turn_id": turn, "score": 1, "text": secret}), 500)
        assert err["code"] == "store_error" and secret not in err["message"]
    assert "OperationalError" in caplog.text
    assert secret not in caplog.text


def test_an_unhandled_database_error_logs_no_parameters(
    fake_llm: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A SQLAlchemy error nobody translated: 500 envelope; the log names its type only."""
    settings = make_settings(tmp_path, fake_llm.url)  # type: ignore[attr-defined]
    holder: list[Any] = []

    async def hook(ctx: Any, body: dict[str, Any]) -> dict[str, Any]:
        # a hook that stores the prompt and hits a real database error while doing it
        async with holder[0].state.molt.db.engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO no_such_table VALUES (:p)"),
                               {"p": body["messages"][0]["content"]})
        return body

    app = create_app(settings, request_hooks=[hook])
    holder.append(app)
    prompt = "a private prompt " + uuid.uuid4().hex
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        err = _envelope(_chat(c, None, prompt), 500)
        assert err["code"] == "internal_error"
    assert "unhandled error: OperationalError" in caplog.text
    assert prompt not in caplog.text


# --- PostgreSQL -----------------------------------------------------------------------------


@pytest.fixture
def pg_molt(molt_factory: Any) -> Molt:
    url = os.environ.get("MOLT_TEST_PG_URL")
    if not url:
        pytest.skip("PostgreSQL skipped: MOLT_TEST_PG_URL is not set (.ci/run starts a server)")
    m: Molt = molt_factory(server={"admin_key": ADMIN_KEY}, store={"url": url})
    return m


def test_postgres_feedback_nul_nan_and_shared_session_ids(
    pg_molt: Molt, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    m = pg_molt
    run = uuid.uuid4().hex[:8]  # the PostgreSQL database is shared: names of our own
    key_a = m.run(m.state.keys.create_key(f"a-{run}"))[0]
    key_b = m.run(m.state.keys.create_key(f"b-{run}"))[0]
    ext = f"shared-{run}"
    secret = "secret feedback " + run
    with httpx.Client(base_url=m.url, timeout=30) as c:
        ra = _chat(c, key_a, **{"X-Session-Id": ext})
        rb = _chat(c, key_b, **{"X-Session-Id": ext})
        turn_a, ses_b = ra.headers["x-molt-turn-id"], rb.headers["x-molt-session-id"]
        for body in ({"turn_id": turn_a, "text": secret + "\u0000"},
                     {"turn_id": turn_a, "score": 1, "meta": {"k": "v\u0000"}},
                     {"turn_id": turn_a, "text": secret + "\ud800"}):
            _envelope(_feedback(c, key_a, body), 400)
        _envelope(_feedback(c, key_a, f'{{"turn_id": "{turn_a}", "score": NaN}}'), 400)
        _envelope(_feedback(c, key_a, {"turn_id": turn_a, "session_id": ses_b, "score": 1}),
                  404)
        ok = _feedback(c, key_b, {"session_id": ext, "score": 1, "text": secret})
        assert ok.status_code == 200 and ok.json()["session_id"] == ses_b
    assert secret not in caplog.text
    ten_a = m.run(m.state.keys.tenant_by_name(f"a-{run}"))
    assert m.run(m.state.trajectories.get_session(ext, tenant_id=ten_a.id)).summary.id == \
        ra.headers["x-molt-session-id"]


def test_store_errors_carry_no_parameters(pg_molt: Molt) -> None:
    """The store translates a driver error once; its message names the type, not the data."""
    m = pg_molt
    secret = "private text " + uuid.uuid4().hex

    async def add_to_missing_tenant() -> str:
        store = FeedbackStore(m.state.db)
        # tenant_id longer than its column: PostgreSQL refuses the row
        try:
            await store.add(tenant_id="t" * 100, session_id=None, turn_id="turn_x", score=None,
                            text=secret)
        except StoreError as exc:
            # the engine hides parameters: not even the driver error's text carries them
            assert exc.__cause__ is not None and secret not in str(exc.__cause__)
            return str(exc)
        raise AssertionError("PostgreSQL accepted a 100-character tenant id")

    message = m.run(add_to_missing_tenant())
    assert secret not in message and "DBAPIError" in message
