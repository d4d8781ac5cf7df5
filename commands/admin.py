"""Django admin: servers, API keys and the (read-only) audit trail.

The whitelist (AllowedCommand) admin lives in the section at the end of this file.
"""

import json
from dataclasses import dataclass

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from commands import scopes, whitelist
from commands.exceptions import CommandRejected
from commands.models import AllowedCommand, ApiKey, Execution, Server
from commands.ssh.hostkeys import check_host_key_strength, parse_host_key


class ServerForm(forms.ModelForm):
    """Pinning a host key by hand checks it as `trusthost` does: parseable, not weak."""

    def clean_host_key(self) -> str:
        text = self.cleaned_data["host_key"].strip()
        if text:
            try:
                check_host_key_strength(parse_host_key(text))
            except ValueError as exc:
                raise ValidationError(f"Not pinned: {exc}.") from None
        return text


@admin.register(Server)
class ServerAdmin(admin.ModelAdmin):
    form = ServerForm
    list_display = [
        "name",
        "hostname",
        "port",
        "username",
        "use_sudo",
        "enabled",
        "host_key_pinned",
    ]
    list_filter = ["enabled", "use_sudo"]
    search_fields = ["name", "hostname", "notes"]

    @admin.display(boolean=True, description="host key pinned")
    def host_key_pinned(self, server: Server) -> bool:
        return bool(server.host_key)


# The library registers its own (unused) APIKey model; ours is ApiKey.
admin.site.unregister(LibraryAPIKey)


class ApiKeyForm(forms.ModelForm):
    def clean(self) -> dict:
        cleaned = super().clean()
        # Both would read as "limited" while meaning "everything": make the admin choose.
        if cleaned.get("all_servers") and cleaned.get("servers"):
            self.add_error("all_servers", "Choose one: every server, or only the selected servers.")
        if cleaned.get("all_actions") and cleaned.get("action_types"):
            self.add_error("all_actions", "Choose one: every action type, or only the listed ones.")
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    """The library's admin shows a new key once, in a message, and stores only its hash.
    A key's scope (servers, action types, read-only) takes effect on its next request."""

    form = ApiKeyForm
    list_display = [*APIKeyModelAdmin.list_display, "owner", "scope", "last_used_at"]
    list_filter = [*APIKeyModelAdmin.list_filter, "read_only", "all_servers", "all_actions"]
    filter_horizontal = ["servers"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return super().get_queryset(request).prefetch_related("servers")

    @admin.display(description="scope")
    def scope(self, key: ApiKey) -> str:
        return scopes.describe(key)


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
class TryCommandForm(forms.Form):
    """The "try a command" box on a rule's change page (a GET form: it changes nothing)."""

    command = forms.CharField(strip=False, widget=forms.TextInput(attrs={"size": 80}))
    server = forms.ModelChoiceField(
        queryset=Server.objects.all(),
        required=False,
        empty_label="(any server)",
    )


@dataclass(frozen=True)
class TryResult:
    accepted: bool
    code: str = ""
    detail: str = ""
    argv: list[str] | None = None
    sent: str = ""

    @property
    def argv_json(self) -> str:
        return json.dumps(self.argv)


def try_rule(rule: AllowedCommand, command: str, server: Server | None) -> TryResult:
    """What a client sending command for this saved rule would get, without running it."""
    try:
        found = whitelist.match(command, rule)
    except CommandRejected as exc:
        return TryResult(accepted=False, code=exc.code, detail=exc.detail)
    shown = {"argv": found.argv, "sent": found.sent}
    if not rule.enabled:
        detail = "The command matches, but the rule is disabled; enable it to allow this."
        return TryResult(accepted=False, code="not_whitelisted", detail=detail, **shown)
    if not whitelist.usable_on(rule, server):
        detail = f"The command matches, but the rule is not usable on server {server}."
        return TryResult(accepted=False, code="not_whitelisted", detail=detail, **shown)
    return TryResult(accepted=True, **shown)


NOWHERE = (
    "nowhere: no servers are selected (the ones it was limited to were deleted, or none "
    "was chosen) and it is not usable on every server"
)


class AllowedCommandForm(forms.ModelForm):
    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("all_servers") and cleaned.get("servers"):
            # Both would read as "limited" while meaning "everywhere": make the admin choose.
            self.add_error(
                "all_servers",
                "Choose one: usable on every server, or limited to the selected servers.",
            )
        return cleaned


@admin.register(AllowedCommand)
class AllowedCommandAdmin(admin.ModelAdmin):
    """Rules take effect on save: every request reads its rule from the database."""

    form = AllowedCommandForm
    list_display = ["action_type", "template", "enabled", "timeout_seconds", "where", "updated_at"]
    list_filter = ["enabled", "all_servers", "servers"]
    search_fields = ["action_type", "description", "template"]
    filter_horizontal = ["servers"]
    readonly_fields = ["template_tokens", "created_at", "updated_at"]
    fields = [
        "action_type",
        "description",
        "template",
        "parameters",
        "template_tokens",
        "timeout_seconds",
        "enabled",
        "all_servers",
        "servers",
        "created_at",
        "updated_at",
    ]
    actions = ["enable_rules", "disable_rules"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AllowedCommand]:
        return super().get_queryset(request).prefetch_related("servers")

    @admin.display(description="usable on")
    def where(self, rule: AllowedCommand) -> str:
        if rule.all_servers:
            return "every server"
        return ", ".join(server.name for server in rule.servers.all()) or NOWHERE

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), **self.try_context(request, object_id)}
        rule = extra_context.pop("rule", None)
        if request.method == "GET" and rule and self.where(rule) == NOWHERE:
            self.message_user(request, f"This rule is usable {NOWHERE}.", messages.WARNING)
        return super().change_view(request, object_id, form_url, extra_context)

    def try_context(self, request: HttpRequest, object_id: str) -> dict:
        rule = self.get_object(request, object_id)
        if rule is None:
            return {}
        form = TryCommandForm(request.GET if "try-command" in request.GET else None, prefix="try")
        result = None
        if form.is_bound and form.is_valid():
            result = try_rule(rule, form.cleaned_data["command"], form.cleaned_data["server"])
        return {"try_form": form, "try_result": result, "rule": rule}

    @admin.action(description="Enable selected rules")
    def enable_rules(self, request: HttpRequest, queryset: QuerySet[AllowedCommand]) -> None:
        enabled = 0
        for rule in queryset.filter(enabled=False):
            try:
                rule.enabled = True
                rule.save(update_fields=["enabled", "template_tokens", "updated_at"])
            except ValidationError as exc:
                # A rule saved under an older, looser check stays off until it is fixed.
                self.message_user(
                    request, f"Rule {rule} stays disabled: {' '.join(exc.messages)}", messages.ERROR
                )
                continue
            self.log_change(request, rule, [{"changed": {"fields": ["Enabled"]}}])
            enabled += 1
        self.message_user(request, f"Enabled {enabled} rule(s).", messages.SUCCESS)

    @admin.action(description="Disable selected rules")
    def disable_rules(self, request: HttpRequest, queryset: QuerySet[AllowedCommand]) -> None:
        rules = list(queryset.filter(enabled=True))
        for rule in rules:
            # update(), not save(): disabling must work even for a rule that no longer
            # passes check_rule().
            AllowedCommand.objects.filter(pk=rule.pk).update(
                enabled=False, updated_at=timezone.now()
            )
            self.log_change(request, rule, [{"changed": {"fields": ["Enabled"]}}])
        self.message_user(request, f"Disabled {len(rules)} rule(s).", messages.SUCCESS)
