"""What a key has left: X-RateLimit-Limit / -Remaining / -Reset on execute answers.

They are read in the same atomic step that counts the execution (the Redis Lua script,
or the process lock), against a real sshd, on the local path and on a real Redis. Refusals
that never reach SSH before the quota step (not whitelisted, a bad parameter, a disabled
server) use none of it and carry no headers; the headers are exposed to browser apps
through CORS, and the key's admin page shows the count.
"""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.cache.backends.redis import RedisCache
from django.urls import reverse
from rest_framework.test import APIClient

from commands import quota
from commands.exceptions import Throttled
from commands.models import ApiKey, Execution
from commands.quota import ExecuteRateThrottle
from commands.requests import Caller
from tests.services import redis_url

pytestmark = pytest.mark.django_db(transaction=True)  # the runner thread writes the rows
HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture(params=["local", "redis"])
def store(request, settings) -> str:
    """The quota's store: this process (locmem and a lock) or a real, shared Redis."""
    if request.param == "redis":
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": redis_url(),
                "KEY_PREFIX": f"homelab-headers-{uuid.uuid4().hex}",
            }
        }
    # The quota really counts where the test says it does.
    assert isinstance(ExecuteRateThrottle().backend(), RedisCache) == (request.param == "redis")
    return request.param


@pytest.fixture
def three_per_minute(monkeypatch):
    monkeypatch.setattr(ExecuteRateThrottle, "THROTTLE_RATES", {"command-execute": "3/min"})


@pytest.fixture
def server(sshd, make_server, make_rule):
    make_rule("t_echo", "echo {word}", word="^[a-z]{1,10}$")
    return make_server(sshd, name="box")


def post(client: APIClient, command: str = "echo hi", action_type: str = "t_echo", **extra):
    body = {"command": command, "action_type": action_type, **extra}
    return client.post("/api/v1/servers/box/commands/execute", body, format="json")


def left(response) -> tuple[int, int, int]:
    return tuple(int(response[name]) for name in HEADERS)


def test_each_execution_says_how_many_are_left_until_the_429(
    store, three_per_minute, server, api_client
):
    answers = [post(api_client) for _ in range(4)]

    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [left(r)[:2] for r in answers] == [(3, 2), (3, 1), (3, 0), (3, 0)]
    resets = [left(r)[2] for r in answers]
    assert all(1 <= reset <= 60 for reset in resets)
    # Out of quota, the next slot frees when Retry-After says: the same number.
    assert answers[3]["Retry-After"] == answers[3]["X-RateLimit-Reset"]


def test_a_started_execution_carries_them_beside_its_location(store, server, api_client):
    response = post(api_client, wait=False)

    assert response.status_code == 202 and response["Location"]
    assert left(response)[:2] == (10, 9)


def test_refusals_before_the_quota_step_use_none_of_it_and_carry_no_headers(
    store, three_per_minute, server, api_client, make_server, sshd_factory
):
    off = make_server(sshd_factory(), name="off", enabled=False)
    refusals = []
    for _ in range(3):  # more refusals than the whole quota
        refusals += [
            post(api_client, "reboot", "reboot_now"),  # not_whitelisted
            post(api_client, "echo HI", "t_echo"),  # invalid_parameter
            api_client.post(f"/api/v1/servers/{off.pk}/commands/execute",
                            {"command": "echo hi", "action_type": "t_echo"}, format="json"),
        ]  # fmt: skip

    first = post(api_client)

    assert {r.json()["code"] for r in refusals} == {
        "not_whitelisted",
        "invalid_parameter",
        "server_disabled",
    }
    assert all(r.status_code == 400 and "X-RateLimit-Remaining" not in r for r in refusals)
    assert all("execution_id" in r.json() for r in refusals)  # still audited, with the row
    assert Execution.objects.filter(status="rejected").count() == 9
    assert left(first)[:2] == (3, 2)  # nine refusals later, the quota is untouched


def test_a_set_up_failure_after_the_quota_step_uses_it_and_says_so(store, server, api_client):
    server.host_key = ""
    server.save()

    response = post(api_client)

    assert (response.status_code, response.json()["code"]) == (424, "host_key_unknown")
    assert left(response)[:2] == (10, 9)


def test_a_keys_own_rate_is_its_limit(store, server):
    _, raw = ApiKey.objects.create_key(name="own-rate", rate="5/hour")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)

    limit, remaining, reset = left(post(client))

    assert (limit, remaining) == (5, 4)
    assert 3500 < reset <= 3600  # the hour's window, not the setting's minute


def test_the_count_and_what_is_left_are_one_atomic_step(store):
    key, _ = ApiKey.objects.create_key(name="burst")
    caller = Caller(api_key=key)

    def one(_):
        try:
            return quota.take(caller).remaining
        except Throttled as exc:
            return ("throttled", exc.quota.remaining)

    with ThreadPoolExecutor(max_workers=25) as pool:
        results = list(pool.map(one, range(25)))

    allowed = sorted(r for r in results if isinstance(r, int))
    # Ten through, each told a different number left: no two read the same count.
    assert allowed == list(range(10))
    assert results.count(("throttled", 0)) == 15


def test_peeking_counts_nothing(store):
    key, _ = ApiKey.objects.create_key(name="peek")
    caller = Caller(api_key=key)

    untouched = quota.peek(caller)
    taken = quota.take(caller)
    after = quota.peek(caller)

    assert (untouched.remaining, untouched.reset) == (10, 0)
    assert (taken.remaining, after.remaining) == (9, 9)
    assert 0 < after.reset <= 60


def test_a_browser_app_on_an_allowed_origin_may_read_them(settings, server, api_client):
    settings.CORS_ALLOWED_ORIGINS = ["http://localhost:5173"]

    response = api_client.post(
        "/api/v1/servers/box/commands/execute",
        {"command": "echo hi", "action_type": "t_echo"},
        format="json",
        HTTP_ORIGIN="http://localhost:5173",
    )

    exposed = {h.strip() for h in response["Access-Control-Expose-Headers"].split(",")}
    assert set(HEADERS) | {"Retry-After", "Location"} <= exposed


def test_a_server_check_carries_them_too(server, api_client):
    response = api_client.post("/api/v1/servers/box/check")

    assert response.status_code == 200 and response.json()["ok"] is True
    assert left(response)[:2] == (10, 9)


def test_the_keys_admin_page_shows_what_it_has_left(
    store, server, api_key, api_client, admin_client
):
    post(api_client)
    post(api_client)

    page = admin_client.get(reverse("admin:commands_apikey_change", args=[api_key[0].pk]))

    assert page.status_code == 200
    text = page.content.decode()
    assert "Executions left" in text
    shown = re.search(r"8 of 10 left \(rate 10/min, HOMELAB_EXECUTE_RATE\); one more frees in "
                      r"(\d+) s", text)  # fmt: skip
    assert shown is not None and 1 <= int(shown[1]) <= 60
