"""Where the tests find PostgreSQL and Redis (`make test` starts both on loopback).

Tests that need them fail with the fix when they are down; they never skip.
"""

import os

import pytest


def postgres_url() -> str:
    return os.environ.get(
        "HOMELAB_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
    )


def redis_url() -> str:
    url = os.environ.get("HOMELAB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis at {url} is not answering ({exc}); start it "
            "(`make test` does: scripts/ensure-services)."
        )
    return url
