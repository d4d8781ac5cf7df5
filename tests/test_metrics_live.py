"""Issue 19 against real parts: one daphne (the embedded profile, JSON logs), a real sshd.

A scrape after real executions moves each counter by exactly what ran; the gauges follow a
running execution and its WebSocket subscriber; every line daphne logged parses back as a
JSON object, with one INFO line per finished execution and never its output.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live import Daphne, call, follow, key_headers, start
from tests.observability import get_json, samples_of, scrape, set_up, value
from tests.sshd import SSHDaemon, processes_matching, public_key, signal_pids, wait_for

SECRET_WORD = "zebra"  # printed by a command: it must never reach the log


@dataclass
class Service:
    app: Daphne
    keys: dict[str, str]
    server_id: int
    log: Path

    def execute(self, key: str, command: str, action: str) -> tuple[int, dict]:
        url = f"{self.app.base}/api/v1/servers/{self.server_id}/commands/execute"
        status, _, body = call(
            "POST", url, self.keys[key], {"command": command, "action_type": action}
        )
        return status, body


@pytest.fixture(scope="module")
def service(tmp_path_factory, client_key):
    """daphne serving SQLite with HOMELAB_LOG_FORMAT=json, a pinned sshd, and keys: `quota`
    (5/min, for the throttle), `reader` (read-only), `watcher`."""
    work = tmp_path_factory.mktemp("metrics-live")
    daemon = SSHDaemon(workdir=work / "sshd", authorized_keys=[public_key(client_key)]).start()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env |= {
        "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
        "DJANGO_SECRET_KEY": "metrics-" + uuid.uuid4().hex,
        "DJANGO_DEBUG": "0",
        "HOMELAB_LOG_FORMAT": "json",
    }
    keys = {"quota": {"rate": "5/min"}, "reader": {"read_only": True}, "watcher": {}}
    app = None
    try:
        raw_keys, server_id = set_up(env, daemon, client_key, keys)
        app = Daphne(env=env, log=work / "daphne.log").start()
        yield Service(app, raw_keys, server_id, app.log)
    finally:
        if app is not None:
            app.stop()
        daemon.stop()


def test_a_scrape_after_real_executions_moves_each_counter_by_exactly_what_ran(service):
    reader = service.keys["reader"]  # a read-only key may scrape
    before = samples_of(service.app.base, reader)

    for word in ("one", "two", SECRET_WORD):
        status, body = service.execute("quota", f"echo {word}", "t_echo")
        assert (status, body["exit_code"]) == (200, 0), body
    status, body = service.execute("quota", "sh -c 'echo oops >&2; exit 3'", "t_fail")
    assert (status, body["exit_code"]) == (200, 3), body
    status, body = service.execute("quota", "rm -rf /", "t_echo")  # uses no quota
    assert (status, body["code"]) == (400, "not_whitelisted"), body
    status, body = service.execute("quota", "echo five", "t_echo")  # the 5th of 5/min
    assert (status, body["exit_code"]) == (200, 0), body
    status, body = service.execute("quota", "echo six", "t_echo")  # the 6th
    assert (status, body["code"]) == (429, "throttled"), body

    after = samples_of(service.app.base, reader)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    echo = {"server": "box", "action_type": "t_echo"}
    fail = {"server": "box", "action_type": "t_fail"}
    assert moved("homelab_executions_total", **echo, status="succeeded") == 4
    assert moved("homelab_executions_total", **fail, status="failed") == 1
    assert moved("homelab_executions_total", **echo, status="rejected") == 0  # counted by code
    assert moved("homelab_execution_duration_seconds_count", **echo) == 4
    assert moved("homelab_execution_duration_seconds_count", **fail) == 1
    assert moved("homelab_execution_duration_seconds_bucket", **echo, le="+Inf") == 4
    assert moved("homelab_execution_duration_seconds_sum", **echo) > 0
    assert moved("homelab_rejected_total", code="not_whitelisted") == 1
    assert moved("homelab_rejected_total", code="key_scope") == 0
    assert moved("homelab_throttled_total") == 1
    assert value(after, "homelab_executions_running") == 0
    # One pooled connection served all five runs, opened (and timed) once.
    assert value(after, "homelab_ssh_connections", server="box") == 1
    assert value(after, "homelab_ssh_connect_seconds_count") == 1
    assert value(after, "homelab_build_info", version="0.1.0") == 1
    # No command string anywhere in a label.
    sent = {"echo one", "echo two", f"echo {SECRET_WORD}", "rm -rf /", "echo five", "echo six"}
    assert not [key for key in after if any(v in sent or " " in v for _, v in key[1])]


def test_the_gauges_follow_a_running_execution_and_its_stream_subscriber(service):
    key = service.keys["watcher"]
    reader = service.keys["reader"]
    marker = f"30.{random.randint(10**8, 10**9)}"  # runs until cancelled: no race with it
    execution_id = start(service.app, key, service.server_id, f"sleep {marker}", "t_nap")
    url = f"{service.app.ws}/ws/v1/executions/{execution_id}/"
    got = {}
    watcher = threading.Thread(target=lambda: got.update(r=follow(url, key_headers(key))))
    watcher.start()

    def seen(name: str, wanted: float) -> bool:
        return value(samples_of(service.app.base, reader), name) == wanted

    try:
        assert wait_for(lambda: seen("homelab_stream_subscribers", 1), timeout=20)
        assert seen("homelab_executions_running", 1)
        cancel = f"{service.app.base}/api/v1/executions/{execution_id}/cancel"
        assert call("POST", cancel, key)[0] == 200
        watcher.join(timeout=30)
        assert got["r"].frames[-1]["status"] == "cancelled", got["r"].frames
        assert wait_for(lambda: seen("homelab_stream_subscribers", 0), timeout=10)
        assert seen("homelab_executions_running", 0)
        cancelled = {"server": "box", "action_type": "t_nap", "status": "cancelled"}
        assert (
            value(samples_of(service.app.base, reader), "homelab_executions_total", **cancelled)
            == 1
        )
    finally:
        signal_pids(processes_matching(marker), signal.SIGKILL)


def test_metrics_refuse_a_missing_or_bad_key_with_a_json_401(service):
    status, content_type, body = scrape(service.app.base, None)
    assert (status, content_type) == (401, "application/json"), body
    assert json.loads(body)["code"] == "not_authenticated"
    status, _, body = scrape(service.app.base, "abcdefgh.not-a-real-key")
    assert (status, json.loads(body)["code"]) == (401, "authentication_failed")
    status, content_type, body = scrape(service.app.base, service.keys["reader"])
    assert (status, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8")


def test_healthz_and_readyz_answer_without_credentials(service):
    assert get_json(f"{service.app.base}/healthz") == (200, {"status": "ok"})
    status, body = get_json(f"{service.app.base}/readyz")
    assert (status, body["status"], list(body["checks"])) == (200, "ok", ["database"]), body
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["database"]["ms"] >= 0


def test_every_log_line_is_a_json_object_and_each_finished_execution_has_one_info_line(service):
    key = service.keys["watcher"]
    status, body = service.execute("watcher", f"echo {SECRET_WORD}", "t_echo")
    assert status == 200, body
    ran = body["execution_id"]

    def lines() -> list[dict]:
        text = service.log.read_text()
        return [json.loads(line) for line in text.splitlines()]  # fails on any other line

    assert wait_for(lambda: any(line.get("execution_id") == ran for line in lines()), timeout=10)
    parsed = lines()
    for line in parsed:
        assert {"ts", "level", "logger", "message"} <= set(line), line
    finished = [line for line in parsed if line["logger"] == "homelab.executions"]
    mine = [line for line in finished if line["execution_id"] == ran]
    assert len(mine) == 1, finished
    line = mine[0]
    assert line["level"] == "INFO"
    assert (line["server"], line["action_type"], line["status"]) == ("box", "t_echo", "succeeded")
    assert (line["exit_code"], line["who"]) == (0, "key watcher")
    assert isinstance(line["duration_ms"], int)
    assert line["ts"].endswith("+00:00")
    # Every execution that ran in this module finished with its own line, and the failed
    # one says so; the access log is JSON too.
    assert any(f["status"] == "failed" and f["exit_code"] == 3 for f in finished)
    assert any(line["logger"] == "daphne.access" for line in parsed)
    assert SECRET_WORD not in service.log.read_text()  # the output is never logged
    assert key not in service.log.read_text()
