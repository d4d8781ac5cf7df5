"""POST /api/v1/batches/ against real sshd daemons: targets, order, fan-out, the stop rule,
per-target refusals, whole refusals, scope, quota, cancel, and the audit trail."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from commands.models import ApiKey, Batch, Execution, Server, Tag, storable
from tests.sshd import processes_matching, wait_for

pytestmark = pytest.mark.django_db(transaction=True)  # the batch and runner threads write

STAMP = "sh -c 'date +%s.%N; sleep 0.6; date +%s.%N'"


@pytest.fixture
def rules(make_rule):
    make_rule("t_echo", "echo {word}", word="^[a-z0-9][a-z0-9-]{0,19}$")
    make_rule("t_stamp", STAMP)
    make_rule("t_nap", "sleep {s}", timeout=60, s=r"^[0-9]{1,4}\.[0-9]{1,12}$")
    make_rule("t_fail", "sh -c 'echo no >&2; exit 3'")


@pytest.fixture
def fleet(sshd, make_server, rules):
    """Four servers on one real sshd (each its own server row): c, a, d, b, tagged pi
    except d; b and a also web."""
    servers = {name: make_server(sshd, name=name) for name in ("c", "a", "d", "b")}
    pi, web = Tag.objects.create(name="pi"), Tag.objects.create(name="web")
    for name in ("a", "b", "c"):
        servers[name].tags.add(pi)
    for name in ("a", "b"):
        servers[name].tags.add(web)
    return servers


def run(client, **body):
    return client.post("/api/v1/batches/", {"command": "echo hi", "action_type": "t_echo", **body},
                       format="json")  # fmt: skip


def key_client(name: str, **fields) -> tuple[APIClient, ApiKey]:
    key, raw = ApiKey.objects.create_key(name=name, **fields)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client, key


def targets(body: dict) -> list[tuple[str, str]]:
    return [(result["server"], result["status"]) for result in body["results"]]


# --- tags -----------------------------------------------------------------------------------
def test_servers_show_their_tags_sorted_and_filter_by_every_tag_given(api_client, fleet):
    listed = api_client.get("/api/v1/servers/").json()["results"]
    assert {s["name"]: s["tags"] for s in listed} == {
        "a": ["pi", "web"], "b": ["pi", "web"], "c": ["pi"], "d": []
    }  # fmt: skip
    assert api_client.get("/api/v1/servers/a/").json()["tags"] == ["pi", "web"]

    def names(query: str) -> list[str]:
        listed = api_client.get(f"/api/v1/servers/?{query}").json()["results"]
        return [server["name"] for server in listed]

    assert names("tag=pi") == ["a", "b", "c"]
    assert names("tag=pi&tag=web") == ["a", "b"]
    assert names("tag=attic") == []
    refused = api_client.get("/api/v1/servers/?tag=Not%20A%20Tag")
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid")


# --- running ---------------------------------------------------------------------------------
def test_a_batch_on_a_tag_runs_on_every_tagged_server_in_name_order(api_client, fleet, api_key):
    response = run(api_client, tag="pi")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["command"], body["action_type"]) == ("succeeded", "echo hi",
                                                                       "t_echo")  # fmt: skip
    assert targets(body) == [("a", "succeeded"), ("b", "succeeded"), ("c", "succeeded")]
    assert body["counts"]["succeeded"] == 3 and body["counts"]["failed"] == 0
    for result in body["results"]:
        assert (result["exit_code"], result["stdout"], result["code"]) == (0, "hi\n", None)
        row = Execution.objects.get(pk=result["execution_id"])
        assert (row.batch_id, row.server_name, row.api_key) == (body["batch_id"], result["server"],
                                                                 api_key[0])  # fmt: skip
    # Every execution row links to the batch, over the API too.
    linked = api_client.get(f"/api/v1/executions/?batch={body['batch_id']}").json()["results"]
    assert sorted(row["server_name"] for row in linked) == ["a", "b", "c"]
    assert {row["batch"] for row in linked} == {body["batch_id"]}
    # The targets started in server-name order.
    started = Execution.objects.filter(batch_id=body["batch_id"]).order_by("created_at", "id")
    assert [row.server_name for row in started] == ["a", "b", "c"]


def test_servers_by_id_or_name_run_once_each(api_client, fleet):
    body = run(api_client, servers=["d", fleet["a"].pk, "a", str(fleet["d"].pk)]).json()
    assert targets(body) == [("a", "succeeded"), ("d", "succeeded")]
    assert Batch.objects.get(pk=body["batch_id"]).requested == ["d", str(fleet["a"].pk), "a",
                                                                 str(fleet["d"].pk)]  # fmt: skip


def intervals(body: dict) -> list[tuple[float, float]]:
    return [tuple(map(float, result["stdout"].split())) for result in body["results"]]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """How many of the servers' own (start, end) stamps overlap at the busiest moment."""
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def test_at_most_max_concurrency_targets_run_at_once(api_client, fleet):
    body = run(api_client, command=STAMP, action_type="t_stamp", tag="pi", max_concurrency=2).json()
    assert body["status"] == "succeeded" and body["max_concurrency"] == 2
    assert most_at_once(intervals(body)) == 2  # two at once, never three

    serial = run(api_client, command=STAMP, action_type="t_stamp", tag="pi", max_concurrency=1)
    assert most_at_once(intervals(serial.json())) == 1


