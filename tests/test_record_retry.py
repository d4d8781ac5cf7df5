"""Issue 21, item 4: a result is not lost when the database blips during a command.

Real daphne, sshd and PostgreSQL. The first test stops a PostgreSQL cluster of its own
(tests/pgcluster.py: never the machine's shared server) while a command runs, and starts
it again once the command has ended: the end is written on a retry, the waiting caller
gets its 200 and the row says `succeeded`. The second makes the final write fail while
reads work (a trigger, on a database of its own on the shared server): a cancel of the
row says that the command has ended and its result is being written, and once writes
work again the caller gets its 200. (A write that is never made: 503 with the result,
tests/test_hardening_output_and_connections.py.)
"""

from __future__ import annotations

import os
import random
import signal
import uuid

import psycopg

from tests.live import Daphne, call
from tests.pgcluster import own_postgres  # noqa: F401 (a fixture)
from tests.sshd import processes_matching, signal_pids, wait_for
from tests.test_faults import CLIENT_TIMEOUT, execute, in_background, set_up
from tests.test_hardening_output_and_connections import ALLOW_FINISH, REFUSE_FINISH
from tests.test_production_profile import database  # noqa: F401 (a fixture)

RETRYING = "retrying for up to 60 s"


def env_for(database_url: str, client_key) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    return env | {
        "DATABASE_URL": database_url,
        "DJANGO_SECRET_KEY": "record-" + uuid.uuid4().hex,
        "DJANGO_DEBUG": "0",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
        "HOMELAB_RECORD_RETRY_SECONDS": "60",
    }


def row_of(database_url: str, execution_id: int) -> tuple:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        query = "SELECT status, exit_code, stdout FROM commands_execution WHERE id = %s"
        return conn.execute(query, (execution_id,)).fetchone()


def test_postgres_stopped_mid_command_and_started_again_still_records_the_result(
    own_postgres,  # noqa: F811
    sshd,
    client_key,
    tmp_path,
):
    database_url = own_postgres.create_database("homelab")
    env = env_for(database_url, client_key)
    key, server_id = set_up(env, sshd, client_key)
    marker = f"2.{random.randint(10**8, 10**9)}"
    app = Daphne(env=env, log=tmp_path / "daphne.log").start()
    try:
        waiting = in_background(execute, app, key, server_id, f"sleep {marker}", "t_nap")
        assert wait_for(lambda: processes_matching(marker), timeout=20)
        own_postgres.stop()  # mid-command: every session is cut, no new one is taken
        # The command ends on its own meanwhile; its end cannot be written.
        assert wait_for(lambda: RETRYING in app.log.read_text(), timeout=30), app.log.read_text()
        assert not waiting.done()  # the caller is not told anything yet
        own_postgres.start()

        status, body = waiting.result(timeout=CLIENT_TIMEOUT)
        assert (status, body["exit_code"]) == (200, 0), body
        assert row_of(database_url, body["execution_id"]) == ("succeeded", 0, "")
        status, _, shown = call("GET", f"{app.base}/api/v1/executions/{body['execution_id']}/", key)
        assert (status, shown["status"]) == (200, "succeeded")
    finally:
        app.stop()
        signal_pids(processes_matching(marker), signal.SIGKILL)

    log = app.log.read_text()
    assert f"recorded the end of execution {body['execution_id']} after retrying" in log
    assert " ERROR " not in log and "Traceback" not in log, log


def test_a_cancel_while_the_end_is_being_retried_says_so_and_the_caller_gets_its_200(
    database,  # noqa: F811
    sshd,
    client_key,
    tmp_path,
):
    env = env_for(database, client_key)
    key, server_id = set_up(env, sshd, client_key)
    app = Daphne(env=env, log=tmp_path / "daphne.log").start()
    try:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(REFUSE_FINISH)  # the end cannot be written; reads still work
        waiting = in_background(execute, app, key, server_id, "echo hello", "t_echo")
        assert wait_for(lambda: RETRYING in app.log.read_text(), timeout=30), app.log.read_text()
        _, _, page = call("GET", f"{app.base}/api/v1/executions/?status=running", key)
        (running,) = page["results"]  # the row still says running

        url = f"{app.base}/api/v1/executions/{running['id']}/cancel"
        status, _, refused = call("POST", url, key)
        assert (status, refused["code"]) == (409, "not_running"), refused
        assert "it ended (succeeded)" in refused["detail"] and "retrying" in refused["detail"]
        assert not waiting.done()

        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(ALLOW_FINISH)
        status, body = waiting.result(timeout=CLIENT_TIMEOUT)
        assert (status, body["execution_id"], body["stdout"]) == (200, running["id"], "hello\n")
        assert row_of(database, running["id"]) == ("succeeded", 0, "hello\n")
        status, _, again = call("POST", url, key)
        assert (status, again["detail"]) == (
            409,
            f"Execution {running['id']} is not running (it is succeeded).",
        )
    finally:
        app.stop()
