"""Who is on the other end of a WebSocket, and running a command from one.

A socket is authenticated by the API-key headers of its handshake (scripts) or by the
Django session (the admin, same origin only: a cookie sent by another site's page must not
count). `start_execution` is the one-connection client's execute: the same validation,
quota, whitelist and audit row as POST .../commands/execute with wait=false.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework import exceptions

from commands import audit, clientip, scopes
from commands.authentication import check_key, raw_key
from commands.exceptions import HomelabError
from commands.handlers import describe
from commands.models import ApiKey, Server
from commands.permissions import NO_EXECUTE_PERMISSION, may_execute
from commands.serializers import ExecuteRequestSerializer
from commands.throttling import ExecuteRateThrottle


@dataclass(frozen=True)
class Caller:
    api_key: ApiKey | None
    user: Any
    client_ip: str | None


def header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def same_origin(scope: dict) -> bool:
    """Whether a browser page of ours opened the socket (or no browser at all)."""
    origin = header(scope, b"origin")
    if not origin:
        return True  # not a browser: a cookie there was put there on purpose
    if origin in getattr(settings, "CSRF_TRUSTED_ORIGINS", []):
        return True
    return urlsplit(origin).netloc == header(scope, b"host")


def key_from_headers(scope: dict) -> str | None:
    """The raw key of `Authorization: Api-Key <key>` or `X-API-Key: <key>`, as over HTTP."""
    return raw_key(header(scope, b"authorization"), header(scope, b"x-api-key"))


def identify(scope: dict) -> Caller | None:
    """The socket's caller by key or session (call from a thread); None: nobody valid."""
    address = clientip.from_scope(scope)
    raw_key = key_from_headers(scope)
    if raw_key is not None:
        key = check_key(raw_key)
        if key is None:
            return None
        return Caller(key, key.owner or AnonymousUser(), address)
    user = scope.get("user")
    if user is not None and user.is_authenticated and user.is_active and same_origin(scope):
        return Caller(None, user, address)
    return None


# --- execute over a socket ----------------------------------------------------------------
CLOSE_FOR_STATUS = {400: 4400, 403: 4403, 404: 4404, 408: 4408, 413: 4413, 429: 4429, 503: 4503}
MAX_MESSAGE = 64 * 1024  # a command is at most 1024 characters; JSON around it is small


@dataclass
class Refusal:
    """An error frame's fields and the close code (4000 + the HTTP status it mirrors)."""

    close_code: int
    frame: dict[str, Any]


def refusal(status: int, code: str, detail: str, **extra: Any) -> Refusal:
    close = CLOSE_FOR_STATUS.get(status, 4500)
    return Refusal(close, {"type": "error", "code": code, "detail": detail, **extra})


def find_server(server_ref: str, api_key: ApiKey | None) -> Server | None:
    """The server by id (all digits) or name, as in the HTTP URLs; None if there is none,
    or if it is outside a server-limited key's scope (the key is not told which)."""
    servers = scopes.filter_servers(Server.objects.all(), api_key)
    if server_ref.isascii() and server_ref.isdecimal():
        pk = int(server_ref)
        return servers.filter(pk=pk).first() if pk < 2**63 else None
    return servers.filter(name=server_ref).first()


def start_execution(
    who: Caller, server: Server | None, text: str | None, *, server_ref: str = ""
) -> int | Refusal:
    """Start `{"command", "action_type"}` (the first text frame) on server: the execution
    id, or the refusal to send, audited like the HTTP endpoint's. server is None for one
    a server-limited key may not see (server_ref names it): that is 403 key_scope."""
    from commands import services  # services -> streaming -> this module

    server_ref = str(server.pk) if server is not None else server_ref
    if text is not None and len(text) > MAX_MESSAGE:
        return refusal(413, "too_large", f"A message is at most {MAX_MESSAGE} characters.")
    try:
        data = json.loads(text or "")
    except ValueError:
        data = None
    caller = {"api_key": who.api_key, "user": who.user, "client_ip": who.client_ip}
    body = ExecuteRequestSerializer(data=data if isinstance(data, dict) else {})
    try:
        if who.api_key is None and not may_execute(who.user):
            # The consumer closes such a socket 4403 before any frame; this guards any
            # other caller, and is audited like the HTTP refusal.
            raise exceptions.PermissionDenied(NO_EXECUTE_PERMISSION)
        body.is_valid(raise_exception=True)
        # As over HTTP: a request this key may never make does not use up its quota.
        scopes.check_execute(
            who.api_key, server, body.validated_data["action_type"], server_ref=server_ref
        )
        _check_quota(who)
    except (exceptions.APIException, HomelabError) as exc:
        audit.record_refused_request(exc, server=server, server_ref=server_ref, data=data, **caller)
        code, detail = describe(exc)
        extra = {"errors": exc.detail} if code == "invalid" else {}
        if isinstance(exc, exceptions.Throttled):
            extra["retry_after"] = int(exc.wait or 1)
        return refusal(getattr(exc, "status_code", 400), code, detail, **extra)
    fields = {**body.validated_data, "wait": False}
    try:
        execution = services.execute_command(server=server, **fields, **caller)
    except HomelabError as exc:
        extra = dict(exc.extra)
        if getattr(exc, "retry_after", None):
            extra["retry_after"] = int(exc.retry_after)
        return refusal(int(exc.status_code), exc.code, exc.detail, **extra)
    return execution.pk


def _check_quota(who: Caller) -> None:
    """The per-key quota of POST .../commands/execute, counted for this execution too."""
    throttle = ExecuteRateThrottle()
    request = SimpleNamespace(auth=who.api_key, user=who.user)
    view = SimpleNamespace(throttle_scope="command-execute")
    if not throttle.allow_request(request, view):
        raise exceptions.Throttled(throttle.wait())