def test_a_percentage_of_the_targets_is_rounded_up(api_client, fleet):
    body = run(api_client, servers=["a", "b", "c", "d"], max_concurrency="30%").json()
    assert body["max_concurrency"] == 2  # 30% of 4 is 1.2


def test_a_rolling_update_stops_at_the_first_failure_and_skips_the_rest(
    api_client, sshd_factory, make_server, rules
):
    healthy, dead, untouched = sshd_factory(), sshd_factory(), sshd_factory()
    make_server(healthy, name="a1")
    make_server(dead, name="b2")
    make_server(untouched, name="c3")
    dead.stop()

    body = run(api_client, servers=["c3", "b2", "a1"], max_concurrency=1, max_errors=0).json()

    assert body["status"] == "failed"
    assert targets(body) == [("a1", "succeeded"), ("b2", "error"), ("c3", "skipped")]
    by_name = {result["server"]: result for result in body["results"]}
    assert by_name["b2"]["code"] == "ssh_connect_failed"
    assert (by_name["c3"]["execution_id"], by_name["c3"]["code"]) == (None, "skipped")
    assert untouched.accepted_connections() == 0  # no SSH login on a skipped target
    assert body["counts"] == {**body["counts"], "succeeded": 1, "error": 1, "skipped": 1}


def test_the_batch_stops_only_once_errors_exceed_max_errors(api_client, fleet):
    # Three failing targets one at a time, max_errors 1: the second failure exceeds it.
    body = run(api_client, command="sh -c 'echo no >&2; exit 3'", action_type="t_fail",
               tag="pi", max_concurrency=1, max_errors=1).json()  # fmt: skip
    assert targets(body) == [("a", "failed"), ("b", "failed"), ("c", "skipped")]
    assert [r["exit_code"] for r in body["results"]] == [3, 3, None]


def test_each_target_is_whitelisted_and_checked_on_its_own(api_client, fleet, make_rule, sshd):
    make_rule("t_only_ab", "echo only", servers=[fleet["a"], fleet["b"]])
    Server.objects.filter(name="b").update(enabled=False)
    before = sshd.accepted_connections()

    body = run(api_client, command="echo only", action_type="t_only_ab", tag="pi").json()

    assert targets(body) == [("a", "succeeded"), ("b", "rejected"), ("c", "rejected")]
    by_name = {result["server"]: result for result in body["results"]}
    assert by_name["b"]["code"] == "server_disabled"
    assert by_name["c"]["code"] == "not_whitelisted"
    for name in ("b", "c"):  # audited, and never run
        row = Execution.objects.get(pk=by_name[name]["execution_id"])
        assert (row.status, row.argv, row.batch_id) == ("rejected", None, body["batch_id"])
    assert sshd.accepted_connections() - before == 1  # only a logged in


