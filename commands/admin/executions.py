"""The audit trail in the admin: read and filter, never edit; a running one live."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.db.models import Case, IntegerField, Value, When
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.urls import reverse
from django.utils.text import Truncator

from commands.admin.access import StaffMayRead
from commands.models import Execution
from commands.results import cut_note
from commands.scopes import may_execute

# Running rows first (they are what an admin opens the trail for), then newest.
RUNNING_FIRST = Case(
    When(status=Execution.Status.RUNNING, then=Value(0)),
    default=Value(1),
    output_field=IntegerField(),
)


# Labels for people, where Django's own from the field names would say "Api key" and
# "Client ip" (set here, not as verbose_name: a model label is in the migrations).
LABELS = {
    "server": "Server",
    "server_name": "Server name",
    "api_key": "API key",
    "api_key_name": "API key name",
    "user": "User",
    "client_ip": "Client IP",
    "argv": "Argv sent",
    "stdout": "stdout",
    "stderr": "stderr",
    "stdout_truncated": "stdout cut",
    "stderr_truncated": "stderr cut",
    "stdout_cut_bytes": "stdout bytes left out",
    "stderr_cut_bytes": "stderr bytes left out",
    "duration_ms": "Duration (ms)",
    "error_code": "Error code",
    "error_detail": "Error detail",
    "created_at": "Started",
    "finished_at": "Finished",
}
SHORT_COMMAND = 60
SHORT_DETAIL = 80


class ExecutionForm(forms.ModelForm):
    """Only for its labels: every field of the trail is shown read-only."""

    class Meta:
        model = Execution
        fields = "__all__"  # noqa: DJ007 (the audit row is shown whole, never edited)
        labels = LABELS


def duration_text(milliseconds: int | None) -> str:
    """412 ms, 3.2 s, 12 min 5 s: a duration as a person reads it; "" when unknown."""
    if milliseconds is None:
        return ""
    if milliseconds < 1000:
        return f"{milliseconds} ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


@admin.register(Execution)
class ExecutionAdmin(StaffMayRead, admin.ModelAdmin):
    """The audit trail is evidence: it can be read and filtered, never edited."""

    form = ExecutionForm
    change_form_template = "admin/commands/execution/change_form.html"
    list_display = [
        "started",
        "server_name",
        "action_type",
        "short_command",
        "status",
        "exit_code",
        "duration",
        "reason",
        "who",
    ]
    list_filter = ["status", "server_name", "action_type"]
    # The search box: the command as sent, the server (as recorded, or as named now) and
    # who asked.
    search_fields = ["command", "server_name", "server__name", "api_key_name", "username"]
    search_help_text = "Search the command, the server and who asked (API key or user)."
    date_hierarchy = "created_at"
    ordering = [RUNNING_FIRST.asc(), "-created_at", "-id"]

    @admin.display(description="started", ordering="created_at")
    def started(self, execution: Execution):
        return execution.created_at

    @admin.display(description="command", ordering="command")
    def short_command(self, execution: Execution) -> str:
        return Truncator(execution.command).chars(SHORT_COMMAND)

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, execution: Execution) -> str:
        return duration_text(execution.duration_ms)

    @admin.display(description="reason", ordering="error_code")
    def reason(self, execution: Execution) -> str:
        """Why it did not succeed: the error code and the start of its detail."""
        if not execution.error_code:
            return ""
        detail = Truncator(" ".join(execution.error_detail.split())).chars(SHORT_DETAIL)
        return f"{execution.error_code}: {detail}" if detail else execution.error_code

    # The stored output has no marker in it (results.OUTPUT_FIELDS): this page adds one.
    readonly_fields = ["stdout_shown", "stderr_shown"]
    SHOWN = {"stdout": "stdout_shown", "stderr": "stderr_shown"}

    @admin.display(description="who")
    def who(self, execution: Execution) -> str:
        return execution.api_key_name or execution.username

    def get_fields(self, request: HttpRequest, obj: Execution | None = None) -> list:
        fields = [f for f in super().get_fields(request, obj) if f not in self.readonly_fields]
        return [self.SHOWN.get(name, name) for name in fields]

    @admin.display(description="stdout")
    def stdout_shown(self, execution: Execution) -> str:
        return with_cut_note(execution.stdout, execution.stdout_cut_bytes)

    @admin.display(description="stderr")
    def stderr_shown(self, execution: Execution) -> str:
        return with_cut_note(execution.stderr, execution.stderr_cut_bytes)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        execution = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if execution is not None and execution.status == Execution.Status.RUNNING:
            context["live"] = live_context(request, execution)
        return super().change_view(request, object_id, form_url, context)


def with_cut_note(text: str, cut_bytes: int) -> str:
    """The stored text, and a line saying how much was cut from its middle, if anything."""
    note = cut_note(cut_bytes)
    return f"{text}\n{note}" if note else text


def live_context(request: HttpRequest, execution: Execution) -> dict[str, Any]:
    """What console.js needs to follow a running execution (and cancel it, if allowed:
    the API checks that again)."""
    return {
        "mode": "execution",
        "execution_id": execution.pk,
        "stream": f"/ws/v1/executions/{execution.pk}/",
        "cancel_url": reverse("execution-cancel", args=["__id__"]),
        "audit_url": reverse("admin:commands_execution_change", args=["__id__"]),
        "can_cancel": may_execute(request.user),
        "csrf_token": get_token(request),
    }
