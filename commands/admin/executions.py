"""The audit trail in the admin: read and filter, never edit."""

from django.contrib import admin

from commands.models import Execution


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
