"""The analyst's console in chromium, against ``opmas up``: sign in, a finding arriving live,
triage, the rule editor, a hunt, and what a principal without write permissions sees.

The assertions read what a user sees (text, roles, labels) and the API's state (httpx)."""
from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import nats
import pytest
from playwright.sync_api import expect

from tests.browser.stack import sign_in
from tests.upstack import ADMIN_SECRET, Stack
from tests.expected import sample_objects
from tests.natsauth import service_options

PRIVILEGED_USER_RULE = "d74dad0c-3165-46ef-8e5d-e57c8fb667f0"  # linux/auth/lnx_auth_privileged_user_created.yml
PRIVILEGED_USER_TITLE = "Privileged account created on app-03"


def test_sign_in_keeps_the_token_out_of_the_url(stack: Stack, new_page):
    page = new_page()
    response = page.goto(stack.base)
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    page.get_by_label("Principal id").fill("admin")
    page.get_by_label("Secret").fill("not-the-secret")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("wrong secret")

    page.get_by_label("Secret").fill(ADMIN_SECRET)
    page.get_by_label("Secret").press("Enter")  # the keyboard submits the form
    expect(page.get_by_text("Signed in as")).to_contain_text("administrator")
    nav = page.get_by_role("navigation", name="Pages")
    for name in ("Overview", "Findings", "Rules", "Agents"):
        expect(nav.get_by_role("link", name=name)).to_be_visible()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    token = page.evaluate("sessionStorage.getItem('opmas.token')")
    assert token and token.count(".") == 2  # a JWT, kept in this tab's sessionStorage
    assert token not in page.url
    assert stack.get("/auth/me", token).json()["id"] == "admin"
    page.reload()  # the tab keeps its session
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_a_finding_arrives_live(stack: Stack, new_page):
    if stack.replayed:
        pytest.skip("the sample log was replayed already on this stack (this test runs before those needing it)")
    page = new_page()
    sign_in(page, stack)
    page.get_by_role("navigation", name="Pages").get_by_role("link", name="Findings").click()
    expect(page.get_by_text("No findings match.")).to_be_visible()
    expect(page.get_by_text("Live updates: live")).to_be_visible()
    page.evaluate("window.__notReloaded = true")

    stack.replay()

    row = page.get_by_role("row").filter(has_text=PRIVILEGED_USER_TITLE).first
    expect(row).to_be_visible(timeout=60_000)
    expect(row).to_contain_text("new")  # the badge of what came over the WebSocket
    expect(row).to_contain_text("open")
    assert page.evaluate("window.__notReloaded") is True


def test_acknowledge_a_finding(replayed: Stack, new_page):
    stack = replayed
    token = stack.token()
    finding = stack.get("/findings", token, rule_id=PRIVILEGED_USER_RULE, limit=1).json()["items"][0]
    assert finding["status"] == "open"
    page = new_page()
    sign_in(page, stack)
    page.goto(f"{stack.base}#/findings")
    page.get_by_label("Rule id").fill(PRIVILEGED_USER_RULE)
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text(re.compile(r"^\d+ of \d+ shown$"))).to_have_text(
        re.compile(rf"^(\d+) of {stack.get('/findings', token, rule_id=PRIVILEGED_USER_RULE).json()['total']} shown$"))
    row = page.locator(f"tr[data-id='{finding['id']}']")
    row.get_by_role("checkbox").check()
    expect(page.get_by_text("1 selected")).to_be_visible()
    page.get_by_role("group", name="Triage").get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_text("1 finding updated")).to_be_visible()
    expect(row).to_contain_text("acknowledged")

    assert stack.get(f"/findings/{finding['id']}", token).json()["status"] == "acknowledged"

    row.get_by_role("link").click()  # the finding's page
    expect(page.get_by_role("heading", name=finding["title"])).to_be_visible()
    expect(page.get_by_test_id("finding-status")).to_have_text("acknowledged")
    history = page.locator("ol.history")
    expect(history).to_contain_text("admin")
    expect(history).to_contain_text("acknowledged")
    event = page.locator("article.event").first  # the matched event, pretty-printed
    expect(event).to_contain_text('"process": {')
    expect(event.locator("mark")).to_have_text(re.compile(r'^"message": "new user: '))  # the rule's keywords search it
    expect(page.locator("pre.yaml")).to_contain_text(f"id: {PRIVILEGED_USER_RULE}")
    expect(page.get_by_role("heading", name="Around this time")).to_be_visible()
    expect(page.locator("table.around tr.matched")).to_have_count(1)


