"""Issue 10, defects 2, 5 and 7, through the API, the admin and the management commands.

2: "every server" is an explicit flag, so a rule whose servers were deleted runs nowhere.
5: a caller refused again (429, 403) within the rate window adds to one audit row;
   pruneexecutions deletes old rows.
7: a rule's timeout and a server's port are checked on save and by the database.
"""

import datetime
import os
import re
import sqlite3
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from commands.models import AllowedCommand, ApiKey, Execution, Server
from commands.quota import ExecuteRateThrottle
from tests.live import manage

WORD = "^[a-z]{1,10}$"


def execute(client, server_id, command="echo hi", action_type="t_echo"):
    return client.post(
        f"/api/v1/servers/{server_id}/commands/execute",
        {"command": command, "action_type": action_type},
        format="json",
    )


def listed(client, server_id) -> set[str]:
    response = client.get(f"/api/v1/servers/{server_id}/commands/")
    assert response.status_code == 200
    return {rule["action_type"] for rule in response.json()}


def allow(*args: str) -> str:
    out = StringIO()
    call_command("allowcommand", *args, stdout=out)
    return out.getvalue()


# --- 2: "every server" is explicit ------------------------------------------------------
@pytest.mark.django_db
def test_a_rule_whose_only_server_was_deleted_runs_nowhere_rather_than_everywhere(
    api_client, sshd, make_server, make_rule
):
    server = make_server(sshd)
    gone = Server.objects.create(name="gone", hostname="127.0.0.1")
    make_rule("t_echo", "echo {word}", word=WORD, servers=[gone])
    gone.delete()

    response = execute(api_client, server.pk)
    assert response.status_code == 400
    assert response.json()["code"] == "not_whitelisted"
    assert "t_echo" not in listed(api_client, server.pk)
    assert sshd.accepted_connections() == 0


@pytest.mark.django_db
def test_the_admin_says_where_each_rule_is_usable_and_warns_about_a_rule_usable_nowhere(
    admin_client,
):
    nas = Server.objects.create(name="nas", hostname="10.0.0.5")
    orphan = AllowedCommand.objects.create(action_type="orphan", template="uptime")
    orphan.servers.add(nas)
    limited = AllowedCommand.objects.create(action_type="limited", template="uptime")
    limited.servers.add(Server.objects.create(name="pi", hostname="10.0.0.6"))
    nas.delete()

    page = admin_client.get("/admin/commands/allowedcommand/")
    where = {rule.action_type: page.context["cl"].model_admin.where(rule) for rule in
             page.context["cl"].result_list}  # fmt: skip
    assert where["uptime"] == "every server"  # a default rule, made explicit by 0006
    assert where["limited"] == "pi"
    assert where["orphan"].startswith("nowhere")
    assert "nowhere: no servers are selected" in page.text

    change = admin_client.get(f"/admin/commands/allowedcommand/{orphan.pk}/change/")
    warnings = [str(message) for message in change.context["messages"]]
    assert any("usable nowhere" in message for message in warnings)
    fine = admin_client.get(f"/admin/commands/allowedcommand/{limited.pk}/change/")
    assert not [str(message) for message in fine.context["messages"]]


@pytest.mark.django_db
def test_the_admin_refuses_every_server_together_with_selected_servers(admin_client):
    nas = Server.objects.create(name="nas", hostname="10.0.0.5")
    form = {
        "action_type": "kernel",
        "template": "uname -r",
        "parameters": "{}",
        "timeout_seconds": "30",
        "enabled": "on",
        "all_servers": "on",
        "servers": [str(nas.pk)],
    }
    response = admin_client.post("/admin/commands/allowedcommand/add/", form)
    assert response.status_code == 200
    assert "Choose one: usable on every server, or limited" in response.text
    assert not AllowedCommand.objects.filter(action_type="kernel").exists()

    del form["all_servers"]
    assert admin_client.post("/admin/commands/allowedcommand/add/", form).status_code == 302
    rule = AllowedCommand.objects.get(action_type="kernel")
    assert (rule.all_servers, list(rule.servers.all())) == (False, [nas])


