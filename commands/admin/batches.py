"""Batches in the admin: run one command on servers chosen in the server list or by tag,
and watch a batch live, one pane per server, with Cancel.

The run page posts its form here and the batch starts through the fleet service with the
logged-in user as the caller (as the API would, so the same refusals and audit apply); the
batch page follows ws/v1/batches/{id}/ with the session (commands/static/commands/fleet.js)
and cancels through the API. Reaching servers needs may_execute, enforced here.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from commands.admin.access import StaffMayRead
from commands.exceptions import HomelabError
from commands.models import AllowedCommand, Batch, Server, Tag
from commands.scopes import NO_EXECUTE_PERMISSION, may_execute


class RunBatchForm(forms.Form):
    """What to run where: the servers picked in the list, or a tag; the fan-out options."""

    servers = forms.ModelMultipleChoiceField(
        queryset=Server.objects.all(), required=False, widget=forms.MultipleHiddenInput
    )
    tag = forms.ModelChoiceField(
        queryset=Tag.objects.all(),
        required=False,
        to_field_name="name",
        empty_label="Choose a tag…",
        help_text="Every server with this tag (when no servers were picked in the list).",
    )
    action_type = forms.ModelChoiceField(
        queryset=AllowedCommand.objects.filter(enabled=True),
        to_field_name="action_type",
        empty_label="Choose a command…",
        label="Rule",
    )
    command = forms.CharField(
        max_length=1024,
        strip=False,
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="The whole command as the rule's template has it, with its parameters "
        "filled in, e.g. systemctl restart nginx.",
    )
    max_concurrency = forms.CharField(
        initial="10", max_length=4, help_text='How many at once: a number or "N%".'
    )
    max_errors = forms.CharField(
        required=False,
        max_length=4,
        help_text="Stop starting targets once MORE than this many failed (a number or "
        '"N%"); empty: never stop. 0 with 1 at once is a rolling update.',
    )
    confirm_name = forms.CharField(
        required=False,
        label="Confirm",
        help_text="For a rule that changes machines: type its name (the action type) to run.",
    )

    def clean(self) -> dict:
        cleaned = super().clean()
        if not cleaned.get("servers") and not cleaned.get("tag"):
            raise forms.ValidationError("Pick servers in the server list, or choose a tag.")
        rule = cleaned.get("action_type")
        if rule is not None and rule.confirm and cleaned.get("confirm_name") != rule.action_type:
            self.add_error(
                "confirm_name",
                f"{rule.action_type} changes the machines it runs on: type {rule.action_type} "
                "to confirm.",
            )
        return cleaned

    def body(self) -> dict[str, Any]:
        """The batch request, as the API takes it."""
        data = self.cleaned_data
        targets = (
            {"servers": [server.name for server in data["servers"]]}
            if data.get("servers")
            else {"tag": data["tag"].name}
        )
        return {
            "command": data["command"],
            "action_type": data["action_type"].action_type,
            "max_concurrency": as_limit(data["max_concurrency"]),
            "max_errors": as_limit(data["max_errors"]) if data.get("max_errors") else None,
            "wait": False,
            # clean() refused a flagged rule whose name was not typed.
            "confirm": bool(data["action_type"].confirm),
            **targets,
        }


def as_limit(text: str) -> int | str:
    text = text.strip()
    return int(text) if text.isdecimal() else text


@admin.action(description="Run a command on the selected servers", permissions=["execute"])
def run_on_servers(modeladmin, request: HttpRequest, queryset: QuerySet[Server]) -> HttpResponse:
    """The server list's action: the run page with the picked servers."""
    if not may_execute(request.user):
        raise PermissionDenied(NO_EXECUTE_PERMISSION)
    ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
    return redirect(f"{reverse('admin:commands_batch_run')}?servers={ids}")


@admin.register(Batch)
class BatchAdmin(StaffMayRead, admin.ModelAdmin):
    """The fleet's audit trail: read, filter and watch, never edit."""

    change_form_template = "admin/commands/batch/change_form.html"
    list_display = ["created_at", "action_type", "command", "target", "status", "who"]
    list_filter = ["status", "action_type"]
    search_fields = ["command", "tag", "api_key_name", "username"]
    date_hierarchy = "created_at"

    @admin.display(description="targets")
    def target(self, batch: Batch) -> str:
        return f"tag {batch.tag}" if batch.tag else ", ".join(map(str, batch.requested))

    @admin.display(description="who")
    def who(self, batch: Batch) -> str:
        return batch.api_key_name or batch.username

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [path("run/", wrap(self.run_view), name="commands_batch_run"), *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ) -> HttpResponse:
        batch = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if batch is not None:
            context["fleet"] = batch_context(request, batch)
        return super().change_view(request, object_id, form_url, context)

    def run_view(self, request: HttpRequest) -> HttpResponse:
        """GET: the run form (servers from ?servers=, or a tag); POST: start the batch."""
        if not may_execute(request.user):
            raise PermissionDenied(NO_EXECUTE_PERMISSION)
        if request.method == "POST":
            form = RunBatchForm(request.POST)
            if form.is_valid():
                started = self.start(request, form)
                if started is not None:
                    return redirect(reverse("admin:commands_batch_change", args=[started.pk]))
        else:
            picked = [pk for pk in request.GET.get("servers", "").split(",") if pk.isdecimal()]
            form = RunBatchForm(initial={"servers": picked})
        servers = form["servers"].value() or []
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Run a command on many servers",
            "form": form,
            "picked": Server.objects.filter(pk__in=[str(pk) for pk in servers]),
            "confirm_rules": list(
                AllowedCommand.objects.filter(confirm=True).values_list("action_type", flat=True)
            ),
        }
        return TemplateResponse(request, "admin/commands/batch/run.html", context)

    def start(self, request: HttpRequest, form: RunBatchForm) -> Batch | None:
        # Not at the top: see admin/__init__.py.
        from commands.api.clientip import from_meta
        from commands.fleet import service as fleet
        from commands.requests import Caller

        caller = Caller(None, request.user, from_meta(request.META))
        try:
            return fleet.request_batch(caller=caller, body=form.body, wait=False)
        except HomelabError as exc:
            form.add_error(None, f"{exc.detail} ({exc.code})")
            return None


def batch_context(request: HttpRequest, batch: Batch) -> dict[str, Any]:
    """What fleet.js needs: the panes (one per target, in order), the URLs, the token."""
    return {
        "batch_id": batch.pk,
        "status": batch.status,
        "stream": f"/ws/v1/batches/{batch.pk}/",
        "cancel_url": reverse("batch-cancel", args=[batch.pk]),
        "audit_url": reverse("admin:commands_execution_change", args=["__id__"]),
        "can_cancel": may_execute(request.user) and batch.status == Batch.Status.RUNNING,
        "csrf_token": get_token(request),
        "targets": [target.server_name for target in batch.targets.order_by("position")],
    }


@admin.register(Tag)
class TagAdmin(StaffMayRead, admin.ModelAdmin):
    list_display = ["name", "server_count"]
    search_fields = ["name"]

    @admin.display(description="servers")
    def server_count(self, tag: Tag) -> int:
        return tag.servers.count()
