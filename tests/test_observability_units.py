"""The JSON log formatter and the readiness checks' deadlines, as units (the real daphne's
log and a real Redis stopped and started are in tests/test_metrics_live.py and
tests/test_metrics_workers.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading

from commands.models import Execution
from commands.observability import readiness
from commands.observability.logs import JsonFormatter, about, about_execution
from tests.sshd import wait_for


def record(message: str, *args, **extra) -> logging.LogRecord:
    made = logging.LogRecord("homelab.test", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_a_json_line_carries_what_it_is_about_and_nothing_else_of_the_record():
    formatter = JsonFormatter()
    with about(execution_id=7, server="nas", action_type="uptime", batch_id=None):
        line = json.loads(formatter.format(record("slow %s", "nas", request=object(), who="-")))
    assert line.pop("ts").endswith("+00:00")
    assert line == {
        "level": "WARNING",
        "logger": "homelab.test",
        "message": "slow nas",
        "execution_id": 7,
        "server": "nas",
        "action_type": "uptime",
        "who": "-",
    }  # no batch_id (None), no request object
    outside = json.loads(formatter.format(record("multi\nline", batch_id=3)))
    assert (outside["message"], outside["batch_id"]) == ("multi\nline", 3)
    assert "execution_id" not in outside


def test_what_a_run_logs_on_its_runner_thread_is_about_its_execution():
    # As services.start wraps the run it hands to the runner thread.
    row = Execution(pk=41, server_name="nas", action_type="uptime", batch_id=9)
    lines: list[str] = []

    def run(run_arg: str) -> str:
        lines.append(JsonFormatter().format(record("stale connection to %s", run_arg)))
        return "done"

    wrapped = about_execution(row)(run)
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(result=wrapped("nas")))
    worker.start()
    worker.join(timeout=10)
    assert outcome["result"] == "done"
    line = json.loads(lines[0])
    assert (line["execution_id"], line["batch_id"], line["server"]) == (41, 9, "nas")
    assert line["action_type"] == "uptime"
    # Outside the run nothing is about it.
    assert "execution_id" not in json.loads(JsonFormatter().format(record("idle")))


def test_a_json_line_keeps_the_exception_on_the_same_line():
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonFormatter().format(failed)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exception"]


def test_a_hanging_check_fails_at_its_deadline_and_is_not_started_again_while_it_hangs(
    monkeypatch,
):
    release = threading.Event()
    monkeypatch.setattr(readiness, "DEADLINE_SECONDS", 0.2)
    monkeypatch.setattr(readiness, "checks", lambda: {"stuck": lambda: release.wait(30)})
    try:
        ready, first = asyncio.run(readiness.report())
        assert (ready, first["stuck"]["status"]) == (False, "fail")
        assert first["stuck"]["error"] == "timed out after 0.2 s"
        ready, second = asyncio.run(readiness.report())
        assert second["stuck"]["error"] == "still waiting for the last check"
    finally:
        release.set()
    # Once the stuck one returns, the next probe runs the check again, and it passes.
    assert wait_for(lambda: asyncio.run(readiness.report())[0], timeout=5)


def test_a_failing_check_names_the_error_class_never_its_text(monkeypatch, caplog):
    def refuse() -> None:
        raise ConnectionError("Error connecting to redis://:hunter2@10.0.0.5:6379/0")

    monkeypatch.setattr(readiness, "checks", lambda: {"cache": refuse})
    ready, results = asyncio.run(readiness.report())
    assert (ready, results["cache"]["error"]) == (False, "ConnectionError")
    assert "hunter2" not in caplog.text and "redis://:***@10.0.0.5" in caplog.text
