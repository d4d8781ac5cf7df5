"""Issue 21, item 1, in a real Chromium: the stored output carries no marker, so the admin
says where output was cut: the console's result and the audit row's page show
"[... N bytes cut ...]" from the row's *_cut_bytes."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests import browser
from tests.browser import Browser, Site
from tests.live import manage

site = browser.site
admin_browser = browser.admin_browser

BIG = "sh -c 'head -c 30000 /dev/zero | tr \"\\000\" a'"  # 30,000 bytes: 19,760 cut
CUT = 30000 - 10240


@pytest.fixture(scope="module")
def big_rule(site: Site) -> str:
    manage(site.env, "allowcommand", "t_big", BIG)
    return "t_big"


def test_the_console_and_the_audit_page_say_how_much_output_was_cut(
    admin_browser: Browser, site: Site, big_rule: str
):
    admin_browser.open(f"/admin/commands/server/{site.server_id}/change/")
    Select(admin_browser.find("run-rule")).select_by_value(big_rule)
    admin_browser.wait(lambda d: d.find_element(By.ID, "run-button").is_enabled(), 20)
    admin_browser.find("run-button").click()
    admin_browser.wait_for_text("run-result", "exit code")
    facts = admin_browser.find("run-result").find_elements(By.CSS_SELECTOR, "dd[data-fact]")
    shown = {fact.get_attribute("data-fact"): fact.text for fact in facts}
    assert shown["stdout truncated"] == f"yes [... {CUT} bytes cut ...]"
    assert shown["stderr truncated"] == "no"
    admin_browser.screenshot("server-run-output-cut")

    admin_browser.find("run-result-audit").click()
    admin_browser.wait(lambda d: "/admin/commands/execution/" in d.current_url, 20)
    stdout = admin_browser.driver.find_element(By.CSS_SELECTOR, ".field-stdout_shown .readonly")
    kept, note = stdout.text.rsplit("\n", 1)
    assert kept == "a" * 10240  # the row's text as stored, the note on a line of its own
    assert note == f"[... {CUT} bytes cut from the middle ...]"
    admin_browser.screenshot("execution-output-cut")
