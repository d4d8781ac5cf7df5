"""POST /api/v1/servers/{id}/commands/execute against real sshd daemons, no SSH mocks.

Covers the DESIGN error table and the plan's seven edge cases; each case also checks
the audit row it leaves behind.
"""

import pytest
from rest_framework.test import APIClient

from commands.models import AllowedCommand, ApiKey, Execution

pytestmark = pytest.mark.django_db(transaction=True)  # the runner thread writes the rows


def url(server_id) -> str:
    return f"/api/v1/servers/{server_id}/commands/execute"


def post(client, server_id, command, action_type):
    return client.post(
        url(server_id), {"command": command, "action_type": action_type}, format="json"
    )


@pytest.fixture
def server(sshd, make_server):
    return make_server(sshd)


@pytest.fixture(autouse=True)
def rules(make_rule):
    make_rule("t_echo", "echo {word}", word="^[A-Za-z0-9]{1,32}$")
    make_rule("t_fail", "sh -c 'echo out; echo err >&2; exit 3'")
    make_rule("t_sleep", "sleep {seconds}", timeout=1, seconds="^[0-9]{1,3}$")


def test_a_whitelisted_command_returns_its_result(api_client, server, api_key):
    response = post(api_client, server.pk, "echo hello", "t_echo")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {
        "execution_id",
        "exit_code",
        "stdout",
        "stderr",
        "duration_ms",
        "stdout_truncated",
        "stderr_truncated",
        "stdout_cut_bytes",
        "stderr_cut_bytes",
    }
    assert body["exit_code"] == 0
    assert body["stdout"] == "hello\n"
    assert body["stderr"] == ""
    assert body["duration_ms"] >= 0
    assert body["stdout_truncated"] is body["stderr_truncated"] is False
    assert body["stdout_cut_bytes"] == body["stderr_cut_bytes"] == 0
    row = Execution.objects.get(pk=body["execution_id"])
    assert row.status == Execution.Status.SUCCEEDED
    assert row.argv == ["echo", "hello"]
    assert row.api_key == api_key[0]
    assert row.api_key_name == "tests"
    assert row.server == server and row.server_name == server.name
    assert row.client_ip == "127.0.0.1"
    assert row.finished_at is not None


def test_a_non_zero_exit_is_still_a_200_with_both_streams(api_client, server):
    response = post(api_client, server.pk, "sh -c 'echo out; echo err >&2; exit 3'", "t_fail")
    assert response.status_code == 200
    body = response.json()
    assert (body["exit_code"], body["stdout"], body["stderr"]) == (3, "out\n", "err\n")
    assert Execution.objects.get(pk=body["execution_id"]).status == Execution.Status.FAILED


def test_an_unknown_server_is_a_404_and_is_audited(api_client):
    response = post(api_client, 999999, "echo hi", "t_echo")
    assert response.status_code == 404
    assert response.json()["code"] == "server_not_found"
    row = Execution.objects.get()
    assert (row.status, row.error_code, row.server) == ("rejected", "server_not_found", None)
    assert row.server_name == "unknown:999999"


