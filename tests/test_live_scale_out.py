"""The scale-out profile: two daphne workers sharing PostgreSQL and Redis. A command started
through worker A is streamed, reattached and cancelled through worker B."""

from __future__ import annotations

import random
import signal
import threading
import time

import psycopg

from tests.live import COUNT, call, follow, key_headers, manage, output_of, set_up, start
from tests.sshd import processes_matching, signal_pids, wait_for
from tests.test_production_profile import database, profile_env, workers  # noqa: F401


class Worker:
    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"


def status_of(database_url: str, execution_id: int) -> str:
    with psycopg.connect(database_url) as conn:
        query = "SELECT status FROM commands_execution WHERE id = %s"
        return conn.execute(query, (execution_id,)).fetchone()[0]


def test_started_on_a_streamed_and_cancelled_on_b(
    profile_env,  # noqa: F811
    database,  # noqa: F811
    workers,  # noqa: F811
    sshd,
    client_key,
):
    a, b = Worker(workers[0]), Worker(workers[1])
    key, server_id = set_up(profile_env, sshd, client_key)

    # Streamed through B, from the start, while A runs it.
    counting = start(a, key, server_id, COUNT, "t_count")
    got = follow(f"{b.ws}/ws/v1/executions/{counting}/", key_headers(key))
    assert output_of(got.frames) == "1\n2\n3\n", (got.frames, got.close_code)
    assert (got.frames[-1]["status"], got.close_code) == ("succeeded", 1000)
    first = next(i for i, f in enumerate(got.frames) if f["type"] == "output")
    assert got.times[-1] - got.times[first] > 1.5  # live, not replayed at the end

    # Cancelled through B while A runs it; a B subscriber sees the result.
    marker = f"61.{random.randint(10**8, 10**9)}"
    napping = start(a, key, server_id, f"sleep {marker}", "t_nap")
    try:
        assert wait_for(lambda: processes_matching(marker), timeout=10)
        seen = {}
        url = f"{b.ws}/ws/v1/executions/{napping}/"
        watcher = threading.Thread(target=lambda: seen.update(got=follow(url, key_headers(key))))
        watcher.start()
        asked = time.monotonic()
        status, _, body = call("POST", f"{b.base}/api/v1/executions/{napping}/cancel", key)
        assert (status, body["status"]) == (200, "cancelled"), body
        assert wait_for(lambda: not processes_matching(marker), timeout=2)
        assert time.monotonic() - asked < 2.5
        watcher.join(timeout=15)
        assert seen["got"].frames[-1]["status"] == "cancelled"
        assert status_of(database, napping) == "cancelled"
    finally:
        signal_pids(processes_matching(marker), signal.SIGKILL)

    # GET through B shows A's running output.
    again = start(a, key, server_id, COUNT, "t_count")
    url = f"{b.base}/api/v1/executions/{again}/"
    assert wait_for(lambda: call("GET", url, key)[2]["stdout"].startswith("1\n"), timeout=5)
    assert call("GET", url, key)[2]["status"] == "running"


def test_a_batch_started_on_a_is_streamed_and_cancelled_on_b(
    profile_env,  # noqa: F811
    database,  # noqa: F811
    workers,  # noqa: F811
    sshd,
    client_key,
):
    a, b = Worker(workers[0]), Worker(workers[1])
    key, _ = set_up(profile_env, sshd, client_key)
    manage(profile_env, "addserver", "box2", sshd.host, "--port", str(sshd.port),
           "--user", sshd.username)  # fmt: skip
    manage(profile_env, "trusthost", "box2", "--yes")
    marker = f"62.{random.randint(10**8, 10**9)}"
    status, _, started = call("POST", f"{a.base}/api/v1/batches/", key, {
        "command": f"sleep {marker}", "action_type": "t_nap", "servers": ["box", "box2"],
        "max_concurrency": 1, "wait": False,
    })  # fmt: skip
    assert status == 202, started
    batch_id = started["batch_id"]
    try:
        assert wait_for(lambda: processes_matching(marker), timeout=20)
        seen = {}
        url = f"{b.ws}/ws/v1/batches/{batch_id}/"
        watcher = threading.Thread(target=lambda: seen.update(got=follow(url, key_headers(key))))
        watcher.start()
        status, _, body = call("POST", f"{b.base}/api/v1/batches/{batch_id}/cancel", key)
        assert (status, body["status"]) == (200, "cancelled"), body
        assert [r["status"] for r in body["results"]] == ["cancelled", "cancelled"]
        assert wait_for(lambda: not processes_matching(marker), timeout=3)
        watcher.join(timeout=15)
        frames = seen["got"].frames
        assert frames[-1]["type"] == "summary" and frames[-1]["status"] == "cancelled"
        # One result per target, as each ended: box2, never started, ended first.
        assert sorted(f["server"] for f in frames if f["type"] == "result") == ["box", "box2"]
    finally:
        signal_pids(processes_matching(marker), signal.SIGKILL)
