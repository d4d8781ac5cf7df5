"""The whitelist admin, driven through the real admin pages as a logged-in superuser."""

import json

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry

from commands import rules
from commands.models import AllowedCommand, Server

ADD_URL = "/admin/commands/allowedcommand/add/"
LIST_URL = "/admin/commands/allowedcommand/"
UNIT = r"^[A-Za-z0-9_][A-Za-z0-9_.@:-]{0,127}$"


def change_url(rule: AllowedCommand) -> str:
    return f"/admin/commands/allowedcommand/{rule.pk}/change/"


def form_data(**overrides) -> dict:
    data = {
        "action_type": "reload_service",
        "description": "Reload one unit.",
        "template": "systemctl reload {service}",
        "parameters": json.dumps({"service": UNIT}),
        "timeout_seconds": "60",
        "enabled": "on",
        "_save": "Save",
    }
    return {**data, **overrides}


def history(rule: AllowedCommand) -> list[LogEntry]:
    return list(LogEntry.objects.filter(object_id=str(rule.pk)).order_by("id"))


def try_command(admin_client, rule: AllowedCommand, command: str, server: str = ""):
    return admin_client.get(change_url(rule), {"try-command": command, "try-server": server})


@pytest.mark.django_db
def test_an_admin_creates_edits_and_tries_a_rule_through_the_admin_pages(admin_client, admin_user):
    response = admin_client.post(ADD_URL, form_data())
    assert response.status_code == 302
    rule = AllowedCommand.objects.get(action_type="reload_service")
    assert rule.template_tokens == ["systemctl", "reload", "{service}"]
    assert rule.timeout_seconds == 60

    response = admin_client.post(
        change_url(rule), form_data(template="systemctl reload-or-restart {service}")
    )
    assert response.status_code == 302
    # No restart, no cache: the next request sees the edit.
    found = rules.resolve("systemctl reload-or-restart nginx", "reload_service")
    assert found.argv == ["systemctl", "reload-or-restart", "nginx"]

    response = try_command(admin_client, rule, "systemctl reload-or-restart 'nginx.service'")
    assert response.status_code == 200
    assert "Accepted." in response.text
    assert response.context["try_result"].argv == [
        "systemctl",
        "reload-or-restart",
        "nginx.service",
    ]
    assert "systemctl reload-or-restart nginx.service</code>" in response.text

    entries = history(rule)
    assert [entry.action_flag for entry in entries] == [ADDITION, CHANGE]
    assert {entry.user for entry in entries} == {admin_user}
    assert "Template" in entries[1].get_change_message()


@pytest.mark.django_db
def test_the_try_box_shows_a_rejection_and_its_reason(admin_client):
    rule = AllowedCommand.objects.get(action_type="restart_service")
    response = try_command(admin_client, rule, "systemctl restart nginx;reboot")
    assert "Rejected" in response.text
    assert response.context["try_result"].code == "invalid_parameter"
    assert response.context["try_result"].argv is None
    assert "Parameter &#x27;service&#x27; of rule &#x27;restart_service&#x27;" in response.text


@pytest.mark.django_db
def test_the_try_box_says_when_a_matching_rule_is_disabled_or_limited_elsewhere(admin_client):
    nas = Server.objects.create(name="nas", hostname="10.0.0.5")
    pi = Server.objects.create(name="pi", hostname="10.0.0.6")
    rule = AllowedCommand.objects.get(action_type="uptime")
    rule.all_servers = False
    rule.save()
    rule.servers.add(nas)

    accepted = try_command(admin_client, rule, "uptime", str(nas.pk)).context["try_result"]
    limited = try_command(admin_client, rule, "uptime", str(pi.pk)).context["try_result"]
    assert accepted.accepted
    assert not limited.accepted
    assert "not usable on server pi" in limited.detail

    AllowedCommand.objects.filter(pk=rule.pk).update(enabled=False)
    disabled = try_command(admin_client, rule, "uptime").context["try_result"]
    assert not disabled.accepted
    assert "disabled" in disabled.detail
    assert disabled.argv == ["uptime"]


@pytest.mark.django_db
def test_the_change_page_has_no_result_until_a_command_is_tried(admin_client):
    rule = AllowedCommand.objects.get(action_type="uptime")
    response = admin_client.get(change_url(rule))
    assert response.status_code == 200
    assert "Try a command" in response.text
    assert response.context["try_result"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"parameters": json.dumps({"service": ".*"})}, "accepts &#x27;&#x27;"),
        ({"parameters": "[]"}, "must be a JSON object"),
        ({"template": "systemctl reload --unit={service}"}, "whole token"),
        ({"template": "systemctl reload"}, "declared but the template has no {service}"),
        ({"timeout_seconds": "0"}, "greater than or equal to 1"),
        ({"timeout_seconds": "3601"}, "less than or equal to 3600"),
    ],
)
def test_the_admin_refuses_an_invalid_rule_naming_the_problem(admin_client, overrides, problem):
    response = admin_client.post(ADD_URL, form_data(**overrides))
    assert response.status_code == 200
    assert problem in response.text
    assert not AllowedCommand.objects.filter(action_type="reload_service").exists()


@pytest.mark.django_db
def test_the_list_filters_by_enabled_and_server_and_searches(admin_client):
    nas = Server.objects.create(name="nas", hostname="10.0.0.5")
    AllowedCommand.objects.filter(action_type="clear_logs").update(enabled=False)
    AllowedCommand.objects.get(action_type="docker_ps").servers.add(nas)

    def listed(**query) -> set[str]:
        response = admin_client.get(LIST_URL, query)
        assert response.status_code == 200
        return {rule.action_type for rule in response.context["cl"].result_list}

    assert listed(enabled__exact="0") == {"clear_logs"}
    assert listed(servers__id__exact=str(nas.pk)) == {"docker_ps"}
    assert listed(q="journalctl") == {"service_logs", "clear_logs"}


@pytest.mark.django_db
def test_the_enable_and_disable_actions_flip_rules_and_record_who(admin_client, admin_user):
    chosen = AllowedCommand.objects.filter(action_type__in=["uptime", "memory"])
    selected = [str(pk) for pk in chosen.values_list("pk", flat=True)]

    admin_client.post(LIST_URL, {"action": "disable_rules", "_selected_action": selected})
    assert not chosen.filter(enabled=True).exists()
    assert not rules.is_whitelisted("uptime", "uptime")

    admin_client.post(LIST_URL, {"action": "enable_rules", "_selected_action": selected})
    assert not chosen.filter(enabled=False).exists()
    assert rules.is_whitelisted("uptime", "uptime")

    for rule in chosen:
        messages = [entry.get_change_message() for entry in history(rule)]
        assert messages == ["Changed Enabled.", "Changed Enabled."]
        assert {entry.user for entry in history(rule)} == {admin_user}


@pytest.mark.django_db
def test_enabling_a_rule_that_no_longer_validates_keeps_it_disabled(admin_client):
    # A row written around save() (here: update()) with a pattern check_rule refuses.
    AllowedCommand.objects.filter(action_type="restart_service").update(
        enabled=False, parameters={"service": ".*"}
    )
    rule = AllowedCommand.objects.get(action_type="restart_service")
    response = admin_client.post(
        LIST_URL,
        {"action": "enable_rules", "_selected_action": [str(rule.pk)]},
        follow=True,
    )
    rule.refresh_from_db()
    assert not rule.enabled
    assert (
        "Rule restart_service stays disabled: The pattern for &#x27;service&#x27;" in response.text
    )
    assert history(rule) == []
