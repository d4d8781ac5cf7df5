"""Batches in the admin, in a real Chromium against a real daphne and sshd: pick servers in
the list (one unreachable) and run a command on them, watch each server's pane, and
cancel a long batch run on a tag."""

from __future__ import annotations

import random
import signal

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests import browser
from tests.browser import FIVE, Browser, Site
from tests.live import manage, server_id_from
from tests.sshd import processes_matching, signal_pids, wait_for

site = browser.site
admin_browser = browser.admin_browser


@pytest.fixture(scope="module")
def fleet(site: Site, client_key) -> dict[str, int]:
    """A second server on the site's sshd; box and box2 tagged pi. Name to id."""
    daemon = site.daemon
    manage(site.env, "addserver", "box2", daemon.host, "--port", str(daemon.port),
           "--user", daemon.username, "--key-file", str(client_key))  # fmt: skip
    manage(site.env, "trusthost", "box2", "--yes")
    for name in ("box", "box2"):
        manage(site.env, "tagserver", name, "--add", "pi")
    return {"box": site.server_id, "box2": server_id_from("", "box2", site.env),
            "gone": site.stopped_id}  # fmt: skip


def pane(browser: Browser, server: str):
    return browser.driver.find_element(By.CSS_SELECTOR, f'.homelab-pane[data-server="{server}"]')


def chip(browser: Browser, server: str) -> str:
    return pane(browser, server).find_element(By.CSS_SELECTOR, '[data-role="status"]').text


def output(browser: Browser, server: str) -> str:
    return pane(browser, server).find_element(By.CSS_SELECTOR, '[data-role="output"]').text


def fill(browser: Browser, rule: str, command: str, **fields: str) -> None:
    Select(browser.find("id_action_type")).select_by_value(rule)
    browser.find("id_command").send_keys(command)
    for name, value in fields.items():
        box = browser.find(f"id_{name}")
        box.clear()
        box.send_keys(value)
    browser.find("run-batch").click()
    browser.wait(lambda d: "/admin/commands/batch/" in d.current_url and "/change/" in
                 d.current_url, 20, "the batch page did not open")  # fmt: skip


def test_a_command_runs_on_the_servers_picked_in_the_list_one_pane_each(admin_browser, fleet):
    admin_browser.open("/admin/commands/server/")
    for pk in fleet.values():
        admin_browser.driver.find_element(
            By.CSS_SELECTOR, f'input.action-select[value="{pk}"]'
        ).click()
    Select(admin_browser.driver.find_element(By.NAME, "action")).select_by_value("run_on_servers")
    admin_browser.driver.find_element(By.CSS_SELECTOR, 'button[name="index"]').click()
    admin_browser.wait_for_text("picked-servers", "On 3 servers")
    # No command is chosen for the user.
    assert Select(admin_browser.find("id_action_type")).first_selected_option.text.startswith(
        "Choose a command"
    )

    fill(admin_browser, "t_five", FIVE, max_concurrency="3")

    # Live: a pane shows its first line while the batch still runs.
    admin_browser.wait(lambda d: output(admin_browser, "box").startswith("1"), 20, "no live line")
    assert admin_browser.find("batch-status").text == "running"
    admin_browser.wait(lambda d: admin_browser.find("batch-status").text == "failed", 30)
    assert [chip(admin_browser, name) for name in ("box", "box2", "gone")] == [
        "succeeded", "succeeded", "error"
    ]  # fmt: skip
    assert output(admin_browser, "box").split() == ["1", "2", "3", "4", "5"]
    assert "ssh_connect_failed" in output(admin_browser, "gone")
    assert admin_browser.find("batch-counts").text == "2 succeeded, 1 error"
    audit = pane(admin_browser, "box").find_element(By.CSS_SELECTOR, '[data-role="audit"]')
    assert "/admin/commands/execution/" in audit.get_attribute("href")
    admin_browser.screenshot("batch-three-servers-one-unreachable")


def test_a_long_batch_on_a_tag_is_cancelled_from_its_page(admin_browser, fleet):
    marker = f"61.{random.randint(10**8, 10**9)}"
    admin_browser.open("/admin/commands/server/")
    admin_browser.find("run-on-tag").click()
    Select(admin_browser.find("id_tag")).select_by_value("pi")
    fill(admin_browser, "t_sleep", f"sleep {marker}", max_concurrency="1")
    try:
        assert wait_for(lambda: processes_matching(marker), timeout=20)
        admin_browser.find("batch-cancel").click()
        admin_browser.wait(lambda d: admin_browser.find("batch-status").text == "cancelled", 20)
        assert [chip(admin_browser, name) for name in ("box", "box2")] == [
            "cancelled", "cancelled"
        ]  # fmt: skip
        assert wait_for(lambda: not processes_matching(marker), timeout=5)
        admin_browser.screenshot("batch-cancelled")
    finally:
        signal_pids(processes_matching(marker), signal.SIGKILL)
