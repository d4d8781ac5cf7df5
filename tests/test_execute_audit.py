"""The audit trail and the rest of the error table, through the HTTP API.

The audit row must be committed (visible to another connection) before SSH starts, no
transaction may be open during SSH, and every refusal of a known caller is recorded.
"""

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient

from commands import services
from commands.models import Execution
from tests.services import redis_url
from tests.sshd import free_port, processes_matching, signal_pids, wait_for


def url(server_id) -> str:
    return f"/api/v1/servers/{server_id}/commands/execute"


def post(client, server_id, command, action_type):
    return client.post(
        url(server_id), {"command": command, "action_type": action_type}, format="json"
    )


def read_rows_from_another_connection() -> list[tuple[int, str]]:
    """What a second database connection sees (a fresh thread gets its own connection)."""

    def read():
        try:
            return list(Execution.objects.values_list("pk", "status"))
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(read).result()


@pytest.mark.django_db(transaction=True)
def test_the_audit_row_is_committed_before_ssh_and_no_transaction_is_open(
    api_client, sshd, make_server, make_rule, monkeypatch
):
    server = make_server(sshd)
    make_rule("t_echo", "echo {word}", word="^[a-z]{1,10}$")
    real = services.executor()
    seen = {}

    class Watching:
        def execute(self, *args, **kwargs):
            seen["in_atomic_block"] = connection.in_atomic_block
            seen["rows"] = read_rows_from_another_connection()
            return real.execute(*args, **kwargs)

    monkeypatch.setattr(services, "executor", Watching)
    response = post(api_client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 200
    execution_id = response.json()["execution_id"]
    assert seen["in_atomic_block"] is False
    assert seen["rows"] == [(execution_id, "running")]
    assert read_rows_from_another_connection() == [(execution_id, "succeeded")]


@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
def test_an_unexpected_error_is_a_500_ssh_error_with_the_row_and_no_internals(
    api_client, sshd, make_server, make_rule, monkeypatch
):
    server = make_server(sshd)
    make_rule("t_echo", "echo {word}", word="^[a-z]{1,10}$")

    class Broken:
        def execute(self, *args, **kwargs):
            raise RuntimeError("boom at /etc/homelab/id_ed25519")

    monkeypatch.setattr(services, "executor", Broken)
    response = post(api_client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "ssh_error"
    assert "boom" not in body["detail"] and "id_ed25519" not in body["detail"]
    row = Execution.objects.get(pk=body["execution_id"])
    assert (row.status, row.error_code) == ("error", "ssh_error")


@pytest.mark.django_db(transaction=True)
def test_a_connection_lost_mid_command_is_a_500_ssh_connection_lost(
    api_client, sshd, make_server, make_rule
):
    server = make_server(sshd)
    make_rule("t_sleep", "sleep {seconds}", timeout=60, seconds=r"^[0-9.]{1,6}$")
    result = {}
    request = threading.Thread(
        target=lambda: result.update(response=post(api_client, server.pk, "sleep 47.31", "t_sleep"))
    )
    request.start()
    try:
        assert wait_for(lambda: processes_matching("sleep 47.31"), timeout=20)
        # Killing the per-connection sshd processes drops the link mid-command.
        signal_pids(sshd.session_pids(), signal.SIGKILL)
    finally:
        request.join(timeout=60)
        signal_pids(processes_matching("sleep 47.31"), signal.SIGKILL)
    response = result["response"]
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "ssh_connection_lost"
    row = Execution.objects.get(pk=body["execution_id"])
    assert (row.status, row.error_code) == ("error", "ssh_connection_lost")


@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
def test_a_server_without_the_timeout_tool_is_a_500_ssh_error_naming_the_fix(
    api_client, sshd_factory, make_server, make_rule
):
    # PATH without coreutils: the server-side `timeout` wrapper cannot start.
    daemon = sshd_factory(extra_config=["Match all", "SetEnv PATH=/nonexistent SHLVL=1"])
    server = make_server(daemon)
    make_rule("t_echo", "echo {word}", word="^[a-z]{1,10}$")
    response = post(api_client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "ssh_error"
    assert "coreutils" in body["detail"]


@pytest.mark.django_db
def test_a_logged_in_non_staff_user_is_a_403_and_is_audited(sshd, make_server):
    server = make_server(sshd)
    user = get_user_model().objects.create_user("mallory", password="pw-0123456789")
    client = APIClient()
    client.force_login(user)
    response = post(client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    row = Execution.objects.get()
    assert (row.status, row.error_code, row.username) == (
        "rejected",
        "permission_denied",
        "mallory",
    )
    assert sshd.accepted_connections() == 0


@pytest.mark.django_db
def test_a_malformed_json_body_is_a_400_invalid_and_is_audited(api_client, sshd, make_server):
    server = make_server(sshd)
    response = api_client.post(url(server.pk), data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    row = Execution.objects.get()
    assert (row.status, row.error_code, row.server) == ("rejected", "invalid", server)


@pytest.mark.django_db
def test_an_unknown_server_with_a_malformed_body_is_still_a_404(api_client):
    response = api_client.post(url(424242), data="{not json", content_type="application/json")
    assert response.status_code == 404
    assert response.json()["code"] == "server_not_found"


@pytest.mark.django_db
def test_an_unreachable_redis_is_a_503_unavailable_and_is_audited(
    api_client, sshd, make_server, make_rule, settings
):
    server = make_server(sshd)
    make_rule("t_echo", "echo {word}", word="^[a-z]{1,10}$")
    redis_url()  # the real one is up; the one configured below is not
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    response = post(api_client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert Execution.objects.get().error_code == "unavailable"
    assert sshd.accepted_connections() == 0
