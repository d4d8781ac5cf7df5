"""GET /api/v1/executions/: the audit trail, newest first, filterable, read-only."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from commands.models import Execution, Server

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows():
    nas = Server.objects.create(name="nas", hostname="192.0.2.1")
    pi = Server.objects.create(name="pi", hostname="192.0.2.2")

    def row(server, action, status, **extra):
        return Execution.objects.create(
            server=server,
            server_name=server.name,
            action_type=action,
            command=action,
            status=status,
            **extra,
        )

    made = [
        row(nas, "uptime", "succeeded"),
        row(pi, "uptime", "failed", exit_code=1),
        row(nas, "disk_usage", "rejected", error_code="not_whitelisted"),
    ]
    Execution.objects.filter(pk=made[0].pk).update(created_at=timezone.now() - timedelta(days=2))
    return {"nas": nas, "pi": pi, "rows": made}


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


def test_it_lists_newest_first(api_client, rows):
    made = rows["rows"]
    assert ids(api_client.get("/api/v1/executions/")) == [made[2].pk, made[1].pk, made[0].pk]


def test_it_filters_by_server_action_status_and_since(api_client, rows):
    made = rows["rows"]
    assert ids(api_client.get(f"/api/v1/executions/?server={rows['pi'].pk}")) == [made[1].pk]
    assert ids(api_client.get("/api/v1/executions/?action_type=disk_usage")) == [made[2].pk]
    assert ids(api_client.get("/api/v1/executions/?status=failed")) == [made[1].pk]
    since = (timezone.now() - timedelta(days=1)).isoformat()
    response = api_client.get("/api/v1/executions/", {"since": since})
    assert ids(response) == [made[2].pk, made[1].pk]


@pytest.mark.parametrize("query", ["server=my%20nas", "status=exploded", "since=yesterday"])
def test_a_bad_filter_is_a_400_invalid(api_client, rows, query):
    response = api_client.get(f"/api/v1/executions/?{query}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_history_survives_deleting_the_server(api_client, rows):
    rows["nas"].delete()
    detail = api_client.get(f"/api/v1/executions/{rows['rows'][0].pk}/").json()
    assert (detail["server"], detail["server_name"]) == (None, "nas")


def test_the_trail_cannot_be_written_through_the_api(api_client, rows):
    assert api_client.post("/api/v1/executions/", {}).status_code == 405
    assert api_client.delete(f"/api/v1/executions/{rows['rows'][0].pk}/").status_code == 405


def test_an_unknown_execution_is_a_404_with_a_code(api_client):
    response = api_client.get("/api/v1/executions/424242/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_markinterrupted_closes_rows_a_crashed_process_left_running(rows):
    stuck = Execution.objects.create(
        server=rows["nas"], server_name="nas", action_type="uptime", command="uptime"
    )
    call_command("markinterrupted", stdout=StringIO())
    stuck.refresh_from_db()
    assert (stuck.status, stuck.error_code) == ("interrupted", "interrupted")
    assert stuck.finished_at is not None
    assert Execution.objects.get(pk=rows["rows"][0].pk).status == "succeeded"


def test_markinterrupted_older_than_spares_rows_a_live_worker_is_running(rows):
    recent = Execution.objects.create(
        server=rows["nas"], server_name="nas", action_type="uptime", command="uptime"
    )
    call_command("markinterrupted", "--older-than", "3700", stdout=StringIO())
    recent.refresh_from_db()
    assert recent.status == "running"
    Execution.objects.filter(pk=recent.pk).update(
        created_at=timezone.now() - timedelta(seconds=3701)
    )
    call_command("markinterrupted", "--older-than", "3700", stdout=StringIO())
    recent.refresh_from_db()
    assert recent.status == "interrupted"
