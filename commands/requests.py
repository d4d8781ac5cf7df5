"""A request to run: who asks (`Caller`) and what they ask for (`ExecuteRequest`).

Every entry point, HTTP, WebSocket, admin, CLI and batch, builds a Caller from its own
transport (a key header, a session, a ticket, the operator at a terminal) and passes it
down whole: the pipeline, the quota and the audit row read it. The request bodies are
checked here, with DRF serializers used as validators, so each transport gets the same
field errors in the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework import serializers

from commands import whitelist
from commands.exceptions import InvalidRequest, NotWhitelisted
from commands.models import ApiKey


@dataclass(frozen=True)
class Caller:
    """Who is asking: an API key (with its owner, if any), or a logged-in user; and from
    where (the client address the audit row records)."""

    api_key: ApiKey | None = None
    user: Any = None
    client_ip: str | None = None

    @property
    def account(self) -> Any:
        """The authenticated user, or None (an owner-less key, the CLI)."""
        user = self.user
        return user if user is not None and getattr(user, "is_authenticated", False) else None

    @property
    def ident(self) -> str | None:
        """The caller's quota and refusal-count key: its key's prefix (never the hash), or
        its user; None for an anonymous caller (the CLI), which has no quota."""
        if self.api_key is not None:
            return f"key:{self.api_key.prefix}"
        if self.account is not None:
            return f"user:{self.account.pk}"
        return None

    @property
    def is_session(self) -> bool:
        """A logged-in user without a key: the user's permissions decide, not key scopes."""
        return self.api_key is None and self.account is not None


class ExecuteRequest(serializers.Serializer):
    """`{"command", "action_type", "wait"}` of POST servers/{id}/commands/execute."""

    command = serializers.CharField(
        max_length=whitelist.MAX_COMMAND_LENGTH,
        help_text="The command line, e.g. `uptime`. It must match the "
        "template of the rule named by action_type; it is never passed to a shell as is.",
    )
    action_type = serializers.SlugField(
        max_length=64,
        help_text="The whitelist rule to match, e.g. uptime.",
        error_messages={
            "required": "Name the whitelist rule to match, e.g. uptime; "
            "GET /api/v1/servers/{{id}}/commands/ lists the rules usable on a server."
        },
    )
    wait = serializers.BooleanField(
        default=True,
        help_text="false: answer 202 once the command is handed to the runner, with the "
        "execution_id to follow (GET executions/{id}/ or the WebSocket "
        "ws/v1/executions/{id}/). true (the default): wait for the result.",
    )

    def validate_command(self, value: str) -> str:
        try:
            whitelist.check_command_text(value)
        except NotWhitelisted as exc:
            raise serializers.ValidationError(exc.detail) from None
        return value


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """data checked by serializer_class: its validated fields, or InvalidRequest carrying
    the field errors (and a one-line summary of them as its detail, for the audit row)."""
    body = serializer_class(data={} if data is None else data)
    if body.is_valid():
        return dict(body.validated_data)
    errors = body.errors
    summary = "; ".join(f"{name}: {' '.join(map(str, msgs))}" for name, msgs in errors.items())
    raise InvalidRequest(summary, errors=errors)
