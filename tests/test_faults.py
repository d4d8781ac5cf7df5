"""Issue 10, the fault suite: what a client gets when a part the app depends on fails.

Everything runs for real on loopback: daphne workers, OpenSSH sshd, PostgreSQL (a database
of our own on the shared server; only its own backends are terminated), and a redis-server
of our own for the Redis fault (the shared one is never stopped). Each fault must end in
its documented JSON status within a bounded time (generous client timeouts, never a
timing assert), and no row may be left `running`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from tests.live import ROOT, Daphne, manage
from tests.services import postgres_url
from tests.sshd import free_port, processes_matching, signal_pids, terminate, wait_for
from tests.test_production_profile import database, profile_env  # noqa: F401

CLIENT_TIMEOUT = 60  # seconds a client waits for any answer: a hang fails the test


# --- HTTP ---------------------------------------------------------------------------------
def request(method: str, url: str, key: str | None = None, body: dict | None = None):
    """(status, JSON body) of one request; fails if the answer is not JSON (an HTML page)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Api-Key {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        response = urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT)
    except urllib.error.HTTPError as error:
        response = error
    with response:
        content_type, raw = response.headers.get("Content-Type", ""), response.read()
    assert content_type.startswith("application/json"), (response.status, content_type, raw)
    return response.status, json.loads(raw)


def execute(app: Daphne, key: str, server_id: int, command: str, action: str, **extra):
    url = f"{app.base}/api/v1/servers/{server_id}/commands/execute"
    return request("POST", url, key, {"command": command, "action_type": action, **extra})


def execution(app: Daphne, key: str, execution_id: int) -> dict:
    status, body = request("GET", f"{app.base}/api/v1/executions/{execution_id}/", key)
    assert status == 200, body
    return body


def running_rows(app: Daphne, key: str) -> int:
    status, body = request("GET", f"{app.base}/api/v1/executions/?status=running", key)
    assert status == 200, body
    return body["count"]


_background = ThreadPoolExecutor(max_workers=4)


def in_background(function, *args, **kwargs) -> Future:
    return _background.submit(function, *args, **kwargs)


def nap() -> str:
    """A unique `sleep` argument (for the t_nap rule) to find the remote process with ps."""
    return f"31.{random.randint(10**8, 10**9)}"


# --- set-up -----------------------------------------------------------------------------
SET_UP = """
import io, json, sys
import django
django.setup()
from django.core.management import call_command
from commands.models import Server
spec = json.loads(sys.argv[1])
call_command("migrate", "--noinput", verbosity=0)
out = io.StringIO()
call_command("createapikey", "faults", stdout=out)
call_command("addserver", *spec["server"], stdout=io.StringIO())
call_command("trusthost", spec["server"][0], "--yes", stdout=io.StringIO())
for rule in spec["rules"]:
    call_command("allowcommand", *rule, stdout=io.StringIO())
server = Server.objects.get(name=spec["server"][0])
print(json.dumps([out.getvalue().strip().splitlines()[-1], server.pk]))
"""
RULES = [
    ["t_echo", "echo {word}", "--param", "word=^[a-z]{1,10}$"],
    ["t_nap", "sleep {s}", "--param", r"s=^[0-9]{1,3}\.[0-9]{1,12}$", "--timeout", "120"],
]


