"""Issue 19 with several workers: two daphne processes sharing PostgreSQL, a Redis of our own
and PROMETHEUS_MULTIPROC_DIR. A scrape of either reports the whole service; /readyz says
503 while Redis is down and 200 once it is back; /healthz needs no database at all.
"""

from __future__ import annotations

import os
import signal
import uuid
from dataclasses import dataclass

import psycopg
import pytest

from tests.live import Daphne, call
from tests.observability import get_json, samples_of, set_up, value
from tests.services import postgres_url
from tests.sshd import SSHDaemon, free_port, public_key
from tests.test_faults import RedisServer


@dataclass
class Fleet:
    workers: list[Daphne]
    redis: RedisServer
    key: str
    server_id: int


@pytest.fixture(scope="module")
def database():
    admin_url = postgres_url()
    name = f"homelab_metrics_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {admin_url} is not answering ({exc}); see .ci/run.")
    admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, client_key, database):
    """Two workers on one host, one metrics directory, a pinned sshd; stopped by PID."""
    work = tmp_path_factory.mktemp("metrics-workers")
    daemon = SSHDaemon(workdir=work / "sshd", authorized_keys=[public_key(client_key)]).start()
    redis = RedisServer(work / "redis.log").start()
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "REDIS_URL": redis.url,
        "DJANGO_SECRET_KEY": "metrics-" + uuid.uuid4().hex,
        "DJANGO_DEBUG": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
    }
    workers: list[Daphne] = []
    try:
        keys, server_id = set_up(env, daemon, client_key, {"fleet": {"rate": "100/min"}})
        for n in range(2):
            workers.append(Daphne(env=env, log=work / f"daphne-{n}.log").start())
        yield Fleet(workers, redis, keys["fleet"], server_id)
    finally:
        for worker in workers:
            worker.stop()
        redis.stop()
        daemon.stop()


def execute(worker: Daphne, fleet: Fleet, command: str, action: str) -> dict:
    url = f"{worker.base}/api/v1/servers/{fleet.server_id}/commands/execute"
    status, _, body = call("POST", url, fleet.key, {"command": command, "action_type": action})
    assert status == 200, body
    return body


def test_readyz_is_503_naming_redis_while_it_is_stopped_and_200_once_it_is_back(fleet):
    for worker in fleet.workers:
        status, body = get_json(f"{worker.base}/readyz")
        assert (status, body["status"]) == (200, "ok"), body
        assert set(body["checks"]) == {"database", "cache", "channel_layer"}

    fleet.redis.stop()
    try:
        for worker in fleet.workers:
            status, body = get_json(f"{worker.base}/readyz")
            assert (status, body["status"], body["code"]) == (503, "fail", "unavailable"), body
            checks = body["checks"]
            assert checks["database"]["status"] == "ok"
            assert checks["cache"]["status"] == checks["channel_layer"]["status"] == "fail"
            assert "cache" in body["detail"] and "channel_layer" in body["detail"]
            text = str(body)
            assert "redis://" not in text and "Traceback" not in text, body
            # Liveness does not depend on Redis: the process still serves.
            assert get_json(f"{worker.base}/healthz") == (200, {"status": "ok"})
    finally:
        fleet.redis.start()  # same port, empty; the workers were not restarted

    for worker in fleet.workers:
        status, body = get_json(f"{worker.base}/readyz")
        assert (status, body["status"]) == (200, "ok"), body


def test_a_scrape_of_either_worker_reports_the_whole_services_counters(fleet):
    a, b = fleet.workers
    before = [samples_of(worker.base, fleet.key) for worker in (a, b)]
    for word in ("one", "two", "three"):
        execute(a, fleet, f"echo {word}", "t_echo")
    for word in ("four", "five"):
        execute(b, fleet, f"echo {word}", "t_echo")
    assert execute(b, fleet, "sh -c 'echo oops >&2; exit 3'", "t_fail")["exit_code"] == 3

    echo = {"server": "box", "action_type": "t_echo"}
    for worker, earlier in zip((a, b), before, strict=True):
        now = samples_of(worker.base, fleet.key)

        def moved(name: str, now=now, earlier=earlier, **labels: str) -> float:
            return value(now, name, **labels) - value(earlier, name, **labels)

        # Worker A ran three, B three: each scrape shows all six, not its own share.
        assert moved("homelab_executions_total", **echo, status="succeeded") == 5
        assert moved("homelab_executions_total", server="box", action_type="t_fail",
                     status="failed") == 1  # fmt: skip
        assert moved("homelab_execution_duration_seconds_count", **echo) == 5
        assert value(now, "homelab_executions_running") == 0
        # Each worker pools its own connection to box: the gauge adds them up.
        assert value(now, "homelab_ssh_connections", server="box") == 2
        assert value(now, "homelab_build_info", version="0.1.0") == 1

    # B killed outright: its open connections are gone from the gauge, its counts stay.
    b.process.send_signal(signal.SIGKILL)
    b.process.wait(timeout=10)
    now = samples_of(a.base, fleet.key)
    assert value(now, "homelab_ssh_connections", server="box") == 1
    assert (
        value(now, "homelab_executions_total", **echo, status="succeeded")
        - value(before[0], "homelab_executions_total", **echo, status="succeeded")
        == 5
    )


def test_healthz_needs_no_database_and_readyz_names_it_when_it_is_down(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")
    }
    env |= {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/homelab",  # nobody there
        "DJANGO_SECRET_KEY": "metrics-" + uuid.uuid4().hex,
        "DJANGO_DEBUG": "0",
    }
    app = Daphne(env=env, log=tmp_path / "daphne.log")
    try:
        app.start()  # waits for /api/schema/, which needs no database either
        assert get_json(f"{app.base}/healthz") == (200, {"status": "ok"})
        status, body = get_json(f"{app.base}/readyz")
        assert (status, body["code"], list(body["checks"])) == (503, "unavailable", ["database"])
        assert body["checks"]["database"]["status"] == "fail"
        assert body["checks"]["database"]["error"] == "OperationalError", body
        assert "database" in body["detail"]
        assert "postgres://" not in str(body)
    finally:
        app.stop()
