"""The admin console in a real Chromium, against a real daphne and sshd: log in, run a
command from a server's page and watch its output arrive, cancel one, check a server,
and follow a running execution from its audit page. Each test asserts what the page
says, and saves a screenshot (test-artifacts/screenshots/)."""

from __future__ import annotations

import random

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests import browser
from tests.browser import FIVE, Browser, Site
from tests.live import manage, start
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