def set_up(env: dict, daemon, key_file: Path, rules=RULES) -> tuple[str, int]:
    """What the README's walk-through does (migrate, a key, a pinned server, rules), in one
    process to keep the suite short; (raw key, server id)."""
    server = ["box", daemon.host, "--port", str(daemon.port), "--user", daemon.username,
              "--key-file", str(key_file)]  # fmt: skip
    spec = json.dumps({"server": server, "rules": rules})
    result = subprocess.run(
        [sys.executable, "-c", SET_UP, spec],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "homelab.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    key, server_id = json.loads(result.stdout.strip().splitlines()[-1])
    return key, server_id


# --- processes ------------------------------------------------------------------------------
@contextlib.contextmanager
def serving(env: dict, log: Path, count: int = 1) -> Iterator[list[Daphne]]:
    """`count` daphne workers on free loopback ports; stopped by PID at the end."""
    apps = [Daphne(env=env, log=log) for _ in range(count)]
    try:
        for app in apps:
            app.start()
        yield apps
    finally:
        for app in apps:
            app.stop()


class RedisServer:
    """A redis-server of our own on a free loopback port, no persistence; stopped by PID."""

    def __init__(self, log: Path) -> None:
        self.port, self.log, self.process = free_port(), log, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=out)
        assert wait_for(self.answers, timeout=10), self.log.read_text()
        return self

    def answers(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
        ):
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            terminate(self.process)


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A loopback port that accepts TCP connections (the kernel completes the handshake)
    and never answers: a PostgreSQL behind a dead link or a stuck server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def terminate_backends(database_url: str) -> int:
    """pg_terminate_backend every session of our own database but this one; how many."""
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url(), autocommit=True, connect_timeout=5) as admin:
        query = (
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()"
        )
        return admin.execute(query, (name,)).fetchone()[0]


def row_status(database_url: str, execution_id: int) -> str:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        query = "SELECT status FROM commands_execution WHERE id = %s"
        return conn.execute(query, (execution_id,)).fetchone()[0]


# --- 1. sshd killed mid-command (embedded profile: SQLite, no Redis) ------------------------
def test_sshd_killed_mid_command_is_ssh_connection_lost_and_the_next_call_recovers(
    sshd, client_key, tmp_path
):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SECRET_KEY": "faults-" + uuid.uuid4().hex,
        "DJANGO_DEBUG": "0",
    }
    key, server_id = set_up(env, sshd, client_key)
    marker = nap()
    try:
        with serving(env, tmp_path / "daphne.log") as (app,):
            assert execute(app, key, server_id, "echo warm", "t_echo")[0] == 200  # pooled
            waiting = in_background(execute, app, key, server_id, f"sleep {marker}", "t_nap")
            assert wait_for(lambda: processes_matching(marker), timeout=20)
            sshd.stop()  # the listener and the sessions serving our connection
            status, body = waiting.result(timeout=CLIENT_TIMEOUT)
            assert (status, body["code"]) == (500, "ssh_connection_lost"), body
            assert execution(app, key, body["execution_id"])["status"] == "error"

            sshd.start()  # back on the same port: the next call reconnects
            status, body = execute(app, key, server_id, "echo back", "t_echo")
            assert (status, body["stdout"]) == (200, "back\n"), body
            assert running_rows(app, key) == 0
    finally:
        signal_pids(processes_matching(marker), signal.SIGKILL)


# --- 2. the app's PostgreSQL connections terminated mid-command ------------------------------
def test_postgres_backends_terminated_mid_command_still_answer_the_result(
    profile_env,  # noqa: F811
    database,  # noqa: F811
    sshd,
    client_key,
    tmp_path,
):
    # Persistent connections (DATABASE_CONN_MAX_AGE): the worker's threads keep theirs
    # between requests, so the terminate below cuts connections the app will reuse.
    env = {**profile_env, "DATABASE_CONN_MAX_AGE": "60"}
    key, server_id = set_up(env, sshd, client_key)
    marker = f"2.{random.randint(10**8, 10**9)}"
    try:
        with serving(env, tmp_path / "daphne.log") as (app,):
            assert running_rows(app, key) == 0
            waiting = in_background(execute, app, key, server_id, f"sleep {marker}", "t_nap")
            assert wait_for(lambda: processes_matching(marker), timeout=20)
            # Every session of the app's database, mid-command. None is held while a
            # command runs (issue 10, defect 3), so the result cannot be lost to this.
            terminate_backends(database)
            status, body = waiting.result(timeout=CLIENT_TIMEOUT)
            assert (status, body["exit_code"]) == (200, 0), body
            assert row_status(database, body["execution_id"]) == "succeeded"

            # The finishing write left a persistent connection: cut it, and the next
            # requests, on the same worker, still succeed.
            assert terminate_backends(database) >= 1
            for word in ("again", "and", "again"):
                status, body = execute(app, key, server_id, f"echo {word}", "t_echo")
                assert (status, body["stdout"]) == (200, f"{word}\n"), body
            for _ in range(4):
                assert running_rows(app, key) == 0
    finally:
        signal_pids(processes_matching(marker), signal.SIGKILL)


