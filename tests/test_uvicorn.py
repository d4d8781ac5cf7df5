"""homelab under uvicorn, as under daphne: a Ctrl-C stops the commands that requests wait
for and the process exits at once (uvicorn alone would wait for those requests, with no
time limit), and `--fd` (a socket handed over by systemd or a process manager) gets
TCP_NODELAY on each connection, which uvicorn leaves off for an inherited socket.
Real uvicorn processes, real sshd; see homelab/asgi_patches.py."""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import threading
import time

import pytest

from tests.live import BIN, ROOT, call, set_up, wait_for_http
from tests.sshd import processes_matching, signal_pids, terminate, wait_for


@pytest.fixture
def env(tmp_path, client_key):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    return env | {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'uvicorn.sqlite3'}",
        "DJANGO_SECRET_KEY": "uvicorn-test-secret",
        "DJANGO_DEBUG": "0",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
    }


def uvicorn(env: dict, log, *args: str, pass_fds=()) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN / "uvicorn"), *args], cwd=ROOT, env=env, stdout=out, stderr=out,
            pass_fds=pass_fds,
        )  # fmt: skip


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serving(proc: subprocess.Popen, url: str, log) -> None:
    try:
        wait_for_http(url, timeout=60)
    except RuntimeError as exc:  # say why: uvicorn's own words, e.g. an import error
        tail = log.read_text()[-3000:]
        raise AssertionError(f"{exc}; uvicorn exit {proc.poll()}:\n{tail}") from None


def row_statuses(env: dict) -> list[str]:
    with sqlite3.connect(env["DATABASE_URL"].removeprefix("sqlite:///")) as db:
        return [status for (status,) in db.execute("SELECT status FROM commands_execution")]


def test_ctrl_c_stops_the_command_a_request_waits_for_and_uvicorn_exits(
    env, sshd, client_key, tmp_path
):
    key, server_id = set_up(env, sshd, client_key)
    sock = listening_socket()
    port = sock.getsockname()[1]
    log = tmp_path / "uvicorn.log"
    proc = uvicorn(env, log, "homelab.asgi:application", "--fd", str(sock.fileno()),
                   pass_fds=(sock.fileno(),))  # fmt: skip
    sock.close()  # uvicorn holds its own copy
    marker = f"61.{random.randint(10**8, 10**9)}"
    answers = []
    url = f"http://127.0.0.1:{port}/api/v1/servers/{server_id}/commands/execute"

    def wait_for_result() -> None:
        try:
            status, _, body = call("POST", url, key, {"command": f"sleep {marker}",
                                                      "action_type": "t_nap"})  # fmt: skip
            answers.append((status, (body or {}).get("code")))
        except (OSError, ValueError):  # the server closed the connection as it stopped
            answers.append("disconnected")

    caller = threading.Thread(target=wait_for_result)
    try:
        serving(proc, f"http://127.0.0.1:{port}/api/schema/", log)
        caller.start()
        assert wait_for(lambda: processes_matching(marker), timeout=20)

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        sent = time.monotonic()
        proc.wait(timeout=30)  # without the patch: until sleep's 61 s were over
        took = time.monotonic() - sent
        left = processes_matching(marker)
    finally:
        signal_pids(processes_matching(marker), signal.SIGKILL)
        if proc.poll() is None:
            terminate(proc)
        caller.join(timeout=30)

    assert left == [], "the command still runs on the server"
    assert took < 15, (took, log.read_text()[-3000:])  # far below the command's 61 s
    assert row_statuses(env) == ["interrupted"]
    assert answers and answers[0] in {(503, "interrupted"), "disconnected"}, answers
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_an_inherited_socket_gets_tcp_nodelay_and_serves_the_api(env, sshd, client_key, tmp_path):
    key, server_id = set_up(env, sshd, client_key)
    sock = listening_socket()
    port = sock.getsockname()[1]
    log = tmp_path / "uvicorn-fd.log"
    proc = uvicorn(env, log, "tests.uvicorn_probe:application", "--fd", str(sock.fileno()),
                   pass_fds=(sock.fileno(),))  # fmt: skip
    sock.close()
    base = f"http://127.0.0.1:{port}"
    try:
        serving(proc, f"{base}/api/schema/", log)
        status, _, probed = call("GET", f"{base}/__nodelay")
        executed = call("POST", f"{base}/api/v1/servers/{server_id}/commands/execute", key,
                        {"command": "echo hi", "action_type": "t_echo"})  # fmt: skip
    finally:
        terminate(proc)

    assert (status, probed) == (200, {"nodelay": 1}), log.read_text()[-3000:]
    assert executed[0] == 200 and executed[2]["stdout"] == "hi\n", executed
