"""The audit trail names servers as URLs do, and the admin's list reads like a log.

?server= takes an id or a name (the schema says so, and a value it refuses is a 400); the
schema spells actions without the trailing slash, as the docs do, and both forms answer;
the admin's executions list shows the command, the duration, the exit code and why a row
did not succeed, searches the command and the server, and labels fields for people.
"""

from __future__ import annotations

import re

import pytest
import yaml
from django.urls import reverse

from commands.admin.executions import duration_text
from commands.models import Execution, Server

pytestmark = pytest.mark.django_db


@pytest.fixture
def trail() -> dict:
    nas = Server.objects.create(name="nas", hostname="192.0.2.1")
    pi = Server.objects.create(name="pi", hostname="192.0.2.2")
    rows = {
        "ran": Execution.objects.create(
            server=nas, server_name="nas", action_type="disk_usage", command="df -h",
            status="succeeded", exit_code=0, duration_ms=412,
        ),
        "failed": Execution.objects.create(
            server=pi, server_name="pi", action_type="service_status",
            command="systemctl status --no-pager nginx", status="failed", exit_code=3,
            duration_ms=3250,
        ),
        "refused": Execution.objects.create(
            server=nas, server_name="nas", action_type="reboot_now", command="reboot",
            status="rejected", error_code="not_whitelisted",
            error_detail="No enabled rule named 'reboot_now' is usable on server 'nas'. "
            "Action types usable there: disk_usage, memory, uptime, service_status, "
            "service_logs (GET /api/v1/servers/1/commands/ shows their templates).",
        ),
    }  # fmt: skip
    return {"nas": nas, "pi": pi, **rows}


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return sorted(row["id"] for row in response.json()["results"])


# --- ?server= by id or name ------------------------------------------------------------------
def test_the_server_filter_takes_a_name_or_an_id(api_client, trail):
    nas_rows = sorted([trail["ran"].pk, trail["refused"].pk])

    assert ids(api_client.get("/api/v1/executions/?server=nas")) == nas_rows
    assert ids(api_client.get(f"/api/v1/executions/?server={trail['nas'].pk}")) == nas_rows
    assert ids(api_client.get("/api/v1/executions/?server=pi")) == [trail["failed"].pk]


@pytest.mark.parametrize("value", ["nope", "424242", "007", "9223372036854775807"])
def test_an_id_or_name_no_server_has_matches_no_rows(api_client, trail, value, schema):
    assert ids(api_client.get("/api/v1/executions/", {"server": value})) == []
    assert schema_takes(schema, value)


@pytest.mark.parametrize("value", ["my nas", "nas/", " nas", "x" * 65, "nas\n", "né", "0", "00"])
def test_a_value_that_cannot_name_a_server_is_a_400_as_the_schema_says(
    api_client, trail, value, schema
):
    response = api_client.get("/api/v1/executions/", {"server": value})

    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    assert list(response.json()["errors"]) == ["server"]
    assert not schema_takes(schema, value)


def test_an_id_past_the_largest_is_a_400_as_the_schema_describes(api_client, trail, schema):
    response = api_client.get("/api/v1/executions/", {"server": "9223372036854775808"})

    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    assert "from 1 to 9223372036854775807" in server_parameter(schema)["description"]


def test_the_schema_says_the_server_filter_takes_an_id_or_a_name(schema):
    parameter = server_parameter(schema)

    assert parameter["schema"]["type"] == "string"
    assert "its id or its name" in parameter["description"]
    assert all(schema_takes(schema, value) for value in ("nas", "3", "rack-2_b", "x" * 64))


def schema_takes(schema: dict, value: str) -> bool:
    """Whether the schema's parameter accepts value (ECMA's $ never matches before a \n)."""
    rules = server_parameter(schema)["schema"]
    pattern = rules["pattern"].removeprefix("^").removesuffix("$")
    fits = rules["minLength"] <= len(value) <= rules["maxLength"]
    return fits and re.fullmatch(pattern, value) is not None


@pytest.fixture
def schema(client) -> dict:
    return yaml.safe_load(client.get("/api/schema/").content)


