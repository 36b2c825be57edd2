"""Hot-swapping weight versions under load, and refusing bad ones."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from molt.cli import cli
from store.registry import Registry
from store.registry_check import base_fingerprint
from tests.proxy.local_helpers import backend, client, start_local

PROMPT = [{"role": "user", "content": "Tell me a story about Oslo."}]
MAX_TOKENS = 16


def _text(m: Any, model: str) -> str:
    r = client(m).chat.completions.create(model=model, messages=PROMPT, temperature=0,
                                          max_tokens=MAX_TOKENS)
    return r.choices[0].message.content or ""


def _add(reg: Registry, base_dir: Path, art: Path, **kw: Any) -> str:
    return reg.create("default", "tiny", kind=kw.pop("kind", "lora"), files_from=art,
                      base_model="tiny", base_hash=kw.pop("base_hash", base_fingerprint(base_dir)),
                      **kw).version


def _wait_served(m: Any, version: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while backend(m).served_versions().get("default", "base") != version:
        assert time.monotonic() < deadline, f"serving never switched to {version}"
        time.sleep(0.05)


@pytest.mark.parametrize("lora_mode", ["merged", "shared"])
def test_ten_promotions_and_rollbacks_under_load(
    molt_factory: Any, tiny_base: Path, tiny_artifacts: dict[str, Path], lora_mode: str
) -> None:
    m = start_local(molt_factory, tiny_base, lora_mode)
    reg = Registry(m.settings.registry_root())
    v1, v2, v3 = (_add(reg, tiny_base, tiny_artifacts[f"lora{i}"]) for i in (1, 2, 3))
    expected = {v: _text(m, f"tiny@{v}") for v in ("base", v1, v2, v3)}
    assert len(set(expected.values())) == 4, "each version must answer differently"

    stop = threading.Event()
    results: list[tuple[str, str, str]] = []
    errors: list[str] = []

    def agent(i: int) -> None:
        c = client(m)
        while not stop.is_set():
            try:
                raw = c.chat.completions.with_raw_response.create(
                    model="tiny", messages=PROMPT, temperature=0, max_tokens=MAX_TOKENS,
                    stream=bool(i % 2))
                parsed = raw.parse()
                if i % 2:
                    text = "".join(ch.choices[0].delta.content or "" for ch in parsed if ch.choices)
                else:
                    text = parsed.choices[0].message.content or ""
                results.append((raw.headers["x-molt-weight-version"],
                                raw.headers["x-molt-turn-id"], text))
            except Exception as exc:  # noqa: BLE001 - every failure is reported below
                errors.append(repr(exc))

    agents = [threading.Thread(target=agent, args=(i,)) for i in range(4)]
    for t in agents:
        t.start()
    admin = httpx.Client(base_url=m.url, timeout=30)
    plan = [("promote", v1), ("promote", v2), ("rollback", v1), ("promote", v3),
            ("rollback", v1), ("promote", v2), ("promote", v3), ("rollback", v2),
            ("promote", v1), ("rollback", v2)]
    try:
        for n, (action, want) in enumerate(plan):
            time.sleep(0.3)
            if n % 2 == 0:  # over REST: returns once serving has swapped
                url = (f"/admin/versions/default/tiny/{want}/promote" if action == "promote"
                       else "/admin/versions/default/tiny/rollback")
                r = admin.post(url)
                assert r.status_code == 200, r.text
                assert r.json()["active"] == want and r.json()["served"] == {"tiny": want}
            else:  # in-process registry call, as a trainer would: serving polls the pointer
                if action == "promote":
                    reg.promote("default", "tiny", want, base_dir=tiny_base)
                else:
                    assert reg.rollback("default", "tiny", base_dir=tiny_base).active == want
                _wait_served(m, want)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in agents:
            t.join()
    assert errors == []
    assert len(results) >= 20
    assert {v for v, _, _ in results} >= {v1, v2, v3}
    for version, _, text in results:
        assert text == expected[version], f"a response of {version} was not all {version}"

    m.flush()
    turns = {tid: m.run(m.state.trajectories.get_turn(tid)) for _, tid, _ in results}
    for version, tid, text in results:
        assert turns[tid]["weight_version"] == version
        assert turns[tid]["status"] == "ok"

    # drained versions were unloaded: only the active one stays
    deadline = time.monotonic() + 5
    while set(backend(m).versions.loaded) != {("default", v2)}:
        assert time.monotonic() < deadline, backend(m).versions.loaded
        time.sleep(0.05)
    assert reg.active("default", "tiny") == v2
    assert [h["action"] for h in reg.history("default", "tiny")].count("rollback") == 4


def _toml(tmp_path: Path, m: Any, base_dir: Path) -> Path:
    p = tmp_path / "molt.toml"
    p.write_text(f'data_dir = "{m.settings.data_dir}"\n[store]\nurl = "{m.settings.store.url}"\n'
                 f'[[models]]\nalias = "tiny"\nlocal = "{base_dir}"\n')
    return p


def test_bad_versions_are_refused_and_serving_stays(
    molt_factory: Any, tiny_base: Path, tiny_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    m = start_local(molt_factory, tiny_base)
    reg = Registry(m.settings.registry_root())
    good = _add(reg, tiny_base, tiny_artifacts["lora1"])
    admin = httpx.Client(base_url=m.url, timeout=30)
    assert admin.post(f"/admin/versions/default/tiny/{good}/promote").status_code == 200
    expected = _text(m, "tiny")

    wrong_base = _add(reg, tiny_base, tiny_artifacts["lora2"], base_hash="fp-0123456789abcdef01234567")
    wrong_shapes = _add(reg, tiny_base, tiny_artifacts["other_lora"], base_hash=None)
    missing = _add(reg, tiny_base, tiny_artifacts["lora3"])
    (reg.path("default", "tiny", missing) / "adapter_model.safetensors").unlink()
    cases = {wrong_base: "wrong base model", wrong_shapes: "does not fit base weight",
             missing: "missing adapter_model.safetensors"}

    config = _toml(tmp_path, m, tiny_base)
    runner = CliRunner()
    for version, reason in cases.items():
        r = admin.post(f"/admin/versions/default/tiny/{version}/promote")
        assert r.status_code == 400
        assert reason in r.json()["error"]["message"]
        out = runner.invoke(cli, ["--config", str(config), "versions", "promote", version])
        assert out.exit_code == 1
        assert "refused" in out.output and reason in out.output
    assert reg.active("default", "tiny") == good

    # A pointer flipped behind the registry's back to a bad version is refused by serving,
    # which points it back at the version it serves: the pointer never names a refused one.
    (Path(reg.root) / "default" / "tiny" / "active").write_text(wrong_shapes + "\n")
    deadline = time.monotonic() + 5
    while reg.active("default", "tiny") != good:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "does not fit" in backend(m).versions.refused["default"]
    last = reg.history("default", "tiny")[-1]
    assert (last["action"], last["from"], last["to"]) == ("refused", wrong_shapes, good)
    assert reg.get("default", "tiny", wrong_shapes).status == "rolled_back"
    assert reg.get("default", "tiny", good).status == "active"
    raw = client(m).chat.completions.with_raw_response.create(
        model="tiny", messages=PROMPT, temperature=0, max_tokens=MAX_TOKENS)
    assert raw.headers["x-molt-weight-version"] == good
    assert raw.parse().choices[0].message.content == expected

    # the CLI lists and shows versions, and will not delete the one in use
    out = runner.invoke(cli, ["--config", str(config), "versions", "list", "--json"])
    assert out.exit_code == 0, out.output
    assert out.output.count('"version"') == 4
    shown = runner.invoke(cli, ["--config", str(config), "versions", "show", good, "--json"])
    assert '"kind": "lora"' in shown.output
    assert runner.invoke(cli, ["--config", str(config), "versions", "rm", good]).exit_code == 1
    # and rolls back to the base weights
    out = runner.invoke(cli, ["--config", str(config), "versions", "rollback", "--to", "base",
                              "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["previous"] == good  # serving pointed it back above
    assert reg.active("default", "tiny") is None


@pytest.mark.parametrize("lora_mode", ["merged", "shared"])
def test_a_version_that_passes_the_checks_but_cannot_load_gives_the_pointer_back(
    molt_factory: Any, tiny_base: Path, tiny_artifacts: dict[str, Path], tmp_path: Path,
    lora_mode: str,
) -> None:
    """Its tensors fit the base, but its config targets modules the model lacks: peft refuses
    it at load. Promoted as a trainer would (a registry call), serving refuses it and the
    active pointer returns to the version it replaced."""
    m = start_local(molt_factory, tiny_base, lora_mode)
    reg = Registry(m.settings.registry_root())
    good = _add(reg, tiny_base, tiny_artifacts["lora1"])
    reg.promote("default", "tiny", good, base_dir=tiny_base)
    _wait_served(m, good)
    art = tmp_path / "misconfigured"
    shutil.copytree(tiny_artifacts["lora2"], art)
    cfg = json.loads((art / "adapter_config.json").read_text())
    cfg["target_modules"] = ["no_such_proj"]
    (art / "adapter_config.json").write_text(json.dumps(cfg))
    bad = _add(reg, tiny_base, art)

    assert reg.promote("default", "tiny", bad, base_dir=tiny_base).active == bad  # checks pass
    deadline = time.monotonic() + 10
    while reg.active("default", "tiny") != good:
        assert time.monotonic() < deadline, "serving never gave the pointer back"
        time.sleep(0.05)
    last = reg.history("default", "tiny")[-1]
    assert (last["action"], last["from"], last["to"]) == ("refused", bad, good)
    assert "no_such_proj" in last["reason"]
    raw = client(m).chat.completions.with_raw_response.create(
        model="tiny", messages=PROMPT, temperature=0, max_tokens=MAX_TOKENS)
    assert raw.headers["x-molt-weight-version"] == good
    # over REST the same promotion is refused by serving before the call returns
    r = httpx.post(f"{m.url}/admin/versions/default/tiny/{bad}/promote", timeout=30)
    assert r.json()["served"] == {"tiny": good}
    assert reg.active("default", "tiny") == good


def test_admin_routes_need_the_admin_role(molt_factory: Any, tiny_base: Path) -> None:
    m = start_local(molt_factory, tiny_base, server={"admin_key": "a-very-long-admin-secret"})
    r = httpx.get(m.url + "/admin/versions")
    assert r.status_code == 401
    r = httpx.get(m.url + "/admin/versions",
                  headers={"authorization": "Bearer a-very-long-admin-secret"})
    assert r.status_code == 200 and r.json()["data"] == []
