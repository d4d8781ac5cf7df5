"""The audit trail's refusals: rows for requests refused before anything reached a server.

A refused request is recorded as a `rejected` row, as an executed one is by services.py.
A client in a loop gets a 429 or 403 on every request: those are counted on one row per
caller and rate window instead of filling the table.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any

from django.core.cache import cache
from django.db.models import F, Q
from django.utils import timezone

from commands import throttling
from commands.handlers import describe
from commands.models import ApiKey, Execution, Server

Status = Execution.Status
logger = logging.getLogger(__name__)
MUTEX_SECONDS = 5  # a holder that died releases the lock after this


def new_execution(
    *,
    server: Server | None,
    server_name: str,
    command: Any,
    action_type: Any,
    api_key: ApiKey | None,
    user: Any,
    client_ip: str | None,
) -> Execution:
    """An unsaved audit row saying who asked for what, where."""
    authenticated = user is not None and getattr(user, "is_authenticated", False)
    return Execution(
        server=server,
        server_name=server_name[:64],
        api_key=api_key,
        api_key_name=api_key.name if api_key else "",
        user=user if authenticated else None,
        username=user.get_username() if authenticated else "",
        client_ip=client_ip,
        action_type=str(action_type or "")[:64],
        command=str(command or "")[:1024],
    )


def record_rejection(execution: Execution, *, code: str, detail: str) -> Execution:
    """Save an attempt that was refused before anything reached a server."""
    execution.status = Status.REJECTED
    execution.error_code = code
    execution.error_detail = detail
    # PostgreSQL refuses text with a NUL in it; the refused input may carry one.
    for field in ("server_name", "command", "action_type", "error_detail"):
        setattr(execution, field, getattr(execution, field).replace("\x00", "\ufffd"))
    execution.finished_at = timezone.now()
    execution.save()
    if execution.finished_at < execution.created_at:
        # A new row gets created_at (auto_now_add) inside save(), after finished_at was
        # set: a refusal ends the instant it is recorded.
        execution.finished_at = execution.created_at
        execution.save(update_fields=["finished_at"])
    return execution


def record_refusal(
    *,
    server: Server | None,
    server_ref: str,
    data: Any,
    code: str,
    detail: str,
    api_key: ApiKey | None = None,
    user: Any = None,
    client_ip: str | None = None,
) -> Execution:
    """Audit a request refused before the whitelist (bad body, unknown server, quota).
    A repeat of a throttled or forbidden refusal within the rate window is counted on
    the caller's row for it, not written as a new one."""
    ident = _caller_ident(api_key, user)
    if code in REPEATABLE_REFUSALS and ident is not None:
        # Serialized per caller and code, so concurrent refusals (a burst from one key on
        # several workers) find the window's row instead of each inserting one.
        with _cache_mutex(f"homelab:refusal:{code}:{ident}"):
            repeated = count_repeated_refusal(code=code, api_key=api_key, user=user)
            if repeated is not None:
                return repeated
            return _insert_refusal(server, server_ref, data, code, detail, api_key, user, client_ip)
    return _insert_refusal(server, server_ref, data, code, detail, api_key, user, client_ip)


def record_refused_request(
    exc: Exception,
    *,
    server: Server | None,
    server_ref: str,
    data: Any,
    api_key: ApiKey | None = None,
    user: Any = None,
    client_ip: str | None = None,
) -> Execution:
    """Audit an execute request refused before the whitelist with the code and detail the
    client gets for exc (HTTP and WebSocket alike)."""
    code, detail = describe(exc)
    return record_refusal(
        server=server,
        server_ref=server_ref,
        data=data,
        code=code,
        detail=detail,
        api_key=api_key,
        user=user,
        client_ip=client_ip,
    )


def _insert_refusal(server, server_ref, data, code, detail, api_key, user, client_ip) -> Execution:
    data = data if isinstance(data, dict) else {}
    execution = new_execution(
        server=server,
        server_name=server.name if server else f"unknown:{server_ref}",
        command=data.get("command"),
        action_type=data.get("action_type"),
        api_key=api_key,
        user=user,
        client_ip=client_ip,
    )
    return record_rejection(execution, code=code, detail=detail)


# A client in a loop gets these on every request: one row per caller and window, with a
# count, keeps the audit table from filling (401s are not recorded for the same reason).
REPEATABLE_REFUSALS = frozenset({"throttled", "permission_denied", "key_scope"})


def count_repeated_refusal(*, code: str, api_key: ApiKey | None, user: Any) -> Execution | None:
    """The caller's latest `code` refusal within the rate window with its count raised by
    one, or None when there is none (the first of a window gets its own row)."""
    if api_key is not None:
        caller = Q(api_key=api_key)
    elif user is not None and getattr(user, "is_authenticated", False):
        caller = Q(api_key=None, user=user)
    else:
        return None
    now = timezone.now()
    since = now - datetime.timedelta(seconds=throttling.window_seconds())
    latest = (
        Execution.objects.filter(caller, status=Status.REJECTED, error_code=code)
        .filter(created_at__gte=since)
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
        .first()
    )
    # One UPDATE adding one in the database: concurrent repeats are all counted.
    if latest is None or not Execution.objects.filter(pk=latest).update(
        count=F("count") + 1, finished_at=now
    ):
        return None
    return Execution.objects.filter(pk=latest).first()


def mark_interrupted(queryset) -> int:
    """Close rows whose process stopped before it finished them."""
    return queryset.filter(status=Status.RUNNING).update(
        status=Status.INTERRUPTED,
        error_code="interrupted",
        error_detail="The process running this command stopped before it finished.",
        finished_at=timezone.now(),
    )


def _caller_ident(api_key: ApiKey | None, user: Any) -> str | None:
    if api_key is not None:
        return f"key:{api_key.prefix}"
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    return None


@contextlib.contextmanager
def _cache_mutex(name: str, wait: float = 2.0) -> Iterator[None]:
    """A lock shared by every worker through the cache (Redis in the scale-out profile;
    atomic add). Held for one query or two; without the cache, go on unlocked."""
    token = secrets.token_hex(8)
    deadline = time.monotonic() + wait
    held = False
    try:
        while not (held := cache.add(name, token, MUTEX_SECONDS)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
    except Exception:
        logger.warning("the cache is not answering; refusals are counted without a lock")
    try:
        yield
    finally:
        if held:
            with contextlib.suppress(Exception):
                cache.delete(name)
