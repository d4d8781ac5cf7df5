"""An SSH set-up problem is a 424 "fix the server record"; a transport failure stays 5xx.

Against real sshd daemons: an unpinned or changed host key, a key the server refuses and
a key file that is missing or has a passphrase each answer 424 with the same codes as
before and an audit row; sshd being down is still a 500. The WebSocket mirrors the status
in its close code (4424).
"""

from __future__ import annotations

import subprocess

import pytest

from commands.exceptions import AuthFailed, ConnectFailed, HostKeyMismatch, HostKeyUnknown
from commands.live.sockets import refusal
from commands.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)  # the runner thread writes the rows


def post(client, server):
    return client.post(
        f"/api/v1/servers/{server.pk}/commands/execute",
        {"command": "echo hi", "action_type": "t_echo"},
        format="json",
    )


@pytest.fixture(autouse=True)
def rule(make_rule):
    make_rule("t_echo", "echo {word}", word="^[a-z]{1,10}$")


def refused(response, code: str) -> Execution:
    """The 424 body's audit row, after checking the body says `code` and no secret."""
    body = response.json()
    assert (response.status_code, body["code"]) == (424, code), body
    row = Execution.objects.get(pk=body["execution_id"])
    assert (row.status, row.error_code, row.argv) == ("error", code, ["echo", "hi"])
    return row


def test_an_unpinned_host_key_is_a_424_naming_trusthost(api_client, sshd, make_server):
    server = make_server(sshd, host_key="")

    response = post(api_client, server)

    refused(response, "host_key_unknown")
    assert f"./manage.py trusthost {server.name}" in response.json()["detail"]
    assert sshd.accepted_connections() == 0  # refused before any login


def test_a_changed_host_key_is_a_424_before_any_login(api_client, sshd, sshd_factory, make_server):
    server = make_server(sshd, host_key=sshd_factory().host_key)

    refused(post(api_client, server), "host_key_mismatch")
    assert sshd.accepted_connections() == 0  # refused before authentication


def test_a_key_the_server_refuses_is_a_424_ssh_auth_failed(
    api_client, sshd, make_server, other_client_key
):
    server = make_server(sshd, key_file=str(other_client_key))

    response = post(api_client, server)

    refused(response, "ssh_auth_failed")
    assert str(other_client_key) not in response.json()["detail"]


def test_a_missing_key_file_is_a_424_without_its_path(api_client, sshd, make_server, tmp_path):
    missing = tmp_path / "id_gone"
    server = make_server(sshd, key_file=str(missing))

    response = post(api_client, server)

    refused(response, "ssh_auth_failed")
    assert "could not read the private key" in response.json()["detail"]
    assert "id_gone" not in response.content.decode()


def test_a_key_file_with_a_passphrase_is_a_424_saying_so(api_client, sshd, make_server, tmp_path):
    locked = tmp_path / "id_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(locked)],
                   check=True)  # fmt: skip
    server = make_server(sshd, key_file=str(locked))

    response = post(api_client, server)

    refused(response, "ssh_auth_failed")
    assert "passphrase" in response.json()["detail"]


def test_a_server_whose_sshd_is_down_is_still_a_500(api_client, sshd, make_server):
    server = make_server(sshd)
    sshd.stop()

    response = post(api_client, server)

    assert (response.status_code, response.json()["code"]) == (500, "ssh_connect_failed")


@pytest.mark.parametrize(
    ("error", "close_code"),
    [
        (HostKeyUnknown("not pinned"), 4424),
        (HostKeyMismatch("changed"), 4424),
        (AuthFailed("refused"), 4424),
        (ConnectFailed("down"), 4500),
    ],
)
def test_a_websocket_refusal_mirrors_the_http_status_in_its_close_code(error, close_code):
    assert refusal(error).close_code == close_code
    assert refusal(error).frame["code"] == error.code


def test_the_schema_documents_the_set_up_codes_under_424_and_transport_under_500(api_client):
    schema = api_client.get("/api/schema/?format=json").json()
    responses = schema["paths"]["/api/v1/servers/{id}/commands/execute"]["post"]["responses"]
    setup, transport = responses["424"]["description"], responses["500"]["description"]

    for code in ("host_key_unknown", "host_key_mismatch", "ssh_auth_failed"):
        assert f"`{code}`" in setup and code not in transport
    for code in ("ssh_connect_failed", "ssh_connection_lost", "ssh_error"):
        assert f"`{code}`" in transport and code not in setup
    examples = responses["424"]["content"]["application/json"]["examples"]
    assert [e["value"]["code"] for e in examples.values()] == ["host_key_unknown"]
