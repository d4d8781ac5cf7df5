"""Issue 21, item 5: a lost connection keeps the output received before the loss.

A real daphne, sshd and WebSocket client: a command prints a line a second; sshd and the
session processes serving it are killed once two lines have been streamed. The waiting
caller's 500 `ssh_connection_lost`, the stream's `result` frame and the audit row all
carry what was printed until then, as a timeout and a cancel already did.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading

import pytest
from websockets.sync.client import connect

from tests.live import Daphne, call, key_headers
from tests.sshd import processes_matching, signal_pids, wait_for
from tests.test_faults import CLIENT_TIMEOUT, execute, in_background, set_up

TICK = "sh -c 'for i in 1 2 3 4 5 6 7 8 9; do echo line$i; sleep 1; done; echo 4711.23'"


def running_execution(app: Daphne, key: str) -> int:
    """The id of the one running execution (the waiting caller learns it only at the end)."""
    found: list[int] = []

    def look() -> bool:
        _, _, page = call("GET", f"{app.base}/api/v1/executions/?status=running", key)
        found[:] = [row["id"] for row in page["results"]]
        return len(found) == 1

    assert wait_for(look, timeout=20)
    return found[0]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_a_lost_connection_keeps_the_output_so_far_in_the_answer_the_frame_and_the_row(
    sshd, client_key, tmp_path, how
):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'lost.sqlite3'}",
        "DJANGO_SECRET_KEY": "lost-tests-only",
        "DJANGO_DEBUG": "0",
    }
    key, server_id = set_up(env, sshd, client_key, [["t_tick", TICK]])
    streamed: list[dict] = []
    two_lines = threading.Event()
    app = Daphne(env=env, log=tmp_path / "daphne.log").start()
    try:
        waiting = in_background(execute, app, key, server_id, TICK, "t_tick")
        execution_id = running_execution(app, key)

        def follow() -> None:
            url = f"{app.ws}/ws/v1/executions/{execution_id}/"
            with connect(url, additional_headers=key_headers(key)) as ws:
                for message in ws:
                    streamed.append(json.loads(message))
                    text = "".join(f.get("data", "") for f in streamed if f["type"] == "output")
                    if "line2\n" in text:
                        two_lines.set()

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        try:
            assert two_lines.wait(timeout=20)
            signal_pids(sshd.session_pids(), how)  # the sessions serving the command
            sshd.stop()  # and the listener
            status, body = waiting.result(timeout=CLIENT_TIMEOUT)
            follower.join(timeout=CLIENT_TIMEOUT)
        finally:
            signal_pids(processes_matching("4711.23"), signal.SIGKILL)
    finally:
        app.stop()

    assert (status, body["code"]) == (500, "ssh_connection_lost"), body
    printed = "".join(f["data"] for f in streamed if f["type"] == "output")
    assert printed.startswith("line1\nline2\n") and "4711.23" not in printed, printed
    assert body["execution_id"] == execution_id
    assert body["stdout"] == printed  # the answer: everything the stream showed
    assert (body["stdout_truncated"], body["stdout_cut_bytes"]) == (False, 0)

    result = streamed[-1]
    assert (result["type"], result["status"], result["error_code"]) == (
        "result",
        "error",
        "ssh_connection_lost",
    )
    assert result["stdout"] == printed  # the frame

    with sqlite3.connect(tmp_path / "lost.sqlite3") as db:
        row = db.execute(
            "SELECT status, error_code, stdout FROM commands_execution WHERE id = ?",
            (execution_id,),
        ).fetchone()
    assert row == ("error", "ssh_connection_lost", printed)  # the row
