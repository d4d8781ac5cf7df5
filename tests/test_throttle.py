"""The per-key execution throttle is atomic: concurrent bursts never get past the rate."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from rest_framework.test import APIClient

from commands.models import ApiKey
from commands.quota import ExecuteRateThrottle
from tests.services import redis_url


def burst(throttle_class, key_id: str, count: int = 50) -> list[bool]:
    """`count` concurrent allow_request calls for one API key."""
    view = SimpleNamespace(throttle_scope="command-execute")
    request = SimpleNamespace(auth=ApiKey(id=key_id, prefix=key_id, name="k"), user=None)

    def one(_):
        return throttle_class().allow_request(request, view)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


class LocalThrottle(ExecuteRateThrottle):
    cache = LocMemCache("throttle-tests", {})


@pytest.fixture
def redis_throttle():
    cache = RedisCache(redis_url(), {"KEY_PREFIX": "homelab-tests"})

    class RedisThrottle(ExecuteRateThrottle):
        pass

    RedisThrottle.cache = cache
    yield RedisThrottle
    cache.close()


def test_a_local_burst_of_fifty_lets_exactly_ten_through():
    assert burst(LocalThrottle, "local-burst").count(True) == 10


def test_a_redis_burst_of_fifty_lets_exactly_ten_through(redis_throttle):
    results = burst(redis_throttle, f"redis-burst-{uuid.uuid4().hex}")
    assert results.count(True) == 10


def test_the_wait_is_a_positive_whole_number_of_seconds(redis_throttle):
    view = SimpleNamespace(throttle_scope="command-execute")
    ident = f"wait-{uuid.uuid4().hex}"
    request = SimpleNamespace(auth=ApiKey(id=ident, prefix=ident, name="k"), user=None)
    throttles = [redis_throttle() for _ in range(11)]
    allowed = [t.allow_request(request, view) for t in throttles]
    assert allowed == [True] * 10 + [False]
    wait = throttles[-1].wait()
    assert isinstance(wait, int) and 1 <= wait <= 60


def test_the_window_slides_rather_than_resetting(monkeypatch):
    clock = [1000.0]

    class Clocked(LocalThrottle):
        timer = staticmethod(lambda: clock[0])

    view = SimpleNamespace(throttle_scope="command-execute")
    request = SimpleNamespace(auth=ApiKey(id="slide", prefix="slide", name="k"), user=None)
    for second in range(10):  # ten requests spread over the first ten seconds
        clock[0] = 1000.0 + second
        assert Clocked().allow_request(request, view)
    clock[0] = 1059.5  # a fixed window would have reset at 1060: a sliding one has not
    throttle = Clocked()
    assert not throttle.allow_request(request, view)
    assert throttle.wait() == 1
    clock[0] = 1060.01  # the first request has left the window
    assert Clocked().allow_request(request, view)
    assert not Clocked().allow_request(request, view)


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_http_requests_with_one_key_give_ten_200s(sshd, make_server, make_rule):
    server = make_server(sshd)
    make_rule("t_echo", "echo {word}", word="^[a-z]{1,10}$")
    _, raw = ApiKey.objects.create_key(name="burst")

    def one(_):
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=raw)
        response = client.post(
            f"/api/v1/servers/{server.pk}/commands/execute",
            {"command": "echo hi", "action_type": "t_echo"},
            format="json",
        )
        return response.status_code, response.get("Retry-After")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 10 + [429] * 40
    assert all(int(retry) >= 1 for status, retry in results if status == 429)


def test_the_default_cache_proxy_is_seen_through_to_redis(settings):
    # DRF's throttles hold django.core.cache.cache, a proxy; with REDIS_URL set the
    # Redis path must still be taken, or each worker would count on its own.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url(),
        }
    }
    assert isinstance(ExecuteRateThrottle().backend(), RedisCache)


def test_an_unreachable_redis_fails_closed_with_503_unavailable():
    from commands.exceptions import ServiceUnavailable
    from tests.sshd import free_port

    class DownThrottle(ExecuteRateThrottle):
        cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", {})

    view = SimpleNamespace(throttle_scope="command-execute")
    request = SimpleNamespace(auth=ApiKey(id="down", prefix="down", name="k"), user=None)
    with pytest.raises(ServiceUnavailable) as caught:
        DownThrottle().allow_request(request, view)
    assert caught.value.status_code == 503
    assert "REDIS_URL" in caught.value.detail
