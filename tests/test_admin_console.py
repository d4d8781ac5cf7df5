"""The admin console in a real Chromium, against a real daphne and sshd: log in, run a
command from a server's page and watch its output arrive, cancel one, check a server,
and follow a running execution from its audit page; nothing is preselected, a rule
flagged `confirm` runs only once the server's name is typed, an unpinned server points to
Pin host key, and the pages log no error. Each test asserts what the page says, and saves
a screenshot (test-artifacts/screenshots/)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests import browser
from tests.browser import FIVE, Browser, Site
from tests.live import call, manage, start
from tests.sshd import processes_matching, wait_for

# The module-scoped fixtures of tests/browser.py: one site and one browser for this module.
site = browser.site
admin_browser = browser.admin_browser
viewer_browser = browser.viewer_browser


def server_page(browser: Browser, server_id: int) -> None:
    browser.open(f"/admin/commands/server/{server_id}/change/")


def choose(browser: Browser, action_type: str, **params: str) -> None:
    """Pick a rule in the Run panel, fill its parameters, wait for the server's preview."""
    Select(browser.find("run-rule")).select_by_value(action_type)
    for name, value in params.items():
        box = browser.wait(lambda d, name=name: d.find_element(By.ID, f"run-param-{name}"))
        box.clear()
        box.send_keys(value)
    browser.wait(lambda d: d.find_element(By.ID, "run-button").is_enabled(), 20, "Run stays off")


def result_facts(browser: Browser) -> dict[str, str]:
    facts = browser.find("run-result").find_elements(By.CSS_SELECTOR, "dd[data-fact]")
    return {fact.get_attribute("data-fact"): fact.text for fact in facts}


# A harmless rule flagged `confirm`, for the dialog's run (never a real upgrade).
CONFIRMED = "echo confirmed-run"
UNPINNED = """
from commands.models import Server
print(Server.objects.create(name="loose", hostname={host!r}, port={port}, username={user!r},
                            key_file={key!r}).pk)
"""


@pytest.fixture(scope="module")
def flagged(site: Site) -> str:
    """t_confirm, flagged by `allowcommand --confirm` as an admin would."""
    manage(site.env, "allowcommand", "t_confirm", CONFIRMED, "--confirm")
    return "t_confirm"


@pytest.fixture(scope="module")
def unpinned_id(site: Site, client_key: Path) -> int:
    """A server "loose" on box's sshd whose host key was never pinned."""
    daemon = site.daemon
    code = UNPINNED.format(
        host=daemon.host, port=daemon.port, user=daemon.username, key=str(client_key)
    )
    return int(manage(site.env, "shell", "-c", code).strip().splitlines()[-1])


def execution_count(site: Site) -> int:
    """Rows in the audit trail, through the API."""
    status, _, body = call("GET", f"{site.base}/api/v1/executions/?limit=1", site.api_key)
    assert status == 200, body
    return body["count"]


def previews_requested(browser: Browser) -> list[str]:
    entries = browser.driver.execute_script(
        "return performance.getEntriesByType('resource').map((entry) => entry.name)"
    )
    return [name for name in entries if "/preview/" in name]


def open_confirmation(browser: Browser, action_type: str) -> str:
    """Choose a flagged rule and press Run: the dialog's text, once it is open."""
    choose(browser, action_type)
    browser.find("run-button").click()
    dialog = browser.wait(
        lambda d: (found := d.find_element(By.ID, "confirm-dialog")).is_displayed() and found
    )
    return dialog.text


def test_an_admin_logs_in_through_the_login_form(admin_browser):
    admin_browser.open("/admin/")
    assert "Site administration" in admin_browser.driver.page_source
    assert admin_browser.find("user-tools").text.upper().startswith("WELCOME, ADMIN")
    admin_browser.screenshot("admin-home")


def test_uptime_runs_from_the_server_page_and_its_output_appears(admin_browser, site: Site):
    server_page(admin_browser, site.server_id)
    choose(admin_browser, "uptime")
    assert admin_browser.find("run-argv").text == '["uptime"]'
    admin_browser.find("run-button").click()
    output = admin_browser.wait_for_text("run-output", "load average")
    assert "up" in output
    admin_browser.wait_for_text("run-result", "exit code")
    facts = result_facts(admin_browser)
    assert facts["status"] == "succeeded" and facts["exit code"] == "0"
    assert facts["duration"].endswith(" ms")
    assert (facts["stdout truncated"], facts["stderr truncated"]) == ("no", "no")
    audit = admin_browser.find("run-result-audit")
    assert "/admin/commands/execution/" in audit.get_attribute("href")
    admin_browser.screenshot("server-run-uptime")


