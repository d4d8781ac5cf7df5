"""The whitelist (AllowedCommand) in the admin: parameter rows and the "try a command" box.

A rule's parameters are edited as rows (name, pattern, help text) instead of raw JSON;
they are stored as before, `parameters` = {name: pattern}, plus `parameter_help` =
{name: text}. Patterns and templates are judged by check_rule() (commands/whitelist.py)
alone: each row's pattern is checked by itself, so its error shows under its row, and the
model's clean() checks the whole rule; this form puts each error at the field or row it
concerns. Only the help texts (length, plain text) are checked here.
"""

import json
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from commands import whitelist
from commands.admin.access import StaffMayRead
from commands.admin.parameter_rows import (
    RULE_CODES,
    TEMPLATE_CODES,
    ParameterRow,
    ParameterRowsField,
    placeholders,
    row_problems,
    rows_of,
    rows_to_fix,
)
from commands.exceptions import CommandRejected
from commands.models import AllowedCommand, Server


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
    from commands.rules import usable_on  # not at the top: see admin/__init__.py

    if not usable_on(rule, server):
        detail = f"The command matches, but the rule is not usable on server {server}."
        return TryResult(accepted=False, code="not_whitelisted", detail=detail, **shown)
    return TryResult(accepted=True, **shown)


NOWHERE = (
    "nowhere: no servers are selected (the ones it was limited to were deleted, or none "
    "was chosen) and it is not usable on every server"
)


# --- parameter rows ------------------------------------------------------------------
class AllowedCommandForm(forms.ModelForm):
    parameters = ParameterRowsField(
        label="Parameters",
        help_text="One row per {name} in the template: the name, the regular expression "
        "a value must fully match (never an empty value, a leading '-' or a line break), "
        "and a short help text for clients. Blank rows are ignored; clear a row to remove "
        "its parameter.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.row_errors: dict[int, list[str]] = {}
        self.parameter_rows: list[ParameterRow] = []
        if "parameters" in self.fields:  # not for a user who may only view rules
            field = self.fields["parameters"]
            saved_help = self.instance.parameter_help
            field.saved_help = saved_help if isinstance(saved_help, dict) else {}
            field.widget.row_errors = self.row_errors
            self.initial["parameters"] = rows_of(self.instance.parameters, saved_help)

    def clean_parameters(self) -> dict[str, str]:
        rows = self.parameter_rows = self.cleaned_data["parameters"]
        for index, row in enumerate(rows):
            problems = row_problems(row, rows[:index])
            if problems:
                self.row_errors[index] = problems
        if self.row_errors:
            raise ValidationError(rows_to_fix(self.row_errors), code="parameter_rows")
        self.instance.parameter_help = {row.name: row.help for row in rows if row.help}
        return {row.name: row.pattern for row in rows}

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("all_servers") and cleaned.get("servers"):
            # Both would read as "limited" while meaning "everywhere": make the admin choose.
            self.add_error(
                "all_servers",
                "Choose one: usable on every server, or limited to the selected servers.",
            )
        return cleaned

    def add_error(self, field: str | None, error: Any) -> None:
        # The model's clean() runs check_rule() and raises without a field: each of its
        # errors goes to the field, or the row, it concerns.
        if field is None and isinstance(error, ValidationError) and hasattr(error, "error_dict"):
            # With the template or the rows in error, check_rule() saw the saved value, not
            # what was typed: its verdict waits for the next save.
            stale = self.has_error("template") or self.has_error("parameters")
            errors = dict(error.error_dict)
            for item in errors.pop(NON_FIELD_ERRORS, []):
                if item.code not in RULE_CODES:
                    errors.setdefault(NON_FIELD_ERRORS, []).append(item)
                elif not stale:
                    self.place_rule_error(item)
            if not errors:
                return
            error = ValidationError(errors)
        super().add_error(field, error)

    def place_rule_error(self, error: ValidationError) -> None:
        if error.code == "unused_parameter" and self.mark_unused_rows():
            return
        if error.code == "missing_pattern":
            error = ValidationError(
                "Token %(position)s is {%(name)s} but no parameter row is named %(quoted)s; "
                "fill in a row with that name and its pattern (braces around a bare name "
                "always mean a parameter).",
                code=error.code,
                params=error.params,
            )
        super().add_error("template" if error.code in TEMPLATE_CODES else "parameters", error)

    def mark_unused_rows(self) -> bool:
        used = placeholders(self.cleaned_data.get("template", ""))
        for index, row in enumerate(self.parameter_rows):
            if row.name not in used:
                self.row_errors[index] = [
                    f"Parameter {row.name!r} is declared but the template has no "
                    f"{{{row.name}}} token; use it in the template or clear this row."
                ]
        if self.row_errors:
            super().add_error("parameters", rows_to_fix(self.row_errors))
        return bool(self.row_errors)


@admin.register(AllowedCommand)
class AllowedCommandAdmin(StaffMayRead, admin.ModelAdmin):
    """Rules take effect on save: every request reads its rule from the database."""

    form = AllowedCommandForm
    list_display = [
        "action_type",
        "template",
        "enabled",
        "confirm",
        "timeout_seconds",
        "where",
        "updated_at",
    ]
    list_filter = ["enabled", "confirm", "all_servers", "servers"]
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
        "confirm",
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
