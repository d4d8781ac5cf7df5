"""Servers in the admin: connection settings, the pinned host key, and the console.

A server's change page runs commands (commands/static/commands/run-panel.js posts to the
API with the session; console.js follows the execution's WebSocket), checks the server step by
step and pins its host key. Everything that reaches the server needs may_execute,
enforced in these views, not only hidden in the template. What the console shows and the
preview of a run are in commands/admin/console.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_slug
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from commands.admin import console
from commands.admin.access import StaffMayRead
from commands.admin.batches import run_on_servers
from commands.exceptions import SSHError
from commands.models import Server
from commands.scopes import NO_EXECUTE_PERMISSION, may_execute


class ServerForm(forms.ModelForm):
    """Pinning a host key by hand checks it as `trusthost` does: parseable, not weak."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "name" in self.fields:
            # The model checks that the name is a slug, with a message that suggests one
            # ("My NAS": e.g. my-nas); the form field's own check would only say "invalid".
            field = self.fields["name"]
            field.validators = [v for v in field.validators if v is not validate_slug]

    def clean_host_key(self) -> str:
        text = self.cleaned_data["host_key"].strip()
        if text:
            from commands import ssh  # not at the top: see admin/__init__.py

            try:
                ssh.check_host_key_strength(ssh.parse_host_key(text))
            except ValueError as exc:
                raise ValidationError(f"Not pinned: {exc}.") from None
        return text