# 30,000 bytes: the row keeps 10,240 and counts the rest (issue 21: no marker in the data).
BIG = "sh -c 'head -c 30000 /dev/zero | tr \"\\000\" a'"
CUT = 30000 - 10240


@pytest.fixture(scope="module")
def big_rule(site: Site) -> str:
    manage(site.env, "allowcommand", "t_big", BIG)
    return "t_big"


def test_the_console_and_the_audit_page_say_how_much_output_was_cut(
    admin_browser, site: Site, big_rule: str
):
    server_page(admin_browser, site.server_id)
    choose(admin_browser, big_rule)
    admin_browser.find("run-button").click()
    admin_browser.wait_for_text("run-result", "exit code")
    facts = result_facts(admin_browser)
    assert facts["stdout truncated"] == f"yes [... {CUT} bytes cut ...]"
    assert facts["stderr truncated"] == "no"
    admin_browser.screenshot("server-run-output-cut")

    admin_browser.find("run-result-audit").click()
    admin_browser.wait(lambda d: "/admin/commands/execution/" in d.current_url, 20)
    stdout = admin_browser.driver.find_element(By.CSS_SELECTOR, ".field-stdout_shown .readonly")
    kept, note = stdout.text.rsplit("\n", 1)
    assert kept == "a" * 10240  # the row's text as stored, the note on a line of its own
    assert note == f"[... {CUT} bytes cut from the middle ...]"
    admin_browser.screenshot("execution-output-cut")


def test_output_is_shown_as_text_never_as_markup(admin_browser, site: Site):
    server_page(admin_browser, site.server_id)
    choose(admin_browser, "t_html")
    admin_browser.find("run-button").click()
    admin_browser.wait_for_text("run-result", "exit code")
    assert admin_browser.find("run-output").text == "<b id=injected>bold</b>"
    assert admin_browser.driver.find_elements(By.ID, "injected") == []


def test_the_argv_shown_follows_the_parameters_as_they_are_typed(admin_browser, site: Site):
    server_page(admin_browser, site.server_id)
    Select(admin_browser.find("run-rule")).select_by_value("t_echo")
    box = admin_browser.wait(lambda d: d.find_element(By.ID, "run-param-word"))
    box.send_keys("HELLO")  # the pattern is ^[a-z]{1,10}$
    admin_browser.wait_for_text("run-param-word-mark", "Does not match")
    assert not admin_browser.find("run-button").is_enabled()
    assert "word" in admin_browser.find("run-problem").text
    box.clear()
    box.send_keys("hello")
    admin_browser.wait_for_text("run-argv", '["echo","hello"]')
    assert admin_browser.find("run-param-word-mark").text == "✓"
    assert admin_browser.find("run-button").is_enabled()
    admin_browser.screenshot("server-run-preview")


def test_output_shows_up_while_the_command_runs_before_the_result(admin_browser, site: Site):
    server_page(admin_browser, site.server_id)
    choose(admin_browser, "t_five")
    admin_browser.find("run-button").click()
    admin_browser.wait_for_text("run-output", "1")
    # The first line is on the page while the command still runs: no result yet.
    assert admin_browser.find("run-result").text == ""
    assert "5" not in admin_browser.find("run-output").text
    assert admin_browser.find("run-status").text.startswith("running")
    admin_browser.screenshot("server-run-live-first-line")
    admin_browser.wait_for_text("run-result", "exit code")
    assert admin_browser.find("run-output").text.split() == ["1", "2", "3", "4", "5"]
    assert result_facts(admin_browser)["status"] == "succeeded"
    admin_browser.screenshot("server-run-live-done")


def test_cancel_stops_a_running_command_and_the_page_says_cancelled(admin_browser, site: Site):
    seconds = f"60.{random.randint(10**8, 10**9)}"  # unique: its remote process is findable
    server_page(admin_browser, site.server_id)
    choose(admin_browser, "t_sleep", seconds=seconds)
    admin_browser.find("run-button").click()
    admin_browser.wait_for_text("run-status", "running")
    assert wait_for(lambda: processes_matching(seconds), timeout=10)
    admin_browser.wait(lambda d: d.find_element(By.ID, "cancel-button").is_enabled())
    admin_browser.find("cancel-button").click()
    admin_browser.wait_for_text("run-result", "cancelled")
    assert admin_browser.find("run-status").text == "cancelled"
    assert result_facts(admin_browser)["status"] == "cancelled"
    assert wait_for(lambda: not processes_matching(seconds), timeout=10)
    admin_browser.screenshot("server-run-cancelled")


