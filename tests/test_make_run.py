"""`make run` serves the app as a new user would see it: docs offline, admin, API."""

import os
import re
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.live import make_run, manage
from tests.sshd import processes_matching, signal_pids, terminate, wait_for
from tests.test_production_profile import execute

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_env(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("make-run")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}"}
    env.pop("DJANGO_SECRET_KEY", None)  # make run brings its own local key
    return tmp_path, env


@pytest.fixture(scope="module")
def served(run_env):
    tmp_path, env = run_env
    proc, port = make_run(env, tmp_path / "make-run.log")
    try:
        yield f"http://127.0.0.1:{port}", tmp_path / "make-run.log"
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


def test_a_slow_command_does_not_hold_up_other_requests(served, run_env, sshd, client_key):
    base, _ = served
    port = int(base.rsplit(":", 1)[1])
    env = {**run_env[1], "DJANGO_SECRET_KEY": (ROOT / ".dev-secret-key").read_text().strip()}
    key = manage(env, "createapikey", "slow").strip().splitlines()[-1]
    manage(env, "addserver", "slowbox", sshd.host, "--port", str(sshd.port),
           "--user", sshd.username, "--key-file", str(client_key))  # fmt: skip
    manage(env, "trusthost", "slowbox", "--yes")
    manage(env, "allowcommand", "t_nap", "sleep {s}", "--param", r"s=^[0-9]{2}\.[0-9]{2}$",
           "--timeout", "60")  # fmt: skip
    manage(env, "allowcommand", "t_hi", "echo hi")
    server_id = 1  # the first server in this fresh database
    slow: dict = {}
    thread = threading.Thread(
        target=lambda: slow.update(r=execute(port, key, server_id, "sleep 41.37", "t_nap"))
    )
    thread.start()
    try:
        assert wait_for(lambda: processes_matching("sleep 41.37"), timeout=30)
        status, _, body = execute(port, key, server_id, "echo hi", "t_hi")
        # Answered while the slow command still runs: requests are not serialized.
        assert thread.is_alive()
        assert (status, body["stdout"]) == (200, "hi\n")
    finally:
        signal_pids(processes_matching("sleep 41.37"), signal.SIGKILL)
        thread.join(timeout=60)
    assert slow["r"][0] == 200
