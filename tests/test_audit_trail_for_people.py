"""The audit trail names servers as URLs do.

?server= takes an id or a name (the schema says so, and a value it refuses is a 400); the
schema spells actions without the trailing slash, as the docs do, and both forms answer.
"""

from __future__ import annotations

import re

import pytest
import yaml

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