def test_an_offline_server_is_a_500_naming_the_connect_failure(api_client, server, sshd):
    sshd.stop()
    response = post(api_client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "ssh_connect_failed"
    assert str(server.port) in body["detail"]
    row = Execution.objects.get(pk=body["execution_id"])
    assert (row.status, row.error_code) == ("error", "ssh_connect_failed")
    assert row.argv == ["echo", "hi"]  # the row was written before SSH was tried


def test_a_command_not_in_the_whitelist_is_a_400_and_is_audited(api_client, server, sshd):
    response = post(api_client, server.pk, "rm -rf /", "t_echo")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "not_whitelisted"
    row = Execution.objects.get(pk=body["execution_id"])
    assert (row.status, row.error_code, row.command) == ("rejected", "not_whitelisted", "rm -rf /")
    assert row.argv is None
    assert sshd.accepted_connections() == 0  # nothing reached the server


def test_an_unknown_action_type_is_not_whitelisted(api_client, server):
    response = post(api_client, server.pk, "reboot", "reboot_now")
    assert response.status_code == 400
    assert response.json()["code"] == "not_whitelisted"


def test_a_parameter_that_fails_its_pattern_is_invalid_parameter(api_client, server):
    response = post(api_client, server.pk, "echo he-llo!", "t_echo")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_parameter"
    assert Execution.objects.get().error_code == "invalid_parameter"


def test_a_timeout_is_a_408_and_the_audit_row_says_so(api_client, server, sshd):
    response = post(api_client, server.pk, "sleep 30", "t_sleep")
    assert response.status_code == 408
    body = response.json()
    assert body["code"] == "timeout"
    assert {"stdout", "stderr", "stdout_truncated", "stderr_truncated"} <= set(body)
    row = Execution.objects.get(pk=body["execution_id"])
    assert (row.status, row.error_code) == ("timeout", "timeout")
    assert row.exit_code is None


def test_an_ssh_auth_failure_is_a_424_ssh_auth_failed(
    api_client, sshd, make_server, other_client_key
):
    server = make_server(sshd, key_file=str(other_client_key))
    response = post(api_client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 424
    body = response.json()
    assert body["code"] == "ssh_auth_failed"
    assert str(other_client_key) not in body["detail"]
    assert Execution.objects.get(pk=body["execution_id"]).error_code == "ssh_auth_failed"


def test_an_unpinned_host_key_is_refused_with_the_fix(api_client, sshd, make_server):
    server = make_server(sshd, host_key="")
    response = post(api_client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 424
    body = response.json()
    assert body["code"] == "host_key_unknown"
    assert f"trusthost {server.name}" in body["detail"]


def test_a_changed_host_key_is_refused(api_client, sshd, sshd_factory, make_server):
    impostor_key = sshd_factory().host_key
    server = make_server(sshd, host_key=impostor_key)
    response = post(api_client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 424
    assert response.json()["code"] == "host_key_mismatch"
    assert sshd.accepted_connections() == 0


def test_an_empty_command_is_a_400_invalid_and_is_audited(api_client, server):
    response = post(api_client, server.pk, "", "t_echo")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert "command" in body["errors"]
    assert Execution.objects.get().error_code == "invalid"


@pytest.mark.parametrize("command", ["echo a\nb", "echo a\x00", "echo \x1b[2J", "x" * 1025])
def test_control_characters_and_oversized_commands_are_invalid(api_client, server, command):
    response = post(api_client, server.pk, command, "t_echo")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_a_missing_body_field_is_invalid(api_client, server):
    response = api_client.post(url(server.pk), {"command": "echo hi"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"]["action_type"]


def test_a_disabled_server_is_a_400_server_disabled(api_client, sshd, make_server):
    server = make_server(sshd, enabled=False)
    response = post(api_client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 400
    assert response.json()["code"] == "server_disabled"
    assert Execution.objects.get().status == "rejected"
    assert sshd.accepted_connections() == 0


def test_no_key_is_a_401_and_a_revoked_key_is_a_401(server):
    assert post(APIClient(), server.pk, "echo hi", "t_echo").status_code == 401
    api_key, raw = ApiKey.objects.create_key(name="gone")
    api_key.revoked = True
    api_key.save()
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    response = post(client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_the_eleventh_execution_in_a_minute_is_a_429_with_retry_after(api_client, server):
    for _ in range(10):
        assert post(api_client, server.pk, "echo hi", "t_echo").status_code == 200
    response = post(api_client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 429
    assert response.json()["code"] == "throttled"
    retry_after = response["Retry-After"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60
    assert Execution.objects.filter(error_code="throttled").count() == 1


def test_another_key_has_its_own_quota(api_client, server):
    for _ in range(10):
        post(api_client, server.pk, "echo hi", "t_echo")
    assert post(api_client, server.pk, "echo hi", "t_echo").status_code == 429
    _, raw = ApiKey.objects.create_key(name="second")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert post(other, server.pk, "echo hi", "t_echo").status_code == 200


def test_bad_requests_do_not_use_up_the_quota(api_client, server):
    for _ in range(12):
        assert post(api_client, server.pk, "", "t_echo").status_code == 400
        assert post(api_client, 999999, "echo hi", "t_echo").status_code == 404
    assert post(api_client, server.pk, "echo hi", "t_echo").status_code == 200


def test_a_spoofed_forwarded_for_header_does_not_reset_the_quota(api_key, server):
    client = APIClient()
    for i in range(11):
        client.credentials(HTTP_X_API_KEY=api_key[1], HTTP_X_FORWARDED_FOR=f"10.9.9.{i}")
        expected = 200 if i < 10 else 429
        assert post(client, server.pk, "echo hi", "t_echo").status_code == expected
    assert Execution.objects.filter(client_ip="127.0.0.1").count() == 11


def test_staff_session_users_can_execute_and_are_audited(server, admin_user):
    client = APIClient()
    client.force_login(admin_user)
    response = post(client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 200
    row = Execution.objects.get()
    assert (row.user, row.username, row.api_key) == (admin_user, admin_user.username, None)


def test_the_rules_usable_on_a_server_are_listed(api_client, server, sshd_factory, make_server):
    other = make_server(sshd_factory())
    limited = AllowedCommand.objects.get(action_type="t_fail")
    limited.all_servers = False
    limited.save()
    limited.servers.set([other])
    AllowedCommand.objects.filter(action_type="t_sleep").update(enabled=False)
    listed = api_client.get(f"/api/v1/servers/{server.pk}/commands/").json()
    names = {rule["action_type"] for rule in listed}
    assert "t_echo" in names
    assert "t_fail" not in names and "t_sleep" not in names
    other_names = {
        r["action_type"] for r in api_client.get(f"/api/v1/servers/{other.pk}/commands/").json()
    }
    assert {"t_echo", "t_fail"} <= other_names


def test_options_and_wrong_methods_do_not_use_up_the_quota(api_client, server):
    for _ in range(12):
        assert api_client.options(url(server.pk)).status_code == 200
        assert api_client.get(url(server.pk)).status_code == 405
        assert api_client.options(url(999999)).status_code in (200, 404)
    assert post(api_client, server.pk, "echo hi", "t_echo").status_code == 200


def test_a_key_whose_owner_is_deactivated_is_refused(server, django_user_model):
    owner = django_user_model.objects.create_user("leaver", password="pw-0123456789")
    _, raw = ApiKey.objects.create_key(name="theirs", owner=owner)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    assert post(client, server.pk, "echo hi", "t_echo").status_code == 200
    owner.is_active = False
    owner.save()
    response = post(client, server.pk, "echo hi", "t_echo")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_an_unsupported_body_type_is_refused_and_audited(api_client, server):
    response = api_client.post(url(server.pk), data="command=uptime", content_type="text/plain")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert Execution.objects.get().error_code == "unsupported_media_type"
