"""API keys in the admin: the library's create-once flow, plus our scopes and quota."""

import math

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from commands import scopes
from commands.exceptions import ServiceUnavailable
from commands.models import ApiKey

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

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple:
        fields = tuple(super().get_readonly_fields(request, obj))
        return (*fields, "executions_left") if obj is not None else fields

    @admin.display(description="executions left")
    def executions_left(self, key: ApiKey) -> str:
        """What the key has left of its quota now, as its X-RateLimit-* headers say it."""
        from commands import quota  # not at the top: see admin/__init__.py
        from commands.requests import Caller

        try:
            usage = quota.peek(Caller(api_key=key))
        except ServiceUnavailable as exc:
            return exc.detail
        rate = quota.rate_of(Caller(api_key=key))
        source = "its own" if key.rate else "HOMELAB_EXECUTE_RATE"
        text = f"{usage.remaining} of {usage.limit} left (rate {rate}, {source})"
        if usage.remaining < usage.limit:
            text += f"; one more frees in {math.ceil(usage.reset)} s"
        return text
