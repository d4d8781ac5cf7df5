"""Pool limits: HOMELAB_SSH_MAX_CONNECTIONS and HOMELAB_DB_POOL_SIZE.

HOMELAB_SSH_MAX_CONNECTIONS is read once, bounded (1-64), and passed to the process-wide
executor; the SSH pool then never opens more connections than that to one server,
whatever the load, and the commands beyond its sessions queue instead of failing.
HOMELAB_DB_POOL_SIZE (PostgreSQL, off by default) pools database connections per worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from commands import services, ssh
from commands.exceptions import Busy
from tests.live import Daphne, call, set_up
from tests.services import postgres_url, redis_url
from tests.sshd import target_for, wait_for
from tests.test_production_profile import database  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def setting_in_a_fresh_process(value: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SECRET_KEY": "test-only-secret-key"}
    env.pop("HOMELAB_SSH_MAX_CONNECTIONS", None)
    if value is not None:
        env["HOMELAB_SSH_MAX_CONNECTIONS"] = value
    code = "import homelab.settings as s; print(s.HOMELAB_SSH_MAX_CONNECTIONS)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_the_setting_defaults_to_7_and_reads_a_number():
    assert (
        setting_in_a_fresh_process(None).stdout.strip() == "7"
    )  # 56 sessions: 50 at once in one wave
    assert setting_in_a_fresh_process("12").stdout.strip() == "12"


@pytest.mark.parametrize("value", ["0", "65", "many"])
def test_it_refuses_a_value_out_of_range_naming_the_variable(value):
    result = setting_in_a_fresh_process(value)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"HOMELAB_SSH_MAX_CONNECTIONS={value!r}" in result.stderr


def test_the_executor_refuses_fewer_than_one_connection():
    with pytest.raises(ValueError, match="max_connections_per_target"):
        ssh.SSHPooledExecutor(max_connections_per_target=0)


def test_the_class_default_stays_when_no_limit_is_given():
    assert ssh.SSHPooledExecutor().max_connections_per_target == 4
    assert ssh.SSHPooledExecutor(max_connections_per_target=9).max_connections_per_target == 9


def test_the_service_executor_takes_the_setting(settings):
    settings.HOMELAB_SSH_MAX_CONNECTIONS = 7
    assert services.executor().max_connections_per_target == 7


@pytest.mark.parametrize("limit", [2, 3])
def test_the_setting_bounds_connections_per_server_under_load(
    settings, sshd_factory, client_key, limit
):
    """limit x 8 sessions + 8 more commands at once on a real sshd: exactly `limit`
    connections are opened, every command succeeds, the last 8 having queued."""
    settings.HOMELAB_SSH_MAX_CONNECTIONS = limit
    daemon = sshd_factory()
    target = target_for(daemon, client_key)
    pool = services.executor()
    commands = limit * 8 + 8
    with ThreadPoolExecutor(max_workers=commands) as threads:
        results = list(
            threads.map(
                lambda _: pool.execute(target, ["sleep", "0.3"], timeout=30), range(commands)
            )
        )
    assert [result.exit_code for result in results] == [0] * commands
    assert daemon.accepted_connections() == limit


def test_a_command_that_finds_every_session_taken_is_busy_and_nothing_runs(
    sshd_factory, client_key, tmp_path
):
    """One connection of one session, the wait for it bounded by the connect timeout: the
    second command gets Busy (503 + Retry-After over HTTP), and never reaches the server."""
    daemon = sshd_factory()
    target = target_for(daemon, client_key)
    pool = ssh.SSHPooledExecutor(
        max_connections_per_target=1, max_channels_per_connection=1, connect_timeout=1
    )
    try:
        with ThreadPoolExecutor(max_workers=1) as threads:
            first = threads.submit(pool.execute, target, ["sleep", "3"], timeout=30)
            assert wait_for(lambda: daemon.session_pids(), timeout=10)
            with pytest.raises(Busy, match="stayed busy for 1 s"):
                pool.execute(target, ["touch", str(tmp_path / "ran")], timeout=30)
            assert first.result().exit_code == 0
        assert not (tmp_path / "ran").exists()
    finally:
        pool.close()


# --- HOMELAB_DB_POOL_SIZE: Django's PostgreSQL pool, opt-in ------------------------------
def pool_option(env: dict) -> str:
    code = (
        "import homelab.settings as s; print(s.DATABASES['default'].get('OPTIONS', {}).get('pool'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SECRET_KEY": "test-only-secret-key", **env},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_database_pool_is_off_unless_asked_for():
    postgres = {"DATABASE_URL": "postgres://homelab@127.0.0.1:5432/homelab"}
    assert pool_option({**postgres, "HOMELAB_DB_POOL_SIZE": ""}) == "None"
    pooled = pool_option({**postgres, "HOMELAB_DB_POOL_SIZE": "6"})
    assert "'max_size': 6" in pooled and "'min_size': 0" in pooled
    # SQLite has no pool: the variable changes nothing there.
    assert pool_option({"DATABASE_URL": "sqlite:////tmp/x.sqlite3", "HOMELAB_DB_POOL_SIZE": "6"})


def settings_error(env: dict) -> str:
    """What importing the settings with env says on stderr (it must fail)."""
    result = subprocess.run(
        [sys.executable, "-c", "import homelab.settings"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SECRET_KEY": "test-only-secret-key", **env},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    return result.stderr


def test_a_bad_pool_size_is_refused_on_any_database_naming_the_variable():
    for url in ("sqlite:////tmp/x.sqlite3", "postgres://homelab@127.0.0.1:5432/homelab"):
        said = settings_error({"DATABASE_URL": url, "HOMELAB_DB_POOL_SIZE": "abc"})
        assert "HOMELAB_DB_POOL_SIZE='abc'" in said


def test_the_pool_with_persistent_connections_is_refused_at_start_up_naming_both():
    said = settings_error(
        {
            "DATABASE_URL": "postgres://homelab@127.0.0.1:5432/homelab",
            "HOMELAB_DB_POOL_SIZE": "5",
            "DATABASE_CONN_MAX_AGE": "60",
        }
    )
    assert "HOMELAB_DB_POOL_SIZE" in said and "DATABASE_CONN_MAX_AGE" in said


def test_a_pooled_worker_replaces_cut_connections_and_holds_at_most_the_pool(
    database,  # noqa: F811
    client_key,
    sshd,
    tmp_path,
):
    """A real daphne with HOMELAB_DB_POOL_SIZE=2: after the database cut every pooled
    connection (a restart, a firewall), the next requests still answer 200; while a
    command runs the worker holds at most the pool's 2 connections."""
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "REDIS_URL": redis_url(),
        "DJANGO_SECRET_KEY": "pool-" + "x" * 40,
        "DJANGO_DEBUG": "0",
        "HOMELAB_DB_POOL_SIZE": "2",
    }
    key, server_id = set_up(env, sshd, client_key)
    name = database.rsplit("/", 1)[1]
    worker = Daphne(env=env, log=tmp_path / "daphne.log").start()
    url = f"{worker.base}/api/v1/servers/{server_id}/commands/execute"
    echo = {"command": "echo hi", "action_type": "t_echo"}
    try:
        for _ in range(2):
            status, _, body = call("POST", url, key, echo)
            assert (status, body.get("stdout")) == (200, "hi\n"), body
            assert backends(name, terminate=True) >= 1  # the pooled ones, cut
        answer = {}
        nap = {"command": "sleep 2.5", "action_type": "t_nap"}
        waiting = threading.Thread(target=lambda: answer.update(got=call("POST", url, key, nap)))
        waiting.start()
        counts = []
        while waiting.is_alive():
            counts.append(backends(name))
            time.sleep(0.1)
        waiting.join()
        assert answer["got"][0] == 200, answer
        assert max(counts) <= 2, counts
    finally:
        worker.stop()


