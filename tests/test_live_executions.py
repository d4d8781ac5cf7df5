"""Live executions against a real daphne, a real sshd and a real WebSocket client library.

Start without waiting, stream with replay, reconnect, cancel, the refusals, tickets, a
dropped synchronous client, all on the embedded profile (one process, SQLite).
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import time

import pytest

from tests.live import (
    COUNT,
    NOISY,
    TRICKLE,
    Daphne,
    call,
    follow,
    key_headers,
    output_of,
    set_up,
    start,
)
from tests.sshd import SSHDaemon, processes_matching, public_key, wait_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory, client_key):
    """A module's sshd, SQLite database and daphne, set up through manage.py."""
    tmp = tmp_path_factory.mktemp("live")
    daemon = SSHDaemon(workdir=tmp / "sshd", authorized_keys=[public_key(client_key)]).start()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'live.sqlite3'}",
        "DJANGO_SECRET_KEY": "live-tests-only",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
        "HOMELAB_EXECUTE_RATE": "1000/min",  # one key runs this whole module
    }
    env.pop("REDIS_URL", None)
    key, server_id = set_up(env, daemon, client_key)
    server = Daphne(env=env, log=tmp / "daphne.log")
    try:
        server.start()
        yield server, key, server_id, tmp / "live.sqlite3"
    finally:
        server.stop()
        daemon.stop()


def nap() -> str:
    """A unique `sleep` argument, to find the remote process with ps."""
    return f"61.{random.randint(10**8, 10**9)}"


def row(db_path, execution_id: int) -> dict:
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        found = db.execute("SELECT * FROM commands_execution WHERE id = ?", (execution_id,))
        return dict(found.fetchone())


def stream_url(server: Daphne, execution_id: int) -> str:
    return f"{server.ws}/ws/v1/executions/{execution_id}/"


def test_frames_arrive_while_the_command_runs_then_the_result_and_close_1000(stack):
    server, key, server_id, _ = stack
    execution_id = start(server, key, server_id, COUNT, "t_count")

    got = follow(stream_url(server, execution_id), key_headers(key))

    assert got.close_code == 1000
    assert output_of(got.frames) == "1\n2\n3\n"
    result = got.frames[-1]
    assert result["type"] == "result"
    assert (result["status"], result["exit_code"], result["stdout"]) == (
        "succeeded",
        0,
        "1\n2\n3\n",
    )
    for field in ("execution_id", "stderr", "duration_ms", "stdout_truncated", "stderr_truncated"):
        assert field in result
    first = next(i for i, f in enumerate(got.frames) if f.get("data", "").startswith("1"))
    assert got.times[-1] - got.times[first] > 1.5  # "1" came well before the end


def test_get_shows_the_status_and_the_output_so_far_while_it_runs(stack):
    server, key, server_id, _ = stack
    execution_id = start(server, key, server_id, COUNT, "t_count")
    url = f"{server.base}/api/v1/executions/{execution_id}/"

    assert wait_for(lambda: call("GET", url, key)[2]["stdout"].startswith("1\n"), timeout=5)
    status, _, body = call("GET", url, key)
    assert (status, body["status"]) == (200, "running")
    assert wait_for(lambda: call("GET", url, key)[2]["status"] == "succeeded", timeout=10)
    assert call("GET", url, key)[2]["stdout"] == "1\n2\n3\n"


def test_a_client_that_reconnects_mid_run_gets_everything_once_in_order(stack):
    server, key, server_id, _ = stack
    execution_id = start(server, key, server_id, COUNT, "t_count")
    url = stream_url(server, execution_id)

    early = follow(url, key_headers(key), limit=1)  # leaves after the first frame
    first = {"type": "output", "execution_id": execution_id, "stream": "stdout", "data": "1\n"}
    assert early.frames[0] == first
    time.sleep(1.2)
    again = follow(url, key_headers(key))

    assert output_of(again.frames) == "1\n2\n3\n"  # from the start, no gap, no duplicate
    assert [f["type"] for f in again.frames].count("result") == 1
    assert again.close_code == 1000


