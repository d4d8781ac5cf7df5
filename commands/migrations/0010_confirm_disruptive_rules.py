"""The default rules that change a machine ask for confirmation (issue 22).

Flags apply_updates, restart_service, docker_restart and clear_logs, and any rule whose
program is reboot, shutdown, poweroff or halt (or systemctl with one of those), whoever
wrote it. Reverse clears the flag of the four defaults only.
"""

from django.db import migrations

DISRUPTIVE_DEFAULTS = ("apply_updates", "restart_service", "docker_restart", "clear_logs")
POWER = {"reboot", "shutdown", "poweroff", "halt"}


def changes_power(tokens: list) -> bool:
    words = [str(token) for token in tokens]
    if words[:1] == ["sudo"]:
        words = [word for word in words if not word.startswith("-")][1:]
    if not words:
        return False
    program = words[0].rsplit("/", 1)[-1]
    if program in POWER:
        return True
    return program == "systemctl" and any(word in POWER for word in words[1:])


def flag(apps, schema_editor) -> None:
    AllowedCommand = apps.get_model("commands", "AllowedCommand")
    AllowedCommand.objects.filter(action_type__in=DISRUPTIVE_DEFAULTS).update(confirm=True)
    for rule in AllowedCommand.objects.filter(confirm=False):
        if changes_power(rule.template_tokens or []):
            rule.confirm = True
            rule.save(update_fields=["confirm"])


def unflag(apps, schema_editor) -> None:
    AllowedCommand = apps.get_model("commands", "AllowedCommand")
    AllowedCommand.objects.filter(action_type__in=DISRUPTIVE_DEFAULTS).update(confirm=False)


class Migration(migrations.Migration):
    dependencies = [
        ("commands", "0009_fleet_confirm_cut_bytes"),
    ]

    operations = [
        migrations.RunPython(flag, unflag),
    ]