# --- refused as a whole ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"servers": ["a"], "tag": "pi"}, 400, "invalid"),
        ({}, 400, "invalid"),
        ({"servers": []}, 400, "invalid"),
        ({"tag": "pi", "max_concurrency": 0}, 400, "invalid"),
        ({"tag": "pi", "max_concurrency": "0%"}, 400, "invalid"),
        ({"tag": "pi", "max_concurrency": "101%"}, 400, "invalid"),
        ({"tag": "pi", "max_concurrency": True}, 400, "invalid"),
        ({"tag": "pi", "max_errors": -1}, 400, "invalid"),
        ({"tag": "pi", "max_errors": "half"}, 400, "invalid"),
        ({"tag": "attic"}, 400, "no_servers"),
        ({"servers": ["a", "nope"]}, 404, "server_not_found"),
        ({"tag": "pi", "command": "echo 'hi;reboot'"}, 400, "invalid_parameter"),
        ({"tag": "pi", "action_type": "t_none"}, 400, "not_whitelisted"),
    ],
)
def test_a_bad_batch_is_refused_whole_audited_and_runs_nothing(api_client, fleet, body, status,
                                                                code, sshd):  # fmt: skip
    before = sshd.accepted_connections()
    response = run(api_client, **body)

    assert (response.status_code, response.json()["code"]) == (status, code), response.json()
    assert not Batch.objects.exists()
    refused = Execution.objects.get()
    assert (refused.status, refused.error_code) == ("rejected", code)
    assert refused.server_name.startswith("batch")
    if code == "server_not_found":
        assert "'nope'" in response.json()["detail"]
    assert sshd.accepted_connections() == before


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"servers": ["a\ud800"]}, 404, "server_not_found"),  # no name holds one
        ({"servers": ["a", "b\x00"]}, 404, "server_not_found"),
        ({"tag": "pi", "command": "echo \udfff"}, 400, "invalid"),
        ({"tag": "p\ud800"}, 400, "invalid"),
    ],
)
def test_a_lone_surrogate_or_nul_in_a_batch_is_refused_in_json_and_audited(
    api_client, fleet, fields, status, code
):
    body = {"command": "echo hi", "action_type": "t_echo", **fields}
    response = api_client.post(
        "/api/v1/batches/", json.dumps(body, ensure_ascii=True), content_type="application/json"
    )

    assert (response.status_code, response.json()["code"]) == (status, code), response.content
    assert not Batch.objects.exists()
    refused = Execution.objects.get()
    assert (refused.status, refused.error_code) == ("rejected", code)
    assert refused.command == storable(body["command"])  # as sent, made safe to store


def test_more_targets_than_the_limit_are_too_many_servers(api_client, fleet, settings):
    settings.HOMELAB_BATCH_MAX_SERVERS = 2
    response = run(api_client, tag="pi")
    assert (response.status_code, response.json()["code"]) == (400, "too_many_servers")
    assert "HOMELAB_BATCH_MAX_SERVERS" in response.json()["detail"]


# --- scope ------------------------------------------------------------------------------------
def test_a_server_limited_key_resolves_a_tag_among_its_own_servers_only(fleet):
    client, key = key_client("pi-c", all_servers=False)
    key.servers.set([fleet["c"]])

    body = run(client, tag="pi").json()
    assert targets(body) == [("c", "succeeded")]

    outside = run(client, servers=["c", "b"])
    assert (outside.status_code, outside.json()["code"]) == (403, "key_scope")
    assert "'b'" not in outside.json()["detail"]
    missing = run(client, servers=["c", "ghost"])  # as for a server that exists elsewhere
    assert (missing.status_code, missing.json()["code"]) == (403, "key_scope")
    none_here = run(client, tag="web")  # a and b have it, outside its scope
    assert (none_here.status_code, none_here.json()["code"]) == (400, "no_servers")
    # It sees only its own batches.
    other, _ = key_client("other")
    run(other, servers=["d"])
    assert [b["batch_id"] for b in client.get("/api/v1/batches/").json()["results"]] == [
        body["batch_id"]
    ]


def test_a_read_only_key_and_a_user_without_the_permission_are_refused(fleet, django_user_model):
    client, _ = key_client("reader", read_only=True)
    refused = run(client, tag="pi")
    assert (refused.status_code, refused.json()["code"]) == (403, "key_scope")

    staff = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    session = APIClient()
    session.force_login(staff)
    denied = run(session, tag="pi")
    assert (denied.status_code, denied.json()["code"]) == (403, "permission_denied")
    staff.user_permissions.add(Permission.objects.get(codename="execute_command"))
    allowed = APIClient()
    allowed.force_login(django_user_model.objects.get(pk=staff.pk))
    assert run(allowed, tag="pi").json()["status"] == "succeeded"
    assert not Batch.objects.filter(api_key__read_only=True).exists()


# --- quota ------------------------------------------------------------------------------------
def test_every_target_counts_and_a_batch_takes_its_whole_count_or_nothing(fleet, sshd):
    client, _ = key_client("quota")
    assert run(client, tag="pi").status_code == 200  # 3 of the 10 a minute
    assert run(client, servers=["a", "b", "c", "d"]).status_code == 200  # 7
    before = sshd.accepted_connections()
    refused = run(client, servers=["a", "b", "c", "d"])  # 4 more do not fit

    assert (refused.status_code, refused.json()["code"]) == (429, "throttled")
    assert int(refused["Retry-After"]) >= 1
    assert Batch.objects.count() == 2 and sshd.accepted_connections() == before
    fits = run(client, tag="pi")  # 3 still fit: the refused four took none
    assert fits.status_code == 200