def backends(name: str, *, terminate: bool = False) -> int:
    """Client connections to database `name` (cut them all with terminate)."""
    what = "pg_terminate_backend(pid)" if terminate else "pid"
    query = f"SELECT {what} FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    with psycopg.connect(postgres_url(), autocommit=True) as admin:
        return len(admin.execute(query, (name,)).fetchall())


# --- the throttle's Redis connections ------------------------------------------------------
def test_request_threads_share_one_redis_connection_for_the_quota(monkeypatch):
    """Django keeps a cache object per thread and ASGI serves each request on a new
    thread; the throttle still makes one Redis connection, not one per request (each was
    ~1.5 ms of a scale-out execute). The quota itself stays exact."""
    import redis
    from django.core.cache.backends.redis import RedisCache

    from commands import quota as throttling
    from commands.models import ApiKey

    class CountingPool(redis.ConnectionPool):
        created = 0

        def make_connection(self):
            CountingPool.created += 1
            return super().make_connection()

    monkeypatch.setattr(throttling, "_shared_clients", {})
    ident = f"shared-{os.getpid()}-{time.monotonic_ns()}"
    request = SimpleNamespace(auth=ApiKey(id=ident, prefix=ident, name="k"), user=None)
    view = SimpleNamespace(throttle_scope="command-execute")

    def one_request() -> bool:
        # What caches["default"] is in a new request thread: a new RedisCache object.
        cache = RedisCache(redis_url(), {"OPTIONS": {"pool_class": CountingPool}})
        throttle = throttling.ExecuteRateThrottle()
        throttle.cache = cache
        return throttle.allow_request(request, view)

    answers = []
    for _ in range(12):
        thread = threading.Thread(target=lambda: answers.append(one_request()))
        thread.start()
        thread.join()
    assert answers == [True] * 10 + [False] * 2
    assert CountingPool.created == 1
