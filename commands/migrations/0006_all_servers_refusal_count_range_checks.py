"""Explicit "every server" for rules, a count on refusal rows, range checks in the database.

Until now a rule with no servers selected was usable on every server, so deleting the
last server a rule was limited to made it usable everywhere. `all_servers` now says
"every server" explicitly; a rule without it and without servers is usable nowhere.
The data step keeps what each existing rule allowed: one with no servers gets
`all_servers` (the default rules of 0002 among them).

Rows outside the new CHECK ranges would make adding the constraint fail. Such a rule
(timeout 0 answered 500 on every run) or server (port 0 or over 65535 never connected)
never worked, so it is given the default value and disabled for an admin to review,
rather than starting to work unseen.
"""

from django.db import migrations, models
from django.db.models import Q

TIMEOUT_RANGE = Q(timeout_seconds__gte=1, timeout_seconds__lte=3600)
PORT_RANGE = Q(port__gte=1, port__lte=65535)


def make_every_server_explicit(apps, schema_editor) -> None:
    AllowedCommand = apps.get_model("commands", "AllowedCommand")
    AllowedCommand.objects.filter(servers__isnull=True).update(all_servers=True)


def bring_rows_into_range(apps, schema_editor) -> None:
    AllowedCommand = apps.get_model("commands", "AllowedCommand")
    Server = apps.get_model("commands", "Server")
    AllowedCommand.objects.exclude(TIMEOUT_RANGE).update(timeout_seconds=30, enabled=False)
    Server.objects.exclude(PORT_RANGE).update(port=22, enabled=False)


class Migration(migrations.Migration):
    dependencies = [
        ("commands", "0005_server_name_validators"),
    ]

    operations = [
        migrations.AddField(
            model_name="allowedcommand",
            name="all_servers",
            field=models.BooleanField(
                default=False,
                help_text="Usable on every server, including ones added later. Leave it off "
                "and select servers to limit the rule; with neither, the rule is usable "
                "nowhere.",
                verbose_name="usable on every server",
            ),
        ),
        migrations.AlterField(
            model_name="allowedcommand",
            name="servers",
            field=models.ManyToManyField(
                blank=True,
                help_text="Servers this rule is limited to. Deleting them leaves the rule "
                "usable nowhere, never everywhere.",
                related_name="allowed_commands",
                to="commands.server",
            ),
        ),
        # Reversing drops the flag; "no servers" then means "every server" again.
        migrations.RunPython(make_every_server_explicit, migrations.RunPython.noop),
        migrations.AddField(
            model_name="execution",
            name="count",
            field=models.PositiveIntegerField(
                default=1,
                help_text="How many refusals this row stands for: a key refused again "
                "(throttled, forbidden) within the rate window adds to its row (created_at "
                "the first, finished_at the last) instead of writing a new one.",
            ),
        ),
        migrations.RunPython(bring_rows_into_range, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="allowedcommand",
            constraint=models.CheckConstraint(
                condition=TIMEOUT_RANGE,
                name="allowedcommand_timeout_1_to_3600",
            ),
        ),
        migrations.AddConstraint(
            model_name="server",
            constraint=models.CheckConstraint(
                condition=PORT_RANGE,
                name="server_port_1_to_65535",
            ),
        ),
    ]