@pytest.mark.django_db
def test_allowcommand_limits_a_rule_with_server_and_widens_it_with_all_servers(api_client):
    nas = Server.objects.create(name="nas", hostname="10.0.0.5")
    pi = Server.objects.create(name="pi", hostname="10.0.0.6")

    out = allow("kernel", "uname -r", "--server", "nas")
    assert "usable on nas" in out
    assert ("kernel" in listed(api_client, nas.pk), "kernel" in listed(api_client, pi.pk)) == (
        True,
        False,
    )

    assert "usable on every server" in allow("kernel", "uname -r", "--all-servers")
    assert "kernel" in listed(api_client, pi.pk)
    assert not AllowedCommand.objects.get(action_type="kernel").servers.exists()

    allow("kernel", "uname -r", "--server", "nas", "--server", "pi")
    rule = AllowedCommand.objects.get(action_type="kernel")
    assert (rule.all_servers, set(rule.servers.all())) == (False, {nas, pi})
    assert "usable on nas, pi" in allow("kernel", "uname -r")  # kept when not given

    assert "usable on every server" in allow("fresh", "uptime")  # a new rule, no flag


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--server", "nas", "--all-servers"], "not allowed with argument"),
        (["--server", "nope"], "No server named 'nope' (servers: nas)"),
    ],
)
def test_allowcommand_refuses_both_flags_and_an_unknown_server(args, problem):
    Server.objects.create(name="nas", hostname="10.0.0.5")
    with pytest.raises(CommandError, match=re.escape(problem)):
        allow("kernel", "uname -r", *args)
    assert not AllowedCommand.objects.filter(action_type="kernel").exists()


def test_the_migration_keeps_where_existing_rules_run_and_parks_out_of_range_rows(tmp_path):
    database = tmp_path / "before.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "DJANGO_SECRET_KEY": "x"}
    env.pop("REDIS_URL", None)
    manage(env, "migrate", "--noinput", "commands", "0005")
    now = "2026-01-01 00:00:00"
    with sqlite3.connect(database) as db:
        db.execute(
            "INSERT INTO commands_server (name, hostname, port, username, use_sudo, key_file, "
            "host_key, enabled, notes, created_at, updated_at) VALUES "
            "('nas', 'h', 22, 'root', 0, '', '', 1, '', ?, ?), "
            "('bad', 'h', 0, 'root', 0, '', '', 1, '', ?, ?)",
            (now,) * 4,
        )
        for name, timeout in (("limited", 30), ("zero", 0)):
            db.execute(
                "INSERT INTO commands_allowedcommand (action_type, description, template, "
                "parameters, template_tokens, timeout_seconds, enabled, created_at, "
                "updated_at) VALUES (?, '', 'uptime', '{}', '[\"uptime\"]', ?, 1, ?, ?)",
                (name, timeout, now, now),
            )
        db.execute(
            "INSERT INTO commands_allowedcommand_servers (allowedcommand_id, server_id) "
            "SELECT r.id, s.id FROM commands_allowedcommand r, commands_server s "
            "WHERE r.action_type = 'limited' AND s.name = 'nas'"
        )
    manage(env, "migrate", "--noinput")
    with sqlite3.connect(database) as db:
        rules = dict(db.execute("SELECT action_type, all_servers FROM commands_allowedcommand"))
        zero = db.execute(
            "SELECT timeout_seconds, enabled FROM commands_allowedcommand "
            "WHERE action_type = 'zero'"
        ).fetchone()
        bad = db.execute("SELECT port, enabled FROM commands_server WHERE name = 'bad'").fetchone()
    assert rules.pop("limited") == 0
    assert rules["uptime"] == 1 and rules["restart_service"] == 1  # the defaults of 0002
    assert set(rules.values()) == {1}
    assert zero == (30, 0)  # it never ran (every run was a 500): valid now, but left off
    assert bad == (22, 0)


# --- 5: repeated refusals add to one row; old rows are pruned ---------------------------
@pytest.fixture
def one_per_minute(monkeypatch):
    monkeypatch.setattr(ExecuteRateThrottle, "THROTTLE_RATES", {"command-execute": "1/min"})


