"""Django admin: servers, API keys, the whitelist and the (read-only) audit trail.

One module per model's admin; importing them here registers them (admin autodiscovery
imports `commands.admin`). The site says homelab, not "Django administration".

Django imports these modules whenever it starts, `./manage.py --help` included, so they
import the pipeline, the fleet, the quota and the SSH layer (DRF, Redis, paramiko: most of
a start-up) inside the functions that use them, not at the top (docs/performance.md).
"""

from django.contrib import admin

from commands.admin import batches, executions, keys, rules, servers

admin.site.site_header = "homelab"
admin.site.site_title = "homelab admin"

__all__ = ["batches", "executions", "keys", "rules", "servers"]
