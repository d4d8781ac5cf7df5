"""`make run` stops cleanly on Ctrl-C while commands run, and a second instance started
beside a running one leaves the running one's executions alone."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from tests.live import ROOT, call, follow, key_headers, make_run, manage, set_up, start
from tests.sshd import processes_matching, signal_pids, terminate, wait_for


@pytest.fixture
def run_env(tmp_path, client_key):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
    }
    env.pop("DJANGO_SECRET_KEY", None)  # make run brings its own local key
    env.pop("REDIS_URL", None)
    return env


class Served:
    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"


def status_of(env: dict, execution_id: int) -> str:
    db_path = env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(db_path) as db:
        query = "SELECT status FROM commands_execution WHERE id = ?"
        return db.execute(query, (execution_id,)).fetchone()[0]


def manage_env(env: dict) -> dict:
    return {**env, "DJANGO_SECRET_KEY": (ROOT / ".dev-secret-key").read_text().strip()}


def test_ctrl_c_on_make_run_stops_running_commands_and_exits_within_5_s(
    run_env, sshd, client_key, tmp_path
):
    proc, port = make_run(run_env, tmp_path / "make-run.log")
    marker = f"60.{random.randint(10**8, 10**9)}"
    waiting = f"61.{random.randint(10**8, 10**9)}"  # a synchronous caller waits for this one
    answers, streamed = [], []
    try:
        key, server_id = set_up(manage_env(run_env), sshd, client_key)
        execution_id = start(Served(port), key, server_id, f"sleep {marker}", "t_nap")
        url = f"http://127.0.0.1:{port}/api/v1/servers/{server_id}/commands/execute"
        body = {"command": f"sleep {waiting}", "action_type": "t_nap"}
        caller = threading.Thread(target=lambda: answers.append(sync_call(url, key, body)))
        caller.start()
        # A stream follower and a client polling the row are in flight too, as from a
        # dashboard: none of them may hold the exit up.
        stream = f"ws://127.0.0.1:{port}/ws/v1/executions/{execution_id}/"
        follower = threading.Thread(target=lambda: streamed.append(quietly(follow, stream, key)))
        follower.start()
        probing = threading.Event()
        row_url = f"http://127.0.0.1:{port}/api/v1/executions/{execution_id}/"
        prober = threading.Thread(target=probe, args=(row_url, key, probing))
        prober.start()
        assert wait_for(lambda: processes_matching(marker), timeout=10)
        assert wait_for(lambda: processes_matching(waiting), timeout=10)

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        sent = time.monotonic()
        proc.wait(timeout=15)
        took = time.monotonic() - sent
        left = processes_matching(marker) + processes_matching(waiting)  # before cleanup
    finally:
        signal_pids(processes_matching(marker) + processes_matching(waiting), signal.SIGKILL)
        if proc.poll() is None:
            terminate(proc, group=True)
        caller.join(timeout=30)
        probing.set()
        prober.join(timeout=30)
        follower.join(timeout=30)

    assert took < 5, (took, (tmp_path / "make-run.log").read_text()[-3000:])
    assert status_of(run_env, execution_id) == "interrupted"
    statuses = statuses_of(run_env)
    assert statuses.count("interrupted") == 2 and "running" not in statuses, statuses
    assert left == []  # both commands were stopped on the server by the shutdown
    # The waiting caller got a 503 `interrupted`, or saw the server go away mid-answer.
    assert answers[0] in {(503, "interrupted"), "disconnected"}, answers
    assert streamed[0] in {1000, None, "disconnected"}, streamed  # ended, not left hanging


def quietly(follow_stream, url: str, key: str):
    try:
        return follow_stream(url, key_headers(key), timeout=20).close_code
    except OSError:
        return "disconnected"


def probe(url: str, key: str, done: threading.Event) -> None:
    while not done.is_set():
        sync_call(url, key, None, method="GET")
        time.sleep(0.3)


def sync_call(url: str, key: str, body: dict | None, method: str = "POST"):
    try:
        status, _, answer = call(method, url, key, body)
    except (OSError, ValueError):  # the server closed the connection as it stopped
        return "disconnected"
    return status, (answer or {}).get("code")


def statuses_of(env: dict) -> list[str]:
    db_path = env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(db_path) as db:
        return [status for (status,) in db.execute("SELECT status FROM commands_execution")]


def test_a_second_instance_leaves_the_running_ones_executions_alone(
    run_env, sshd, client_key, tmp_path
):
    first, port = make_run(run_env, tmp_path / "first.log")
    second = None
    marker = f"12.{random.randint(10**8, 10**9)}"  # outlives the second start-up
    try:
        key, server_id = set_up(manage_env(run_env), sshd, client_key)
        execution_id = start(Served(port), key, server_id, f"sleep {marker}", "t_nap")
        assert wait_for(lambda: processes_matching(marker), timeout=10)

        second, _ = make_run(run_env, tmp_path / "second.log")  # runs markinterrupted first
        assert status_of(run_env, execution_id) == "running"
        assert wait_for(lambda: status_of(run_env, execution_id) == "succeeded", timeout=25)
        body = call("GET", f"http://127.0.0.1:{port}/api/v1/executions/{execution_id}/", key)[2]
        assert body["exit_code"] == 0
    finally:
        signal_pids(processes_matching(marker), signal.SIGKILL)
        for proc in (first, second):
            if proc is not None:
                terminate(proc, group=True, grace=15)


def test_markinterrupted_closes_the_rows_of_a_process_that_is_gone(run_env, sshd, client_key):
    env = {**run_env, "DJANGO_SECRET_KEY": "lifecycle-tests"}
    set_up(env, sshd, client_key)
    dead = subprocess.Popen(["true"])
    dead.wait()
    ours = subprocess.Popen(["sleep", "30"])
    try:
        rows = {}
        code = (
            "import django, sys; django.setup(); from commands.models import Execution; "
            "from commands.engine.runner import identity_of; "
            "pid = int(sys.argv[1]); "
            "r = Execution.objects.create(server_name='box', action_type='t', command='c', "
            "runner=identity_of(pid)); print(r.pk)"
        )
        for name, pid in (("dead", dead.pid), ("alive", ours.pid)):
            out = subprocess.run(
                [sys.executable, "-c", code, str(pid)],
                cwd=ROOT,
                env={**env, "DJANGO_SETTINGS_MODULE": "homelab.settings"},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rows[name] = int(out.strip().splitlines()[-1])
        manage(env, "markinterrupted")
        assert status_of(env, rows["dead"]) == "interrupted"
        assert status_of(env, rows["alive"]) == "running"
    finally:
        terminate(ours)
