"""Rules flagged `confirm` (issue 22), in-process against a real sshd: a logged-in session
runs one only with "confirm": true, over HTTP and over the execute socket alike (the check
is the pipeline's, rules.require_confirmation in services.execute_command), refused 400
confirmation_required and audited otherwise; an API key is never asked. The flag shows in
GET servers/{id}/commands/ and is edited in the admin. The console's dialog in a real
browser: tests/test_admin_console.py."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from rest_framework.test import APIClient

from commands import rules
from commands.live import sockets
from commands.models import AllowedCommand, ApiKey, Execution, Server
from commands.requests import Caller
from tests.sshd import wait_for

RUNS = pytest.mark.django_db(transaction=True)  # the runner thread writes the audit row


@pytest.fixture
def server(sshd, make_server, make_rule) -> Server:
    make_rule("t_plain", "echo plain")
    flagged = make_rule("t_flag", "echo flagged")
    flagged.confirm = True
    flagged.save()
    return make_server(sshd, name="box")


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_superuser("operator", password="pw-0123456789-op")


def session(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def execute(client, server: Server, command: str, action_type: str, **extra):
    return client.post(
        f"/api/v1/servers/{server.pk}/commands/execute",
        {"command": command, "action_type": action_type, **extra},
        format="json",
    )


# --- the rule: who must confirm -----------------------------------------------------------
@pytest.mark.django_db
def test_everyone_but_an_api_key_must_confirm_a_flagged_rule_and_nobody_an_unflagged_one(
    operator,
):
    flagged = AllowedCommand(action_type="t_flag", template="echo flagged", confirm=True)
    plain = AllowedCommand(action_type="t_plain", template="echo plain")
    key, _ = ApiKey.objects.create_key(name="script")
    callers = {
        "key": Caller(api_key=key),
        "key of a user": Caller(api_key=key, user=operator),
        "session": Caller(user=operator),
        "cli": Caller(name="cli:root"),
    }
    asked = {name: rules.must_confirm(flagged, caller) for name, caller in callers.items()}
    assert asked == {"key": False, "key of a user": False, "session": True, "cli": True}
    assert not any(rules.must_confirm(plain, caller) for caller in callers.values())


# --- HTTP ---------------------------------------------------------------------------------
@RUNS
def test_a_session_run_of_a_flagged_rule_without_confirm_is_refused_and_audited(server, operator):
    refused = execute(session(operator), server, "echo flagged", "t_flag")

    assert refused.status_code == 400
    body = refused.json()
    assert body["code"] == "confirmation_required"
    assert '"confirm": true' in body["detail"] and "box" in body["detail"]
    row = Execution.objects.get()
    assert row.pk == body["execution_id"]
    assert (row.status, row.error_code, row.username) == (
        "rejected",
        "confirmation_required",
        "operator",
    )
    assert (row.action_type, row.command, row.argv) == ("t_flag", "echo flagged", None)


@RUNS
def test_a_session_run_of_a_flagged_rule_with_confirm_true_runs(server, operator):
    ran = execute(session(operator), server, "echo flagged", "t_flag", confirm=True)

    assert ran.status_code == 200, ran.json()
    assert (ran.json()["exit_code"], ran.json()["stdout"]) == (0, "flagged\n")
    assert Execution.objects.get().status == "succeeded"


@RUNS
def test_an_api_key_is_not_asked_to_confirm(server, api_client):
    ran = execute(api_client, server, "echo flagged", "t_flag")

    assert ran.status_code == 200, ran.json()
    assert ran.json()["stdout"] == "flagged\n"


@RUNS
def test_a_rule_that_is_not_flagged_runs_for_a_session_without_confirm(server, operator):
    ran = execute(session(operator), server, "echo plain", "t_plain")

    assert ran.status_code == 200 and ran.json()["stdout"] == "plain\n"


# --- the execute socket: the same pipeline ------------------------------------------------
@RUNS
def test_the_execute_socket_asks_a_session_to_confirm_too(server, operator):
    who = Caller(None, operator, "127.0.0.1")
    frame = {"command": "echo flagged", "action_type": "t_flag"}

    refused = sockets.start_execution(who, str(server.pk), json.dumps(frame))
    started = sockets.start_execution(who, str(server.pk), json.dumps({**frame, "confirm": True}))

    assert isinstance(refused, sockets.Refusal)
    assert (refused.close_code, refused.frame["code"]) == (4400, "confirmation_required")
    assert isinstance(started, int)
    assert wait_for(lambda: Execution.objects.get(pk=started).status == "succeeded", timeout=20)
    assert Execution.objects.get(pk=started).stdout == "flagged\n"
    statuses = sorted(Execution.objects.values_list("status", "error_code"))
    assert statuses == [("rejected", "confirmation_required"), ("succeeded", "")]


# --- what clients and the admin see -------------------------------------------------------
@pytest.mark.django_db
def test_the_rules_listing_says_which_rules_ask_for_confirmation(server, api_client):
    listed = api_client.get(f"/api/v1/servers/{server.pk}/commands/").json()

    flags = {rule["action_type"]: rule["confirm"] for rule in listed}
    assert (flags["t_flag"], flags["t_plain"]) == (True, False)


@pytest.mark.django_db
def test_the_admin_shows_and_edits_the_confirm_flag(admin_client):
    rule = AllowedCommand.objects.create(
        action_type="t_edit", template="echo edit", all_servers=True
    )
    url = reverse("admin:commands_allowedcommand_change", args=[rule.pk])
    form = {
        "action_type": "t_edit",
        "template": "echo edit",
        "parameters": "{}",
        "timeout_seconds": "30",
        "enabled": "on",
        "all_servers": "on",
        "confirm": "on",
    }

    assert 'name="confirm"' in admin_client.get(url).text
    assert admin_client.post(url, form).status_code == 302
    rule.refresh_from_db()
    assert rule.confirm
    listed = admin_client.get(
        reverse("admin:commands_allowedcommand_changelist"), {"confirm__exact": "1"}
    )
    assert "t_edit" in listed.text
