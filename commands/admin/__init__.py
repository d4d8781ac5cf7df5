"""Django admin: servers, API keys, the whitelist and the (read-only) audit trail.

One module per model's admin; importing them here registers them (admin autodiscovery
imports `commands.admin`).
"""

from commands.admin import batches, executions, keys, rules, servers

__all__ = ["batches", "executions", "keys", "rules", "servers"]
