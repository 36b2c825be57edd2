"""The dashboard in headless Chromium, against a real molt with recorded traffic.

What a person does in the browser: log in with an admin key, read a
transcript, edit a skill and see the revision, approve a quarantined evolver
skill, roll back a weight version, look at the learning chart; and what a
tenant admin must not see of another tenant.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytest.importorskip("selenium", reason="browser tests need the selenium package (dev extra)")

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from store.registry import Registry
from tests.ui.conftest import (
    ADMIN_KEY,
    World,
    click_and_load,
    episode,
    login,
    shot,
    wait_for,
)


def _texts(driver: Any, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def _admin(w: World, path: str, key: str = ADMIN_KEY) -> Any:
    r = httpx.get(f"{w.url}{path}", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_log_in_and_out(browser: Any, world: World) -> None:
    d = browser
    d.delete_all_cookies()
    d.get(f"{world.url}/ui/sessions")  # not logged in: the login page
    wait_for(d, lambda x: x.find_elements(By.ID, "login-form"))
    assert "/ui/login" in d.current_url

    for bad, why in (("molt-not-a-key", "not valid"), (world.keys["a_agent"], "not an admin")):
        d.find_element(By.ID, "key").send_keys(bad)
        click_and_load(d, d.find_element(By.ID, "login"))
        assert why in d.find_element(By.ID, "login-error").text
    shot(d, "login")

    login(d, world, world.keys["global"])
    assert d.find_element(By.ID, "role").text == "global admin"
    cookie = d.get_cookie("molt_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert world.keys["global"] not in d.current_url
    # A global admin sees every tenant's sessions.
    tenants = set(_texts(d, "#session-table tbody td:nth-child(2)"))
    assert {"acme", "bolt"} <= tenants
    # ... and picks a tenant for the per-tenant pages.
    d.get(f"{world.url}/ui/skills?tenant=acme")
    assert world.held_skill in _texts(d, "#review-queue .held-link")
    d.get(f"{world.url}/ui/versions?tenant=bolt")
    assert [r.get_attribute("data-version") for r in
            d.find_elements(By.CSS_SELECTOR, ".version-row")] == ["v0001"]

    click_and_load(d, d.find_element(By.ID, "logout"))
    assert d.find_elements(By.ID, "login-form")
    d.get(f"{world.url}/ui/skills")
    assert "/ui/login" in d.current_url


def test_session_list_search_and_transcript(browser: Any, world: World) -> None:
    d = browser
    login(d, world, world.keys["a_admin"])
    rows = _texts(d, ".session-link")
    assert set(rows) == {"acme-fail-1", "acme-ok-1"}
    outcome = {r.get_attribute("data-session"): r.find_element(By.CSS_SELECTOR, ".badge").text
               for r in d.find_elements(By.CSS_SELECTOR, ".session-row")}
    assert outcome[world.sessions["acme-fail-1"]] == "failure"
    assert outcome[world.sessions["acme-ok-1"]] == "success"

    # Live search (htmx) narrows the list as one types.
    d.find_element(By.ID, "q").send_keys("ok-1")
    wait_for(d, lambda x: _texts(x, ".session-link") == ["acme-ok-1"])
    d.find_element(By.ID, "q").clear()
    d.find_element(By.ID, "q").send_keys("gpt-fake", Keys.ENTER)  # by model
    wait_for(d, lambda x: len(_texts(x, ".session-link")) == 2)
    shot(d, "sessions")

    click_and_load(d, d.find_element(By.LINK_TEXT, "acme-fail-1"))
    t1, t2 = world.turns["acme-fail-1"]
    first = d.find_element(By.ID, f"turn-{t1}")
    second = d.find_element(By.ID, f"turn-{t2}")
    # The model's tool call, the tool's result in the next turn, the final answer.
    assert "lookup_order" in first.find_element(By.CSS_SELECTOR, ".toolcall").text
    assert '"order": "42"' in first.find_element(By.CSS_SELECTOR, ".toolcall .call").text
    tool_msg = second.find_element(By.CSS_SELECTOR, ".msg.role-tool")
    assert "shipped" in tool_msg.text
    assert "result of call_0" in tool_msg.get_attribute("textContent")
    assert "I cannot tell." in second.find_element(By.CSS_SELECTOR, ".answer").text
    # What served each turn.
    assert first.find_element(By.CSS_SELECTOR, ".weights b").text == "base"
    # Feedback: the judge on the turn, the verifier on the session.
    fb = second.find_element(By.CSS_SELECTOR, ".turn-feedback").text
    assert "judge" in fb and "-0.50" in fb
    page = d.find_element(By.TAG_NAME, "main").text
    assert "verifier" in page and "-1.00" in page
    # Untrusted text is shown as text, never run.
    user_msg = first.find_element(By.CSS_SELECTOR, ".msg.role-user").text
    assert "<script>alert(1)</script>" in user_msg
    assert d.execute_script("return document.querySelectorAll('main script').length") == 0
    shot(d, "transcript")


def test_edit_a_skill_and_see_the_new_revision(browser: Any, world: World) -> None:
    d = browser
    login(d, world, world.keys["a_admin"])
    click_and_load(d, d.find_element(By.ID, "nav-skills"))
    shot(d, "skills")
    click_and_load(d, d.find_element(By.LINK_TEXT, "search-then-narrow"))
    click_and_load(d, d.find_element(By.ID, "tab-edit"))
    before = _admin(world, "/admin/skills/search-then-narrow?tenant=acme")["revision"]

    # A broken edit is refused with the reason, and what was typed is kept.
    area = d.find_element(By.ID, "content")
    area.send_keys(Keys.CONTROL, Keys.HOME)
    area.send_keys("oops ")
    click_and_load(d, d.find_element(By.ID, "save"))
    assert d.find_element(By.ID, "edit-error").text
    assert d.find_element(By.ID, "content").get_attribute("value").startswith("oops ---")
    assert _admin(world, "/admin/skills/search-then-narrow?tenant=acme")["revision"] == before

    click_and_load(d, d.find_element(By.ID, "tab-edit"))
    area = d.find_element(By.ID, "content")
    area.send_keys(Keys.CONTROL, Keys.END)
    area.send_keys("\n9. Say which filter narrowed the results.\n")
    d.find_element(By.ID, "reason").send_keys("tell the user about the filter")
    click_and_load(d, d.find_element(By.ID, "save"))
    saved = d.find_element(By.ID, "saved").text
    now = _admin(world, "/admin/skills/search-then-narrow?tenant=acme")
    assert now["revision"] != before and now["revision"] in saved
    assert "9. Say which filter narrowed the results." in now["content"]
    newest = d.find_elements(By.CSS_SELECTOR, "#history .revision")[0]
    assert newest.get_attribute("data-revision") == now["revision"]
    assert "admin-ui" in newest.text and "tell the user about the filter" in newest.text
    assert "+9. Say which filter narrowed the results." in newest.find_element(
        By.CSS_SELECTOR, ".diff").text
    shot(d, "skill-history")

    # Revert to the first revision: the library has the old text again.
    click_and_load(d, d.find_elements(By.CSS_SELECTOR, "#history .revision .revert")[-1],
                   confirm=True)
    assert d.find_elements(By.ID, "saved")
    reverted = _admin(world, "/admin/skills/search-then-narrow?tenant=acme")
    assert "9. Say which filter" not in reverted["content"]
    history = _admin(world, "/admin/skills/search-then-narrow/history?tenant=acme")["data"]
    assert [h["action"] for h in history][-2:] == ["update", "revert"]


def test_approve_a_quarantined_skill(browser: Any, world: World) -> None:
    d = browser
    name = world.held_skill
    login(d, world, world.keys["a_admin"])
    gen_before = _admin(world, "/admin/skills/generation?tenant=acme")["generation"]
    click_and_load(d, d.find_element(By.ID, "nav-skills"))
    queue = d.find_element(By.ID, "review-queue")
    click_and_load(d, queue.find_element(By.LINK_TEXT, name))
    review = d.find_element(By.ID, "review")
    assert d.find_element(By.ID, "skill-status").text == "quarantined"
    # The gate's figures and the failing turns that motivated the skill.
    gate = review.find_element(By.ID, "gate-figures")
    assert gate.find_element(By.CSS_SELECTOR, ".fix-current").text == "0.0"
    assert gate.find_element(By.CSS_SELECTOR, ".fix-candidate").text == "1.0"
    turns = [e.get_attribute("data-turn")
             for e in review.find_elements(By.CSS_SELECTOR, ".motivation")]
    assert turns == world.turns["acme-fail-1"]
    motivating = review.find_elements(By.CSS_SELECTOR, ".motivation")[-1].text
    assert "I cannot tell." in motivating and "judge" in motivating and "-0.50" in motivating
    shot(d, "review")

    click_and_load(d, review.find_element(By.ID, "approve"))
    assert d.find_elements(By.ID, "saved")
    assert d.find_element(By.ID, "skill-status").text == "active"
    shown = _admin(world, f"/admin/skills/{name}?tenant=acme")
    assert shown["status"] == "active"
    assert _admin(world, "/admin/skills/generation?tenant=acme")["generation"] > gen_before
    newest = d.find_elements(By.CSS_SELECTOR, "#history .revision")[0]
    assert "approve" in newest.text and "admin-ui" in newest.text


def test_reject_a_quarantined_skill(browser: Any, world: World) -> None:
    """Rejecting restores the last active revision, or retires a skill that never had one."""
    from store.skills.library import SkillLibrary

    m = world.m
    lib = SkillLibrary(m.state.db, m.settings.skills, m.settings.data_dir)
    _admin(world, "/admin/skills?tenant=acme")  # the seed skills arrive on first use
    seed = _admin(world, "/admin/skills/search-then-narrow?tenant=acme")
    edited = seed["content"].replace("origin: seed", "origin: evolver") + "\n9. Guess.\n"
    from store.skills.skillfile import parse_skill

    rev = m.run(lib.put("acme", parse_skill(edited, "x", max_body_bytes=64_000),
                        author="evolver", reason="an evolver edit"))
    assert rev.status == "quarantined"
    d = browser
    login(d, world, world.keys["a_admin"])
    for name in ("search-then-narrow", world.held_skill):
        d.get(f"{world.url}/ui/skills/{name}")
        click_and_load(d, d.find_element(By.ID, "reject"), confirm=True)
    back = _admin(world, "/admin/skills/search-then-narrow?tenant=acme")
    assert back["status"] == "active" and back["content"] == seed["content"]
    assert _admin(world, f"/admin/skills/{world.held_skill}?tenant=acme")["status"] == "retired"
    assert d.find_element(By.ID, "skill-status").text == "retired"


def test_roll_back_a_version(browser: Any, world: World) -> None:
    d = browser
    login(d, world, world.keys["a_admin"])
    click_and_load(d, d.find_element(By.ID, "nav-versions"))
    base = d.find_element(By.ID, "base-tiny")
    assert base.find_element(By.CSS_SELECTOR, ".active-version").text == "v0002"
    row = base.find_element(By.CSS_SELECTOR, '.version-row[data-version="v0002"]')
    assert "heldout_success" in row.find_element(By.CSS_SELECTOR, ".gate").text
    assert "0.7" in row.find_element(By.CSS_SELECTOR, ".gate").text
    shot(d, "versions")

    click_and_load(d, base.find_element(By.CSS_SELECTOR, ".rollback"), confirm=True)
    done = d.find_element(By.ID, "done")
    assert "v0001" in done.text and "was v0002" in done.text
    reg = Registry(world.m.settings.registry_root())
    assert reg.active("acme", "tiny") == "v0001"
    assert reg.get("acme", "tiny", "v0002").status == "rolled_back"
    statuses = {r.get_attribute("data-version"):
                r.find_element(By.CSS_SELECTOR, ".version-status").text
                for r in d.find_elements(By.CSS_SELECTOR, "#base-tiny .version-row")}
    assert statuses == {"v0001": "active", "v0002": "rolled_back"}
    # Promote it again through the same path.
    click_and_load(d, d.find_element(
        By.CSS_SELECTOR, '#base-tiny .version-row[data-version="v0002"] .promote'), confirm=True)
    assert d.find_element(By.ID, "done-active").text == "v0002"
    assert reg.active("acme", "tiny") == "v0002"


def test_learning_chart_renders_with_data(browser: Any, world: World) -> None:
    d = browser
    login(d, world, world.keys["a_admin"])
    click_and_load(d, d.find_element(By.ID, "nav-learning"))
    chart = d.find_element(By.ID, "learning-chart")
    assert chart.size["width"] > 500 and chart.size["height"] > 150
    panels = chart.find_elements(By.CSS_SELECTOR, "g.panel")
    assert [p.get_attribute("data-panel") for p in panels] == ["success rate", "average reward"]
    for p in panels:
        assert p.find_elements(By.CSS_SELECTOR, "circle.pt")
    # The numbers behind it: acme's two scored sessions, one success.
    sessions = d.execute_script(
        "return [...document.querySelectorAll('#learning-table td.n')].map(e => +e.textContent)")
    wins = d.execute_script(
        "return [...document.querySelectorAll('#learning-table td.succ')].map(e => +e.textContent)")
    assert sum(sessions) == 2 and sum(wins) == 1
    shot(d, "learning")


def test_learning_chart_marks_a_skill_generation_change(browser: Any, skills_world: World,
                                                        fake_llm: Any) -> None:
    w = skills_world
    episode(w, fake_llm, "a", "acme-before", good=False)
    r = httpx.put(f"{w.url}/admin/skills/search-then-narrow?tenant=acme",
                  headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                  json={"body": "1. Search broadly.\n2. Narrow with filters.\n"})
    assert r.status_code == 200, r.text
    gen = r.json()["revision"]["generation"]
    episode(w, fake_llm, "a", "acme-after", good=True)
    d = browser
    login(d, w, w.keys["a_admin"])
    d.get(f"{w.url}/ui/learning")
    chart = d.find_element(By.ID, "learning-chart")
    labels = [e.get_attribute("textContent") for e in
              chart.find_elements(By.CSS_SELECTOR, "g.marker-skills text")]
    assert f"skills g{gen}" in labels
    shot(d, "learning-markers")


def test_training_page_says_no_jobs(browser: Any, world: World) -> None:
    d = browser
    login(d, world, world.keys["a_admin"])
    click_and_load(d, d.find_element(By.ID, "nav-training"))
    assert "No training jobs yet" in d.find_element(By.ID, "no-jobs").text
    assert "v0002" in d.find_element(By.TAG_NAME, "main").text  # the registry's versions
    shot(d, "training")


def test_a_tenant_admin_cannot_see_another_tenant(browser: Any, world: World) -> None:
    d = browser
    login(d, world, world.keys["b_admin"])
    assert d.find_element(By.ID, "role").text == "tenant admin · bolt"
    assert _texts(d, ".session-link") == ["bolt-secret-1"]
    d.find_element(By.ID, "q").send_keys("acme")
    click_and_load(d, d.find_element(By.ID, "search"))
    assert d.find_elements(By.ID, "no-sessions")

    # Another tenant's session by its id: not found; another tenant by name: forbidden.
    d.get(f"{world.url}/ui/sessions/{world.sessions['acme-fail-1']}")
    assert d.find_element(By.ID, "error-status").text.startswith("404")
    for page in ("sessions", "skills", "versions", "learning", "training"):
        d.get(f"{world.url}/ui/{page}?tenant=acme")
        assert d.find_element(By.ID, "error-status").text.startswith("403"), page
        assert "acme-fail-1" not in d.page_source
    shot(d, "forbidden")
    d.get(f"{world.url}/ui/skills/{world.held_skill}")  # acme's skill is not in bolt's library
    assert d.find_element(By.ID, "error-status").text.startswith("404")

    d.get(f"{world.url}/ui/versions")
    bases = d.find_elements(By.CSS_SELECTOR, ".base")
    assert [b.get_attribute("id") for b in bases] == ["base-tiny"]
    assert [r.get_attribute("data-version") for r in
            d.find_elements(By.CSS_SELECTOR, ".version-row")] == ["v0001"]  # bolt's only
    d.get(f"{world.url}/ui/skills")
    assert world.held_skill not in d.page_source

    # Acting on acme with bolt's login (a forged form) is refused and changes nothing.
    cookie = {"molt_ui": d.get_cookie("molt_ui")["value"]}
    csrf = d.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value")
    r = httpx.post(f"{world.url}/ui/versions/tiny/rollback?tenant=acme", cookies=cookie,
                   data={"csrf": csrf})
    assert r.status_code == 403
    assert Registry(world.m.settings.registry_root()).active("acme", "tiny") == "v0002"


def test_forms_need_this_sessions_csrf_token(browser: Any, world: World) -> None:
    d = browser
    login(d, world, world.keys["a_admin"])
    cookie = {"molt_ui": d.get_cookie("molt_ui")["value"]}
    url = f"{world.url}/ui/versions/tiny/rollback"
    for data in ({"reason": "no token"}, {"csrf": "0" * 64}):
        r = httpx.post(url, cookies=cookie, data=data)
        assert r.status_code == 403 and "CSRF" in r.text
    # A cross-site page posting with the browser's cookie: another Origin is refused.
    d.get(f"{world.url}/ui/versions")
    csrf = d.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value")
    r = httpx.post(url, cookies=cookie, data={"csrf": csrf},
                   headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert Registry(world.m.settings.registry_root()).active("acme", "tiny") == "v0002"
    r = httpx.post(url, cookies=cookie, data={"csrf": csrf})
    assert r.status_code == 303
    assert Registry(world.m.settings.registry_root()).active("acme", "tiny") == "v0001"
