"""Input the database or the parser cannot take is a 4xx saying so, never a 500.

Query parameters are validated (django-filter), ?limit is capped, a NUL anywhere is a 400,
a body too large is a 413 and one nested too deep a 400, each refusal audited with a
finished_at no earlier than its created_at. The PostgreSQL cases go through two real
daphne workers; weak host keys are refused when pinning, against a real sshd.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from datetime import timedelta

import psycopg
import pytest
import yaml
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from commands.models import Execution, Server
from tests.live import set_up
from tests.test_production_profile import database, profile_env, workers  # noqa: F401

HUGE = "9223372036854775808"  # 2**63: one more than either database's largest integer
DEEP = "[" * 1000 + "]" * 1000
FORM = "application/x-www-form-urlencoded"
BIG = json.dumps({"command": "echo " + "a" * 2_700_000, "action_type": "t_echo"})


def execute_url(server) -> str:
    return f"/api/v1/servers/{server.pk}/commands/execute"


def post(client: APIClient, url: str, body: str, content_type="application/json"):
    return client.generic("POST", url, body, content_type=content_type)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == code, body
    return body


# --- filters and ?limit (SQLite) --------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, field",
    [
        ("since=2024-13-01T00:00", "since"),
        ("server=99999999999999999999999", "server"),
        (f"server={HUGE}", "server"),
        ("server=0", "server"),
        ("status=exploded", "status"),
    ],
)
def test_a_filter_value_the_database_cannot_take_is_a_400_naming_it(api_client, query, field):
    body = assert_error(api_client.get(f"/api/v1/executions/?{query}"), 400, "invalid")
    assert list(body["errors"]) == [field]


@pytest.mark.django_db
def test_the_filters_still_select_rows(api_client):
    nas = Server.objects.create(name="nas", hostname="192.0.2.1")
    old = Execution.objects.create(server=nas, server_name="nas", action_type="uptime")
    Execution.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    new = Execution.objects.create(server=nas, server_name="nas", action_type="memory")
    since = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")  # naive: UTC
    response = api_client.get(f"/api/v1/executions/?server={nas.pk}&since={since}")
    assert [row["id"] for row in response.json()["results"]] == [new.pk]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["servers/", "executions/"])
def test_limit_is_capped_at_200_and_a_huge_limit_is_not_a_500(api_client, path):
    nas = Server.objects.create(name="nas", hostname="192.0.2.1")
    Execution.objects.bulk_create(
        Execution(server=nas, server_name="nas", action_type="uptime", status="succeeded")
        for _ in range(201)
    )
    for n in range(201):
        Server.objects.create(name=f"s{n}", hostname="192.0.2.9")
    for limit in ("1000", HUGE):
        response = api_client.get(f"/api/v1/{path}?limit={limit}")
        assert response.status_code == 200, response.content
        assert len(response.json()["results"]) == 200


# --- NUL, size and depth (SQLite) -------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/executions/?action_type=%00",
        "/api/v1/executions/?%00=1",
        "/api/v1/servers/%00/",
        "/api/v1/servers/%00/commands/",
        "/api/v1/executions/%00/",
    ],
)
def test_a_nul_in_the_path_or_query_is_a_400_invalid(api_client, url):
    assert_error(api_client.get(url), 400, "invalid")


@pytest.mark.django_db
def test_a_body_too_large_or_too_deep_is_refused_and_audited(api_client, make_server, sshd):
    server = make_server(sshd)
    assert_error(post(api_client, execute_url(server), BIG), 413, "too_large")
    assert_error(post(api_client, execute_url(server), DEEP), 400, "invalid")
    deep_field = '{"command": ' + DEEP + ', "action_type": "uptime"}'
    assert_error(post(api_client, execute_url(server), deep_field), 400, "invalid")
    rows = Execution.objects.order_by("id")
    assert [row.error_code for row in rows] == ["too_large", "invalid", "invalid"]
    assert {row.status for row in rows} == {"rejected"}


@pytest.mark.django_db
def test_a_refused_row_finishes_no_earlier_than_it_was_created(api_client, make_server, sshd):
    server = make_server(sshd)
    for _ in range(5):
        body = json.dumps({"command": "reboot", "action_type": "no_such_rule"})
        assert_error(post(api_client, execute_url(server), body), 400, "not_whitelisted")
    body = json.dumps({"command": "echo \u0000", "action_type": "t_\u0000"})
    assert_error(post(api_client, execute_url(server), body), 400, "invalid")
    rows = list(Execution.objects.all())
    assert len(rows) == 6
    assert all(row.finished_at >= row.created_at for row in rows)


# --- the schema -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schema():
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


@pytest.mark.django_db
def test_the_schema_documents_the_filters_from_django_filter(schema):
    parameters = {p["name"]: p for p in schema["paths"]["/api/v1/executions/"]["get"]["parameters"]}
    assert {"server", "action_type", "status", "since", "limit", "offset"} <= set(parameters)
    assert parameters["since"]["schema"] == {"type": "string", "format": "date-time"}
    # An id or a name, as URLs take them (tests/test_audit_trail_for_people.py).
    assert parameters["server"]["schema"]["type"] == "string"


@pytest.mark.django_db
def test_every_get_documents_400_401_404_and_every_operation_a_500_error_body(schema):
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if method == "get":
                assert {"400", "401", "404"} <= set(responses), path
            five = responses["500"]["content"]["application/json"]["schema"]
            assert five == error or error in five["anyOf"], (path, method)


@pytest.mark.django_db
def test_the_example_command_is_harmless(schema):
    operation = schema["paths"]["/api/v1/servers/{id}/commands/execute"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert [e["value"] for e in examples.values()] == [
        {"command": "uptime", "action_type": "uptime"}
    ]
    component = schema["components"]["schemas"]["ExecuteRequest"]
    assert "restart" not in json.dumps(component)


# --- weak host keys (real sshd) ---------------------------------------------------------
def rsa_daemon_key(tmp_path, bits: int) -> str:
    """A new RSA host key of `bits` bits: its public half as 'TYPE BASE64 comment'."""
    key = tmp_path / f"ssh_host_rsa_{bits}_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", str(bits), "-N", "", "-f", str(key)],
        check=True,
        timeout=60,
    )
    return key.with_name(key.name + ".pub").read_text()


def rsa_daemon(sshd_factory, tmp_path, bits: int):
    rsa_daemon_key(tmp_path, bits)
    key = tmp_path / f"ssh_host_rsa_{bits}_key"
    # Offer only the RSA key, so the handshake presents it rather than the ed25519 one.
    return sshd_factory(
        extra_config=[f"HostKey {key}", "HostKeyAlgorithms rsa-sha2-512,rsa-sha2-256"]
    )


@pytest.mark.django_db
def test_trusthost_refuses_a_1024_bit_rsa_host_key_and_pins_nothing(
    sshd_factory, make_server, tmp_path
):
    daemon = rsa_daemon(sshd_factory, tmp_path, 1024)
    server = make_server(daemon, host_key="")
    with pytest.raises(CommandError, match="1024-bit RSA key, under the 2048 bits"):
        call_command("trusthost", server.name, "--yes")
    server.refresh_from_db()
    assert server.host_key == ""
    weak = (tmp_path / "ssh_host_rsa_1024_key.pub").read_text()
    with pytest.raises(CommandError, match="too weak"):
        call_command("trusthost", server.name, "--yes", "--host-key", weak)
    server.refresh_from_db()
    assert server.host_key == ""


@pytest.mark.django_db
def test_trusthost_pins_a_2048_bit_rsa_host_key(sshd_factory, make_server, tmp_path):
    daemon = rsa_daemon(sshd_factory, tmp_path, 2048)
    server = make_server(daemon, host_key="")
    call_command("trusthost", server.name, "--yes")
    server.refresh_from_db()
    expected = (tmp_path / "ssh_host_rsa_2048_key.pub").read_text().split()[:2]
    assert server.host_key.split() == expected


# --- the same through two real workers on PostgreSQL ------------------------------------
def raw(base: str, method: str, path: str, key: str, body: bytes | None = None, ctype=None):
    """(status, JSON body) of one request sent as is."""
    headers = {"Authorization": f"Api-Key {key}"}
    if ctype:
        headers["Content-Type"] = ctype
    request = urllib.request.Request(base + path, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_on_postgresql_bad_input_is_a_4xx_and_every_refused_execute_is_audited(
    profile_env,  # noqa: F811
    database,  # noqa: F811
    workers,  # noqa: F811
    sshd,
    client_key,
):
    key, server_id = set_up(profile_env, sshd, client_key)
    a, b = (f"http://127.0.0.1:{port}" for port in workers)
    execute = f"/api/v1/servers/{server_id}/commands/execute"

    def body(**fields) -> bytes:
        return json.dumps({"command": "echo hi", "action_type": "t_echo", **fields}).encode()

    refused = [
        (a, execute, body(command="echo a\u0000b"), "application/json", 400, "invalid"),
        (b, execute, body(action_type="t_\u0000"), "application/json", 400, "invalid"),
        (a, execute, b"command=echo%00&action_type=t_echo", FORM, 415, "unsupported_media_type"),
        (b, execute, BIG.encode(), "application/json", 413, "too_large"),
        (a, execute, DEEP.encode(), "application/json", 400, "invalid"),
    ]
    for base, path, data, ctype, status, code in refused:
        got = raw(base, "POST", path, key, data, ctype)
        assert (got[0], got[1]["code"]) == (status, code), got

    for path in (
        "/api/v1/servers/%00/",
        "/api/v1/servers/%00/commands/",
        "/api/v1/executions/?action_type=%00",
        "/api/v1/executions/?since=2024-13-01T00:00",
        "/api/v1/executions/?server=99999999999999999999999",
    ):
        got = raw(b, "GET", path, key)
        assert (got[0], got[1]["code"]) == (400, "invalid"), (path, got)
    got = raw(a, "POST", "/api/v1/servers/%00/commands/execute", key, body(), "application/json")
    assert (got[0], got[1]["code"]) == (400, "invalid"), got
    for path in ("servers/", "executions/"):
        status, page = raw(a, "GET", f"/api/v1/{path}?limit={HUGE}", key)
        assert status == 200 and page["count"] >= 1, page
    # An offset PostgreSQL cannot take (it stops at about ±16 h; found by the fuzzer).
    far = "/api/v1/executions/?since=0166-03-23T02:22:21.673-18:11"
    assert raw(b, "GET", far, key)[0] == 200

    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT status, error_code, command, action_type, created_at <= finished_at "
            "FROM commands_execution ORDER BY id"
        ).fetchall()
    codes = [code for *_, code in refused]
    assert [(status, code) for status, code, *_ in rows] == [("rejected", c) for c in codes]
    assert rows[0][2] == "echo a\ufffdb" and rows[1][3] == "t_\ufffd"
    assert all(in_order for *_, in_order in rows)


@pytest.mark.django_db
def test_the_admin_refuses_to_pin_a_weak_host_key_by_hand(
    admin_client, sshd, make_server, tmp_path
):
    server = make_server(sshd, name="nas", host_key="")
    weak = rsa_daemon_key(tmp_path, 1024)
    form = {
        "name": "nas",
        "hostname": server.hostname,
        "port": server.port,
        "username": server.username,
        "key_file": server.key_file,
        "enabled": "on",
        "notes": "",
    }
    url = f"/admin/commands/server/{server.pk}/change/"
    response = admin_client.post(url, {**form, "host_key": weak})
    assert response.status_code == 200  # the form again, with the error
    assert "1024-bit RSA key, under the 2048 bits" in response.content.decode()
    server.refresh_from_db()
    assert server.host_key == ""
    response = admin_client.post(url, {**form, "host_key": sshd.host_key})
    assert response.status_code == 302, response.content.decode()[-2000:]
    server.refresh_from_db()
    assert server.host_key == sshd.host_key
