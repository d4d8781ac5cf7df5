"""Reading is staff, acting is a permission: a staff login with no permissions at all sees
the servers, the whitelist and the audit trail in the admin (as GET servers/, commands/
and executions/ show it), read-only, with no Run, Check or Pin."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from commands.models import AllowedCommand, Execution, Server


@pytest.fixture
def bare_staff(db) -> Client:
    user = get_user_model().objects.create_user("bare", password="pw-0123456789", is_staff=True)
    client = Client()
    client.force_login(user)
    return client


def test_a_staff_login_without_permissions_reads_the_servers_rules_and_audit(bare_staff):
    server = Server.objects.create(name="nas", hostname="192.0.2.5")
    rule = AllowedCommand.objects.get(action_type="uptime")
    execution = Execution.objects.create(server_name="nas", action_type="uptime", command="up")

    index = bare_staff.get(reverse("admin:index")).content.decode()
    pages = {
        name: bare_staff.get(url)
        for name, url in {
            "servers": reverse("admin:commands_server_changelist"),
            "server": reverse("admin:commands_server_change", args=[server.pk]),
            "rules": reverse("admin:commands_allowedcommand_changelist"),
            "rule": reverse("admin:commands_allowedcommand_change", args=[rule.pk]),
            "audit": reverse("admin:commands_execution_changelist"),
            "execution": reverse("admin:commands_execution_change", args=[execution.pk]),
        }.items()
    }

    assert {name: page.status_code for name, page in pages.items()} == dict.fromkeys(pages, 200)
    for link in ("Servers", "Allowed commands", "Executions"):
        assert link in index
    assert "API keys" not in index  # keys are not readable without their permission
    server_page = pages["server"].content.decode()
    assert 'name="_save"' not in server_page  # read-only
    assert "Run a command" not in server_page and "Check server" not in server_page


def test_a_staff_login_without_permissions_changes_nothing(bare_staff):
    server = Server.objects.create(name="nas", hostname="192.0.2.5")
    change = reverse("admin:commands_server_change", args=[server.pk])

    response = bare_staff.post(change, {"name": "renamed", "hostname": "192.0.2.6", "port": 22})

    assert response.status_code == 403
    server.refresh_from_db()
    assert (server.name, server.hostname) == ("nas", "192.0.2.5")
    assert bare_staff.get(reverse("admin:commands_server_add")).status_code == 403
    pin = reverse("admin:commands_server_pin", args=[server.pk])
    assert bare_staff.get(pin).status_code == 403


def test_a_user_who_is_not_staff_reads_nothing(db):
    user = get_user_model().objects.create_user("plain", password="pw-0123456789")
    client = Client()
    client.force_login(user)

    response = client.get(reverse("admin:commands_server_changelist"))

    assert response.status_code == 302  # to the admin login
