"""The rule editor's parameter rows in a real Chromium, against a real daphne (DEBUG off,
static files collected) with the superuser logged in through the login form: a bad
pattern is refused under its row, the fixed rule saves, and its try box accepts a command.
Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from tests import browser
from tests.browser import Browser

# The module-scoped fixtures of tests/browser.py: one site and one browser for this module.
site = browser.site
admin_browser = browser.admin_browser


def fill(page: Browser, element_id: str, text: str) -> None:
    box = page.find(element_id)
    box.clear()
    box.send_keys(text)


def test_a_rule_is_saved_through_the_rows_after_its_bad_pattern_is_refused(admin_browser):
    page = admin_browser
    page.open("/admin/commands/allowedcommand/add/")
    rows = page.driver.find_elements(By.CSS_SELECTOR, "#id_parameters-rows tr.parameter-row")
    assert len(rows) == 3  # the blank rows, enough without JavaScript
    page.find("id_parameters-rows").find_element(By.XPATH, "..").find_element(
        By.CSS_SELECTOR, "button.add-parameter-row"
    ).click()  # shown by commands/static/commands/rules-params.js
    rows = page.driver.find_elements(By.CSS_SELECTOR, "#id_parameters-rows tr.parameter-row")
    assert len(rows) == 4
    assert page.driver.switch_to.active_element.get_attribute("name") == "parameters-3-name"

    fill(page, "id_action_type", "t_rows")
    fill(page, "id_template", "echo {word} {count}")
    fill(page, "id_parameters-0-name", "word")
    fill(page, "id_parameters-0-pattern", "^[a-z]{1,10}$")
    fill(page, "id_parameters-0-help", "one lowercase word")
    fill(page, "id_parameters-3-name", "count")  # the added row
    fill(page, "id_parameters-3-pattern", "[0-9]*")
    page.find("id_all_servers").click()
    page.driver.find_element(By.NAME, "_continue").click()

    shown = page.wait_for_text("id_parameters-1-errors", "can match an empty value")
    assert shown.startswith("Row 2: The pattern for 'count' can match an empty value")
    assert "Fix parameter row 2" in page.find("content-main").text
    # What was typed is back in the rows (the added one is now row 2).
    assert page.find("id_parameters-1-pattern").get_attribute("value") == "[0-9]*"
    assert page.find("id_parameters-0-help").get_attribute("value") == "one lowercase word"
    page.screenshot("rule-editor-bad-pattern-refused")

    fill(page, "id_parameters-1-pattern", "^[0-9]{1,3}$")
    page.driver.find_element(By.NAME, "_continue").click()
    page.wait(lambda d: "/change/" in d.current_url, 20, "the rule was not saved")
    assert (
        "was added successfully" in page.driver.find_element(By.CSS_SELECTOR, ".messagelist").text
    )
    assert page.find("id_parameters-1-name").get_attribute("value") == "count"
    assert page.find("id_parameters-0-help").get_attribute("value") == "one lowercase word"
    assert page.find("id_parameters-2-name").get_attribute("value") == ""

    fill(page, "id_try-command", "echo hello 42")
    page.driver.find_element(By.CSS_SELECTOR, "#try-command input[type=submit]").click()
    result = page.wait_for_text("try-result", "Accepted.")
    assert '["echo", "hello", "42"]' in result
    page.driver.execute_script("arguments[0].scrollIntoView()", page.find("try-result"))
    page.screenshot("rule-editor-saved-and-tried")