def test_a_staff_user_without_the_permission_sees_the_server_but_no_run_button(
    viewer_browser, site: Site
):
    server_page(viewer_browser, site.server_id)
    assert viewer_browser.find("id_hostname").get_attribute("value") == site.daemon.host
    page = viewer_browser.driver.page_source
    assert 'id="run-button"' not in page and 'id="run-console"' not in page
    assert 'id="check-server"' not in page and "Pin host key" not in page
    viewer_browser.screenshot("server-page-without-execute-permission")


def test_check_server_names_the_failing_step_of_a_stopped_sshd(admin_browser, site: Site):
    server_page(admin_browser, site.stopped_id)
    admin_browser.find("check-server").click()
    verdict = admin_browser.wait(lambda d: d.find_element(By.CSS_SELECTOR, ".check-verdict"))
    assert verdict.text == "failed"
    tcp = admin_browser.driver.find_element(By.CSS_SELECTOR, 'tr[data-step="tcp"]')
    assert "TCP reachable" in tcp.text and "failed" in tcp.text
    assert "Is sshd running on" in tcp.text  # the fix
    skipped = admin_browser.driver.find_element(By.CSS_SELECTOR, 'tr[data-step="auth"]')
    assert "skipped" in skipped.text
    admin_browser.screenshot("server-check-stopped-sshd")


def test_a_running_executions_audit_page_shows_its_output_live(admin_browser, site: Site):
    execution_id = start(site.daphne, site.api_key, site.server_id, FIVE, "t_five")
    admin_browser.open(f"/admin/commands/execution/{execution_id}/change/")
    admin_browser.wait_for_text("run-output", "1")
    assert admin_browser.find("run-result").text == ""  # still running
    assert admin_browser.find("cancel-button").is_enabled()
    admin_browser.screenshot("execution-live")
    admin_browser.wait_for_text("run-result", "exit code")
    assert admin_browser.find("run-output").text.split() == ["1", "2", "3", "4", "5"]
    assert result_facts(admin_browser)["status"] == "succeeded"
    admin_browser.screenshot("execution-live-done")


def test_the_server_page_opens_with_no_command_chosen_run_off_and_no_preview(admin_browser, site):
    admin_browser.driver.get_log("browser")  # only this page's messages from here on
    server_page(admin_browser, site.server_id)
    rule = Select(admin_browser.find("run-rule"))
    assert (rule.first_selected_option.text, rule.first_selected_option.get_attribute("value")) == (
        "Choose a command…",
        "",
    )
    assert not admin_browser.find("run-button").is_enabled()
    assert (
        admin_browser.find("run-argv").text == "" and admin_browser.find("run-template").text == ""
    )
    assert previews_requested(admin_browser) == []
    # The console comes first: Run, Check and the last executions above the edit form.
    top = admin_browser.find("server-console").location["y"]
    assert top < admin_browser.find("server_form").location["y"]
    assert (
        admin_browser.find("recent-executions").location["y"]
        < admin_browser.find("server_form").location["y"]
    )
    assert admin_browser.find("site-name").text == "homelab"
    admin_browser.screenshot("server-page-nothing-chosen")
    # Back to "Choose a command…" after a choice: Run goes off again.
    choose(admin_browser, "uptime")
    rule.select_by_value("")
    assert not admin_browser.find("run-button").is_enabled()
    assert admin_browser.find("run-argv").text == ""
    assert admin_browser.console_errors() == []


def test_a_flagged_rule_asks_first_and_cancelling_runs_nothing(admin_browser, site):
    # On "gone", whose sshd is stopped: even a run would reach nothing.
    server_page(admin_browser, site.stopped_id)
    before = execution_count(site)
    text = open_confirmation(admin_browser, "apply_updates")
    argv = admin_browser.find("run-argv").text
    assert "apt-get" in argv and admin_browser.find("confirm-argv").text == argv
    assert "Run apply_updates on gone?" in text and "type the server's name, gone" in text
    assert not admin_browser.find("confirm-run").is_enabled()
    admin_browser.screenshot("server-confirm-apply-updates")
    admin_browser.find("confirm-cancel").click()
    admin_browser.wait(lambda d: not d.find_element(By.ID, "confirm-dialog").is_displayed())
    assert admin_browser.find("run-status").text == ""
    # Escape closes it too, and runs nothing either.
    open_confirmation(admin_browser, "apply_updates")
    admin_browser.find("confirm-name").send_keys("gone", Keys.ESCAPE)
    admin_browser.wait(lambda d: not d.find_element(By.ID, "confirm-dialog").is_displayed())
    assert admin_browser.find("run-status").text == ""
    assert execution_count(site) == before


