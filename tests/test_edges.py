"""Issue 21, item 6: the edges a new user ran into, against a real daphne (and sshd, Redis).

- an unknown WebSocket path is a plain 404, with no traceback in the log;
- execution ids are ASCII digits only (no Arabic-Indic or fullwidth 1, no overflow);
- a 32 KB URL is 414, 32 KB of headers 431, a 2 MB WebSocket message close code 1009;
- a bad Host header and Ctrl-C with a request waiting each log one line, no traceback;
- the cancel listener is quiet while Redis is healthy, and a cancel right after a Redis
  restart goes through.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.live import ROOT, Daphne, call, key_headers
from tests.sshd import SSHDaemon, processes_matching, public_key, signal_pids, wait_for
from tests.test_faults import RedisServer, execute, set_up


@pytest.fixture(scope="module")
def stack(tmp_path_factory, client_key):
    """A module's sshd, SQLite database and daphne (and the env, for a second daphne)."""
    tmp = tmp_path_factory.mktemp("edges")
    daemon = SSHDaemon(workdir=tmp / "sshd", authorized_keys=[public_key(client_key)]).start()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp / 'edges.sqlite3'}",
        "DJANGO_SECRET_KEY": "edges-tests-only",
        "DJANGO_DEBUG": "0",
        "HOMELAB_EXECUTE_RATE": "1000/min",
    }
    key, server_id = set_up(env, daemon, client_key)
    app = Daphne(env=env, log=tmp / "daphne.log")
    try:
        app.start()
        status, body = execute(app, key, server_id, "echo one", "t_echo")
        assert status == 200, body
        yield app, key, server_id, body["execution_id"], env, tmp
    finally:
        app.stop()
        daemon.stop()


