"""Real-browser test bed: a real daphne (HTTP and WebSockets), real sshd daemons and a
headless Chromium driven by Selenium, logged in through the admin's own login form.

Nothing downloads a browser or a driver at run time: Selenium is given Debian's chromium
and chromedriver (scripts/ensure-chromium installs them), so Selenium Manager never runs.

The fixtures are module-scoped (one site and one browser per test module, set up once):
bind them in a test module to use them there, e.g.

    from tests import browser

    site = browser.site
    admin_browser = browser.admin_browser

`admin_browser` is a Browser logged in as the superuser (`.driver`, `.base`, `.site`).
Screenshots go to test-artifacts/screenshots/; tests/conftest.py lists them at the end of
the run, so CI's log shows where they are.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.live import ROOT, Daphne, manage, server_id_from, set_up
from tests.sshd import SSHDaemon, public_key

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT_DIR = ROOT / "test-artifacts" / "screenshots"
SCREENSHOTS: list[Path] = []  # saved this run, in order (listed by tests/conftest.py)

ADMIN, ADMIN_PASSWORD = "admin", "browser-admin-pw-0123"
VIEWER, VIEWER_PASSWORD = "viewer", "browser-viewer-pw-0123"
FIVE = "sh -c 'for i in 1 2 3 4 5; do echo $i; sleep 1; done'"
HTML = "echo '<b id=injected>bold</b>'"  # output a page must show as text, not as markup
# A staff user who may look at servers (and change them) but not run anything.
MAKE_VIEWER = (
    "from django.contrib.auth import get_user_model\n"
    "from django.contrib.auth.models import Permission\n"
    f"user = get_user_model().objects.create_user({VIEWER!r}, password={VIEWER_PASSWORD!r}, "
    "is_staff=True)\n"
    "user.user_permissions.set(Permission.objects.filter(codename__in=["
    "'view_server', 'change_server', 'view_execution']))\n"
)


@dataclass
class Site:
    """The app under test, set up through manage.py as an admin would."""

    daphne: Daphne
    env: dict
    api_key: str  # a raw API key, for starting commands outside the browser
    server_id: int  # "box": a running sshd, host key pinned
    stopped_id: int  # "gone": its sshd was stopped after pinning
    daemon: SSHDaemon

    @property
    def base(self) -> str:
        return self.daphne.base


@dataclass
class Browser:
    driver: webdriver.Chrome
    site: Site

    @property
    def base(self) -> str:
        return self.site.base

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, element_id: str) -> WebElement:
        return self.driver.find_element(By.ID, element_id)

    def wait(self, condition, timeout: float = 20, message: str = ""):
        """condition(driver)'s first truthy value, polling every 50 ms."""
        waiter = WebDriverWait(self.driver, timeout, poll_frequency=0.05)
        return waiter.until(condition, message)

    def wait_for_text(self, element_id: str, text: str, timeout: float = 20) -> str:
        """The element's text once it contains text (what the user sees, not the DOM)."""
        return self.wait(
            lambda d: (found := d.find_element(By.ID, element_id).text) and text in found and found,
            timeout,
            f"#{element_id} never showed {text!r}",
        )

    def screenshot(self, name: str) -> Path:
        return screenshot(self.driver, name)

    def console_errors(self) -> list[str]:
        """The browser console's errors (failed loads included) since the last call, read
        through chromedriver's log (goog:loggingPrefs); reading empties it."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save the page as test-artifacts/screenshots/NAME.png and say where on stderr."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    driver.save_screenshot(str(path))
    SCREENSHOTS.append(path)
    print(f"screenshot: {path}", file=sys.stderr)
    return path


def chromium(*, network_log: bool = False) -> webdriver.Chrome:
    """A headless Chromium, Debian's browser and driver, given by path. With network_log,
    every request it makes can be read back (requests_made)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} not found: run scripts/ensure-chromium (or `make test`).")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Keep the console (errors, failed loads) for Browser.console_errors; with network_log
    # also Chrome's DevTools "performance" log, which holds the Network.* events.
    logs = {"browser": "ALL", **({"performance": "ALL"} if network_log else {})}
    options.set_capability("goog:loggingPrefs", logs)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def requests_made(driver: webdriver.Chrome) -> list[str]:
    """The URL of every request the browser sent since the last call (chromium(network_log=
    True)): pages, scripts, images, XHR/fetch, data: and blob: URLs too."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def quit_browser(driver: webdriver.Chrome) -> None:
    """Quit the browser, then make sure its chromedriver is stopped (by its PID)."""
    process = driver.service.process
    try:
        driver.quit()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def log_in(driver: webdriver.Chrome, base: str, username: str, password: str) -> None:
    """Through the real /admin/login/ form, as a person would."""
    driver.get(f"{base}/admin/login/")
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(driver, 20, poll_frequency=0.05).until(
        lambda d: "/admin/login/" not in d.current_url, f"{username} could not log in"
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, client_key: Path) -> Iterator[Site]:
    """The module's sshd daemons, SQLite database, users and daphne, set up by manage.py."""
    tmp = tmp_path_factory.mktemp("browser")
    keys = [public_key(client_key)]
    daemon = SSHDaemon(workdir=tmp / "sshd", authorized_keys=keys).start()
    stopped = SSHDaemon(workdir=tmp / "sshd-gone", authorized_keys=keys).start()
    server = None
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'browser.sqlite3'}",
        "DJANGO_SECRET_KEY": "browser-tests-only",
        "HOMELAB_EXECUTE_RATE": "1000/min",  # one superuser runs this whole module
        "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
    }
    env.pop("REDIS_URL", None)
    env.pop("DJANGO_DEBUG", None)
    try:
        key, server_id = set_up(env, daemon, client_key)
        manage(env, "addserver", "gone", stopped.host, "--port", str(stopped.port),
               "--user", stopped.username, "--key-file", str(client_key))  # fmt: skip
        manage(env, "trusthost", "gone", "--yes")
        stopped.stop()
        manage(env, "allowcommand", "t_five", FIVE)
        manage(env, "allowcommand", "t_html", HTML)
        manage(env, "allowcommand", "t_sleep", "sleep {seconds}", "--param",
               r"seconds=^[0-9]{1,3}(\.[0-9]{1,12})?$", "--timeout", "120")  # fmt: skip
        manage(
            env, "createsuperuser", "--noinput", "--username", ADMIN, "--email", "admin@example.com"
        )
        manage(env, "shell", "-c", MAKE_VIEWER)
        # DEBUG is off, as deployed: WhiteNoise serves what collectstatic gathered.
        manage(env, "collectstatic", "--noinput", "-v", "0")
        server = Daphne(env=env, log=tmp / "daphne.log").start()
        stopped_id = server_id_from("", "gone", env)
        yield Site(server, env, key, server_id, stopped_id, daemon)
    finally:
        if server is not None:
            server.stop()
        daemon.stop()
        stopped.stop()


@pytest.fixture(scope="module")
def admin_browser(site: Site) -> Iterator[Browser]:
    """A Chromium logged in as the superuser, for the whole module."""
    driver = chromium()
    try:
        log_in(driver, site.base, ADMIN, ADMIN_PASSWORD)
        yield Browser(driver, site)
    finally:
        quit_browser(driver)


@pytest.fixture
def viewer_browser(site: Site) -> Iterator[Browser]:
    """A Chromium logged in as the staff user without the execute permission."""
    driver = chromium()
    try:
        log_in(driver, site.base, VIEWER, VIEWER_PASSWORD)
        yield Browser(driver, site)
    finally:
        quit_browser(driver)