def test_typing_the_servers_name_runs_a_flagged_rule(admin_browser, site, flagged):
    server_page(admin_browser, site.server_id)
    text = open_confirmation(admin_browser, flagged)
    assert "Run t_confirm on box?" in text
    assert admin_browser.find("confirm-argv").text == '["echo","confirmed-run"]'
    name = admin_browser.find("confirm-name")
    name.send_keys("bo")
    assert not admin_browser.find("confirm-run").is_enabled()
    name.send_keys("x")
    admin_browser.wait(lambda d: d.find_element(By.ID, "confirm-run").is_enabled())
    admin_browser.screenshot("server-confirm-typed")
    admin_browser.find("confirm-run").click()
    admin_browser.wait_for_text("run-result", "exit code")
    assert admin_browser.find("run-output").text == "confirmed-run"
    assert result_facts(admin_browser)["status"] == "succeeded"
    # The new run heads the server's last executions, with its chip and its audit row.
    latest = admin_browser.driver.find_element(By.CSS_SELECTOR, "#recent-rows tr")
    admin_browser.wait(lambda d: "succeeded" in latest.text)
    link = latest.find_element(By.TAG_NAME, "a").get_attribute("href")
    assert link == admin_browser.find("run-result-audit").get_attribute("href")
    assert latest.find_element(By.CSS_SELECTOR, ".chip").get_attribute("class") == "chip chip-ok"


def test_a_page_that_skips_the_dialog_is_refused_confirmation_required(
    admin_browser, site, flagged
):
    server_page(admin_browser, site.server_id)
    before = execution_count(site)
    answer = admin_browser.driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const config = JSON.parse(document.getElementById("homelab-console").textContent);
        fetch(config.execute_url, {
          method: "POST", credentials: "same-origin",
          headers: {"Content-Type": "application/json", "X-CSRFToken": config.csrf_token},
          body: JSON.stringify({command: arguments[0], action_type: arguments[1], wait: false}),
        }).then(async (response) => done([response.status, await response.json()]));
        """,
        CONFIRMED,
        flagged,
    )
    status, body = answer
    assert (status, body["code"]) == (400, "confirmation_required")
    assert execution_count(site) == before + 1  # the refusal is audited
    admin_browser.driver.get_log("browser")  # the 400 is logged there, on purpose


def test_a_run_on_an_unpinned_server_points_to_the_pin_host_key_button(
    admin_browser, site, unpinned_id
):
    server_page(admin_browser, unpinned_id)
    choose(admin_browser, "uptime")
    admin_browser.find("run-button").click()
    hint = admin_browser.wait_for_text("run-result", "Pin host key")
    assert "trusthost" not in hint and "no usable pinned host key" in hint
    assert result_facts(admin_browser)["error"] == "host_key_unknown"
    pin = admin_browser.find("run-hint-pin").get_attribute("href")
    assert pin == admin_browser.find("pin-host-key").get_attribute("href")
    admin_browser.screenshot("server-run-unpinned")


@pytest.mark.parametrize("path", ["/", "/admin/", "/api/docs", "/api/redoc/"])
def test_the_pages_log_no_error_and_their_icons_are_served(admin_browser, site, path):
    admin_browser.driver.get_log("browser")
    admin_browser.open(path)
    admin_browser.wait(lambda d: d.execute_script("return document.readyState") == "complete")
    assert admin_browser.console_errors() == []
    # What a browser asks for: the icons the page links, and /favicon.ico in any case.
    icons = admin_browser.driver.execute_async_script(ICONS)
    assert any(url.endswith("/favicon.ico") for url, _, _ in icons)
    for url, status, kind in icons:
        assert (status, kind.split("/")[0]) == (200, "image"), url
        assert url.startswith(site.base), url  # our own origin, no CDN
    assert admin_browser.console_errors() == []


ICONS = """
const done = arguments[0];
const linked = [...document.querySelectorAll("link[rel~='icon']")].map((link) => link.href);
const urls = [...linked, new URL("/favicon.ico", location.href).href];
const answer = (url) => fetch(url).then((r) => [url, r.status, r.headers.get("content-type")]);
Promise.all(urls.map(answer)).then(done);
"""


def test_a_fresh_migrate_flags_the_default_rules_that_change_a_machine(site, flagged):
    status, _, listed = call(
        "GET", f"{site.base}/api/v1/servers/{site.server_id}/commands/", site.api_key
    )
    assert status == 200
    asking = sorted(rule["action_type"] for rule in listed if rule["confirm"])
    assert asking == ["apply_updates", "clear_logs", "docker_restart", "restart_service", flagged]
