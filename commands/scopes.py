"""What an API key may reach: its servers, its action types, and whether it may act at all.

Pure functions over the key row, no HTTP: views.py and sockets.py call them, and
handlers.py turns `KeyScope` into 403 `key_scope`. A caller without a key (a session
user) is not limited here; the user's permissions decide for it.

"Every server" and "every action" are explicit flags on the key, as for whitelist rules:
a key limited to servers that are later deleted runs on none of them, never on all.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from commands.exceptions import KeyScope
from commands.models import AllowedCommand, ApiKey, Server


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


def check_execute(
    key: ApiKey | None, server: Server | None, action_type: str, *, server_ref: str = ""
) -> None:
    """Raise KeyScope unless key may run action_type on server. server is None for one a
    server-limited key cannot see, whether or not it exists (server_ref names it)."""
    if key is None:
        return
    if key.read_only:
        raise KeyScope(read_only_detail(key))
    if limits_servers(key) and (server is None or not _lists_server(key, server)):
        names = [s.name for s in allowed_servers(key)]
        where = f"servers {', '.join(names)}" if names else "no server (its servers were deleted)"
        target = server.name if server is not None else server_ref
        raise KeyScope(
            f"API key {key.name!r} is limited to {where}; it may not run commands on "
            f"{target!r}. Use a key for that server, or widen this one in the admin."
        )
    if limits_actions(key) and action_type not in key.action_types:
        listed = ", ".join(key.action_types) or "no action type"
        raise KeyScope(
            f"API key {key.name!r} is limited to {listed}; it may not run {action_type!r}. "
            "Use a key for that action, or widen this one in the admin."
        )


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