@admin.register(Server)
class ServerAdmin(StaffMayRead, admin.ModelAdmin):
    form = ServerForm
    change_form_template = "admin/commands/server/change_form.html"
    list_display = [
        "name",
        "hostname",
        "port",
        "username",
        "use_sudo",
        "enabled",
        "host_key_pinned",
        "tag_names",
    ]
    list_filter = ["enabled", "use_sudo", "tags"]
    search_fields = ["name", "hostname", "notes"]
    fields = [
        "name",
        "hostname",
        "port",
        "username",
        "use_sudo",
        "key_file",
        "host_key",
        "host_key_fingerprint",
        "enabled",
        "tags",
        "notes",
    ]
    readonly_fields = ["host_key_fingerprint"]
    filter_horizontal = ["tags"]
    actions = ["check_servers", run_on_servers]
    change_list_template = "admin/commands/server/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Server]:
        return super().get_queryset(request).prefetch_related("tags")

    @admin.display(description="tags")
    def tag_names(self, server: Server) -> str:
        return ", ".join(tag.name for tag in server.tags.all())

    @admin.display(boolean=True, description="host key pinned")
    def host_key_pinned(self, server: Server) -> bool:
        return bool(server.host_key)

    @admin.display(description="pinned key's fingerprint")
    def host_key_fingerprint(self, server: Server) -> str:
        """As `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it on the server."""
        if not server.host_key:
            return "not pinned"
        from commands import ssh  # not at the top: see admin/__init__.py

        try:
            return ssh.keygen_fingerprint(server.host_key)
        except ValueError as exc:
            return f"unusable ({exc})"

    def has_execute_permission(self, request: HttpRequest) -> bool:
        """Reaching a server (run, check, pin) needs may_execute; the admin's actions ask here."""
        return may_execute(request.user)

    def require_execute(self, request: HttpRequest) -> None:
        if not may_execute(request.user):
            raise PermissionDenied(NO_EXECUTE_PERMISSION)

    # --- saving ----------------------------------------------------------------------------
    def save_model(self, request: HttpRequest, obj: Server, form, change: bool) -> None:
        moved = {"hostname", "port"} & set(form.changed_data)
        if change and moved and obj.host_key and "host_key" not in form.changed_data:
            # A new address is a new machine as far as trust goes (as addserver does):
            # the old pin must not vouch for whatever answers there now.
            obj.host_key = ""
            self.message_user(
                request,
                f"The address of {obj.name} changed to {obj.address}, so its pinned host key "
                'was cleared and commands are refused until you pin it again: use "Pin host '
                f'key" on this page (or `./manage.py trusthost {obj.name}`) after checking '
                "the fingerprint on the server.",
                messages.WARNING,
            )
        super().save_model(request, obj, form, change)

    # --- the change page -------------------------------------------------------------------
    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<path:object_id>/preview/", wrap(self.preview_view), name=f"{info}_preview"),
            path("<path:object_id>/check/", wrap(self.check_view), name=f"{info}_check"),
            path("<path:object_id>/pin/", wrap(self.pin_view), name=f"{info}_pin"),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        server = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if server is not None:
            context.update(self.console_context(request, server))
        return super().change_view(request, object_id, form_url, context)

    def console_context(self, request: HttpRequest, server: Server) -> dict[str, Any]:
        """What the template and console.js need; no console without may_execute. The
        server's last executions are shown to whoever may read the page."""
        recent = console.recent_executions(server)
        if not may_execute(request.user):
            return {"console": None, "may_execute": False, "may_pin": False, "recent": recent}
        may_pin = self.has_change_permission(request, server)
        return {
            "console": console.console_config(request, server, may_pin=may_pin),
            "may_execute": True,
            "may_pin": may_pin,
            "recent": recent,
        }

    # --- preview: what Run would send --------------------------------------------------------
    def preview_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """GET ?action_type=A&param.NAME=VALUE: {"argv", "command", "sent", "problems"} or
        {"detail", "code", "problems"}; whitelist.match decides, as the API will."""
        if not may_execute(request.user):
            return JsonResponse(
                {"detail": NO_EXECUTE_PERMISSION, "code": "permission_denied"}, status=403
            )
        server = self.get_object(request, unquote(object_id))
        if server is None:
            detail = f"No server with id {object_id!r}."
            return JsonResponse({"detail": detail, "code": "server_not_found"}, status=404)
        values = {
            key.removeprefix("param."): value
            for key, value in request.GET.items()
            if key.startswith("param.")
        }
        status, body = console.preview(server, request.GET.get("action_type", ""), values)
        return JsonResponse(body, status=status)

    # --- check -----------------------------------------------------------------------------
    @admin.action(description="Check selected servers", permissions=["execute"])
    def check_servers(self, request: HttpRequest, queryset: QuerySet[Server]) -> HttpResponse:
        self.require_execute(request)  # the action list hides it; a forged POST ends here
        return self.check_report(request, list(queryset))

    def check_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST (it opens an SSH session): the step-by-step check of one server."""
        self.require_execute(request)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        server = self.get_object(request, unquote(object_id))
        if server is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        return self.check_report(request, [server])

    def check_report(self, request: HttpRequest, servers: list[Server]) -> TemplateResponse:
        from commands import checks  # not at the top: see admin/__init__.py

        # In parallel: a host that accepts TCP and then stalls costs up to the connect
        # timeout per step, and the action may check many servers in one request.
        with ThreadPoolExecutor(max_workers=min(8, len(servers)) or 1) as pool:
            reports = list(zip(servers, pool.map(checks.check_server, servers), strict=True))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Server check" if len(servers) == 1 else "Servers check",
            "reports": reports,
        }
        return TemplateResponse(request, "admin/commands/server/check_report.html", context)

    # --- pin -------------------------------------------------------------------------------
    def pin_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: fetch the server's key and show its fingerprint; POST: pin the key shown."""
        self.require_execute(request)
        server = self.get_object(request, unquote(object_id))
        if server is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, server):
            raise PermissionDenied("Pinning a host key needs the permission to change servers.")
        change_url = reverse("admin:commands_server_change", args=[server.pk])
        if request.method == "POST":
            if request.POST.get("fetched_from") != address_of(server):
                # Another admin changed the address since: this key came from the old one.
                self.message_user(
                    request,
                    f"Not pinned: {server.name}'s address changed to {address_of(server)} since "
                    "the key was fetched; use Pin host key again.",
                    messages.ERROR,
                )
                return redirect(change_url)
            return self.pin(request, server, request.POST.get("host_key", ""), change_url)
        from commands import ssh  # not at the top: see admin/__init__.py

        try:
            key = ssh.fetch_host_key(
                server.hostname, server.port, timeout=settings.HOMELAB_CONNECT_TIMEOUT
            )
        except SSHError as exc:
            self.message_user(request, f"Not pinned: {exc}", messages.ERROR)
            return redirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": server,
            "title": f"Pin the host key of {server.name}",
            **pin_context(server, key),
        }
        return TemplateResponse(request, "admin/commands/server/pin_host_key.html", context)

    def pin(self, request: HttpRequest, server: Server, key: str, change_url: str) -> HttpResponse:
        from commands import ssh  # not at the top: see admin/__init__.py

        try:
            parsed = ssh.parse_host_key(key)
            ssh.check_host_key_strength(parsed)
        except ValueError as exc:
            self.message_user(request, f"Not pinned: {exc}.", messages.ERROR)
            return redirect(change_url)
        server.host_key = ssh.format_host_key(parsed)
        # Only while the address is still the one the key came from (checked just before,
        # in pin_view): an edit landing in between must not receive this key.
        pinned = Server.objects.filter(
            pk=server.pk, hostname=server.hostname, port=server.port
        ).update(host_key=server.host_key, updated_at=timezone.now())
        if not pinned:
            self.message_user(
                request,
                f"Not pinned: {server.name}'s address changed while pinning; use Pin host key "
                "again.",
                messages.ERROR,
            )
            return redirect(change_url)
        self.log_change(request, server, [{"changed": {"fields": ["pinned host key"]}}])
        self.message_user(
            request,
            f"Pinned host key for {server.name}: {ssh.keygen_fingerprint(server.host_key)}.",
            messages.SUCCESS,
        )
        return redirect(change_url)


def pin_context(server: Server, key: str) -> dict[str, Any]:
    """The confirmation page's facts: the fetched key, whether it is weak or already pinned."""
    from commands import ssh  # not at the top: see admin/__init__.py

    try:
        ssh.check_host_key_strength(key)
        weak = ""
    except ValueError as exc:
        weak = str(exc)
    pinned = server.host_key.split()[:2] if server.host_key else None
    replaces = ""
    if pinned:
        try:
            replaces = ssh.keygen_fingerprint(server.host_key)
        except ValueError as exc:  # a pin paramiko no longer reads (ssh-dss): replace it
            replaces = f"(an unusable pin: {exc})"
    return {
        "host_key": key,
        "fetched_from": address_of(server),
        "fingerprint": ssh.keygen_fingerprint(key),
        "weak": weak,
        "already_pinned": pinned == key.split()[:2],
        "replaces": replaces,
    }


def address_of(server: Server) -> str:
    """Where a fetched key came from: a pin confirmed for another address is refused."""
    return server.address