def raw_request(app: Daphne, path: str, headers: dict[str, str] | None = None):
    """(status, headers, body) of a GET sent as is, whatever its size."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def log_since(app: Daphne, mark: int) -> str:
    return app.log.read_bytes()[mark:].decode(errors="replace")


# --- WebSocket paths and frames ----------------------------------------------------------
def test_an_unknown_websocket_path_is_a_plain_404_and_logs_no_traceback(stack):
    app, key, *_ = stack
    mark = app.log.stat().st_size

    for path in ("/ws/v1/nothing/", "/ws/v1/executions/1/extra/", "/elsewhere"):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{app.ws}{path}", additional_headers=key_headers(key), open_timeout=10)
        assert refused.value.response.status_code == 404, path

    log = log_since(app, mark)
    assert "Traceback" not in log and "No route found" not in log and " 500" not in log, log


def test_a_known_websocket_path_still_streams(stack):
    app, key, _, execution_id, *_ = stack
    with connect(
        f"{app.ws}/ws/v1/executions/{execution_id}/", additional_headers=key_headers(key)
    ) as ws:
        frames = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
    assert [frame["type"] for frame in frames] == ["output", "result"]


def test_a_2_mb_websocket_message_is_closed_with_1009(stack):
    app, key, server_id, *_ = stack
    url = f"{app.ws}/ws/v1/servers/{server_id}/commands/execute"
    with connect(url, additional_headers=key_headers(key), max_size=None) as ws:
        ws.send("x" * (2 * 1024 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


# --- ids ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ref",
    ["%D9%A1", "%EF%BC%91", "%F0%9D%9F%8F", "99999999999999999999", "0", "1.0", "+1", "%201"],
    ids=["arabic-indic", "fullwidth", "math-bold", "overflow", "zero", "decimal", "plus", "space"],
)
def test_an_execution_id_is_ascii_digits_only_everywhere(stack, ref):
    app, key, _, execution_id, *_ = stack
    assert execution_id == 1  # what a non-ASCII 1 used to find

    for method, path in [
        ("GET", f"/api/v1/executions/{ref}/"),
        ("POST", f"/api/v1/executions/{ref}/cancel"),
        ("POST", f"/api/v1/executions/{ref}/stream-ticket"),
    ]:
        status, _, body = call(method, f"{app.base}{path}", key)
        assert (status, body["code"]) == (404, "not_found"), (method, path, body)
    status, _, body = call("GET", f"{app.base}/api/v1/executions/1/", key)
    assert (status, body["id"]) == (200, 1)


# --- oversized requests -------------------------------------------------------------------
def test_a_32_kb_url_is_414_with_a_json_body(stack):
    app, *_ = stack
    status, headers, body = raw_request(app, "/api/v1/servers/?name=" + "a" * 32 * 1024)

    assert status == 414
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["code"] == "uri_too_long"


@pytest.mark.parametrize("sizes", [(32 * 1024,), (10 * 1024, 10 * 1024)], ids=["one", "two"])
def test_headers_over_16_kb_are_431_with_a_json_body(stack, sizes):
    app, key, *_ = stack
    headers = {f"X-Big-{n}": "b" * size for n, size in enumerate(sizes)}
    status, answer, body = raw_request(app, "/api/v1/servers/", {**key_headers(key), **headers})

    assert status == 431
    assert json.loads(body)["code"] == "headers_too_large"
    assert answer["Connection"] == "close"


def test_a_request_within_the_limits_is_served_as_before(stack):
    app, key, *_ = stack
    status, _, body = raw_request(
        app, "/api/v1/servers/?name=" + "a" * 8 * 1024, {**key_headers(key), "X-Pad": "p" * 4096}
    )
    assert (status, json.loads(body)["count"]) == (200, 0)


# --- one line in the log ------------------------------------------------------------------
def test_a_bad_host_header_is_a_400_and_one_log_line(stack):
    app, *_ = stack
    mark = app.log.stat().st_size

    status, _, body = raw_request(app, "/api/v1/servers/", {"Host": "evil.example"})

    assert status == 400 and json.loads(body)["code"] == "bad_request"
    assert wait_for(lambda: "evil.example" in log_since(app, mark), timeout=10)
    lines = [line for line in log_since(app, mark).splitlines() if "evil.example" in line]
    assert len(lines) == 1 and " WARNING django.security.DisallowedHost " in lines[0], lines
    assert "Traceback" not in log_since(app, mark)


def test_ctrl_c_with_a_request_waiting_logs_one_line_and_no_traceback(stack):
    _, key, server_id, _, env, tmp = stack
    second = Daphne(env=env, log=tmp / "daphne-sigint.log").start()
    marker = "7.123456789"
    body = json.dumps({"command": f"sleep {marker}", "action_type": "t_nap"}).encode()
    request = (
        f"POST /api/v1/servers/{server_id}/commands/execute HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Api-Key {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        with socket.create_connection(("127.0.0.1", second.port), timeout=30) as client:
            client.sendall(request)
            assert wait_for(lambda: processes_matching(marker), timeout=20)
            # Ctrl-C, and the client gives up waiting: Django's handler is cancelled and
            # its task listening for the disconnect ends in RequestAborted.
            second.process.send_signal(signal.SIGINT)
        second.process.wait(timeout=30)
    finally:
        second.stop()
        signal_pids(processes_matching(marker), signal.SIGKILL)

    log = second.log.read_text()
    assert "Traceback" not in log and "never retrieved" not in log, log
    assert "a request ended without an answer: its client went away" in log, log


# --- Redis --------------------------------------------------------------------------------
CANCEL_BUS = textwrap.dedent(
    """
    import sys, time
    import django
    django.setup()
    from commands.engine import framelog

    got = []
    backend = framelog.backend()
    backend.listen_for_cancels("edges-test", got.append)
    time.sleep(7)  # more than one idle 5 s blocking read of the channel layer
    print("idle", flush=True)
    sys.stdin.readline()  # the test restarts Redis meanwhile
    sent = backend.send_cancel("edges-test", {"execution_id": 42})
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    print("sent", sent, "got", [m.get("execution_id") for m in got], flush=True)
    """
)


def test_the_cancel_bus_is_quiet_when_redis_is_healthy_and_works_right_after_a_restart(tmp_path):
    redis_server = RedisServer(tmp_path / "redis.log").start()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {
        "REDIS_URL": redis_server.url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bus.sqlite3'}",
        "DJANGO_SECRET_KEY": "edges-bus",
        "DJANGO_SETTINGS_MODULE": "homelab.settings",
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", CANCEL_BUS],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        idle = process.stdout.readline()
        assert idle.strip() == "idle", idle
        redis_server.stop()  # the pooled connections go stale
        redis_server.start()  # same port, empty
        process.stdin.write("\n")
        process.stdin.flush()
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        redis_server.stop()

    assert "sent True got [42]" in output, output
    warnings = [line for line in output.splitlines() if "cancel listener" in line]
    # Healthy for 7 s: nothing; the restart: one line, however long it took.
    assert len(warnings) <= 1 and "TimeoutError" not in output, output