def test_a_client_that_connects_after_the_end_gets_the_output_and_the_result(stack):
    server, key, server_id, _ = stack
    status, _, body = call(
        "POST",
        f"{server.base}/api/v1/servers/{server_id}/commands/execute",
        key,
        {"command": "echo late", "action_type": "t_echo"},
    )
    assert status == 200

    got = follow(stream_url(server, body["execution_id"]), key_headers(key))

    assert output_of(got.frames) == "late\n"
    assert got.frames[-1]["type"] == "result" and got.frames[-1]["status"] == "succeeded"
    assert got.close_code == 1000


def test_cancel_stops_the_remote_process_and_the_stream_says_cancelled(stack):
    server, key, server_id, db_path = stack
    marker = nap()
    execution_id = start(server, key, server_id, f"sleep {marker}", "t_nap")
    assert wait_for(lambda: processes_matching(marker), timeout=10)
    watcher = {}

    import threading

    thread = threading.Thread(
        target=lambda: watcher.update(
            got=follow(stream_url(server, execution_id), key_headers(key))
        )
    )
    thread.start()
    time.sleep(0.3)
    asked = time.monotonic()
    status, _, body = call("POST", f"{server.base}/api/v1/executions/{execution_id}/cancel", key)

    assert (status, body["status"]) == (200, "cancelled")
    assert wait_for(lambda: not processes_matching(marker), timeout=2)
    assert time.monotonic() - asked < 2 + 0.5  # ps says gone within 2 s (plus ps itself)
    thread.join(timeout=10)
    assert watcher["got"].frames[-1]["status"] == "cancelled"
    assert watcher["got"].close_code == 1000
    assert row(db_path, execution_id)["status"] == "cancelled"
    again, _, body = call("POST", f"{server.base}/api/v1/executions/{execution_id}/cancel", key)
    assert (again, body["code"]) == (409, "not_running")


def test_the_refusals_close_4401_and_4404_before_any_output(stack, tmp_path):
    # 4403 (a ticket for another execution) is in the ticket test below, and a session
    # that is not staff in tests/test_live_api.py.
    server, key, server_id, _ = stack
    execution_id = start(server, key, server_id, "echo secret", "t_echo")
    url = stream_url(server, execution_id)

    nobody = follow(url)
    key_in_url = follow(f"{url}?api_key={key}")  # a long-lived key never counts in a URL
    bad_key = follow(url, key_headers("not-a-key"))
    missing = follow(stream_url(server, 987654), key_headers(key))
    not_a_number = follow(f"{server.ws}/ws/v1/executions/abc/", key_headers(key))

    refusals = [(nobody, 4401), (key_in_url, 4401), (bad_key, 4401)]
    for got, code in [*refusals, (missing, 4404), (not_a_number, 4404)]:
        assert (got.frames, got.close_code) == ([], code)


def test_a_ticket_streams_once_and_only_its_own_execution(stack):
    server, key, server_id, _ = stack
    first = start(server, key, server_id, "echo one", "t_echo")
    other = start(server, key, server_id, "echo two", "t_echo")
    ticket_url = f"{server.base}/api/v1/executions/{first}/stream-ticket"

    status, _, body = call("POST", ticket_url, key)
    assert status == 201 and body["expires_in"] == 60
    assert body["url"] == f"/ws/v1/executions/{first}/?ticket={body['ticket']}"
    used = follow(f"{server.ws}{body['url']}")
    reused = follow(f"{server.ws}{body['url']}")
    _, _, body = call("POST", ticket_url, key)
    elsewhere = follow(f"{stream_url(server, other)}?ticket={body['ticket']}")

    assert output_of(used.frames) == "one\n" and used.close_code == 1000
    assert (reused.frames, reused.close_code) == ([], 4401)
    assert (elsewhere.frames, elsewhere.close_code) == ([], 4403)
    assert body["ticket"] not in server.log.read_text()  # tickets stay out of the access log