# --- 3. Redis stopped and restarted, the workers left running --------------------------------
def test_redis_down_is_503_unavailable_and_the_same_workers_recover_when_it_is_back(
    profile_env,  # noqa: F811
    own_redis,
    sshd,
    client_key,
    tmp_path,
):
    env = {**profile_env, "REDIS_URL": own_redis.url}
    key, server_id = set_up(env, sshd, client_key)
    with serving(env, tmp_path / "daphne.log", count=2) as apps:
        for app in apps:
            assert execute(app, key, server_id, "echo up", "t_echo")[0] == 200

        own_redis.stop()
        for app in apps:
            status, body = execute(app, key, server_id, "echo down", "t_echo")
            assert (status, body["code"]) == (503, "unavailable"), body
            assert "Redis" in body["detail"]

        own_redis.start()  # same port, empty: the workers were not restarted
        for app in apps:
            status, body = execute(app, key, server_id, "echo back", "t_echo")
            assert (status, body["stdout"]) == (200, "back\n"), body
        assert running_rows(apps[0], key) == 0


# --- 4. a worker SIGKILLed mid-command ------------------------------------------------------
def test_a_worker_killed_mid_command_leaves_a_row_markinterrupted_closes(
    profile_env,  # noqa: F811
    database,  # noqa: F811
    sshd,
    client_key,
    tmp_path,
):
    timeout = 4
    short = ["t_short", "sleep {s}", "--param", r"s=^[0-9]{1,3}\.[0-9]{1,12}$",
             "--timeout", str(timeout)]  # fmt: skip
    key, server_id = set_up(profile_env, sshd, client_key, [short])
    marker = nap()
    try:
        with serving(profile_env, tmp_path / "daphne.log") as (doomed,):
            status, body = execute(doomed, key, server_id, f"sleep {marker}", "t_short", wait=False)
            assert status == 202, body
            started = body["execution_id"]
            assert wait_for(lambda: processes_matching(marker), timeout=20)
            doomed.process.send_signal(signal.SIGKILL)
            doomed.process.wait(timeout=10)
        assert row_status(database, started) == "running"  # nobody left to finish it
        # The remote command outlives the connection only until its server-side `timeout`
        # wrapper ends it: the rule's timeout (plus a 0.5 s margin and a 1 s KILL grace).
        assert wait_for(lambda: not processes_matching(marker), timeout=timeout + 10)

        # What a deploy (and `make run`) does before starting workers again.
        assert "Marked 1 execution(s)" in manage(profile_env, "markinterrupted")
        with serving(profile_env, tmp_path / "daphne.log") as (restarted,):
            row = execution(restarted, key, started)
            assert (row["status"], row["error_code"]) == ("interrupted", "interrupted"), row
            assert running_rows(restarted, key) == 0
    finally:
        signal_pids(processes_matching(marker), signal.SIGKILL)


# --- 5. PostgreSQL unreachable at request time ----------------------------------------------
@pytest.mark.parametrize("where", ["closed port", "silent listener"])
def test_postgres_unreachable_is_a_json_503_not_a_hang_or_a_page(
    where,
    profile_env,  # noqa: F811
    black_hole,
    tmp_path,
):
    port = free_port() if where == "closed port" else black_hole
    env = {**profile_env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{port}/homelab"}
    with serving(env, tmp_path / "daphne.log") as (app,):
        calls = [
            ("GET", f"{app.base}/api/v1/servers/", None),
            ("GET", f"{app.base}/api/v1/executions/", None),
            ("POST", f"{app.base}/api/v1/servers/1/commands/execute",
             {"command": "uptime", "action_type": "uptime"}),
        ]  # fmt: skip
        # A silent server costs each request the 5 s connect_timeout: one call shows it.
        for method, url, body in calls if where == "closed port" else calls[:1]:
            status, answer = request(method, url, "abcdefgh.not-a-real-key", body)
            assert (status, answer["code"]) == (503, "unavailable"), (url, answer)
            assert "database" in answer["detail"]
