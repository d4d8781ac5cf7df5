"""Django admin: servers, API keys and the (read-only) audit trail.

The whitelist (AllowedCommand) admin lives in the section at the end of this file.
"""

from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from commands.models import ApiKey, Execution, Server


@admin.register(Server)
class ServerAdmin(admin.ModelAdmin):
    list_display = ["name", "hostname", "port", "username", "enabled", "host_key_pinned"]
    list_filter = ["enabled"]
    search_fields = ["name", "hostname", "notes"]

    @admin.display(boolean=True, description="host key pinned")
    def host_key_pinned(self, server: Server) -> bool:
        return bool(server.host_key)


# The library registers its own (unused) APIKey model; ours is ApiKey.
admin.site.unregister(LibraryAPIKey)


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    """The library's admin shows a new key once, in a message, and stores only its hash."""

    list_display = [*APIKeyModelAdmin.list_display, "owner", "last_used_at"]


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    """The audit trail is evidence: it can be read and filtered, never edited."""

    list_display = ["created_at", "server_name", "action_type", "status", "exit_code", "who"]
    list_filter = ["status", "action_type", "server_name"]
    search_fields = ["command", "server_name", "api_key_name", "username"]
    date_hierarchy = "created_at"

    @admin.display(description="who")
    def who(self, execution: Execution) -> str:
        return execution.api_key_name or execution.username

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# --- Whitelist (AllowedCommand) admin -------------------------------------------------
