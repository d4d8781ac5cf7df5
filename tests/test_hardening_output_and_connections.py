"""Issue 10, defects 1, 3 and 4, through the public interface with real parts.

- NUL bytes in a command's output are stored and returned as U+FFFD on PostgreSQL, and a
  final write that PostgreSQL never takes answers 503 with the result and leaves the row
  for `markinterrupted`.
- No database connection is held while a command runs (PostgreSQL idle_session_timeout).
- A command that leaves a background child running still returns its result (HTTP, and
  the SSH executor on its own).
"""

from __future__ import annotations

import random
import signal
import threading
import time

import psycopg
import pytest

from tests.live import Daphne, call, follow, key_headers, manage, output_of, set_up
from tests.services import postgres_url
from tests.sshd import processes_matching, signal_pids, wait_for
from tests.test_production_profile import database, profile_env, workers  # noqa: F401

NUL_RULE = r"printf 'a\000b'"  # printf turns \000 into a NUL byte on the server
BACKGROUND = """sh -c 'sleep "$1" & echo started' sh {seconds}"""


def execute(port: int, key: str, server_id: int, command: str, action: str, **extra):
    url = f"http://127.0.0.1:{port}/api/v1/servers/{server_id}/commands/execute"
    return call("POST", url, key, {"command": command, "action_type": action, **extra})


def start_without_waiting(port: int, key: str, server_id: int, command: str, action: str):
    status, _, body = execute(port, key, server_id, command, action, wait=False)
    assert status == 202, body
    return body["execution_id"]


def row_of(database_url: str, execution_id: int) -> tuple[str, str]:
    with psycopg.connect(database_url) as conn:
        query = "SELECT status, stdout FROM commands_execution WHERE id = %s"
        return conn.execute(query, (execution_id,)).fetchone()


def finished(port: int, key: str, execution_id: int) -> dict:
    """The execution as GET shows it once it is no longer running."""
    url = f"http://127.0.0.1:{port}/api/v1/executions/{execution_id}/"
    assert wait_for(lambda: call("GET", url, key)[2]["status"] != "running", timeout=20)
    return call("GET", url, key)[2]


# --- 1. NUL in the output, and a final write that fails ---------------------------------
def test_a_nul_byte_in_the_output_is_returned_and_stored_as_a_replacement_character(
    profile_env,  # noqa: F811
    database,  # noqa: F811
    workers,  # noqa: F811
    sshd,
    client_key,
):
    a, b = workers
    key, server_id = set_up(profile_env, sshd, client_key)
    manage(profile_env, "allowcommand", "t_nul", NUL_RULE)

    status, _, body = execute(a, key, server_id, NUL_RULE, "t_nul")
    assert status == 200, body
    assert (body["exit_code"], body["stdout"]) == (0, "a\ufffdb")
    assert row_of(database, body["execution_id"]) == ("succeeded", "a\ufffdb")

    # Started without waiting on A, read back and streamed through B.
    streamed = start_without_waiting(a, key, server_id, NUL_RULE, "t_nul")
    shown = finished(b, key, streamed)
    assert (shown["status"], shown["stdout"]) == ("succeeded", "a\ufffdb")
    got = follow(f"ws://127.0.0.1:{b}/ws/v1/executions/{streamed}/", key_headers(key))
    assert output_of(got.frames) == "a\ufffdb"
    assert got.frames[-1]["status"] == "succeeded"
    assert row_of(database, streamed) == ("succeeded", "a\ufffdb")


REFUSE_FINISH = """
CREATE FUNCTION homelab_test_refuse_finish() RETURNS trigger AS $$
BEGIN
    IF NEW.status <> 'running' THEN
        RAISE EXCEPTION 'refused by the test: s3cr3t-detail';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER homelab_test_refuse_finish BEFORE UPDATE ON commands_execution
    FOR EACH ROW EXECUTE FUNCTION homelab_test_refuse_finish();
"""
ALLOW_FINISH = """
DROP TRIGGER homelab_test_refuse_finish ON commands_execution;
DROP FUNCTION homelab_test_refuse_finish();
"""


