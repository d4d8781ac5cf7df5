"""The scale-out profile end to end: two ASGI worker processes sharing PostgreSQL and Redis.

Everything goes through the public interface: management commands set the service up,
real daphne workers serve it, a real sshd runs the commands. The throttle must hold
across both workers: 50 concurrent requests with one key -> exactly 10 succeed.
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.live import Daphne, call, manage
from tests.services import postgres_url, redis_url


@pytest.fixture
def database():
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    admin_url = postgres_url()
    name = f"homelab_e2e_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {admin_url} is not answering ({exc}); see .ci/run.")
    admin.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def profile_env(database, client_key, tmp_path):
    return {
        **os.environ,
        "DATABASE_URL": database,
        "REDIS_URL": redis_url(),
        "DJANGO_SECRET_KEY": "e2e-" + uuid.uuid4().hex,
        "DJANGO_DEBUG": "0",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
    }


@pytest.fixture
def workers(profile_env, tmp_path):
    """Two daphne processes serving the app on free loopback ports; stopped by PID."""
    servers = [Daphne(env=profile_env, log=tmp_path / f"daphne-{n}.log") for n in range(2)]
    try:
        for server in servers:
            server.start()
        yield [server.port for server in servers]
    finally:
        for server in servers:
            server.stop()


def execute(port: int, key: str, server_id: int, command: str, action: str):
    url = f"http://127.0.0.1:{port}/api/v1/servers/{server_id}/commands/execute"
    return call("POST", url, key, {"command": command, "action_type": action})


def test_two_workers_share_the_database_and_one_atomic_quota(profile_env, database, sshd, workers):
    manage(profile_env, "migrate", "--noinput")
    key = manage(profile_env, "createapikey", "e2e").strip().splitlines()[-1]
    manage(
        profile_env,
        "addserver",
        "box",
        sshd.host,
        "--port",
        str(sshd.port),
        "--user",
        sshd.username,
    )
    manage(profile_env, "trusthost", "box", "--yes")
    manage(profile_env, "allowcommand", "t_echo", "echo {word}", "--param", "word=^[a-z]{1,10}$")
    with psycopg.connect(database) as conn:
        server_id = conn.execute("SELECT id FROM commands_server WHERE name = 'box'").fetchone()[0]

    def one(n: int):
        return execute(workers[n % 2], key, server_id, "echo hi", "t_echo")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))

    statuses = sorted(status for status, _, _ in results)
    unexpected = [(status, body) for status, _, body in results if status not in (200, 429)]
    assert statuses == [200] * 10 + [429] * 40, unexpected
    for status, headers, body in results:
        if status == 200:
            assert body["stdout"] == "hi\n" and body["exit_code"] == 0
        else:
            assert body["code"] == "throttled"
            assert int(headers["Retry-After"]) >= 1
    with psycopg.connect(database) as conn:
        query = "SELECT status, count(*), sum(count) FROM commands_execution GROUP BY status"
        counts = {status: (rows, total) for status, rows, total in conn.execute(query)}
    # Every refusal is counted, on one row for the key's window, though they raced in
    # through two workers at once.
    assert counts == {"succeeded": (10, 10), "rejected": (1, 40)}