def test_a_batch_larger_than_the_whole_rate_is_batch_over_rate_until_the_key_has_more(
    sshd, make_server, rules
):
    for number in range(11):
        make_server(sshd, name=f"n{number:02}")
    names = [f"n{number:02}" for number in range(11)]
    client, key = key_client("small")

    refused = run(client, servers=names)

    assert (refused.status_code, refused.json()["code"]) == (400, "batch_over_rate")
    assert "Retry-After" not in refused
    assert "--rate" in refused.json()["detail"]
    key.rate = "100/min"
    key.save()
    assert run(client, servers=names).json()["counts"]["succeeded"] == 11


# --- wait: false, list, cancel ---------------------------------------------------------------
def test_wait_false_answers_202_with_location_and_the_batch_completes(api_client, fleet):
    response = run(api_client, tag="web", wait=False)

    assert response.status_code == 202
    body = response.json()
    assert (set(body), body["status"]) == ({"batch_id", "status"}, "running")
    assert response["Location"] == f"/api/v1/batches/{body['batch_id']}/"
    url = response["Location"]
    assert wait_for(lambda: api_client.get(url).json()["status"] != "running", timeout=20)
    assert targets(api_client.get(url).json()) == [("a", "succeeded"), ("b", "succeeded")]


def test_batches_are_listed_newest_first_and_filter_by_status(api_client, fleet, make_rule):
    first = run(api_client, servers=["a"]).json()["batch_id"]
    failing = run(api_client, command="sh -c 'echo no >&2; exit 3'", action_type="t_fail",
                  servers=["b"]).json()["batch_id"]  # fmt: skip
    listed = api_client.get("/api/v1/batches/").json()["results"]
    assert [b["batch_id"] for b in listed] == [failing, first]
    assert "results" not in listed[0]
    failed = api_client.get("/api/v1/batches/?status=failed").json()["results"]
    assert [b["batch_id"] for b in failed] == [failing]
    bad = api_client.get("/api/v1/batches/?status=nonsense")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid")


def test_a_cancel_stops_the_running_targets_and_cancels_the_rest(api_client, fleet, marker):
    started = run(api_client, command=f"sleep {marker}", action_type="t_nap", tag="pi",
                  max_concurrency=1, wait=False).json()  # fmt: skip
    assert wait_for(lambda: processes_matching(marker), timeout=20)

    response = api_client.post(f"/api/v1/batches/{started['batch_id']}/cancel")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "cancelled"
    assert targets(body) == [("a", "cancelled"), ("b", "cancelled"), ("c", "cancelled")]
    assert body["results"][0]["execution_id"] is not None  # a ran, and was stopped
    assert [r["execution_id"] for r in body["results"][1:]] == [None, None]
    assert wait_for(lambda: not processes_matching(marker), timeout=5)
    again = api_client.post(f"/api/v1/batches/{started['batch_id']}/cancel")
    assert (again.status_code, again.json()["code"]) == (409, "not_running")


def test_a_batch_waits_for_a_runner_slot_instead_of_failing_busy(api_client, fleet, settings):
    settings.HOMELAB_MAX_RUNNING = 1
    settings.HOMELAB_BUSY_WAIT_SECONDS = 0
    body = run(api_client, command=STAMP, action_type="t_stamp", tag="pi",
               max_concurrency=3).json()  # fmt: skip
    assert body["status"] == "succeeded"
    assert most_at_once(intervals(body)) == 1  # the one slot, in turn: none was `busy`


def test_a_session_must_confirm_a_batch_of_a_rule_that_changes_machines(fleet, admin_user,
                                                                        make_rule):  # fmt: skip
    touchy = make_rule("t_touchy", "printf touchy")
    touchy.confirm = True
    touchy.save()
    session = APIClient()
    session.force_login(admin_user)
    refused = run(session, command="printf touchy", action_type="t_touchy", tag="pi")
    assert (refused.status_code, refused.json()["code"]) == (400, "confirmation_required")
    assert "3 servers" in refused.json()["detail"] and not Batch.objects.exists()

    body = run(session, command="printf touchy", action_type="t_touchy", tag="pi",
               confirm=True).json()  # fmt: skip
    assert body["status"] == "succeeded"
    keyed, _ = key_client("script")  # an API key is not asked
    assert run(keyed, command="printf touchy", action_type="t_touchy", tag="pi").status_code == 200
