"""Default whitelist rules for a homelab; documented in docs/whitelist.md.

Forward adds each rule whose action_type is not taken yet (an admin's own rule wins).
Reverse deletes only rules still exactly as this migration created them.
"""

import shlex

from django.db import migrations

# A systemd unit name: nginx.service, wg-quick@wg0, sshd. Starts with a letter, digit or _
# so it can never be read as an option.
UNIT = r"^[A-Za-z0-9_][A-Za-z0-9_.@:-]{0,127}$"
CONTAINER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"

DEFAULT_RULES = [
    {
        "action_type": "uptime",
        "description": "How long the server has been up, and its load.",
        "template": "uptime",
        "parameters": {},
    },
    {
        "action_type": "disk_usage",
        "description": "Free and used space per mounted filesystem.",
        "template": "df -h",
        "parameters": {},
    },
    {
        "action_type": "memory",
        "description": "Memory and swap use in MiB.",
        "template": "free -m",
        "parameters": {},
    },
    {
        "action_type": "service_status",
        "description": "Status of one systemd unit (exit code 3 means inactive).",
        "template": "systemctl status --no-pager {service}",
        "parameters": {"service": UNIT},
    },
    {
        "action_type": "restart_service",
        "description": "Restart one systemd unit.",
        "template": "systemctl restart {service}",
        "parameters": {"service": UNIT},
        "timeout_seconds": 120,
    },
    {
        "action_type": "service_logs",
        "description": "The last 100 journal lines of one systemd unit.",
        "template": "journalctl --no-pager -n 100 -u {service}",
        "parameters": {"service": UNIT},
    },
    {
        "action_type": "failed_units",
        "description": "Systemd units that have failed.",
        "template": "systemctl --failed --no-pager",
        "parameters": {},
    },
    {
        "action_type": "docker_ps",
        "description": "All Docker containers, running or not.",
        "template": "docker ps --all",
        "parameters": {},
    },
    {
        "action_type": "docker_restart",
        "description": "Restart one Docker container by name.",
        "template": "docker restart {container}",
        "parameters": {"container": CONTAINER},
        "timeout_seconds": 120,
    },
    {
        "action_type": "list_upgradable",
        "description": "Debian/Ubuntu packages with an upgrade available (from the last update).",
        "template": "apt list --upgradable",
        "parameters": {},
    },
    {
        "action_type": "apply_updates",
        "description": "Refresh package lists and install all upgrades, non-interactively.",
        "template": "sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get -y upgrade'",
        "parameters": {},
        "timeout_seconds": 1800,
    },
    {
        "action_type": "clear_logs",
        "description": "Delete journal files older than 7 days.",
        "template": "journalctl --vacuum-time=7d",
        "parameters": {},
        "timeout_seconds": 120,
    },
]


def add_defaults(apps, schema_editor) -> None:
    # The historical model has no custom save(), so tokenize here. Frozen: this migration
    # must not call today's commands.whitelist.check_rule, or tightening that check would
    # break a fresh `migrate`. These rules pass it today (tests/test_migrations.py checks
    # that, and that the tokens are the same); every request re-checks its rule anyway.
    AllowedCommand = apps.get_model("commands", "AllowedCommand")
    for rule in DEFAULT_RULES:
        if AllowedCommand.objects.filter(action_type=rule["action_type"]).exists():
            continue
        fields = dict(rule)
        fields["template_tokens"] = shlex.split(rule["template"])
        AllowedCommand.objects.create(**fields)


def remove_defaults(apps, schema_editor) -> None:
    AllowedCommand = apps.get_model("commands", "AllowedCommand")
    for rule in DEFAULT_RULES:
        # An admin may have edited a default rule since; only an untouched one is ours.
        for row in AllowedCommand.objects.filter(
            action_type=rule["action_type"], template=rule["template"]
        ):
            if row.parameters == rule["parameters"] and not row.servers.exists():
                row.delete()


class Migration(migrations.Migration):
    dependencies = [
        ("commands", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(add_defaults, remove_defaults),
    ]
