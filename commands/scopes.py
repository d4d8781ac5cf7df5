"""Who may do what: what an API key may reach (its servers, its action types, whether it
may act at all), and what a logged-in user may do (`may_read`, `may_execute`).

Pure functions over the key and user rows, no HTTP: the pipeline (services.py), the API's
permission classes, the WebSocket consumers and the admin all call them, and the API's
exception handler turns `KeyScope` into 403 `key_scope`. A caller without a key (a session
user) is not limited by key scopes; its permissions decide for it.

"Every server" and "every action" are explicit flags on the key, as for whitelist rules:
a key limited to servers that are later deleted runs on none of them, never on all.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from commands.exceptions import KeyScope
from commands.models import AllowedCommand, ApiKey, Server

EXECUTE_PERMISSION = "commands.execute_command"
NO_EXECUTE_PERMISSION = (
    "Your user may read but not run, cancel or check: that takes the "
    'commands.execute_command permission ("Can execute and cancel commands"). Ask an '
    "admin to grant it to your user or one of its groups in the admin's Users page."
)


def may_execute(user: Any) -> bool:
    """Whether a logged-in user may run and cancel commands: an active staff user with
    commands.execute_command (a superuser has it). The one place this is decided."""
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


def limits_servers(key: ApiKey | None) -> bool:
    """Whether key is limited to a list of servers (possibly empty)."""
    return key is not None and not key.all_servers


def limits_actions(key: ApiKey | None) -> bool:
    """Whether key is limited to a list of action types (possibly empty)."""
    return key is not None and not key.all_actions


def allowed_servers(key: ApiKey | None) -> QuerySet[Server]:
    """The servers key may see and use: every one, or those it is limited to."""
    return filter_servers(Server.objects.all(), key)


def filter_servers(queryset: QuerySet[Server], key: ApiKey | None) -> QuerySet[Server]:
    """queryset without the servers key may not use."""
    if not limits_servers(key):
        return queryset
    listed = ApiKey.servers.through.objects.filter(apikey_id=key.pk)
    return queryset.filter(pk__in=listed.values("server_id"))


def filter_executions(queryset: QuerySet, key: ApiKey | None) -> QuerySet:
    """The audit rows key may read: those on its servers, and its own (a refusal may name
    no server). A server-limited key does not see what ran elsewhere."""
    if not limits_servers(key):
        return queryset
    listed = ApiKey.servers.through.objects.filter(apikey_id=key.pk)
    return queryset.filter(Q(server_id__in=listed.values("server_id")) | Q(api_key_id=key.pk))


def filter_rules(
    queryset: QuerySet[AllowedCommand], key: ApiKey | None
) -> QuerySet[AllowedCommand]:
    """queryset without the whitelist rules key may not run."""
    if not limits_actions(key):
        return queryset
    return queryset.filter(action_type__in=key.action_types)


def check_acts_on(
    key: ApiKey | None,
    server: Server | None,
    *,
    server_ref: str = "",
    verb: str = "run commands on",
) -> None:
    """Raise KeyScope unless key may act on server (run commands on it, check it): not
    read-only, and the server in its scope. server is None for one a server-limited key
    cannot see, whether or not it exists (server_ref names it)."""
    if key is None:
        return
    check_may_act(key)
    if limits_servers(key) and (server is None or not _lists_server(key, server)):
        target = server.name if server is not None else server_ref
        raise outside_scope(key, f"it may not {verb} {target!r}")


def check_may_act(key: ApiKey | None) -> None:
    """Raise KeyScope if key is read-only: it may look, never act on a server."""
    if key is not None and key.read_only:
        raise KeyScope(read_only_detail(key))


def check_action(key: ApiKey | None, action_type: str) -> None:
    """Raise KeyScope unless key may run action_type (anywhere it may act)."""
    if limits_actions(key) and action_type not in key.action_types:
        listed = ", ".join(key.action_types) or "no action type"
        raise KeyScope(
            f"API key {key.name!r} is limited to {listed}; it may not run {action_type!r}. "
            "Use a key for that action, or widen this one in the admin."
        )


def outside_scope(key: ApiKey, what: str) -> KeyScope:
    """The refusal of a server-limited key acting outside its servers: what it may not do."""
    names = [s.name for s in allowed_servers(key)]
    where = f"servers {', '.join(names)}" if names else "no server (its servers were deleted)"
    return KeyScope(
        f"API key {key.name!r} is limited to {where}; {what}. Use a key for that server, "
        "or widen this one in the admin."
    )


def check_execute(
    key: ApiKey | None, server: Server | None, action_type: str, *, server_ref: str = ""
) -> None:
    """Raise KeyScope unless key may run action_type on server (see check_acts_on)."""
    if key is None:
        return
    check_acts_on(key, server, server_ref=server_ref)
    check_action(key, action_type)


def check_cancel(key: ApiKey | None) -> None:
    """Raise KeyScope if key is read-only: cancelling changes what runs on a server."""
    if key is not None and key.read_only:
        raise KeyScope(read_only_detail(key))


def read_only_detail(key: ApiKey) -> str:
    return (
        f"API key {key.name!r} is read-only: it may list servers, commands and executions, "
        "never execute or cancel. Use a key created without --read-only."
    )


def describe(key: ApiKey) -> str:
    """The key's limits in words, for createapikey and the admin list."""
    servers = "every server"
    if limits_servers(key):
        servers = ", ".join(s.name for s in key.servers.all()) or "no server"
    if key.read_only:
        return f"read-only, sees {servers}"
    actions = "every action" if not limits_actions(key) else ", ".join(key.action_types)
    return f"{actions or 'no action'} on {servers}"


def _lists_server(key: ApiKey, server: Server) -> bool:
    return ApiKey.servers.through.objects.filter(apikey_id=key.pk, server_id=server.pk).exists()