def test_a_dropped_synchronous_client_does_not_stop_its_command(stack):
    server, key, server_id, db_path = stack
    marker = f"1.{random.randint(10**8, 10**9)}"
    body = (
        '{"command": "sleep %s", "action_type": "t_nap"}' % marker  # noqa: UP031
    ).encode()
    request = (
        f"POST /api/v1/servers/{server_id}/commands/execute HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\nAuthorization: Api-Key {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(request)
        assert wait_for(lambda: processes_matching(marker), timeout=10)
    # The client is gone; the command finishes and its row is completed all the same.
    _, _, listing = call("GET", f"{server.base}/api/v1/executions/?limit=50", key)
    execution_id = next(r["id"] for r in listing["results"] if marker in r["command"])
    assert wait_for(lambda: row(db_path, execution_id)["status"] == "succeeded", timeout=15)
    assert row(db_path, execution_id)["exit_code"] == 0


def test_a_subscriber_joining_mid_output_gets_all_of_it_once(stack):
    server, key, server_id, db_path = stack
    execution_id = start(server, key, server_id, TRICKLE, "t_trickle")
    time.sleep(1.5)  # joins while the output still trickles out
    assert row(db_path, execution_id)["status"] == "running"

    got = follow(stream_url(server, execution_id), key_headers(key))

    assert output_of(got.frames) == "started\n" + ("x" * 10000 + "\n") * 30 + "done\n"
    assert got.frames[-1]["stdout_truncated"] is True  # the row keeps head and tail only


# --- the one-connection client: ws/v1/servers/{id}/commands/execute ------------------------
def run_over_socket(server: Daphne, server_id, message: dict | str, headers: dict):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    frames, code = [], None
    url = f"{server.ws}/ws/v1/servers/{server_id}/commands/execute"
    with connect(url, additional_headers=headers, open_timeout=10) as socket_:
        try:
            socket_.send(message if isinstance(message, str) else json.dumps(message))
            while True:
                frames.append(json.loads(socket_.recv(timeout=30)))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
    return frames, code


def test_one_connection_runs_a_command_and_streams_it(stack):
    server, key, server_id, db_path = stack
    message = {"command": COUNT, "action_type": "t_count"}

    frames, code = run_over_socket(server, server_id, message, key_headers(key))

    assert frames[0]["type"] == "started"
    assert output_of(frames) == "1\n2\n3\n"
    assert (frames[-1]["type"], frames[-1]["status"], code) == ("result", "succeeded", 1000)
    audit = row(db_path, frames[0]["execution_id"])
    assert (audit["status"], audit["api_key_name"]) == ("succeeded", "live-box")


def test_one_connection_refusals_are_an_error_frame_then_4000_plus_the_status(stack):
    server, key, server_id, db_path = stack

    rejected, rejected_code = run_over_socket(
        server, server_id, {"command": "echo a; reboot", "action_type": "t_echo"}, key_headers(key)
    )
    invalid, invalid_code = run_over_socket(server, server_id, "not json", key_headers(key))
    nobody = run_over_socket(server, server_id, {}, {})
    nowhere = run_over_socket(server, 987654, {}, key_headers(key))

    assert rejected_code == 4400 and rejected[0]["type"] == "error"
    assert rejected[0]["code"] in {"invalid_parameter", "not_whitelisted"}
    assert row(db_path, rejected[0]["execution_id"])["status"] == "rejected"
    assert (invalid_code, invalid[0]["code"]) == (4400, "invalid")
    assert nobody == ([], 4401) and nowhere == ([], 4404)


def test_a_slow_reader_still_gets_the_end_of_the_stream_and_close_1000(stack):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server, key, server_id, _ = stack
    execution_id = start(server, key, server_id, NOISY, "t_noisy")
    time.sleep(2)  # all 300 kB are queued for us before we read any of it
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", server.port))
    frames, code = [], None
    url = stream_url(server, execution_id)
    with connect(url, sock=sock, additional_headers=key_headers(key), max_queue=1) as client:
        try:
            while True:
                frames.append(json.loads(client.recv(timeout=30)))
                time.sleep(0.25)  # reads far slower than loopback delivers
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None

    assert len(output_of(frames)) == len("started\n") + 300000 + len("done\n")
    assert (frames[-1]["type"], code) == ("result", 1000)
