"""The audit trail's refusals: rows for requests refused before anything reached a server.

An execution's own row is started and closed by its lifecycle (models.Execution); a
request refused before that, with a bad body, an unknown server, a key scope or the quota,
gets a `rejected` row here. A client in a loop gets a 429 or 403 on every request: those
are counted on one row per caller and rate window instead of filling the table.
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

from commands import quota, signals
from commands.exceptions import HomelabError
from commands.models import Execution, Server
from commands.requests import Caller

Status = Execution.Status
logger = logging.getLogger(__name__)
MUTEX_SECONDS = 5  # a holder that died releases the lock after this

# A client in a loop gets these on every request: one row per caller and window, with a
# count, keeps the audit table from filling (401s are not recorded for the same reason).
REPEATABLE_REFUSALS = frozenset({"throttled", "permission_denied", "key_scope"})


def new_execution(
    *,
    caller: Caller,
    server: Server | None,
    server_name: str,
    command: Any,
    action_type: Any,
) -> Execution:
    """An unsaved audit row saying who asked for what, where."""
    account = caller.account
    return Execution(
        server=server,
        server_name=str(server_name)[:64],
        api_key=caller.api_key,
        api_key_name=caller.api_key.name if caller.api_key else "",
        user=account,
        username=account.get_username() if account is not None else caller.name[:150],
        client_ip=caller.client_ip,
        action_type=str(action_type or "")[:64],
        command=str(command or "")[:1024],
    )


def row_for(caller: Caller, server: Server, command: Any, action_type: Any) -> Execution:
    """An unsaved audit row for a request aimed at server."""
    return new_execution(
        caller=caller,
        server=server,
        server_name=server.name,
        command=command,
        action_type=action_type,
    )


def reject(execution: Execution, exc: HomelabError) -> Execution:
    """Save a new row refused for exc before anything reached a server (and say so)."""
    execution.reject(exc.code, exc.detail)
    exc.extra["execution_id"] = execution.pk
    signals.execution_refused.send_robust(Execution, code=exc.code, execution=execution)
    return execution


def record_refusal(
    exc: HomelabError,
    *,
    caller: Caller,
    server: Server | None,
    server_ref: str,
    data: Any,
    where: str = "",
) -> Execution:
    """Audit a request refused before the whitelist (bad body, unknown server, scope,
    quota) with the code and detail the client gets; `where` names the target when it is
    no one server (a batch). A repeat of a throttled or forbidden refusal within the rate
    window is counted on the caller's row for it."""
    ident = caller.ident
    if exc.code in REPEATABLE_REFUSALS and ident is not None:
        # Serialized per caller and code, so concurrent refusals (a burst from one key on
        # several workers) find the window's row instead of each inserting one.
        with _cache_mutex(f"homelab:refusal:{exc.code}:{ident}"):
            repeated = count_repeated_refusal(code=exc.code, caller=caller)
            if repeated is not None:
                signals.execution_refused.send_robust(Execution, code=exc.code, execution=repeated)
                return repeated
            return _insert_refusal(exc, caller, server, where or f"unknown:{server_ref}", data)
    return _insert_refusal(exc, caller, server, where or f"unknown:{server_ref}", data)


def _insert_refusal(
    exc: HomelabError, caller: Caller, server: Server | None, where: str, data: Any
) -> Execution:
    data = data if isinstance(data, dict) else {}
    execution = new_execution(
        caller=caller,
        server=server,
        server_name=server.name if server else where,
        command=data.get("command"),
        action_type=data.get("action_type"),
    )
    # The refusal is not tied to an execution the client could follow.
    extra = dict(exc.extra)
    reject(execution, exc)
    exc.extra = extra
    return execution


def count_repeated_refusal(*, code: str, caller: Caller) -> Execution | None:
    """The caller's latest `code` refusal within the rate window with its count raised by
    one, or None when there is none (the first of a window gets its own row)."""
    if caller.api_key is not None:
        who = Q(api_key=caller.api_key)
    elif caller.account is not None:
        who = Q(api_key=None, user=caller.account)
    else:
        return None
    now = timezone.now()
    since = now - datetime.timedelta(seconds=quota.window_seconds())
    latest = (
        Execution.objects.filter(who, status=Status.REJECTED, error_code=code)
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
