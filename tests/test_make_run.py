"""`make run` serves the app as a new user would see it: docs offline, admin, API."""

import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.sshd import free_port, terminate
from tests.test_production_profile import wait_for_http

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def served(tmp_path):
    port = free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}"}
    env.pop("DJANGO_SECRET_KEY", None)  # make run brings its own local key
    log = (tmp_path / "make-run.log").open("wb")
    # A session of its own so the whole tree (make, daphne) is stopped by the leader's PID.
    proc = subprocess.Popen(
        ["make", "run", f"PORT={port}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/api/schema/", timeout=120)
        yield base, tmp_path / "make-run.log"
    finally:
        terminate(proc, group=True, grace=15)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def test_make_run_serves_the_docs_offline_and_the_admin(served):
    base, log = served
    status, page = get(f"{base}/api/docs")
    assert status == 200
    external = re.findall(r"""(?:src|href)=["'](https?:)?//""", page)
    assert external == [], "the docs page loads something from another host"
    for asset in re.findall(r"""(?:src|href)=["'](/static/[^"']+)""", page):
        assert get(base + asset)[0] == 200, asset
    assert get(f"{base}/admin/login/")[0] == 200
    assert get(f"{base}/api/v1/servers/")[0] == 401
    assert "/api/docs" in log.read_text() and "/admin/" in log.read_text()