def test_findings_search_and_sort(replayed: Stack, new_page):
    stack = replayed
    page = new_page()
    sign_in(page, stack)
    page.goto(f"{stack.base}#/findings")
    page.get_by_label("Sort").select_option(label="most severe first")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("table.findings tbody tr").first.locator(".sev")).to_have_text("critical")
    page.get_by_label("Search").fill("c99.php")
    page.get_by_role("button", name="Apply").click()
    total = stack.get("/findings", q="c99.php", limit=1).json()["total"]
    assert total > 0
    expect(page.get_by_text(re.compile(r"^\d+ of \d+ shown$"))).to_have_text(f"{total} of {total} shown")
    for title in page.locator("table.findings tbody tr td:nth-child(4)").all_inner_texts():
        assert "c99.php" in title


def test_overview_charts_and_tops(replayed: Stack, new_page):
    stack = replayed
    total = stack.get("/findings", limit=1).json()["total"]
    page = new_page()
    sign_in(page, stack)
    page.get_by_label("Range").select_option(label="last 30d")  # the sample's events are from 2026-11-25
    expect(page.get_by_role("img", name="Findings by severity").locator("canvas")).to_be_visible()
    expect(page.get_by_role("img", name="Events per second").locator("canvas")).to_be_visible()
    expect(page.locator(".stat").filter(has_text="findings in range")).to_contain_text(str(total))
    hosts = page.get_by_role("region", name="Top hosts")
    expect(hosts.get_by_role("row").filter(has_text="app-03")).to_be_visible()
    expect(page.get_by_role("region", name="Top rules").get_by_role("link").first).to_be_visible()


def test_rule_editor_shows_errors_at_their_line_and_runs_tests(stack: Stack, new_page):
    page = new_page()
    sign_in(page, stack)
    page.goto(f"{stack.base}#/rules")
    page.get_by_label("Filter").fill("Privileged User Has Been Created")
    page.get_by_role("link", name="Privileged User Has Been Created").click()
    editor = page.get_by_label("Rule YAML")
    expect(editor).to_have_value(re.compile(f"id: {PRIVILEGED_USER_RULE}"))
    source = editor.input_value()
    lines = source.split("\n")
    broken_line = next(i for i, line in enumerate(lines, start=1) if "condition:" in line)
    lines[broken_line - 1] = lines[broken_line - 1].replace("selection_*", "selektion_*")
    editor.fill("\n".join(lines))

    errors = page.get_by_role("list", name="Rule errors")
    expect(errors).to_contain_text(f"line {broken_line}")
    expect(errors).to_contain_text("selektion_*")
    expect(page.locator(".gutter .ln.err")).to_have_attribute("data-line", str(broken_line))

    editor.fill(source)
    expect(page.get_by_text("Valid (rule")).to_be_visible()
    expect(page.locator(".gutter .ln.err")).to_have_count(0)
    page.get_by_role("button", name="Run tests").click()
    expect(page.get_by_role("heading", name=re.compile("^Tests:"))).to_have_text("Tests: 4 passed, 0 failed")
    expect(page.locator("ul.tests li.pass")).to_have_count(4)


HUNT_RULE = """title: Console hunt for useradd
id: console-hunt-useradd
status: experimental
logsource:
    product: linux
    service: auth
detection:
    selection:
        process.name: useradd
    condition: selection
level: low
"""


