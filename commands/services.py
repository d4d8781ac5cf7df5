"""Business logic: run one whitelisted command on one server, with its audit row.

The order is the point: whitelist -> audit row saved (status `running`) -> SSH ->
audit row completed. No database transaction is held open across the SSH call.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.utils import timezone

from commands import ssh, whitelist
from commands.exceptions import (
    CommandRejected,
    CommandTimeout,
    HomelabError,
    ServerDisabled,
    SSHError,
)
from commands.models import ApiKey, Execution, Server

Status = Execution.Status
logger = logging.getLogger(__name__)


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
    execution.finished_at = timezone.now()
    execution.save()
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
    """Audit a request refused before the whitelist (bad body, unknown server, quota)."""
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


def executor() -> ssh.SSHPooledExecutor:
    """The process-wide SSH executor, configured from settings on first use."""
    return ssh.get_executor(
        connect_timeout=settings.HOMELAB_CONNECT_TIMEOUT,
        idle_seconds=settings.HOMELAB_SSH_IDLE_SECONDS,
    )


def target_for(server: Server) -> ssh.SSHTarget:
    return ssh.SSHTarget(
        name=server.name,
        host=server.hostname,
        port=server.port,
        username=server.username,
        key_filename=server.key_file or settings.HOMELAB_SSH_KEY_FILE or None,
        host_key=server.host_key,
    )


def execute_command(
    *,
    server: Server,
    command: str,
    action_type: str,
    api_key: ApiKey | None = None,
    user: Any = None,
    client_ip: str | None = None,
) -> Execution:
    """Run a whitelisted command; the returned row holds the result (any exit code).

    Raises a `HomelabError` (rejection, timeout, SSH failure) whose `extra` carries
    the `execution_id` of the audit row, and for a timeout the partial output.
    """
    execution = new_execution(
        server=server,
        server_name=server.name,
        command=command,
        action_type=action_type,
        api_key=api_key,
        user=user,
        client_ip=client_ip,
    )
    try:
        if not server.enabled:
            raise ServerDisabled(f"Server {server.name} is disabled; enable it in the admin.")
        match = whitelist.resolve(command, action_type, server)
    except CommandRejected as exc:
        record_rejection(execution, code=exc.code, detail=exc.detail)
        exc.extra["execution_id"] = execution.pk
        raise

    execution.argv = list(match.argv)
    execution.status = Status.RUNNING
    execution.save()  # the audit row exists before SSH starts

    try:
        result = executor().execute(
            target_for(server),
            match.sent,
            timeout=match.rule.timeout_seconds,
            output_limit=settings.HOMELAB_OUTPUT_LIMIT,
        )
    except CommandTimeout as exc:
        partial = getattr(exc, "partial", None)
        finish(execution, Status.TIMEOUT, partial, error=exc)
        exc.extra.update(execution_id=execution.pk, **output_fields(partial))
        raise
    except HomelabError as exc:
        finish(execution, Status.ERROR, None, error=exc)
        exc.extra["execution_id"] = execution.pk
        raise
    except Exception:
        # A bug, not an SSH condition: keep the traceback in the server log only, close
        # the audit row, and answer like any SSH-side failure (with the row's id).
        logger.exception("unexpected error running execution %s", execution.pk)
        error = SSHError("Unexpected error while running the command; see the server log.")
        finish(execution, Status.ERROR, None, error=error)
        error.extra["execution_id"] = execution.pk
        raise error from None

    status = Status.SUCCEEDED if result.exit_code == 0 else Status.FAILED
    return finish(execution, status, result)


def output_fields(result: ssh.CommandResult | None) -> dict[str, Any]:
    if result is None:
        return {"stdout": "", "stderr": "", "stdout_truncated": False, "stderr_truncated": False}
    return {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
    }


def finish(
    execution: Execution,
    status: str,
    result: ssh.CommandResult | None,
    *,
    error: HomelabError | None = None,
) -> Execution:
    """Complete the audit row after SSH, whatever happened."""
    execution.status = status
    execution.finished_at = timezone.now()
    for field, value in output_fields(result).items():
        setattr(execution, field, value)
    if result is not None:
        execution.duration_ms = result.duration_ms
        if status != Status.TIMEOUT:
            execution.exit_code = result.exit_code
    if execution.duration_ms is None:
        elapsed = execution.finished_at - execution.created_at
        execution.duration_ms = int(elapsed.total_seconds() * 1000)
    if error is not None:
        execution.error_code = error.code
        execution.error_detail = error.detail
    execution.save()
    return execution
