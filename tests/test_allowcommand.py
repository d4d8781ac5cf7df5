"""`manage.py allowcommand`: one rule created or updated, validated like the admin."""

from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from commands import rules
from commands.models import AllowedCommand, Server

HOST = r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$"


def allow(*args: str) -> str:
    out = StringIO()
    call_command("allowcommand", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_creates_a_rule_that_takes_effect_at_once():
    out = allow("ping_host", "ping -c 3 {host}", "--param", f"host={HOST}", "--timeout", "20")
    assert "Created rule ping_host (enabled)" in out
    rule = AllowedCommand.objects.get(action_type="ping_host")
    assert (rule.parameters, rule.timeout_seconds) == ({"host": HOST}, 20)
    assert rules.resolve("ping -c 3 nas.lan", "ping_host").argv == [
        "ping",
        "-c",
        "3",
        "nas.lan",
    ]


@pytest.mark.django_db
def test_it_uses_the_default_timeout_from_settings(settings):
    settings.HOMELAB_COMMAND_TIMEOUT = 42
    allow("kernel", "uname -r")
    assert AllowedCommand.objects.get(action_type="kernel").timeout_seconds == 42


@pytest.mark.django_db
def test_it_updates_a_rule_keeping_what_is_not_given():
    nas = Server.objects.create(name="nas", hostname="10.0.0.5")
    allow("ping_host", "ping -c 3 {host}", "--param", f"host={HOST}", "--description", "Ping")
    AllowedCommand.objects.get(action_type="ping_host").servers.add(nas)

    out = allow("ping_host", "ping -c 1 {target}", "--param", f"target={HOST}", "--disable")
    assert "Updated rule ping_host (disabled)" in out
    rule = AllowedCommand.objects.get(action_type="ping_host")
    assert rule.template_tokens == ["ping", "-c", "1", "{target}"]
    assert rule.parameters == {"target": HOST}
    assert (rule.description, rule.enabled) == ("Ping", False)
    assert list(rule.servers.all()) == [nas]
    assert AllowedCommand.objects.filter(action_type="ping_host").count() == 1


@pytest.mark.django_db
def test_renaming_a_parameter_drops_the_old_ones_help():
    allow("ping_host", "ping -c 3 {host}", "--param", f"host={HOST}")
    AllowedCommand.objects.filter(action_type="ping_host").update(
        parameter_help={"host": "a name on the LAN"}
    )

    allow("ping_host", "ping -c 1 {target}", "--param", f"target={HOST}")

    assert AllowedCommand.objects.get(action_type="ping_host").parameter_help == {}


@pytest.mark.django_db
def test_help_that_is_not_text_is_refused():
    rule = AllowedCommand(action_type="t", template="echo {x}", parameters={"x": HOST})
    rule.parameter_help = {"x": ["not", "text"]}
    with pytest.raises(ValidationError, match="parameter name to text"):
        rule.save()


@pytest.mark.django_db
def test_a_regex_may_contain_an_equals_sign():
    allow("vacuum", "journalctl {flag}", "--param", "flag=^vacuum=[0-9]{1,3}d$")
    assert AllowedCommand.objects.get(action_type="vacuum").parameters == {
        "flag": "^vacuum=[0-9]{1,3}d$"
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["ping_host", "ping {host}", "--param", "host=.*"], "accepts ''"),
        (["ping_host", "ping {host}"], "no pattern for 'host'"),
        (["ping_host", "ping", "--param", f"host={HOST}"], "declared but the template"),
        (["ping_host", "ping {host}", "--param", HOST], "is not NAME=REGEX"),
        (["ping_host", "ping {host}", "--param", f"host={HOST}", "--param", "host=x"], "twice"),
        (["ping_host", "ping 'unclosed"], "cannot be split"),
        (["ping_host", "uptime", "--timeout", "0"], "timeout_seconds: Ensure"),
        (["ping_host", "uptime", "--timeout", "3601"], "timeout_seconds: Ensure"),
        (["not a slug", "uptime"], "action_type:"),
    ],
)
def test_it_refuses_an_invalid_rule_naming_the_problem(args, problem):
    with pytest.raises(CommandError) as error:
        allow(*args)
    assert problem in str(error.value)
    assert not AllowedCommand.objects.filter(action_type__in=["ping_host", "not a slug"]).exists()


@pytest.mark.django_db
def test_a_refused_update_leaves_the_rule_as_it_was():
    with pytest.raises(CommandError):
        allow("restart_service", "systemctl restart {service}", "--param", "service=.+")
    rule = AllowedCommand.objects.get(action_type="restart_service")
    assert rule.parameters == {"service": r"^[A-Za-z0-9_][A-Za-z0-9_.@:-]{0,127}$"}


@pytest.mark.django_db
def test_confirm_flags_a_rule_and_an_update_keeps_the_flag_until_no_confirm():
    out = allow("t_restart", "systemctl restart {unit}", "--param", f"unit={HOST}", "--confirm")
    assert "Created rule t_restart (enabled, asks for confirmation)" in out
    assert AllowedCommand.objects.get(action_type="t_restart").confirm

    out = allow("t_restart", "systemctl try-restart {unit}", "--param", f"unit={HOST}")
    assert "Updated rule t_restart (enabled, asks for confirmation)" in out
    assert AllowedCommand.objects.get(action_type="t_restart").confirm

    out = allow(
        "t_restart", "systemctl try-restart {unit}", "--param", f"unit={HOST}", "--no-confirm"
    )
    assert "Updated rule t_restart (enabled)" in out
    assert not AllowedCommand.objects.get(action_type="t_restart").confirm


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("template", "asks"),
    [
        ("reboot", True),
        ("/sbin/shutdown -h now", True),
        ("sudo -n systemctl poweroff", True),
        ("systemctl status --no-pager halt.target", False),
        ("uptime", False),
    ],
)
def test_a_new_rule_that_reboots_or_shuts_down_asks_unless_told_not_to(template, asks):
    allow("t_power", template)
    assert AllowedCommand.objects.get(action_type="t_power").confirm is asks
    allow("t_quiet", template, "--no-confirm")
    assert not AllowedCommand.objects.get(action_type="t_quiet").confirm
