"""A short help text per whitelist parameter, edited in the admin's parameter rows.

Kept apart from `parameters` ({name: pattern}), whose shape the API, the matcher and
0002 rely on; existing rules get no help texts.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("commands", "0007_apikey_scopes"),
    ]

    operations = [
        migrations.AddField(
            model_name="allowedcommand",
            name="parameter_help",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text='Parameter name to a short help text for clients, e.g. {"service": "a systemd unit, e.g. nginx"}; edited in the admin as parameter rows.',
            ),
        ),
    ]
