"""The API docs load nothing from another host: every request Swagger UI (/api/docs) and
ReDoc (/api/redoc/) make in a real headless Chromium goes to our own origin.

Read from Chrome's own network log (DevTools' Network.requestWillBeSent events), so a
script, a stylesheet, a font, an image or a fetch from anywhere else is caught, whoever
starts it. Served by a real daphne with DEBUG off, as deployed (collectstatic, WhiteNoise).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from commands.web import apidocs
from tests.browser import chromium, quit_browser, requests_made, screenshot
from tests.live import Daphne, manage


@pytest.fixture(scope="module")
def docs_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daphne]:
    tmp: Path = tmp_path_factory.mktemp("docs")
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'docs.sqlite3'}",  # the docs read no table
        "DJANGO_SECRET_KEY": "docs-tests-only",
    }
    env.pop("REDIS_URL", None)
    env.pop("DJANGO_DEBUG", None)
    manage(env, "collectstatic", "--noinput", "-v", "0")
    server = Daphne(env=env, log=tmp / "daphne.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def driver(docs_site):
    browser = chromium(network_log=True)
    try:
        yield browser
    finally:
        quit_browser(browser)


def elsewhere(urls: list[str], base: str) -> list[str]:
    """The URLs that leave our origin (data: URLs are inline, blob: ones are the page's)."""
    ours = urlsplit(base).netloc
    left = []
    for url in urls:
        parts = urlsplit(url.removeprefix("blob:"))
        if parts.scheme == "data":
            continue
        if parts.scheme not in ("http", "https", "ws", "wss") or parts.netloc != ours:
            left.append(url)
    return left


def visit(driver, base: str, path: str, rendered: str) -> list[str]:
    """Every request the page made until `rendered` (a CSS selector) shows."""
    requests_made(driver)  # forget the previous page's
    driver.get(base + path)
    WebDriverWait(driver, 30, poll_frequency=0.05).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, rendered), f"{path} never showed {rendered}"
    )
    return requests_made(driver)


def test_swagger_ui_requests_only_our_own_origin(driver, docs_site):
    urls = visit(driver, docs_site.base, "/api/docs", ".swagger-ui .opblock")

    assert f"{docs_site.base}/api/schema/" in urls  # the log does see the page's requests
    assert elsewhere(urls, docs_site.base) == []


def test_redoc_requests_only_our_own_origin_and_shows_no_cdn_logo(driver, docs_site):
    # The sidebar's footer is where ReDoc puts Redocly's logo.
    urls = visit(driver, docs_site.base, "/api/redoc/", ".menu-content a[href*='redocly.com']")
    screenshot(driver, "redoc-without-cdn-logo")

    assert elsewhere(urls, docs_site.base) == []
    assert f"{docs_site.base}/api/redoc/redoc.standalone.js" in urls
    assert f"{docs_site.base}/api/schema/" in urls
    assert driver.find_elements(By.CSS_SELECTOR, "img[alt='redocly logo']") == []
    assert "homelab API" in driver.find_element(By.CSS_SELECTOR, ".api-content").text


def test_the_served_bundle_is_the_sidecars_with_only_the_logo_source_emptied():
    original = Path(apidocs.finders.find(apidocs.BUNDLE)).read_bytes()

    assert original.count(apidocs.CDN_LOGO) == 1  # what the fix relies on is still there
    assert b"cdn.redoc.ly" not in apidocs.bundle()
    assert apidocs.bundle() == original.replace(apidocs.CDN_LOGO, b'""')
