"""Who may use the API: holders of a valid API key, or logged-in staff; and who may act.

Reading (servers, rules, executions, following a stream) takes an API key or a staff
login. Running or cancelling a command, or checking a server (it opens an SSH session),
takes more for a session user: the `commands.execute_command` permission ("Can execute
and cancel commands"; superusers have every permission). API keys are limited by their
own scopes instead (commands/scopes.py). `may_execute` is the one place this is decided:
the views, the WebSocket consumer, sockets.py and the admin all call it.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission

from commands import scopes
from commands.exceptions import KeyScope
from commands.models import ApiKey, Server

EXECUTE_PERMISSION = "commands.execute_command"
NO_EXECUTE_PERMISSION = (
    "Your user may read but not run, cancel or check: that takes the "
    'commands.execute_command permission ("Can execute and cancel commands"). Ask an '
    "admin to grant it to your user or one of its groups in the admin's Users page."
)


def may_execute(user: Any) -> bool:
    """Whether a logged-in user may run and cancel commands: an active staff user with
    commands.execute_command (a superuser has it)."""
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_active
        and user.is_staff
        and user.has_perm(EXECUTE_PERMISSION)
    )


def may_read(user: Any) -> bool:
    """Whether a logged-in user may read servers, rules and the audit trail: active staff."""
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


class IsApiKeyOrStaff(BasePermission):
    """Allows requests carrying a valid API key, or from an authenticated staff user."""

    message = "An API key or a staff login is required."

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ApiKey):
            return True
        return may_read(request.user)


class StaffMayRead:
    """ModelAdmin mixin: any staff login may look (read-only) at what the API lets it read,
    without the model's view permission; adding, changing and deleting keep theirs."""

    def has_view_permission(self, request, obj=None) -> bool:
        return may_read(request.user) or super().has_view_permission(request, obj)

    def has_module_permission(self, request) -> bool:
        return may_read(request.user) or super().has_module_permission(request)


class CanExecute(BasePermission):
    """A session user needs may_execute; an API key passes here (its scopes decide).

    Use after IsApiKeyOrStaff, so a non-staff user is told that staff is needed."""

    message = NO_EXECUTE_PERMISSION

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ApiKey):
            return True
        return may_execute(request.user)


EXECUTE_PERMISSIONS = [IsApiKeyOrStaff, CanExecute]


def check_key_may_check(key: ApiKey | None, server: Server | None, *, server_ref: str) -> None:
    """Raise KeyScope unless key may check server: a check opens an SSH session, so a
    read-only key may not, nor a key limited to other servers. server is None for one a
    server-limited key cannot see, whether or not it exists (server_ref names it)."""
    if key is None:
        return
    if key.read_only:
        raise KeyScope(scopes.read_only_detail(key))
    if scopes.limits_servers(key) and (server is None or not _in_scope(key, server)):
        names = [s.name for s in scopes.allowed_servers(key)]
        where = f"servers {', '.join(names)}" if names else "no server (its servers were deleted)"
        target = server.name if server is not None else server_ref
        raise KeyScope(
            f"API key {key.name!r} is limited to {where}; it may not check {target!r}. "
            "Use a key for that server, or widen this one in the admin."
        )


def _in_scope(key: ApiKey, server: Server) -> bool:
    return scopes.allowed_servers(key).filter(pk=server.pk).exists()
