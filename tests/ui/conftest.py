"""The dashboard under a real browser: Debian's headless Chromium driven by Selenium.

`scripts/install_browser.sh` (run by `make test`) installs `chromium` and
`chromium-driver`; without them the browser tests skip and say why.

`world` builds a real molt (uvicorn on loopback, SQLite) with two tenants,
recorded through the fake upstream with the openai SDK: sessions with tool
calls and tool results, feedback from the verifier and the judge, a
quarantined evolver skill with its proposal, and a registry with versions.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from safetensors.numpy import save_file

from store.evolution import EvolutionStore, Proposal
from store.ids import new_id
from store.keys import AGENT, GLOBAL_ADMIN, TENANT_ADMIN
from store.registry import Registry
from store.skills.library import SkillLibrary
from store.skills.skillfile import parse_skill
from tests.conftest import Molt
from tests.fakes.fake_llm import FakeLLM, Reply

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
ADMIN_KEY = "server-admin-key-0123456789"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, DRIVER) if shutil.which(p) is None]
    if missing:
        pytest.skip("browser tests need Debian's chromium and chromium-driver "
                    f"({', '.join(missing)} "
                    "missing): run scripts/install_browser.sh")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("browser tests need the selenium package (pip install selenium)")
    profile = tempfile.mkdtemp(prefix="molt-ui-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class World:
    m: Molt
    keys: dict[str, str]  # "global", "a_admin", "b_admin", "a_agent", "b_agent"
    sessions: dict[str, str] = field(default_factory=dict)  # external id -> molt session id
    turns: dict[str, list[str]] = field(default_factory=dict)  # external id -> turn ids
    held_skill: str = "check-before-refund"
    proposal_id: str = ""

    @property
    def url(self) -> str:
        return self.m.url


def _cli_key(m: Molt, tenant: str, role: str) -> str:
    key, _info = m.run(m.state.keys.create_key(tenant, name=f"{tenant}-{role}", role=role))
    return str(key)


def _chat(m: Molt, key: str, session: str, messages: list[dict[str, Any]]) -> tuple[str, str]:
    client = openai.OpenAI(base_url=m.base_url, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-fake", messages=messages,  # type: ignore[arg-type]
        tools=[{"type": "function", "function": {
            "name": "lookup_order", "description": "Look an order up",
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}}}}}],
        extra_headers={"X-Session-Id": session},
    )
    raw.parse()
    return raw.headers["x-molt-turn-id"], raw.headers["x-molt-session-id"]


def _feedback(m: Molt, key: str, body: dict[str, Any]) -> None:
    r = httpx.post(f"{m.base_url}/feedback", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text


def episode(w: World, fake: FakeLLM, tenant: str, ext: str, *, good: bool,
             extra: str = "") -> None:
    """One agent episode: a tool call, its result, a final answer, and the verifier's score."""
    key = w.keys[f"{tenant}_agent"]
    ask = {"role": "user", "content": f"Where is my order 42? {extra}".strip()}
    fake.push(Reply(tool_calls=[("lookup_order", {"order": "42"})]))
    t1, sid = _chat(w.m, key, ext, [ask])
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_0", "type": "function",
         "function": {"name": "lookup_order", "arguments": json.dumps({"order": "42"})}}]}
    result = {"role": "tool", "tool_call_id": "call_0",
              "content": json.dumps({"order": "42", "status": "shipped"})}
    fake.push(Reply(content="Your order 42 has shipped." if good else "I cannot tell."))
    t2, _ = _chat(w.m, key, ext, [ask, call, result])
    w.sessions[ext], w.turns[ext] = sid, [t1, t2]
    w.m.wait_turn(t2)
    _feedback(w.m, key, {"session_id": ext, "score": 1.0 if good else -1.0, "source": "verifier",
                         "meta": {"success": good}})
    _feedback(w.m, key, {"turn_id": t2, "score": 0.5 if good else -0.5, "source": "judge"})


def _lora(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}))
    save_file({
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":
            rng.standard_normal((2, 8)).astype(np.float32),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight":
            rng.standard_normal((8, 2)).astype(np.float32),
    }, str(folder / "adapter_model.safetensors"))
    return folder


@pytest.fixture
def world(molt_factory: Any, fake_llm: FakeLLM, tmp_path: Path) -> World:
    return build_world(molt_factory, fake_llm, tmp_path, skills=False)