def test_a_final_write_never_taken_answers_503_with_the_result_and_markinterrupted_closes_it(
    profile_env,  # noqa: F811
    database,  # noqa: F811
    sshd,
    client_key,
    tmp_path,
):
    env = {**profile_env, "HOMELAB_RECORD_RETRY_SECONDS": "1"}  # retried for 1 s only
    key, server_id = set_up(env, sshd, client_key)
    log = tmp_path / "daphne.log"
    worker = Daphne(env=env, log=log)
    try:
        worker.start()
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(REFUSE_FINISH)

        status, _, body = execute(worker.port, key, server_id, "echo hello", "t_echo")
        # Never a 200 the audit trail contradicts: a 503 that carries the result.
        assert (status, body["code"]) == (503, "unavailable"), body
        assert (body["status"], body["exit_code"], body["stdout"]) == ("succeeded", 0, "hello\n")
        assert "did not take its result" in body["detail"]
        execution_id = body["execution_id"]
        assert row_of(database, execution_id) == ("running", "")
        # The stream's result says how it ended, and that the row does not show it.
        url = f"ws://127.0.0.1:{worker.port}/ws/v1/executions/{execution_id}/"
        result = follow(url, key_headers(key)).frames[-1]
        assert (result["type"], result["status"], result["recorded"]) == (
            "result",
            "succeeded",
            False,
        )
    finally:
        worker.stop()  # by its PID; the row's process is gone now

    text = log.read_text()
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert len(errors) == 1, text  # ours; not Django's "Service Unavailable" as well
    assert errors[0].endswith(
        f"could not record the end of execution {execution_id} in the database"
    )
    assert "Traceback" not in text and "s3cr3t-detail" not in text, text
    assert row_of(database, execution_id)[0] == "running"

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(ALLOW_FINISH)  # the database takes writes again
    assert "Marked 1 execution(s) as interrupted." in manage(profile_env, "markinterrupted")
    assert row_of(database, execution_id)[0] == "interrupted"


# --- 3. no connection held while a command runs -------------------------------------------
def client_backends(name: str) -> int:
    """Client connections to database `name` (asked from another database)."""
    with psycopg.connect(postgres_url(), autocommit=True) as admin:
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = %s AND backend_type = 'client backend'"
        )
        return admin.execute(query, (name,)).fetchone()[0]


def backends_while_it_runs(name: str, marker: str) -> list[int]:
    """Counts of client connections to `name`, sampled while the remote `sleep` runs."""
    assert wait_for(lambda: processes_matching(marker), timeout=10)
    counts = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        count = client_backends(name)
        if not processes_matching(marker):
            break  # it ended: the final write may have begun
        counts.append(count)
        time.sleep(0.1)
    return counts


def test_no_database_connection_is_held_while_a_command_runs(
    profile_env,  # noqa: F811
    database,  # noqa: F811
    workers,  # noqa: F811
    sshd,
    client_key,
):
    a, b = workers
    key, server_id = set_up(profile_env, sshd, client_key)
    name = database.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url(), autocommit=True) as admin:
        # An idle session is cut after 1 s: a connection kept across the 3 s command breaks.
        admin.execute(f"ALTER DATABASE \"{name}\" SET idle_session_timeout = '1s'")
    markers = [f"3.{random.randint(10**8, 10**9)}" for _ in range(2)]
    try:
        answer = {}
        waiting = threading.Thread(
            target=lambda: answer.update(
                got=execute(a, key, server_id, f"sleep {markers[0]}", "t_nap")
            ),
            daemon=True,
        )
        waiting.start()
        counts = backends_while_it_runs(name, markers[0])
        assert counts and set(counts) == {0}, counts
        waiting.join(timeout=30)
        status, _, body = answer["got"]
        assert status == 200, body
        assert body["exit_code"] == 0
        assert row_of(database, body["execution_id"])[0] == "succeeded"

        started = start_without_waiting(a, key, server_id, f"sleep {markers[1]}", "t_nap")
        counts = backends_while_it_runs(name, markers[1])
        assert counts and set(counts) == {0}, counts
        assert finished(b, key, started)["status"] == "succeeded"
    finally:
        for marker in markers:
            signal_pids(processes_matching(marker), signal.SIGKILL)


# --- 4. background children ---------------------------------------------------------------
@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
def test_a_command_that_leaves_a_background_child_running_returns_its_result(
    api_client, sshd, make_server, make_rule, marker
):
    server = make_server(sshd)
    pattern = r"^[0-9]{1,4}\.[0-9]{1,12}$"
    make_rule("t_background", BACKGROUND, timeout=5, servers=[server], seconds=pattern)
    make_rule("t_echo", "echo {word}", servers=[server], word="^[a-z]{1,10}$")
    url = f"/api/v1/servers/{server.pk}/commands/execute"

    command = f"""sh -c 'sleep "$1" & echo started' sh {marker}"""
    body = {"command": command, "action_type": "t_background"}
    response = api_client.post(url, body, format="json")
    assert response.status_code == 200, response.content  # not a 408 at the rule's timeout
    body = response.json()
    assert (body["exit_code"], body["stdout"], body["stderr"]) == (0, "started\n", "")
    # The child is the command's business: homelab does not stop it.
    assert processes_matching(marker)

    # The connection its channel was on serves the next command.
    response = api_client.post(
        url, {"command": "echo next", "action_type": "t_echo"}, format="json"
    )
    assert (response.status_code, response.json()["stdout"]) == (200, "next\n")


def test_the_executor_without_a_stop_event_also_returns_once_the_exit_status_is_in(
    executor, target, marker
):
    # Nothing wakes its read loop when the exit status comes without EOF: it must look.
    argv = ["sh", "-c", 'sleep "$1" & echo started', "sh", marker]
    result = executor.execute(target, argv, timeout=5)
    assert (result.exit_code, result.stdout) == (0, "started\n")
    assert processes_matching(marker)