@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
def test_a_key_throttled_again_within_the_window_adds_to_one_audit_row(
    api_client, api_key, sshd, make_server, make_rule, one_per_minute
):
    server = make_server(sshd)
    make_rule("t_echo", "echo {word}", word=WORD)
    assert execute(api_client, server.pk).status_code == 200
    for _ in range(5):
        assert execute(api_client, server.pk).status_code == 429

    row = Execution.objects.get(error_code="throttled")
    assert (row.count, row.api_key_id, row.status) == (5, api_key[0].pk, "rejected")
    assert row.finished_at >= row.created_at

    # Past the window, the next refusal starts a row of its own.
    Execution.objects.filter(pk=row.pk).update(
        created_at=timezone.now() - datetime.timedelta(seconds=61)
    )
    assert execute(api_client, server.pk).status_code == 429
    assert list(
        Execution.objects.filter(error_code="throttled").values_list("count", flat=True)
    ) == [1, 5]

    # Another key's refusals are its own.
    _, raw = ApiKey.objects.create_key(name="other")
    other = APIClient()
    other.credentials(HTTP_X_API_KEY=raw)
    assert execute(other, server.pk).status_code == 200
    assert execute(other, server.pk).status_code == 429
    assert Execution.objects.filter(error_code="throttled", api_key_name="other").count() == 1


@pytest.mark.django_db
def test_a_forbidden_user_repeating_the_request_adds_to_one_audit_row(sshd, make_server):
    server = make_server(sshd)
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("mallory", password="pw-0123456789"))
    for _ in range(3):
        response = execute(client, server.pk)
        assert response.status_code == 403
        assert response.json()["code"] == "permission_denied"
    row = Execution.objects.get()
    assert (row.username, row.error_code, row.count) == ("mallory", "permission_denied", 3)


def an_execution(days_old: float, status: str = "succeeded") -> Execution:
    row = Execution.objects.create(server_name="nas", action_type="uptime", status=status)
    created = timezone.now() - datetime.timedelta(days=days_old)
    Execution.objects.filter(pk=row.pk).update(created_at=created)
    return row


@pytest.mark.django_db
def test_pruneexecutions_deletes_old_rows_but_never_a_running_one(settings):
    old_done, old_refused = an_execution(40), an_execution(40, "rejected")
    old_running, recent = an_execution(40, "running"), an_execution(5)

    out = StringIO()
    call_command("pruneexecutions", "--older-than", "30", stdout=out)
    assert "Deleted 2 execution(s)" in out.getvalue()
    assert set(Execution.objects.values_list("pk", flat=True)) == {old_running.pk, recent.pk}
    assert not Execution.objects.filter(pk__in=[old_done.pk, old_refused.pk]).exists()

    settings.HOMELAB_AUDIT_RETENTION_DAYS = 3  # the default when --older-than is not given
    call_command("pruneexecutions", stdout=out)
    assert list(Execution.objects.values_list("pk", flat=True)) == [old_running.pk]

    with pytest.raises(CommandError, match="at least 1"):
        call_command("pruneexecutions", "--older-than", "0")


# --- 7: range checks on save and in the database ----------------------------------------
@pytest.mark.django_db
def test_saving_a_rule_with_a_timeout_of_zero_is_refused_naming_the_field():
    rule = AllowedCommand(action_type="kernel", template="uname -r", timeout_seconds=0)
    with pytest.raises(ValidationError) as refused:
        rule.save()
    assert "timeout_seconds" in refused.value.message_dict
    assert not AllowedCommand.objects.filter(action_type="kernel").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (AllowedCommand, "timeout_seconds", 0),
        (AllowedCommand, "timeout_seconds", 3601),
        (Server, "port", 0),
        (Server, "port", 65536),
    ],
)
def test_the_database_refuses_an_out_of_range_value_written_past_save(model, field, value):
    if model is Server:
        Server.objects.create(name="nas", hostname="10.0.0.5")
    with pytest.raises(IntegrityError), transaction.atomic():
        model.objects.update(**{field: value})
    table = model._meta.db_table
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {field} = %s", [value])
    assert not model.objects.filter(**{field: value}).exists()