@pytest.fixture
def skills_world(molt_factory: Any, fake_llm: FakeLLM, tmp_path: Path) -> World:
    """The same world with skill injection on (turns stamped with the skill generation)."""
    return build_world(molt_factory, fake_llm, tmp_path, skills=True)


def build_world(molt_factory: Any, fake_llm: FakeLLM, tmp_path: Path, *, skills: bool) -> World:
    m: Molt = molt_factory(server={"admin_key": ADMIN_KEY},
                           skills={"enabled": skills, "quarantine_evolver_edits": True})
    keys = {
        "global": _cli_key(m, "ops", GLOBAL_ADMIN),
        "a_admin": _cli_key(m, "acme", TENANT_ADMIN),
        "b_admin": _cli_key(m, "bolt", TENANT_ADMIN),
        "a_agent": _cli_key(m, "acme", AGENT),
        "b_agent": _cli_key(m, "bolt", AGENT),
    }
    w = World(m, keys)
    episode(w, fake_llm, "a", "acme-fail-1", good=False, extra="<script>alert(1)</script>")
    episode(w, fake_llm, "a", "acme-ok-1", good=True)
    episode(w, fake_llm, "b", "bolt-secret-1", good=True)

    # The evolver's output for acme, written through the real library and evolution store.
    lib = SkillLibrary(m.state.db, m.settings.skills, m.settings.data_dir)
    failing = w.turns["acme-fail-1"]
    text = (f"---\nname: {w.held_skill}\ndescription: Use when a customer asks where an order is\n"
            f"origin: evolver\nprovenance: [{', '.join(failing)}]\n---\n\n"
            "1. Call lookup_order first and quote its status.\n")
    skill = parse_skill(text, w.held_skill, max_body_bytes=64_000)
    rev = m.run(lib.put("acme", skill, author="evolver", reason="mined from a failure"))
    assert rev.status == "quarantined"
    acme = m.run(m.state.keys.tenant_by_name("acme"))
    w.proposal_id = new_id("prop")
    scores = {"accepted": True, "reason": "fixes 1 of 1 failures, keeps 1 of 1", "fix_current": 0.0,
              "fix_candidate": 1.0, "keep_current": 1.0, "keep_candidate": 1.0, "n_fix": 1,
              "n_keep": 1, "replays": 4}
    m.run(EvolutionStore(m.state.db).add_proposal(Proposal(
        w.proposal_id, acme.id, None, time.time(), "rules", "quarantined",
        [{"op": "add", "name": w.held_skill, "reason": "the agent answered without looking",
          "turn_ids": failing}], "the agent answered without looking", failing, scores,
        [rev.id])))

    # Two trained versions of acme's base, the second one active.
    reg = Registry(m.settings.registry_root())
    for i in (1, 2):
        meta = reg.create("acme", "tiny", kind="lora", files_from=_lora(tmp_path / f"lora{i}", i),
                          base_model="tiny", base_hash=None,
                          metrics={"train_loss": 1.5 - 0.3 * i},
                          eval_gate={"passed": True, "heldout_success": 0.5 + 0.1 * i,
                                     "retention": 0.98})
        reg.promote("acme", "tiny", meta.version, base_dir=None, reason="test setup")
    reg.create("bolt", "tiny", kind="lora", files_from=_lora(tmp_path / "lora-b", 9),
               base_model="tiny", base_hash=None)
    return w


def login(driver: Any, w: World, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{w.url}/ui")
    driver.find_element(By.ID, "key").send_keys(key)
    click_and_load(driver, driver.find_element(By.ID, "login"))
    assert driver.current_url.endswith("/ui/sessions"), driver.current_url


def click_and_load(driver: Any, element: Any, *, confirm: bool = False) -> None:
    """Click what submits a form or follows a link, and wait for the next page to load."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.__moltOldPage = true")
    element.click()
    if confirm:
        driver.switch_to.alert.accept()
    # The next document has no mark; asking while the page swaps may fail: ask again.
    WebDriverWait(driver, 20, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(
            "return !window.__moltOldPage && document.readyState === 'complete'"))


def wait_for(driver: Any, cond: Any, timeout: float = 20) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(cond)


def shot(driver: Any, name: str) -> None:
    """With MOLT_UI_SCREENSHOTS=<folder>: a full-page screenshot for a person to look at."""
    folder = os.environ.get("MOLT_UI_SCREENSHOTS")
    if not folder:
        return
    shots = Path(folder)
    shots.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(int(height), 600), 4000))
    driver.save_screenshot(str(shots / f"{name}.png"))
    driver.set_window_size(1400, 1000)
