"""Servers in the admin: connection settings and the pinned host key."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from commands.models import Server
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