def test_hunt_a_new_rule_over_the_archive(replayed: Stack, new_page):
    stack = replayed
    expected = sum(1 for event in sample_objects() if event.get("process", {}).get("name") == "useradd")
    assert expected > 0
    page = new_page()
    sign_in(page, stack)
    page.goto(f"{stack.base}#/rules")
    page.get_by_role("link", name="New rule").click()
    page.get_by_label("Rule YAML").fill(HUNT_RULE)
    expect(page.get_by_text("Valid (rule console-hunt-useradd)")).to_be_visible()
    page.get_by_label("From (UTC)").fill("2026-11-24T00:00")
    page.get_by_label("To (UTC)").fill("2026-11-27T00:00")
    page.get_by_role("button", name="Hunt").click()

    expect(page.get_by_test_id("hunt-status")).to_contain_text("Hunt done", timeout=60_000)
    expect(page.get_by_role("heading", name=f"Hits ({expected})")).to_be_visible()
    expect(page.locator("table.hits tbody tr")).to_have_count(expected)
    expect(page.locator("table.hits")).to_contain_text("Console hunt for useradd")
    # the hunt did not save the rule
    assert stack.get("/rules/console-hunt-useradd").status_code == 404


def test_a_reader_sees_no_write_controls(replayed: Stack, new_page):
    stack = replayed
    admin = stack.token()
    created = httpx.post(f"{stack.api}/principals", headers={"Authorization": f"Bearer {admin}"}, timeout=10,
                         json={"name": "reader", "permissions": ["findings:read", "rules:read"]})
    assert created.status_code == 201, created.text
    reader = created.json()
    finding = stack.get("/findings", admin, rule_id=PRIVILEGED_USER_RULE, limit=1).json()["items"][0]

    page = new_page()
    sign_in(page, stack, reader["id"], reader["secret"])
    expect(page.get_by_text("Signed in as")).to_contain_text("reader")
    nav = page.get_by_role("navigation", name="Pages")
    expect(nav.get_by_role("link", name="Findings")).to_be_visible()
    expect(nav.get_by_role("link", name="Agents")).to_have_count(0)  # no agents:read

    nav.get_by_role("link", name="Findings").click()
    page.get_by_label("Rule id").fill(PRIVILEGED_USER_RULE)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(f"tr[data-id='{finding['id']}']")).to_be_visible()
    expect(page.get_by_role("checkbox", name=re.compile("^Select"))).to_have_count(0)
    for name in ("Acknowledge", "Resolve", "Assign"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)

    page.goto(f"{stack.base}#/findings/{finding['id']}")
    expect(page.get_by_role("heading", name=finding["title"])).to_be_visible()
    expect(page.get_by_role("heading", name="Triage")).to_have_count(0)
    expect(page.get_by_role("button", name="Acknowledge")).to_have_count(0)
    expect(page.get_by_role("button", name="Resolve")).to_have_count(0)

    page.goto(f"{stack.base}#/rules")
    page.get_by_role("link", name="Privileged User Has Been Created").click()
    expect(page.get_by_label("Rule YAML")).to_contain_text(f"id: {PRIVILEGED_USER_RULE}")
    expect(page.locator("textarea")).to_have_count(0)
    for name in ("Save", "Save as new rule", "Run tests", "Hunt", "Enable", "Disable"):
        expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)
    page.goto(f"{stack.base}#/rules")
    expect(page.get_by_role("heading", name="Rules")).to_be_visible()
    expect(page.get_by_role("link", name="New rule")).to_have_count(0)

    # the API refuses anyway
    token = page.evaluate("sessionStorage.getItem('opmas.token')")
    refused = httpx.patch(f"{stack.api}/findings/{finding['id']}", json={"status": "resolved"}, timeout=10,
                          headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403, refused.text

    page.get_by_role("button", name="Sign out").click()  # revokes the principal's tokens
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('opmas.token')") is None
    assert stack.get("/auth/me", token).status_code == 401
    assert json.loads(page.evaluate("JSON.stringify(Object.keys(sessionStorage))")) == []


async def heartbeat(stack: Stack, agent_id: str) -> None:
    nc = await nats.connect(f"nats://127.0.0.1:{stack.env['OPMAS_NATS_PORT']}",
                            **service_options(stack.data_dir))
    try:
        await nc.publish(f"opmas.status.{agent_id}", json.dumps({"state": "running", "config_version": 1}).encode())
        await nc.flush()
    finally:
        await nc.close()


def test_agents_configuration_editable_with_agents_admin_only(stack: Stack, new_page):
    admin = stack.token()
    headers = {"Authorization": f"Bearer {admin}"}
    registered = httpx.post(f"{stack.api}/agents", headers=headers, timeout=10,
                            json={"id": "edge-01", "name": "Edge one", "type": "tail", "config": {"batch_size": 100}})
    assert registered.status_code == 201, registered.text
    page = new_page()
    sign_in(page, stack)
    page.get_by_role("navigation", name="Pages").get_by_role("link", name="Agents").click()
    row = page.get_by_role("row").filter(has_text="Edge one")
    expect(row).to_contain_text("never")  # no heartbeat yet
    expect(page.get_by_text("Live updates: live")).to_be_visible()
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's event loop
        pool.submit(asyncio.run, heartbeat(stack, "edge-01")).result(timeout=30)
    expect(row.locator(".status")).to_have_text("online")  # over /ws/agents, without a reload
    expect(row).not_to_contain_text("never")
    row.get_by_role("button", name="Edit configuration").click()
    config = page.get_by_label("Configuration (JSON)")
    expect(config).to_have_value(re.compile(r'"batch_size": 100'))
    config.fill('{"batch_size": 200, "labels": {"site": "lab"}}')
    page.get_by_role("button", name="Save configuration").click()
    expect(page.get_by_text("Saved (config version")).to_be_visible()
    assert stack.get("/agents/edge-01", admin).json()["config"] == {"batch_size": 200, "labels": {"site": "lab"}}
    config.fill('{"batch_size": 0}')  # the API's schema refuses it; the console says why
    page.get_by_role("button", name="Save configuration").click()
    expect(page.get_by_role("alert")).to_contain_text("batch_size")

    created = httpx.post(f"{stack.api}/principals", headers=headers, timeout=10,
                         json={"name": "watcher", "permissions": ["agents:read"]})
    assert created.status_code == 201, created.text
    watcher = new_page()
    sign_in(watcher, stack, created.json()["id"], created.json()["secret"])
    nav = watcher.get_by_role("navigation", name="Pages")
    expect(nav.get_by_role("link", name="Findings")).to_have_count(0)
    nav.get_by_role("link", name="Agents").click()
    row = watcher.get_by_role("row").filter(has_text="Edge one")
    expect(row.get_by_role("button", name="Edit configuration")).to_have_count(0)
    row.get_by_role("button", name="View configuration").click()
    expect(watcher.get_by_label("Configuration", exact=True)).to_contain_text('"site": "lab"')
    expect(watcher.locator("textarea")).to_have_count(0)
    expect(watcher.get_by_role("button", name="Save configuration")).to_have_count(0)


def test_create_then_disable_a_rule(stack: Stack, new_page):
    page = new_page()
    sign_in(page, stack)
    page.goto(f"{stack.base}#/rules/new")
    page.get_by_label("Rule YAML").fill(HUNT_RULE.replace("console-hunt-useradd", "console-created-rule")
                                        .replace("Console hunt for useradd", "Console created rule"))
    expect(page.get_by_text("Valid (rule console-created-rule)")).to_be_visible()
    page.get_by_role("button", name="Create rule").click()
    expect(page.get_by_role("heading", name="Console created rule")).to_be_visible()
    expect(page).to_have_url(re.compile(r"#/rules/console-created-rule$"))
    stored = stack.get("/rules/console-created-rule").json()
    assert stored["path"] is None and stored["enabled"] is True

    page.goto(f"{stack.base}#/rules")
    page.get_by_label("Filter").fill("Console created rule")
    row = page.get_by_role("row").filter(has_text="Console created rule")
    row.get_by_role("button", name="Disable").click()
    expect(row.get_by_role("button", name="Enable")).to_be_visible()
    assert stack.get("/rules/console-created-rule").json()["enabled"] is False
