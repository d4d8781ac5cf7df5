"""Scoped API keys: limited to servers, to action types, or read-only.

"Every server" and "every action" are explicit flags, as for rules in 0006: a key whose
servers are all deleted reaches none. Existing keys keep what they could do (every
server, every action, not read-only) through the defaults.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("commands", "0006_all_servers_refusal_count_range_checks"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="all_servers",
            field=models.BooleanField(
                default=True,
                help_text="Sees and runs commands on every server, including ones added "
                "later. Turn it off and select servers to limit the key; with neither, it "
                "reaches no server.",
                verbose_name="usable on every server",
            ),
        ),
        migrations.AddField(
            model_name="apikey",
            name="servers",
            field=models.ManyToManyField(
                blank=True,
                help_text="Servers this key is limited to (when not usable on every server). "
                "Deleting them leaves the key usable on no server, never on every one.",
                related_name="api_keys",
                to="commands.server",
            ),
        ),
        migrations.AddField(
            model_name="apikey",
            name="all_actions",
            field=models.BooleanField(
                default=True,
                help_text="May run every whitelist rule. Turn it off and list action types "
                "to limit the key; with neither, it runs nothing.",
                verbose_name="may run every action type",
            ),
        ),
        migrations.AddField(
            model_name="apikey",
            name="action_types",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text='Action types this key is limited to, e.g. ["uptime", '
                '"disk_usage"] (when it may not run every action type).',
            ),
        ),
        migrations.AddField(
            model_name="apikey",
            name="read_only",
            field=models.BooleanField(
                default=False,
                help_text="Lists servers, commands and executions, never executes or cancels.",
                verbose_name="read-only",
            ),
        ),
    ]