def server_parameter(schema: dict) -> dict:
    parameters = schema["paths"]["/api/v1/executions/"]["get"]["parameters"]
    return next(p for p in parameters if p["name"] == "server")


# --- one spelling of paths -------------------------------------------------------------------
def test_the_schema_spells_actions_without_the_slash_and_objects_with_it(schema):
    assert sorted(schema["paths"]) == [
        "/api/v1/batches/",
        "/api/v1/batches/{id}/",
        "/api/v1/batches/{id}/cancel",
        "/api/v1/batches/{id}/stream-ticket",
        "/api/v1/executions/",
        "/api/v1/executions/{id}/",
        "/api/v1/executions/{id}/cancel",
        "/api/v1/executions/{id}/stream-ticket",
        "/api/v1/servers/",
        "/api/v1/servers/{id}/",
        "/api/v1/servers/{id}/check",
        "/api/v1/servers/{id}/commands/",
        "/api/v1/servers/{id}/commands/execute",
    ]


@pytest.mark.parametrize("slash", ["", "/"])
def test_both_spellings_of_an_action_answer(api_client, trail, slash):
    ticket = api_client.post(f"/api/v1/executions/{trail['ran'].pk}/stream-ticket{slash}")
    check = api_client.post(f"/api/v1/servers/nope/check{slash}")

    assert ticket.status_code == 201 and ticket.json()["ticket"]
    assert (check.status_code, check.json()["code"]) == (404, "server_not_found")


# --- the admin's executions list -------------------------------------------------------------
def changelist(admin_client, **query) -> str:
    response = admin_client.get(reverse("admin:commands_execution_changelist"), query)
    assert response.status_code == 200
    return response.content.decode()


def column_titles(html: str) -> list[str]:
    header = html.split("<thead>", 1)[1].split("</thead>", 1)[0]
    cells = re.findall(r"<th.*?</th>", header, re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells]


def test_the_list_shows_command_duration_exit_code_and_the_reason(admin_client, trail):
    html = changelist(admin_client)

    assert column_titles(html) == [
        "Started", "Server name", "Action type", "Command", "Status", "Exit code",
        "Duration", "Reason", "Who",
    ]  # fmt: skip
    assert "df -h" in html and "412 ms" in html and "3.2 s" in html
    # A refusal says why: its code and the start of its detail, not the whole of it.
    assert "not_whitelisted: No enabled rule named &#x27;reboot_now&#x27; is usable" in html
    assert "shows their templates" not in html


def test_the_search_finds_rows_by_command_and_by_server(admin_client, trail):
    by_command = changelist(admin_client, q="systemctl")
    by_server = changelist(admin_client, q="nas")

    assert "systemctl status" in by_command and "df -h" not in by_command
    assert "df -h" in by_server and "reboot" in by_server and "systemctl" not in by_server


def test_an_audit_row_is_labelled_for_people(admin_client, trail):
    page = admin_client.get(reverse("admin:commands_execution_change", args=[trail["ran"].pk]))
    html = page.content.decode()
    labels = re.findall(r"<label>([^<]+):</label>", html)

    assert {"API key", "API key name", "Client IP", "Duration (ms)", "Argv sent"} <= set(labels)
    assert not {"Api key", "Client ip"} & set(labels)


@pytest.mark.parametrize(
    ("milliseconds", "shown"),
    [(None, ""), (7, "7 ms"), (999, "999 ms"), (3250, "3.2 s"), (725_000, "12 min 5 s")],
)
def test_a_duration_reads_as_a_person_would_say_it(milliseconds, shown):
    assert duration_text(milliseconds) == shown


# --- the admin's server form suggests a slug -------------------------------------------------
def test_the_admin_refuses_a_name_with_spaces_and_suggests_a_slug(admin_client):
    response = admin_client.post(
        reverse("admin:commands_server_add"),
        {"name": "My NAS", "hostname": "192.0.2.9", "port": 22, "username": "root",
         "enabled": "on"},
    )  # fmt: skip

    assert response.status_code == 200  # the form again, with the error
    assert "e.g. my-nas" in response.content.decode()
    assert not Server.objects.filter(hostname="192.0.2.9").exists()
