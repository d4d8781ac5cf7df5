"""A request to run: who asks (`Caller`) and what they ask for (`ExecuteRequest`).

Every entry point, HTTP, WebSocket, admin, CLI and batch, builds a Caller from its own
transport (a key header, a session, a ticket, the operator at a terminal) and passes it
down whole: the pipeline, the quota and the audit row read it. The request bodies are
checked here, with DRF serializers used as validators, so each transport gets the same
field errors in the same words.
"""

from __future__ import annotations

import re
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
    # Who it is when there is no account, as the audit row's username: the CLI says
    # "cli:<unix user>" (runbatch).
    name: str = ""
    # The operator at this machine's shell (a management command): trusted like the admin
    # who set it up, and without a quota.
    operator: bool = False

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
    """`{"command", "action_type", "wait", "confirm"}` of POST servers/{id}/commands/execute."""

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
    confirm = serializers.BooleanField(
        default=False,
        help_text="true: the user has confirmed running a rule flagged `confirm` (GET "
        "servers/{id}/commands/ shows the flag). A logged-in session must send it for such "
        "a rule, or gets 400 confirmation_required; API keys are never asked.",
    )

    def validate_command(self, value: str) -> str:
        try:
            whitelist.check_command_text(value)
        except NotWhitelisted as exc:
            raise serializers.ValidationError(exc.detail) from None
        return value


MAX_LIMIT = 10000  # as many as HOMELAB_BATCH_MAX_SERVERS may ever allow
PERCENT = re.compile(r"([0-9]{1,3})%")


def parse_limit(value: object, *, name: str, minimum: int) -> tuple[int | None, int | None]:
    """(number, percent) from an int >= minimum or a string "N%" with N from 1 to 100;
    ValueError saying what is accepted otherwise."""
    if isinstance(value, bool):
        value = None  # true/false are not numbers, whatever Python says
    if isinstance(value, int) and minimum <= value <= MAX_LIMIT:
        return value, None
    if isinstance(value, str) and (found := PERCENT.fullmatch(value.strip())):
        percent = int(found[1])
        if 1 <= percent <= 100:
            return None, percent
    raise ValueError(
        f"{name} is a whole number from {minimum} to {MAX_LIMIT}, or a percentage of the targets "
        'from "1%" to "100%".'
    )


class ServerRefField(serializers.Field):
    """A server named by its id (a JSON number, or digits) or its name: kept as text."""

    default_error_messages = {
        "invalid": "Name a server by its id (a whole number) or its name (a slug), e.g. nas."
    }

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            if data < 1:
                self.fail("invalid")
            return str(data)
        if isinstance(data, str) and 0 < len(data) <= 64:
            return data
        self.fail("invalid")

    def to_representation(self, value: Any) -> Any:
        return value


class LimitField(serializers.Field):
    """A whole number of at least `minimum`, or "N%" of the targets (1 to 100): kept as
    given (an int or the string), fleet/scheduler.py turns it into a number."""

    def __init__(self, *, minimum: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.minimum = minimum

    def to_internal_value(self, data: Any) -> Any:
        try:
            parse_limit(data, name=self.field_name, minimum=self.minimum)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return data.strip() if isinstance(data, str) else data

    def to_representation(self, value: Any) -> Any:
        return value


class BatchRequest(ExecuteRequest):
    """`POST batches/`: the command, the targets (`servers` or `tag`) and the fan-out."""

    servers = serializers.ListField(
        child=ServerRefField(),
        required=False,
        allow_empty=False,
        max_length=10000,
        help_text='Servers by id or name, e.g. ["nas", 3]. Give this or `tag`.',
    )
    tag = serializers.RegexField(
        r"^[a-z0-9][a-z0-9_-]{0,31}$",
        required=False,
        help_text="Every server with this tag. Give this or `servers`.",
        error_messages={"invalid": "A tag is a slug such as pi or web (lowercase)."},
    )
    max_concurrency = LimitField(
        minimum=1,
        default=10,
        help_text='At most this many targets at once: a number >= 1, or "N%" of the '
        "targets (rounded up). Default 10.",
    )
    max_errors = LimitField(
        minimum=0,
        default=None,
        allow_null=True,
        help_text="Once MORE targets than this have ended without success, no further "
        'target starts: a number >= 0, or "N%" of the targets (rounded down). Default: '
        "no limit.",
    )
    wait = serializers.BooleanField(
        default=True,
        help_text="false: answer 202 at once with the batch_id; true (the default): answer "
        "once every target has ended.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("servers" in attrs) == ("tag" in attrs):
            raise serializers.ValidationError(
                'Give exactly one of "servers" (a list of ids or names) and "tag".'
            )
        return attrs


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """data checked by serializer_class: its validated fields, or InvalidRequest carrying
    the field errors (and a one-line summary of them as its detail, for the audit row)."""
    body = serializer_class(data={} if data is None else data)
    if body.is_valid():
        return dict(body.validated_data)
    errors = body.errors
    summary = "; ".join(f"{name}: {' '.join(map(str, msgs))}" for name, msgs in errors.items())
    raise InvalidRequest(summary, errors=errors)
