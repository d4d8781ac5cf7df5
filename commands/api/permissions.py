"""Who may use the API: holders of a valid API key, or logged-in staff; and who may act.

Reading (servers, rules, executions, following a stream) takes an API key or a staff
login. Running or cancelling a command, or checking a server (it opens an SSH session),
takes more for a session user: the `commands.execute_command` permission ("Can execute
and cancel commands"; superusers have every permission). API keys are limited by their
own scopes instead. Both are decided in commands/scopes.py (`may_execute`, `may_read`);
these are the API's permission classes over them.
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from commands.models import ApiKey
from commands.scopes import NO_EXECUTE_PERMISSION, may_execute, may_read


class IsApiKeyOrStaff(BasePermission):
    """Allows requests carrying a valid API key, or from an authenticated staff user."""

    message = "An API key or a staff login is required."

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ApiKey):
            return True
        return may_read(request.user)


class CanExecute(BasePermission):
    """A session user needs may_execute; an API key passes here (its scopes decide).

    Use after IsApiKeyOrStaff, so a non-staff user is told that staff is needed."""

    message = NO_EXECUTE_PERMISSION

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ApiKey):
            return True
        return may_execute(request.user)


EXECUTE_PERMISSIONS = [IsApiKeyOrStaff, CanExecute]
